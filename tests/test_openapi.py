"""The API contract: ``openapi.json`` is valid OpenAPI 3.1, served as checked in and describing
every route, and the code is held to it. Real answers (every request form, every error we can
cause, forwarded answers) are checked against it with openapi-core, and Schemathesis, an API
fuzzer we did not write, sends what the description allows to a running ``python3 app.py``.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import requests
import schemathesis
from conftest import ROOT, free_port
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from support.errors import app_errors, nginx_errors
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from bench.hostile import png_declaring
from bench.servers import QuietHandler
from classifier.errors import InvalidRequest
from classifier.models.registry import REGISTRY
from classifier.serving.options import Options

DOCUMENT = json.loads((ROOT / "openapi.json").read_text())
CONTRACT = OpenAPI.from_dict(DOCUMENT)
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
SERVICE_ERROR = json.dumps({"error": {"code": "model_unavailable", "message": "Weights are being downloaded."}})


def documented_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> set[tuple[str, str]]:
    """What the app routes, as (METHOD, path), without Flask's own static files."""
    from app import create_app

    app = create_app({"warmup": False, "random_weights": True, "keras_home": tmp_path_factory.mktemp("keras")})
    return {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods & METHODS}


def test_the_document_is_valid_openapi_3_1():
    validate(DOCUMENT)  # picks the 3.1 validator from "openapi": "3.1.0"
    assert DOCUMENT["openapi"].startswith("3.1.")


def test_it_is_served_as_checked_in(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.json == DOCUMENT


def test_every_route_is_described(served):
    assert served <= documented_operations()


def test_every_described_operation_is_served(served):
    assert documented_operations() <= served


def test_it_names_the_registered_models():
    assert DOCUMENT["components"]["schemas"]["ModelName"]["enum"] == list(REGISTRY)


def test_its_version_is_the_package_version():
    assert DOCUMENT["info"]["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def documented_errors() -> set[tuple[int, str]]:
    """(status, code) of every error any operation documents."""
    responses = DOCUMENT["components"]["responses"]
    found = set()
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                response = responses.get(response.get("$ref", "").rpartition("/")[2], response)
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                codes = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
                found |= {(int(status), code) for code in codes.get("enum", [])}
    return found


def test_it_documents_every_error_code_a_client_can_get():
    """The same list docs/errors.md's table is held to; 404 and 405 answer paths and methods that
    are not operations, so the description's text names them instead."""
    expected = (app_errors() | nginx_errors()) - {(404, "not_found"), (405, "method_not_allowed")}
    assert documented_errors() == expected | {(413, "remote_rejected"), (415, "remote_rejected")}
    assert "404 not_found" in DOCUMENT["info"]["description"]
    assert "405 method_not_allowed" in DOCUMENT["info"]["description"]


# Real answers, checked with openapi-core.

def exchange(client: FlaskClient, method: str, path: str,
             **request: Any) -> tuple[WerkzeugOpenAPIRequest, TestResponse]:
    """Send a request through the test client; also return it as openapi-core reads requests.

    The app consumes the body it is sent, so the request is built once, its body kept, and
    the same bytes sent. A file field is given as ``(bytes, filename)``."""
    if isinstance(request.get("data"), dict):  # (bytes, filename) is a file: a fresh one per request
        request["data"] = {name: (io.BytesIO(value[0]), value[1]) if isinstance(value, tuple) else value
                           for name, value in request["data"].items()}
    builder = EnvironBuilder(path=path, method=method, **request)
    try:
        sent = Request(builder.get_environ())
    finally:
        builder.close()
    body = sent.get_data()  # kept on ``sent`` for openapi-core
    response = client.open(sent.full_path, method=method, data=body, headers=list(sent.headers.items()))
    return WerkzeugOpenAPIRequest(sent), response


def conforming(client: FlaskClient, method: str, path: str, *, valid_request: bool = True,
               **request: Any) -> TestResponse:
    """The answer to a request, after checking it against the description: its status, headers
    and body; and the request itself too when ``valid_request`` (a multipart request is not
    checked: openapi-core 0.23 reads its fields as bytes, never as the integers and enums the
    description declares; Schemathesis sends multipart requests from the description below)."""
    sent, response = exchange(client, method, path, **request)
    CONTRACT.validate_response(sent, WerkzeugOpenAPIResponse(response))
    if valid_request and not sent.content_type.startswith("multipart/"):
        CONTRACT.validate_request(sent)
    return response


def error_code(response: TestResponse) -> tuple[int, str]:
    return response.status_code, response.json["error"]["code"]


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


@pytest.mark.parametrize("form", ["multipart", "json settings", "json top level", "raw", "multipart several",
                                  "json images"])
def test_every_request_form_and_its_answer_keep_to_the_description(client, cat_png, form):
    request = {
        "multipart": dict(data={"image": (cat_png, "cat.png"), "model": "MobileNetV2", "top_k": "5"}),
        "multipart several": dict(data={"image": [(io.BytesIO(cat_png), "cat.png"), (io.BytesIO(b"no"), "x.txt")],
                                        "model": "MobileNetV2", "top_k": "5"}),
        "json images": dict(json={"images": [data_url(cat_png), "%%"], "filenames": ["cat.png", "x"],
                                  "settings": {"model": "MobileNetV2", "top_k": 5, "explain": True}}),
        "json settings": dict(json={"image": data_url(cat_png), "settings": {"model": "MobileNetV2", "top_k": 5}}),
        "json top level": dict(json={"image": base64.b64encode(cat_png).decode(), "model": "MobileNetV2",
                                     "top_k": 5}),
        "raw": dict(data=cat_png, content_type="image/png", query_string={"model": "MobileNetV2", "top_k": "5"}),
    }[form]
    response = conforming(client, "POST", "/predict", **request)
    assert response.status_code == 200
    answers = response.json.get("results", [response.json])
    assert len(answers[0]["predictions"]) == 5 and all("error" in answer for answer in answers[1:])


def test_a_real_model_answer_keeps_to_the_description(make_app, keras_home, cat_png):
    client = make_app(random_weights=False, keras_home=keras_home, runtime="keras").test_client()
    response = conforming(client, "POST", "/predict", data={"image": (cat_png, "cat.png")},
                          query_string={"model": "EfficientNetLite0"})
    assert response.status_code == 200 and response.json["weights"] == "imagenet"


SCHEMA_INVALID = object()  # marks a request the description itself refuses: only its answer is checked


@pytest.mark.parametrize("settings_, sent, expected", [
    ({}, dict(data={"top_k": "2"}, content_type="multipart/form-data"), (400, "invalid_request")),  # no image
    ({}, dict(json={"settings": {"top_k": 2}}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"image": "aGVsbG8=", "top_k": 21}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"image": "aGVsbG8=", "model": "AlexNet"}, marker=SCHEMA_INVALID), (400, "unknown_model")),
    # A null is not an option's default (leaving it out is): the description says what each takes.
    ({}, dict(json={"image": "aGVsbG8=", "settings": {"model": None}}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"image": "aGVsbG8=", "explain_class": None}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"images": ["aGVsbG8="], "filenames": None}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"images": [5]}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"image": "aGVsbG8=", "settings": False}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(json={"image": "aGVsbG8=", "top_k": "+5"}, marker=SCHEMA_INVALID), (400, "invalid_request")),
    ({}, dict(data=b"", content_type="image/png", marker=SCHEMA_INVALID), (400, "invalid_image")),
    ({}, dict(json={"image": "%%% not base64 %%%"}), (400, "invalid_image")),
    ({}, dict(data=png_declaring(30000, 30000), content_type="image/png"), (400, "too_many_pixels")),
    ({}, dict(data="CAT", content_type="image/png", query_string={"server": "remote"}), (400, "invalid_request")),
    ({}, dict(data="CAT", content_type="image/png", query_string={"server": "custom", "remote_url": "http://127.0.0.1/"}),
     (400, "remote_not_allowed")),
    ({"allow_custom_remote": True},
     dict(data="CAT", content_type="image/png", headers={"Origin": "https://evil.example"},
          query_string={"server": "custom", "remote_url": "http://127.0.0.1/predict"}), (403, "cross_origin_forbidden")),
    ({"max_upload_bytes": 1000}, dict(data=b"\0" * 5000, content_type="image/png"), (413, "image_too_large")),
    ({"max_request_bytes": 60_000}, dict(data=b"\0" * 70_000, content_type="image/png"),
     (413, "request_entity_too_large")),
    ({"max_images": 1}, dict(json={"images": ["aGVsbG8=", "aGVsbG8="]}), (413, "too_many_images")),
    ({}, dict(data=b"hello", content_type="text/plain", marker=SCHEMA_INVALID), (415, "unsupported_image_type")),
    ({}, dict(data=b"not an image at all", content_type="image/jpeg"), (415, "unsupported_image_type")),
    ({"random_weights": False, "offline": True}, dict(data="CAT", content_type="image/png",
                                                      query_string={"model": "NASNetMobile"}),
     (503, "model_unavailable")),
])
def test_each_error_keeps_to_the_description(make_app, cat_png, settings_, sent, expected):
    """Each error we can cause without a remote; "CAT" stands for a real photo."""
    sent = dict(sent)
    valid = sent.pop("marker", None) is not SCHEMA_INVALID
    if sent.get("data") == "CAT":
        sent["data"] = cat_png
    response = conforming(make_app(**settings_).test_client(), "POST", "/predict", valid_request=valid, **sent)
    assert error_code(response) == expected


@pytest.fixture
def fake_remote(stub_server) -> Callable[[int, str, dict[str, str]], str]:
    """A stand-in for a remote instance that answers one fixed status: the statuses a real
    remote gives only when it is busy, failing or rejecting, which we cannot cause on demand."""

    def start(status: int, body: str, headers: dict[str, str]) -> str:
        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body.encode())

        return stub_server(Handler).url + "predict"

    return start


def forward(client: FlaskClient, path: str, image: bytes, url: str) -> TestResponse:
    return conforming(client, "POST", path, data={"image": (image, "cat.png"), "server": "custom",
                                                  "remote_url": url})


@pytest.mark.parametrize("status, headers, expected", [
    (400, {}, (400, "remote_rejected")),
    (413, {}, (413, "remote_rejected")),
    (415, {}, (415, "remote_rejected")),
    (429, {"Retry-After": "5"}, (429, "remote_busy")),
    (503, {"Retry-After": "30"}, (503, "remote_unavailable")),
    (500, {}, (502, "remote_error")),
])
def test_each_forwarding_error_keeps_to_the_description(make_app, fake_remote, cat_png, status, headers, expected):
    """In the API's JSON and on the page's HTML form alike."""
    client = make_app(allow_custom_remote=True).test_client()
    url = fake_remote(status, SERVICE_ERROR, headers)
    answer, page = forward(client, "/predict", cat_png, url), forward(client, "/", cat_png, url)
    assert error_code(answer) == expected and page.status_code == expected[0]
    assert answer.headers.get("Retry-After") == page.headers.get("Retry-After") == headers.get("Retry-After")


def test_a_remote_that_is_down_or_silent_keeps_to_the_description(make_app, cat_png, silent_url):
    client = make_app(allow_custom_remote=True, remote_read_timeout=0.5).test_client()
    assert error_code(forward(client, "/predict", cat_png, f"http://127.0.0.1:{free_port()}/predict")) == (
        502, "remote_error")
    assert error_code(forward(client, "/predict", cat_png, silent_url)) == (504, "remote_timeout")


@pytest.fixture(scope="module")
def running_instance(serve_app, tmp_path_factory) -> str:
    """``python3 app.py`` as a stranger's fuzzer may meet it, but kept from sending anything
    off this machine: no remote configured, custom remotes refused (400 remote_not_allowed),
    downloads off (a model without weights is 503 model_unavailable; every model has random weights)."""
    return serve_app(CLASSIFIER_ALLOW_CUSTOM_REMOTE="0", CLASSIFIER_REMOTE_URL="", CLASSIFIER_OFFLINE="1",
                     KERAS_HOME=str(tmp_path_factory.mktemp("keras")))


def test_a_forwarded_answer_keeps_to_the_description(make_app, running_instance, cat_png):
    client = make_app(remote_url=running_instance + "/predict").test_client()
    for request in (dict(data={"image": (cat_png, "cat.png"), "server": "remote", "top_k": "4"}),
                    dict(json={"image": data_url(cat_png), "settings": {"server": "remote", "top_k": 4}})):
        response = conforming(client, "POST", "/predict", **request)
        assert response.status_code == 200 and response.json["server"] == "remote"
        assert response.json["server_url"] == running_instance + "/predict"


@pytest.mark.parametrize("settings_", [{}, {"random_weights": False, "offline": True}])
@pytest.mark.parametrize("method, path, sent, status", [
    ("GET", "/models", {}, 200),
    ("GET", "/healthz", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/", {}, 200),
    ("POST", "/", dict(data={"image": (b"not an image", "x.txt")}), 415),
])
def test_the_other_operations_keep_to_the_description(make_app, settings_, method, path, sent, status):
    """With every model ready (random weights), and offline with the Keras models unavailable."""
    response = conforming(make_app(**settings_).test_client(), method, path, **sent)
    assert response.status_code == status


def test_the_page_answering_a_form_keeps_to_the_description(client, cat_png):
    response = conforming(client, "POST", "/", data={"image": (cat_png, "cat.png"), "top_k": "2"})
    assert response.status_code == 200 and response.mimetype == "text/html"


DOCUMENT_REGISTRY = referencing.Registry().with_resource(
    "urn:openapi", referencing.jsonschema.DRAFT202012.create_resource(DOCUMENT))


def validator_for(pointer: str) -> jsonschema.Draft202012Validator:
    """Checks a value against the schema at ``pointer`` in the description (for answers that no
    operation describes, so openapi-core cannot check them)."""
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi#{pointer}"}, registry=DOCUMENT_REGISTRY)


def test_answers_outside_any_operation_have_the_documented_error_shape(make_app):
    """A wrong path, a wrong method, a bug: no operation describes these, the info text does."""
    app = make_app()

    @app.get("/explode")  # a route of the test's own: the app has no way to fail on purpose
    def explode() -> None:
        raise RuntimeError("secret internal detail")

    client = app.test_client()
    validator = validator_for("/components/schemas/Error")
    for response, expected in [(client.get("/nowhere"), (404, "not_found")),
                               (client.get("/predict"), (405, "method_not_allowed")),
                               (client.get("/explode"), (500, "internal_error"))]:
        validator.validate(response.json)
        assert error_code(response) == expected


@pytest.mark.parametrize("request_, response", [
    (dict(url="/models?" + "a" * 70_000), "UriTooLong"),
    (dict(url="/models", headers={"X-Long": "a" * 70_000}), "HeadersTooLarge"),
    (dict(url="/healthz", headers={f"X-Header-{n}": "1" for n in range(101)}), "HeadersTooLarge"),
])
def test_the_servers_own_refusals_keep_to_the_description(running_instance, request_, response):
    """python3 app.py's server refuses these before Flask sees them; it answered with
    http.server's HTML page, which the description does not allow."""
    answer = requests.get(running_instance + request_["url"], headers=request_.get("headers"), timeout=30)
    media = DOCUMENT["components"]["responses"][response]["content"]
    assert answer.headers["Content-Type"] in media
    validator_for(f"/components/responses/{response}/content/application~1json/schema").validate(answer.json())
    assert requests.get(running_instance + "/healthz", timeout=30).status_code == 200


OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 25), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.text(alphabet=" 0125+_\t\n\u0665TtRrUuEeFfAaLlSs", max_size=8),
    st.sampled_from(["local", "remote", "custom", " local", "1", "0", "True", "FALSE", " 5 ", "+5", "1_0", "\u0665"]),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=1), st.integers(), max_size=1))


@pytest.mark.parametrize("name", ["top_k", "server", "explain", "remote_url"])
@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(value=OPTION_VALUES)
@example(value=None)
@example(value="\n")  # a pattern's $ matches before a final newline: "" and "\n" differ here
def test_an_option_is_taken_exactly_when_the_description_allows_it(name, value):
    """What the description allows for an option (JSON, form or query text alike) is what the
    server takes, no more: a null, "+5" or "1_0" for top_k was taken while the description said
    otherwise. (``model`` and ``explain_class`` are any text here, refused later by name.)"""
    allowed = validator_for(f"/components/schemas/Options/properties/{name}").is_valid(value)
    try:
        Options.parse({name: value})
    except InvalidRequest:
        taken = False
    else:
        taken = True
    assert taken == allowed, (name, value)


# Schemathesis against a running instance.

STATUSES_SEEN: collections.Counter[tuple[str, int]] = collections.Counter()


@pytest.fixture(scope="module")
def fuzzed_schema(running_instance) -> Iterator[schemathesis.BaseSchema]:
    """The description as the running instance serves it, with bounded, reproducible generation."""
    document = requests.get(running_instance + "/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=running_instance, request_timeout=120)
    schema.config.generation.update(max_examples=30, deterministic=True)
    # A refusal of what the description refuses: its own defaults, and 413 (33 JSON `images`).
    refusals = schema.config.checks.negative_data_rejection
    refusals.expected_statuses = [*refusals.expected_statuses, "413"]
    yield schema
    # Proof the fuzzing reached the models, not only the refusals: real predictions from JSON
    # (the description's examples) and raw bodies (Schemathesis' own small image files). A
    # multipart prediction is rarer here (most generated fields refuse it); openapi-core checks one above.
    predicted = {media_type for (media_type, status) in STATUSES_SEEN if status == 200}
    assert "application/json" in predicted, STATUSES_SEEN
    assert predicted & {"application/octet-stream", "image/jpeg", "image/png", "image/gif", "image/webp"}, STATUSES_SEEN


def not_a_server_error_but_int8(ctx, response, case):
    """``not_a_server_error``, except the 503 model_unavailable of an int8 form: with random
    weights (this instance's) int8 forms are never checked, hence unavailable (test_int8.py)."""
    if response.status_code == 503 and _about_an_int8_form(response, case):
        return None
    return not_a_server_error(ctx, response, case)


def _about_an_int8_form(response, case) -> bool:
    """The JSON error names the model; the page's (HTML) answer is to a form or query naming it."""
    try:
        return response.json()["error"]["message"].split(":")[0].endswith("-int8")
    except ValueError:  # the page's HTML
        pass
    form = {**(case.query or {}), **(case.body if isinstance(case.body, dict) else {})}
    return str(form.get("model", "")).endswith("-int8")


CHECKS = [not_a_server_error_but_int8, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, unsupported_method, allow_header_conformance, negative_data_rejection]
fuzzed = schemathesis.pytest.from_fixture("fuzzed_schema")


@fuzzed.parametrize()
@settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_a_running_instance_keeps_to_its_description(case):
    """No 5xx, and no status, content type, header or body the description does not declare; a
    method an operation does not take is 405 with Allow, which lists the methods it declares;
    a request the description refuses (a null option, a wrong type) is refused, not answered.

    Schemathesis' other default checks are left out on purpose: "schema-valid request
    rejected" would fail on any random bytes sent as an image (no schema can say "a decodable
    photo"), and the security checks test what this API does not promise."""
    response = case.call_and_validate(checks=CHECKS)
    if case.path == "/predict":
        STATUSES_SEEN[(case.media_type, response.status_code)] += 1
