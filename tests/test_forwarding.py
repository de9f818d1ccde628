"""Forwarding for real: app instances on loopback ports, one sending images to another.

The instances run with random weights, so two processes hold different models: an answer
that matches the remote's own and not the forwarding instance's proves who answered.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import trustme
from conftest import free_port

from bench import hostile
from bench.servers import GOOD_PREDICTION, answering_json, hostile_handler
from classifier.forwarding.answers import MAX_RELAYED_MESSAGE_CHARS
from classifier.forwarding.client import HOP_HEADER, MAX_RETRY_AFTER_SECONDS
from classifier.runtimes.explain import DATA_URL_PREFIX, heatmap_png

MODEL = "ResNet50"  # random ResNet50 weights give distinct, non-uniform scores


@pytest.fixture(scope="module")
def pair(serve_app, cat_png) -> tuple[str, str]:
    """Two instances configured as each other's remote: a forwarding loop waiting to happen.

    Each answers once locally first, so a forward never waits for the remote's model to load
    (on a busy machine that can take longer than the forwarding read timeout).
    """
    port_a, port_b = free_port(), free_port()
    env = {"CLASSIFIER_DEFAULT_MODEL": MODEL}
    url_b = serve_app(port=port_b, CLASSIFIER_REMOTE_URL=f"http://127.0.0.1:{port_a}/predict", **env)
    url_a = serve_app(port=port_a, CLASSIFIER_REMOTE_URL=f"{url_b}/predict", **env)
    for url in (url_a, url_b):
        scores(predict(url, cat_png))
    return url_a, url_b


def predict(url: str, image: bytes, headers: dict | None = None, **fields: str) -> requests.Response:
    return requests.post(f"{url}/predict", files={"image": ("cat.png", image)}, data=fields,
                         headers=headers or {}, timeout=120)


def scores(response: requests.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(p["class_id"], p["score"]) for p in response.json()["predictions"]]


def test_remote_answers_with_its_own_model(pair, cat_png):
    url_a, url_b = pair
    forwarded = predict(url_a, cat_png, server="remote", top_k="5")
    body = forwarded.json()
    assert body["server"] == "remote" and body["server_url"] == f"{url_b}/predict"
    assert body["model"] == MODEL and body["weights"] == "random"
    assert set(body["timing_ms"]) >= {"inference", "total"}
    assert scores(forwarded) == scores(predict(url_b, cat_png, top_k="5"))
    assert scores(forwarded) != scores(predict(url_a, cat_png, top_k="5"))
    assert len(body["result"]) == 5


def test_json_and_raw_forms_are_forwarded(pair, cat_png):
    url_a, url_b = pair
    expected = scores(predict(url_b, cat_png, top_k="2"))
    as_json = requests.post(f"{url_a}/predict", timeout=120, json={
        "image": base64.b64encode(cat_png).decode(), "settings": {"server": "remote", "top_k": 2}})
    raw = requests.post(f"{url_a}/predict?server=remote&top_k=2", data=cat_png,
                        headers={"Content-Type": "image/png"}, timeout=120)
    assert scores(as_json) == scores(raw) == expected


def test_hop_header_stops_forwarding_loops(pair, cat_png):
    """B's remote is A and A's is B; a forwarded request is always answered where it lands."""
    _, url_b = pair
    answered = predict(url_b, cat_png, headers={HOP_HEADER: "1"}, server="remote")
    assert answered.json()["server"] == "local"
    assert scores(answered) == scores(predict(url_b, cat_png))


def test_a_request_the_remote_refuses_keeps_its_status_and_message(pair, cat_png):
    """The caller's request is at fault (an unknown model), not the remote: 400, not 502."""
    url_a, _ = pair
    response = predict(url_a, cat_png, server="remote", model="AlexNet")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "remote_rejected" and "Unknown model 'AlexNet'" in error["message"]


def test_a_url_without_predict_gets_a_hint(pair, fake_remote, cat_png):
    """The remote's home page answers a POST with HTML, another server with 404: say which
    URL was probably meant."""
    url_a, url_b = pair
    not_found = fake_remote(404, b"Not Found").removesuffix("/predict")
    for given, meant in ((url_b, url_b), (f"{url_b}/", url_b), (f"{not_found}/api", f"{not_found}/api")):
        response = predict(url_a, cat_png, server="custom", remote_url=given)
        assert response.status_code == 502
        assert f"Did you mean {meant}/predict?" in response.json()["error"]["message"]


def test_custom_remote_url_is_allowed_for_python_app_py(pair, cat_png):
    url_a, url_b = pair
    response = predict(url_a, cat_png, server="custom", remote_url=f"{url_b}/predict")
    assert response.json()["server"] == "custom"
    assert scores(response) == scores(predict(url_b, cat_png))


# The failure cases need no second model: a test client forwards over real HTTP to
# listeners that misbehave on purpose (a remote we do not control).

def forward_with(make_app, remote_url: str, cat_png: bytes, **settings: object):
    client = make_app(remote_url=remote_url, **settings).test_client()
    return client.post("/predict?server=remote", data=cat_png, content_type="image/png")


def test_remote_down_is_502(make_app, cat_png):
    response = forward_with(make_app, f"http://127.0.0.1:{free_port()}/predict", cat_png)
    assert response.status_code == 502 and response.json["error"]["code"] == "remote_error"
    assert "could not be reached" in response.json["error"]["message"]


def test_remote_timeout_is_504(make_app, silent_url, cat_png):
    response = forward_with(make_app, silent_url, cat_png, remote_read_timeout=1.0)
    assert response.status_code == 504 and response.json["error"]["code"] == "remote_timeout"


@pytest.mark.parametrize("status, body", [
    (200, b"<html>not json</html>"),
    (200, b'{"model": "X", "predictions": "nope"}'),
    (200, b'{"model": "X", "weights": "imagenet", "predictions": [{"label": 1}]}'),
    (500, b"Internal Server Error"),
])
def test_remote_answers_we_cannot_relay_are_502(make_app, fake_remote, cat_png, status, body):
    response = forward_with(make_app, fake_remote(status, body), cat_png)
    assert response.status_code == 502 and response.json["error"]["code"] == "remote_error"


def test_redirects_are_not_followed(make_app, fake_remote, cat_png):
    url = fake_remote(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
    response = forward_with(make_app, url, cat_png)
    assert response.status_code == 502 and "302" in response.json["error"]["message"]


def test_no_remote_configured(make_app, cat_png):
    response = make_app().test_client().post("/predict?server=remote", data=cat_png, content_type="image/png")
    assert response.status_code == 400 and "CLASSIFIER_REMOTE_URL" in response.json["error"]["message"]


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://2852039166/",           # 169.254.169.254 as one decimal number
    "http://[::ffff:169.254.169.254]/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/x",
    "http://user:secret@127.0.0.1/predict",
    "http:///nohost",
])
def test_custom_urls_that_are_refused(make_app, cat_png, url):
    client = make_app(allow_custom_remote=True).test_client()
    response = client.post("/predict", data={"image": (io.BytesIO(cat_png), "c.png"),
                                             "server": "custom", "remote_url": url})
    assert response.status_code == 400 and response.json["error"]["code"] == "remote_not_allowed"


def test_custom_urls_refused_when_disabled(make_app, fake_remote, cat_png):
    client = make_app(allow_custom_remote=False).test_client()
    response = client.post("/predict", query_string={"server": "custom", "remote_url": fake_remote(200, b"{}")},
                           data=cat_png, content_type="image/png")
    assert response.status_code == 400 and "disabled" in response.json["error"]["message"]


def test_remote_that_trickles_forever_is_cut_off_in_time(make_app, fake_remote, cat_png):
    url = fake_remote(200, b"x" * 10_000, pause=0.1)  # would take 1000 s
    started = time.monotonic()
    response = forward_with(make_app, url, cat_png, remote_connect_timeout=1.0, remote_read_timeout=1.0)
    assert response.status_code == 504
    assert time.monotonic() - started < 5


def test_remote_that_drips_its_headers_is_cut_off_at_the_deadline(make_app, stub_server, cat_png):
    """A status line, then one header a byte every 0.5 s, for ever: each read gets a byte well
    within the read timeout, so only the deadline for the whole exchange (connect and read
    timeouts together) ends it, with the documented 504. The 60 s bound only keeps a broken
    build from hanging the suite; the remote would never finish by itself."""
    url = stub_server(hostile_handler("slow headers")).url + "predict"
    answers = []
    forwarding = threading.Thread(daemon=True, target=lambda: answers.append(forward_with(
        make_app, url, cat_png, remote_connect_timeout=1.0, remote_read_timeout=1.0)))
    forwarding.start()
    forwarding.join(timeout=60)
    assert answers, "forwarding still waited for the remote's headers"
    assert answers[0].status_code == 504 and answers[0].json["error"]["code"] == "remote_timeout"


def test_remote_with_a_huge_answer_is_capped(make_app, fake_remote, cat_png):
    response = forward_with(make_app, fake_remote(200, b"[" + b"0," * 3_000_000 + b"0]"), cat_png)
    assert response.status_code == 502 and "exceeded" in response.json["error"]["message"]


def test_python_app_py_sends_no_version_banner(pair):
    server = requests.get(f"{pair[0]}/healthz", timeout=10).headers.get("Server", "")
    assert "Werkzeug" not in server and "Python" not in server


# What a remote says goes back to the caller only in a shape and size we chose, and with a
# status that means the same to the caller. These run against ``python app.py`` (the
# instance that allows custom URLs), forwarding to stub remotes on loopback ports.

def post_form(url: str, image: bytes, headers: dict | None = None, **fields: str) -> requests.Response:
    """The upload page's form as a browser without JavaScript sends it (to ``/``)."""
    return requests.post(f"{url}/", files={"image": ("cat.png", image)}, data=fields,
                         headers=headers or {}, timeout=120)


ANSWER = ('{"model": "M", "weights": "imagenet", "predictions": [{"label": "tabby", "class_id": "n02123045", '
          '"score": %s}], "timing_ms": {"inference": %s}}')
SERVICE_ERROR = json.dumps({"error": {"code": "model_unavailable", "message": "Weights are being downloaded."}})


@pytest.mark.parametrize("status, retry_after, expected", [
    (503, "30", (503, "remote_unavailable", "30")),
    (503, "86400", (503, "remote_unavailable", str(MAX_RETRY_AFTER_SECONDS))),
    (503, "Wed, 21 Oct 2037 07:28:00 GMT", (503, "remote_unavailable", None)),
    (429, "5", (429, "remote_busy", "5")),
    (400, None, (400, "remote_rejected", None)),
    (413, None, (413, "remote_rejected", None)),
    (415, None, (415, "remote_rejected", None)),
    (500, "30", (502, "remote_error", None)),
    (504, None, (502, "remote_error", None)),
    (401, None, (502, "remote_error", None)),
])
def test_the_remote_status_is_kept_where_it_means_the_same(pair, fake_remote, cat_png, status, retry_after, expected):
    url = fake_remote(status, SERVICE_ERROR.encode(), {"Retry-After": retry_after} if retry_after else {})
    for response in (predict(pair[0], cat_png, server="custom", remote_url=url),
                     post_form(pair[0], cat_png, server="custom", remote_url=url)):
        assert response.status_code == expected[0]
        assert response.headers.get("Retry-After") == expected[2]
        assert "Weights are being downloaded." in response.text
    assert response.headers["Content-Type"].startswith("text/html")
    assert predict(pair[0], cat_png, server="custom", remote_url=url).json()["error"]["code"] == expected[1]


@pytest.mark.parametrize("body", [
    '{"error": {"message": "internal secret"}}',
    '{"error": {"code": "x", "message": "internal secret", "detail": 1}}',
    '{"error": {"code": "x", "message": "internal secret"}, "debug": true}',
    '{"error": {"code": 1, "message": "internal secret"}}',
    '{"message": "internal secret"}',
    "internal secret",
])
def test_only_this_services_error_shape_is_relayed(pair, fake_remote, cat_png, body):
    """An internal service a URL was pointed at must not have its answers read back."""
    url = fake_remote(500, body.encode())
    response = predict(pair[0], cat_png, server="custom", remote_url=url)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == f"The remote server at {url} answered 500."


def test_a_relayed_message_is_bounded(pair, fake_remote, cat_png):
    url = fake_remote(500, json.dumps({"error": {"code": "x", "message": "A" * 10_000}}).encode())
    message = predict(pair[0], cat_png, server="custom", remote_url=url).json()["error"]["message"]
    assert "A" * MAX_RELAYED_MESSAGE_CHARS in message and "A" * (MAX_RELAYED_MESSAGE_CHARS + 1) not in message


def strict_json(response: requests.Response) -> dict:
    """Parse as JSON proper: Python's ``json`` would accept ``NaN``, browsers do not."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in the answer")

    return json.loads(response.text, parse_constant=refuse)


def test_a_well_formed_remote_answer_is_relayed(pair, fake_remote, cat_png):
    """The stub's answer below is valid, so the refusals that follow are about the numbers."""
    url = fake_remote(200, (ANSWER % ("0.5", "1")).encode())
    document = strict_json(predict(pair[0], cat_png, server="custom", remote_url=url))
    assert document["predictions"][0]["score"] == 0.5 and document["timing_ms"]["inference"] == 1
    assert post_form(pair[0], cat_png, server="custom", remote_url=url).status_code == 200


@pytest.mark.parametrize("score, timing", [
    ("NaN", "1"), ("Infinity", "1"), ("-Infinity", "1"), ("1e999", "1"), ('"inf"', "1"), ('"0.5"', "1"),
    ("1.5", "1"), ("-0.1", "1"), ("true", "1"),
    ("0.5", "NaN"), ("0.5", "Infinity"), ("0.5", '"inf"'), ("0.5", '"nan"'), ("0.5", "1e999"), ("0.5", "-1"),
])
def test_numbers_that_are_not_finite_scores_and_times_are_refused(pair, fake_remote, cat_png, score, timing):
    url = fake_remote(200, (ANSWER % (score, timing)).encode())
    api = predict(pair[0], cat_png, server="custom", remote_url=url)
    assert api.status_code == 502 and strict_json(api)["error"]["code"] == "remote_error"
    form = post_form(pair[0], cat_png, server="custom", remote_url=url)
    assert form.status_code == 502 and "The other server could not classify the image." in form.text


# A page from another origin may call /predict (CORS), but must not pick the URL: the user's
# ``python app.py`` would become that page's proxy into the user's network.

@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.2:{port}", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://192.168.1.20:8000"},                 # a page on the LAN
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},     # a file:// page, a sandboxed frame
    {"Origin": "http://localhost:{port}"},                  # same port, another host name
    {"Origin": "https://127.0.0.1:{port}"},                 # another scheme
    {"Sec-Fetch-Site": "cross-site"},                       # no Origin at all
    {"Sec-Fetch-Site": "same-site"},
    # DNS rebinding: the attacker's name now resolves to 127.0.0.1, so the page looks same-origin.
    {"Host": "attacker.example:{port}", "Origin": "http://attacker.example:{port}", "Sec-Fetch-Site": "same-origin"},
])
def test_another_origin_may_not_choose_the_remote(pair, fake_remote, cat_png, headers):
    port = urlsplit(pair[0]).port
    headers = {name: value.format(port=port) for name, value in headers.items()}
    url = fake_remote(200, (ANSWER % ("0.5", "1")).encode())
    api = predict(pair[0], cat_png, headers=headers, server="custom", remote_url=url)
    assert api.status_code == 403 and api.json()["error"]["code"] == "cross_origin_forbidden"
    form = post_form(pair[0], cat_png, headers=headers, server="custom", remote_url=url)
    assert form.status_code == 403 and "only available from this server" in form.text
    assert fake_remote.received == []


def test_the_own_page_and_programs_may_choose_the_remote(pair, fake_remote, cat_png):
    url = fake_remote(200, (ANSWER % ("0.5", "1")).encode())
    port = urlsplit(pair[0]).port
    for headers in ({"Origin": pair[0], "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {},
                    {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
                    {"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port}"}):
        assert predict(pair[0], cat_png, headers=headers, server="custom", remote_url=url).status_code == 200
        assert post_form(pair[0], cat_png, headers=headers, server="custom", remote_url=url).status_code == 200
    assert len(fake_remote.received) == 10


def test_another_origin_may_still_classify_here_and_on_the_configured_remote(pair, cat_png):
    for server in ("local", "remote"):
        response = predict(pair[0], cat_png, headers={"Origin": "http://127.0.0.2:8000"}, server=server)
        assert response.status_code == 200 and response.json()["server"] == server
        assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.2:8000"


# A hostile remote, through a real server: what it answers costs this server no more than
# this service's own answer would, is relayed no larger, and reaches the log only as a
# registered model's name.

@pytest.fixture(scope="module")
def front(serve_app, tmp_path_factory) -> tuple[str, Path]:
    """``python3 app.py`` (custom remotes allowed) and its JSON log; it only forwards, so warms up no model."""
    log = tmp_path_factory.mktemp("front") / "app.log"
    return serve_app(log=log, CLASSIFIER_WARMUP="0", CLASSIFIER_LOG_FORMAT="json"), log


def answer_with(heatmap: bytes = b"", side: int = 20, **changes: object) -> bytes:
    """A remote's answer to one image: well formed, with an explanation whose heatmap is
    ``heatmap`` (a crop of ``side`` pixels; by default a good map), and ``changes`` over it."""
    heatmap = heatmap or heatmap_png(np.eye(7), (side, side))
    explanation = {"class_id": "n02123045", "label": "tabby", "crop": [0, 0, side, side], "grid": np.eye(7).tolist(),
                   "heatmap": DATA_URL_PREFIX + base64.b64encode(heatmap).decode(), "summary": "Heat in the centre"}
    document = {"model": "MobileNetV2", "weights": "imagenet", "timing_ms": {"total": 1},
                "predictions": [{"label": "tabby", "class_id": "n02123045", "score": 0.5}],
                "explanation": explanation, **changes}
    return json.dumps(document).encode()


@pytest.mark.parametrize("heatmap, side", [
    (hostile.png_with_corrupt_pixels(heatmap_png(np.eye(7), (20, 20))), 20),
    (hostile.png_with_empty_chunks(60_000), 64),  # 720 KB; Pillow once read each chunk in Python
], ids=["corrupt pixels", "60,000 empty chunks"])
def test_a_heatmap_that_would_not_decode_or_costs_more_than_ours_is_refused(front, fake_remote, cat_png, heatmap, side):
    """The page without JavaScript draws the heatmap into the photo: a corrupt one gave a 500;
    one of many chunks cost 0.2 s of CPU each (7 s for 32 images)."""
    url = fake_remote(200, answer_with(heatmap, side))
    api = predict(front[0], cat_png, server="custom", remote_url=url, explain="1")
    assert api.status_code == 502 and "unexpected format" in api.json()["error"]["message"]
    page = post_form(front[0], cat_png, server="custom", remote_url=url, explain="1")
    assert page.status_code == 502 and "The other server could not classify the image." in page.text


@pytest.mark.parametrize("changes", [
    {"model": "M" * 600_000},
    {"weights": "w" * 600_000},
    {"predictions": [{"label": "x" * 600_000, "class_id": "n02123045", "score": 0.5}]},
    {"predictions": [{"label": "tabby", "class_id": "n" * 600_000, "score": 0.5}]},
    {"timing_ms": {"t" * 600_000: 1}},
    {"timing_ms": {f"t{i}": 1 for i in range(17)}},
], ids=["model", "weights", "label", "class_id", "timing name", "17 timings"])
def test_remote_text_longer_than_this_service_sends_is_refused(front, fake_remote, cat_png, changes):
    """A 600 KB label came back three times (label, display label, the original page's
    shape), and to the page in full."""
    url = fake_remote(200, answer_with(**changes))
    api = predict(front[0], cat_png, server="custom", remote_url=url)
    assert api.status_code == 502 and len(api.content) < 1000
    page = post_form(front[0], cat_png, server="custom", remote_url=url)
    assert page.status_code == 502 and "The other server could not classify the image." in page.text


def test_the_access_line_names_only_registered_models(front, fake_remote, cat_png):
    """The answer relays the remote's model as it named it; the log takes no remote's text."""
    for model, logged in (("MobileNetV2", "MobileNetV2"), ("Evil\x1b]0;owned\x07", None)):
        request_id = f"remote-model-{logged}"
        url = fake_remote(200, answer_with(model=model))
        response = predict(front[0], cat_png, headers={"X-Request-ID": request_id}, server="custom", remote_url=url)
        assert response.status_code == 200 and response.json()["model"] == model
        (line,) = [json.loads(line) for line in front[1].read_text().splitlines()
                   if f'"request_id": "{request_id}"' in line and '"classifier.access"' in line]
        assert line["model"] == logged and "owned" not in line["message"]


# --- forwarding to an https remote -------------------------------------------------------------

@pytest.fixture
def https_remote() -> Iterator[tuple[str, Path]]:
    """A remote instance's stand-in on https, its certificate from a test CA (``trustme``): its
    /predict URL, and that CA's file."""
    ca = trustme.CA()
    answer = {"model": "MobileNetV2", "weights": "imagenet", "predictions": [GOOD_PREDICTION], "timing_ms": {}}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), answering_json(json.dumps(answer).encode()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bundle = Path(tempfile.mkdtemp()) / "ca.pem"
    ca.cert_pem.write_to_path(bundle)
    yield f"https://127.0.0.1:{server.server_port}/predict", bundle
    server.shutdown()
    server.server_close()


def test_forwarding_to_https_trusts_the_ca_bundle_setting(make_app, https_remote, cat_png):
    url, bundle = https_remote
    answer = make_app(remote_url=url, remote_ca_bundle=bundle).test_client().post(
        "/predict?server=remote", data=cat_png, content_type="image/png")
    assert answer.status_code == 200, answer.json
    assert answer.json["predictions"][0]["label"] == "tabby"


def test_forwarding_to_an_unverifiable_https_remote_is_a_clear_502(make_app, https_remote, cat_png):
    """Without the setting, the test CA is not among the system's: refused, and said why."""
    url, _ = https_remote
    answer = make_app(remote_url=url).test_client().post("/predict?server=remote", data=cat_png,
                                                         content_type="image/png")
    assert answer.status_code == 502 and answer.json["error"]["code"] == "remote_error"
    message = answer.json["error"]["message"]
    assert "certificate that could not be verified" in message and "CLASSIFIER_REMOTE_CA_BUNDLE" in message
    assert "unable to get local issuer certificate" in message
