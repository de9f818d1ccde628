"""The HTTP API through Flask's test client: every request form, every answer shape, every error."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import pytest
from conftest import KERAS_MODELS, encode
from PIL import Image

from bench.hostile import png_declaring
from classifier import Classification
from classifier.models.labels import Prediction


def multipart(image: bytes, **fields: str) -> dict:
    return {"image": (io.BytesIO(image), "cat.png"), **fields}


def assert_prediction_shape(body: dict, model: str, top_k: int) -> None:
    assert body["model"] == model
    assert body["server"] == "local"
    assert len(body["predictions"]) == top_k
    scores = [p["score"] for p in body["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    assert all(p["class_id"].startswith("n") and p["label"] for p in body["predictions"])
    # The original page's shape: one-key objects, readable label, 3 decimals.
    assert [list(item.values())[0] for item in body["result"]] == [round(s, 3) for s in scores]
    assert [list(item)[0] for item in body["result"]] == [
        p["label"].replace("_", " ")[:1].upper() + p["label"].replace("_", " ")[1:] for p in body["predictions"]
    ]
    assert {"decode", "inference", "total"} <= set(body["timing_ms"]) <= {"decode", "load", "inference", "total"}


@pytest.mark.slow  # builds every architecture
@pytest.mark.parametrize("model", KERAS_MODELS + ("EfficientNetLite0",))
def test_multipart_each_model(client, cat_png, model):
    response = client.post("/predict", data=multipart(cat_png, model=model, top_k="5"))
    assert response.status_code == 200, response.json
    assert_prediction_shape(response.json, model, 5)
    assert response.json["weights"] == "random"


def test_json_with_settings_as_the_original_page_sends(client, cat_png):
    data_url = "data:image/png;base64," + base64.b64encode(cat_png).decode()
    response = client.post("/predict", json={"image": data_url, "settings": {"model": "ResNet50", "top_k": 2}})
    assert response.status_code == 200, response.json
    assert_prediction_shape(response.json, "ResNet50", 2)


def test_json_plain_base64_with_top_level_options(client, cat_png):
    body = {"image": base64.b64encode(cat_png).decode(), "model": "NASNetMobile", "top_k": 4}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.json
    assert_prediction_shape(response.json, "NASNetMobile", 4)


def test_raw_body_with_query_options(client, cat_png):
    response = client.post("/predict?model=MobileNetV2&top_k=1", data=cat_png, content_type="image/png")
    assert response.status_code == 200, response.json
    assert_prediction_shape(response.json, "MobileNetV2", 1)


def test_all_forms_agree(client, cat_png):
    """The same image and model give the same scores whichever way they arrive."""
    forms = [
        dict(data=multipart(cat_png, model="ResNet50")),
        dict(json={"image": base64.b64encode(cat_png).decode(), "settings": {"model": "ResNet50"}}),
        dict(data=cat_png, content_type="image/png", query_string={"model": "ResNet50"}),
    ]
    answers = [client.post("/predict", **form).json["predictions"] for form in forms]
    assert answers[0] == answers[1] == answers[2]


def test_default_top_k_and_default_model(client, cat_png):
    response = client.post("/predict", data=multipart(cat_png))
    models = client.get("/models").json
    assert response.json["model"] == models["default"]
    assert len(response.json["predictions"]) == 3


def error_of(response) -> tuple[int, str]:
    assert response.is_json, response.data[:200]
    assert set(response.json) == {"error"} and set(response.json["error"]) == {"code", "message", "request_id"}
    assert response.json["error"]["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.json["error"]["message"]
    return response.status_code, response.json["error"]["code"]


@pytest.mark.parametrize("top_k", ["-1", "0", "21", "10000", "abc", "2.5"])
def test_bad_top_k(client, cat_png, top_k):
    assert error_of(client.post("/predict", data=multipart(cat_png, top_k=top_k))) == (400, "invalid_request")


@pytest.mark.parametrize("top_k", [True, 2.5, [3], {"a": 1}])
def test_bad_top_k_json_types(client, cat_png, top_k):
    body = {"image": base64.b64encode(cat_png).decode(), "top_k": top_k}
    assert error_of(client.post("/predict", json=body)) == (400, "invalid_request")


def test_unknown_model_names_the_choices(client, cat_png):
    response = client.post("/predict", data=multipart(cat_png, model="AlexNet"))
    assert error_of(response) == (400, "unknown_model")
    assert "MobileNetV2" in response.json["error"]["message"]


def test_unknown_server_value(client, cat_png):
    assert error_of(client.post("/predict", data=multipart(cat_png, server="mars"))) == (400, "invalid_request")


@pytest.mark.parametrize(
    "request_kwargs, expected",
    [
        (dict(data={"model": "MobileNetV2"}), (400, "invalid_request")),  # no image field
        (dict(data=b"", content_type="image/png"), (400, "invalid_image")),
        (dict(data=b"not an image at all", content_type="image/jpeg"), (415, "unsupported_image_type")),
        (dict(data=b"<html><body>hi</body></html>", content_type="image/jpeg"), (415, "unsupported_image_type")),
        (dict(data=b"hello", content_type="text/plain"), (415, "unsupported_image_type")),
        (dict(data=b"hello"), (415, "unsupported_image_type")),  # no content type
        (dict(data=b"{not json", content_type="application/json"), (400, "invalid_request")),
        (dict(json=[1, 2, 3]), (400, "invalid_request")),
        (dict(json={"settings": {}}), (400, "invalid_request")),  # no image
        (dict(json={"image": 42}), (400, "invalid_request")),
        (dict(json={"image": "%%% not base64 %%%"}), (400, "invalid_image")),
        (dict(json={"image": "data:text/html;base64,PGh0bWw+"}), (415, "unsupported_image_type")),
        (dict(json={"image": "data:image/png,rawdata"}), (400, "invalid_image")),
        (dict(json={"image": "aGVsbG8=", "settings": "fast"}), (400, "invalid_request")),
        (dict(json={"image": "aGVsbG8=", "model": 7}), (400, "invalid_request")),
    ],
)
def test_bad_requests(client, request_kwargs, expected):
    assert error_of(client.post("/predict", **request_kwargs)) == expected


def test_deeply_nested_json(client):
    body = "[" * 100_000 + "]" * 100_000
    assert error_of(client.post("/predict", data=body, content_type="application/json")) == (400, "invalid_request")


def test_truncated_image(client, cat_png):
    response = client.post("/predict", data=cat_png[: len(cat_png) // 2], content_type="image/png")
    assert error_of(response) == (400, "invalid_image")


def test_decompression_bomb(client):
    bomb = png_declaring(30000, 30000)
    assert error_of(client.post("/predict", data=bomb, content_type="image/png")) == (400, "too_many_pixels")


@pytest.mark.parametrize("form", ["multipart", "json", "raw"])
def test_upload_over_the_limit_is_413(make_app, form):
    client = make_app(max_upload_bytes=100_000).test_client()
    big = encode(Image.effect_noise((400, 400), 64).convert("RGB"), "PNG")
    assert len(big) > 100_000
    kwargs = {
        "multipart": dict(data=multipart(big)),
        "json": dict(json={"image": base64.b64encode(big).decode()}),
        "raw": dict(data=big, content_type="image/png"),
    }[form]
    assert error_of(client.post("/predict", **kwargs))[0] == 413


def test_server_keeps_serving_after_errors(client, cat_png):
    for bad in (b"", b"garbage", cat_png[:100]):
        assert client.post("/predict", data=bad, content_type="image/png").status_code >= 400
    assert client.post("/predict", data=multipart(cat_png)).status_code == 200


def test_unexpected_exception_is_a_json_500_without_internals(make_app):
    app = make_app()

    @app.get("/explode")  # a route of the test's own: the app has no way to fail on purpose
    def explode():
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/explode")
    assert error_of(response) == (500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)


def test_not_found_and_method_not_allowed_are_json(client):
    assert error_of(client.get("/nowhere")) == (404, "not_found")
    assert error_of(client.get("/predict")) == (405, "method_not_allowed")


def test_models_lists_every_model_with_status(client):
    body = client.get("/models").json
    names = [m["name"] for m in body["models"]]
    fp32 = list(KERAS_MODELS) + ["EfficientNetLite0"]
    assert names == fp32 + [f"{name}-int8" for name in fp32]  # int8 forms: tests/test_int8.py
    assert sum(m["default"] for m in body["models"]) == 1
    for model in body["models"]:
        assert model["input_size"] == [224, 224]
        assert model["status"] in (("loaded", "ready") if model["precision"] == "fp32" else ("unavailable",))
        assert model["weights"] == "random"


def test_each_app_answers_with_its_own_classifier(make_app):
    """The routes are one blueprint shared by every app ``create_app`` builds; each app must still
    answer from the classifier its own settings built, not from another app's."""
    resnet = make_app(default_model="ResNet50", max_upload_bytes=100_000).test_client()
    mobilenet = make_app(default_model="MobileNetV2").test_client()
    for client, default, max_bytes in [(resnet, "ResNet50", 100_000), (mobilenet, "MobileNetV2", 10 * 1024 * 1024),
                                       (resnet, "ResNet50", 100_000)]:
        assert client.get("/models").json["default"] == default
        assert f'data-max-bytes="{max_bytes}"' in client.get("/").get_data(as_text=True)


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_cors_preflight_and_headers(client, cat_png):
    preflight = client.options("/predict", headers={
        "Origin": "https://example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", "https://example.org")
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    response = client.get("/models", headers={"Origin": "https://example.org"})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://example.org")


def test_cors_origins_configurable(make_app):
    client = make_app(cors_origins="https://good.example").test_client()
    good = client.get("/models", headers={"Origin": "https://good.example"})
    bad = client.get("/models", headers={"Origin": "https://evil.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_page_offers_every_model(client):
    page = client.get("/").get_data(as_text=True)
    assert all(name in page for name in KERAS_MODELS + ("EfficientNetLite0",))
    assert 'name="image"' in page


def csp_directives(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: sources}; a repeated directive is
    ignored after its first occurrence, as browsers do."""
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split() or [""]
        if name:
            directives.setdefault(name.lower(), sources)
    return directives


def effective_sources(directives: dict[str, list[str]], name: str) -> list[str] | None:
    """What the browser enforces for a fetch directive: its own value, else default-src's."""
    return directives.get(name, directives.get("default-src"))


@pytest.mark.parametrize("path", ["/", "/predict", "/models", "/nowhere", "/static/app.js"])
def test_security_headers_on_every_answer(client, path):
    response = client.post(path) if path == "/predict" else client.get(path)
    directives = csp_directives(response.headers["Content-Security-Policy"])
    # Script, style and the fetches the page makes come from this origin only: no inline
    # code, no eval, no other host or scheme.
    for fetch in ("script-src", "style-src", "connect-src", "font-src"):
        assert effective_sources(directives, fetch) == ["'self'"], fetch
    assert set(effective_sources(directives, "img-src")) <= {"'self'", "blob:", "data:"}
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


class InlineCode(HTMLParser):
    """Collects what a strict CSP would block in a page (inline script, inline style,
    event-handler attributes, javascript: URLs) and the scripts and stylesheets it loads."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.assets: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.blocked.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.blocked.append(f"<{tag} {name}={value}>")
        if tag == "style":
            self.blocked.append("<style>")
        if tag == "script":
            self._in_script = True
            if attributes.get("src"):
                self.assets.append(attributes["src"])
            else:
                self.blocked.append("<script> without src")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.assets.append(attributes.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.blocked.append("<script> with a body")


def inline_code(page: str) -> InlineCode:
    parser = InlineCode()
    parser.feed(page)
    parser.close()
    return parser


@pytest.mark.parametrize("form", ["empty", "answer", "error"])
def test_page_has_no_inline_script_or_style(client, cat_png, form):
    """The page in each state it is rendered in (empty, with an answer to a form post, with
    an error) runs only its own files from /static/, which the CSP above allows and which
    are served with the type nosniff requires."""
    response = {
        "empty": lambda: client.get("/"),
        "answer": lambda: client.post("/", data=multipart(cat_png)),
        "error": lambda: client.post("/", data=multipart(b"not an image")),
    }[form]()
    page = inline_code(response.get_data(as_text=True))
    if form == "answer":
        assert 'class="prediction"' in response.get_data(as_text=True)
    assert page.blocked == []
    assert len(page.assets) == 2, page.assets  # app.js and style.css
    for url in page.assets:
        assert url.startswith("/static/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected_type = "text/javascript" if url.split("?")[0].endswith(".js") else "text/css"
        assert asset.mimetype == expected_type, url


@pytest.mark.parametrize("timing, shown", [
    ({"decode": 1.2, "load": 2000.4, "inference": 12.3, "total": 2013.9},
     "2014 ms (loading the model 2000 ms, inference 12 ms)"),
    ({"decode": 1.2, "inference": 12.3, "total": 13.5}, "14 ms (inference 12 ms)"),
])
def test_the_rendered_answer_says_when_its_time_includes_loading_the_model(make_app, timing, shown):
    """A cold request's total includes loading the model; the page says so, as its script does."""
    from classifier.web.pages import render_page
    from classifier.web.views import current_classifier

    answer = Classification("MobileNetV2", "random", [Prediction("tabby", "n02123045", 0.5)], timing)
    form = {"image": (io.BytesIO(b"a photo"), "cat.jpg")}  # the no-JavaScript form's post
    with make_app().test_request_context("/", method="POST", data=form):
        html = render_page(current_classifier(), result=answer.to_json())
    time_cell = html.split('class="meta-time">', 1)[1].split("</dd>", 1)[0]
    assert " ".join(time_cell.replace('<span class="muted">', "").replace("</span>", "").split()) == shown
