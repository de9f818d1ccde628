"""Request ids and the access log: in-process with Flask's test client, then for real.

The real tests run two ``python3 app.py`` instances, one forwarding to the other, and uWSGI
(uwsgi.ini) behind NGINX (remote/nginx/), and read the log files those processes write.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from conftest import ROOT

from bench import stack
from bench.hostile import jpeg_with_corrupt_exif
from bench.polling import wait_until
from classifier import request_ids
from classifier.logs import JsonFormatter, PlainFormatter
from classifier.urls import public_url

MODEL = "MobileNetV2"
NEW_ID = re.compile(r"[0-9a-f]{32}")  # ours (uuid4 hex) and NGINX's $request_id look alike
# Every key of an access line in JSON, as docs/monitoring.md's "Logs and request ids" lists them.
ACCESS_FIELDS = ("time", "level", "logger", "message", "request_id", "method", "path", "status", "error",
                 "model", "server", "remote", "images", "load_ms", "decode_ms", "inference_ms", "total_ms",
                 "bytes_in")
# X-Request-ID values that must never be used or logged, as raw header bytes; each carries a
# marker no log line may contain.
HOSTILE_IDS = {
    "too long": b"a" * 129 + b"MARK-LONG",
    "control characters": b"id\x01MARK-CTRL\x7f",
    "non-ASCII": "idé-MARK-UTF8".encode(),
    "CR/LF (a folded header line)": b"id-MARK-FOLD\r\n injected: MARK-INJECTED",
    "space": b"id MARK-SPACE",
    "quote": b'id"MARK-QUOTE',
}
MARKERS = ("MARK-LONG", "MARK-CTRL", "MARK-UTF8", "MARK-FOLD", "MARK-INJECTED", "MARK-SPACE", "MARK-QUOTE")


def multipart(image: bytes, **fields: str) -> dict:
    return {"image": (io.BytesIO(image), "cat.png"), **fields}


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "classifier.access"]


def formatted(records: list[logging.LogRecord]) -> str:
    """Every record as both formats would write it."""
    return "\n".join(formatter.format(record) for record in records
                     for formatter in (PlainFormatter(), JsonFormatter()))


# --- the rule -----------------------------------------------------------------------------------

@pytest.mark.parametrize("incoming", ["0f8fad5b-d9cb-469f-a165-70867728950e", "a", "svc:web.1_2-3",
                                      "x" * request_ids.MAX_LENGTH])
def test_a_sane_id_is_kept(incoming):
    assert request_ids.request_id_for(incoming) == incoming


@pytest.mark.parametrize("incoming", [None, "", "x" * (request_ids.MAX_LENGTH + 1), "a\nb", "a\r\nb", "a\x00",
                                      "tab\there", "with space", "é", "a;b", 'a"b', "a/b", "a\u2028b"])
def test_anything_else_gets_a_new_id(incoming):
    chosen = request_ids.request_id_for(incoming)
    assert NEW_ID.fullmatch(chosen) and chosen != request_ids.request_id_for(incoming)


def test_nginx_applies_the_same_rule():
    """NGINX keeps or replaces a client's id exactly as the app would, so the app never
    replaces the id NGINX passes on, logs and sends back."""
    http_conf = (ROOT / "remote" / "nginx" / "classifier-http.conf").read_text()
    regex = re.search(r'map \$http_x_request_id \$classifier_request_id \{\s*"~(.*?)"', http_conf).group(1)
    assert regex == f"^{request_ids.ALLOWED.pattern}$"


@pytest.mark.parametrize(("url", "logged"), [
    ("https://user:secret@remote.example:8443/predict?token=abc#x", "https://remote.example:8443/predict"),
    ("http://[::1]:5000/predict?key=1", "http://[::1]:5000/predict"),
    ("http://host/predict", "http://host/predict"),
])
def test_a_remote_url_is_shown_without_credentials_or_query(url, logged):
    assert public_url(url) == logged


# --- in-process ---------------------------------------------------------------------------------

def test_the_id_is_in_the_header_the_error_and_every_log_line(make_app, caplog, cat_png):
    """A classifier/ module's line made during the request (a decoder warning) carries it too."""
    caplog.set_level(logging.INFO)
    client = make_app().test_client()
    headers = {"X-Request-ID": "client-7.a:b"}
    answer = client.post("/predict", data=multipart(jpeg_with_corrupt_exif(cat_png), model=MODEL), headers=headers)
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "client-7.a:b"
    warning, = [r for r in caplog.records if r.name == "classifier.imaging.images"]
    assert warning.request_id == "client-7.a:b"
    refused = client.post("/predict", data=multipart(cat_png, top_k="99"), headers=headers)
    assert refused.json["error"]["request_id"] == refused.headers["X-Request-ID"] == "client-7.a:b"
    assert [(r.request_id, r.fields["status"]) for r in access_records(caplog)] == [("client-7.a:b", 200),
                                                                                   ("client-7.a:b", 400)]


def test_one_access_line_per_request_with_the_documented_fields(make_app, caplog, cat_png):
    caplog.set_level(logging.INFO)
    client = make_app().test_client()
    body = multipart(cat_png, model=MODEL)
    answer = client.post("/predict", data=body)
    page_view, not_found = client.get("/models"), client.get("/nowhere?q=1")
    lines = [json.loads(JsonFormatter().format(record)) for record in access_records(caplog)]
    assert len(lines) == 3 and all(tuple(line) == ACCESS_FIELDS for line in lines)
    prediction, models, missing = lines
    timing = answer.json["timing_ms"]
    assert prediction | {"time": None, "total_ms": None} == {
        "time": None, "level": "INFO", "logger": "classifier.access", "message": prediction["message"],
        "request_id": answer.headers["X-Request-ID"], "method": "POST", "path": "/predict", "status": 200,
        "error": None, "model": MODEL, "server": "local", "remote": None, "images": 1,
        "load_ms": timing.get("load"), "decode_ms": timing["decode"], "inference_ms": timing["inference"],
        "total_ms": None, "bytes_in": int(answer.request.headers["Content-Length"]),
    }
    assert prediction["total_ms"] >= timing["total"]
    assert (models["path"], models["status"], models["images"], models["model"]) == ("/models", 200, 0, None)
    assert (missing["path"], missing["status"], missing["error"]) == ("/nowhere", 404, "not_found")
    plain = PlainFormatter().format(access_records(caplog)[0])
    assert f"[{answer.headers['X-Request-ID']}]: POST /predict 200 model={MODEL} server=local images=1" in plain
    assert page_view.headers["X-Request-ID"] != not_found.headers["X-Request-ID"]


@pytest.mark.parametrize("name", HOSTILE_IDS)
def test_a_hostile_id_is_replaced_and_never_logged(make_app, caplog, name):
    """The raw header reaches the app as a WSGI server would pass it on."""
    caplog.set_level(logging.INFO)
    raw = HOSTILE_IDS[name].decode("latin-1")  # how WSGI servers hand over header bytes
    response = make_app().test_client().get("/nowhere", environ_overrides={"HTTP_X_REQUEST_ID": raw})
    chosen = response.headers["X-Request-ID"]
    assert NEW_ID.fullmatch(chosen) and response.json["error"]["request_id"] == chosen
    assert [r.request_id for r in access_records(caplog)] == [chosen]
    text = caplog.text + formatted(caplog.records)
    assert not any(marker in text for marker in MARKERS)


def test_a_path_cannot_start_a_new_plain_log_line(make_app, caplog):
    caplog.set_level(logging.INFO)
    make_app().test_client().get("/a%0D%0A2026-01-01 INFO forged%1B%22")
    line = PlainFormatter().format(access_records(caplog)[0])
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert 'GET /a\\r\\n2026-01-01 INFO forged\\u001b\\" 404' in line


def test_browsers_on_other_origins_may_read_the_id(make_app):
    response = make_app().test_client().get("/models", headers={"Origin": "https://elsewhere.example"})
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


def test_an_image_and_its_data_url_are_never_logged(make_app, caplog, cat_png):
    caplog.set_level(logging.INFO)
    data_url = "data:image/png;base64," + base64.b64encode(cat_png).decode()
    client = make_app().test_client()
    assert client.post("/predict", json={"image": data_url, "model": MODEL}).status_code == 200
    assert client.post("/predict", json={"image": data_url[:5000]}).status_code == 400  # truncated: refused
    text = caplog.text + formatted(caplog.records)
    assert "data:" not in text and data_url[22:80] not in text and "\x89PNG" not in text


def test_a_remote_url_is_logged_and_answered_without_its_credentials(make_app, caplog, cat_png, silent_url):
    """An operator's CLASSIFIER_REMOTE_URL may carry a password or a key: neither the log
    nor a client's error message shows them."""
    caplog.set_level(logging.INFO)
    url = silent_url.replace("http://", "http://operator:s3cret@") + "?token=t0ken"
    app = make_app(remote_url=url, remote_connect_timeout=1, remote_read_timeout=1)
    response = app.test_client().post("/predict", data=multipart(cat_png, server="remote"))
    assert response.status_code == 504
    assert response.json["error"]["message"] == f"The remote server at {silent_url} did not answer in time."
    line, = access_records(caplog)
    assert (line.fields["remote"], line.fields["error"]) == (silent_url, "remote_timeout")
    assert not any(secret in formatted(caplog.records) for secret in ("s3cret", "operator", "t0ken"))


def test_a_custom_remote_url_is_logged_cut_short(make_app, caplog, cat_png, silent_url):
    """A custom remote's URL is a client's text, of any length: the line holds its start only."""
    caplog.set_level(logging.INFO)
    url = silent_url + "x" * 5000
    app = make_app(allow_custom_remote=True, remote_connect_timeout=1, remote_read_timeout=1)
    app.test_client().post("/predict", data=multipart(cat_png, server="custom", remote_url=url))
    line, = access_records(caplog)
    assert line.fields["remote"] == url[:200] + "..."


def test_a_failed_form_post_names_its_error_in_the_access_line(make_app, caplog):
    caplog.set_level(logging.INFO)
    make_app().test_client().post("/", data={"image": (io.BytesIO(b"not an image"), "x.jpg")})
    line, = access_records(caplog)
    assert (line.fields["status"], line.fields["error"]) == (415, "unsupported_image_type")


def test_an_unexpected_error_is_logged_and_answered_with_the_id(make_app, caplog):
    """A route that fails on purpose stands in for a bug (there is no known one to trigger)."""
    caplog.set_level(logging.INFO)
    app = make_app()

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    response = app.test_client().get("/fails", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.json["error"] == {"code": "internal_error", "request_id": "bug-1",
                                      "message": "The server failed unexpectedly; the error has been logged."}
    failure, access = [r for r in caplog.records if r.name in ("classifier.app", "classifier.access")]
    assert failure.request_id == access.request_id == "bug-1" and failure.exc_info
    assert "RuntimeError: a bug" in json.loads(JsonFormatter().format(failure))["exception"]
    assert access.fields["error"] == "internal_error"


# --- two real instances, one forwarding to the other --------------------------------------------

@pytest.fixture(scope="module")
def pair(serve_app, tmp_path_factory, cat_png) -> tuple[str, Path, str, Path]:
    """A (JSON logs) forwards to B (plain logs): (url_a, log_a, url_b, log_b)."""
    folder = tmp_path_factory.mktemp("pair")
    log_a, log_b = folder / "a.log", folder / "b.log"
    url_b = serve_app(log=log_b, CLASSIFIER_LOG_FORMAT="plain", CLASSIFIER_DEFAULT_MODEL=MODEL)
    url_a = serve_app(log=log_a, CLASSIFIER_LOG_FORMAT="json", CLASSIFIER_DEFAULT_MODEL=MODEL,
                      CLASSIFIER_REMOTE_URL=f"{url_b}/predict")
    assert requests.post(f"{url_b}/predict", files={"image": cat_png}, timeout=120).status_code == 200  # warm
    return url_a, log_a, url_b, log_b


def json_lines(log: Path) -> list[dict]:
    """The log's JSON lines (others are TensorFlow's own, written to stderr directly)."""
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def access_lines(log: Path, request_id: str) -> list[dict]:
    return [line for line in json_lines(log) if line.get("request_id") == request_id
            and line["logger"] == "classifier.access"]


@pytest.mark.parametrize("sent", ["trace-42.abc:1", None])
def test_a_forwarded_prediction_carries_one_id_in_both_logs_and_the_answer(pair, cat_png, sent):
    url_a, log_a, url_b, log_b = pair
    response = requests.post(f"{url_a}/predict", files={"image": cat_png}, data={"server": "remote"},
                             headers={"X-Request-ID": sent} if sent else {}, timeout=120)
    assert response.status_code == 200 and response.json()["server"] == "remote"
    request_id = response.headers["X-Request-ID"]
    assert request_id == sent if sent else NEW_ID.fullmatch(request_id)
    line, = access_lines(log_a, request_id)
    assert (line["path"], line["status"], line["server"], line["remote"]) == ("/predict", 200, "remote",
                                                                              f"{url_b}/predict")
    assert (line["model"], line["images"], line["bytes_in"] > len(cat_png)) == (MODEL, 1, True)
    on_b = [text for text in log_b.read_text().splitlines() if f"[{request_id}]" in text]
    assert len(on_b) == 1 and f"POST /predict 200 model={MODEL} server=local images=1" in on_b[0], on_b


def raw_request(url: str, header: bytes) -> http.client.HTTPResponse:
    """GET /nowhere with ``X-Request-ID: header`` sent as raw bytes, as no HTTP library would."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Request-ID: " + header
                 + b"\r\n\r\n")
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    sock.close()
    return response


def test_hostile_ids_over_real_http_are_replaced_and_never_logged(pair):
    url_a, log_a, _, _ = pair
    for name, header in HOSTILE_IDS.items():
        response = raw_request(url_a, header)
        chosen = response.getheader("X-Request-ID")
        assert response.status == 404 and NEW_ID.fullmatch(chosen), name
        assert len(access_lines(log_a, chosen)) == 1, name
    logged = log_a.read_bytes()
    assert not [marker for marker in MARKERS if marker.encode() in logged]


def test_the_development_server_writes_one_line_per_request(pair):
    """Werkzeug's own request line is replaced by the app's access line, not doubled."""
    _, _, url_b, log_b = pair
    request_id = requests.get(f"{url_b}/healthz", timeout=10).headers["X-Request-ID"]
    lines = [text for text in log_b.read_text().splitlines() if "/healthz" in text]
    assert [text for text in lines if request_id in text] == lines[-1:]
    assert not any('"GET /healthz HTTP/1.1"' in text for text in lines)  # Werkzeug's format


# --- uWSGI behind NGINX: conftest's site (uwsgi.ini, so JSON logs, behind classifier.conf) ------

SITE_MODEL = "EfficientNetLite0"  # the site's default model

def nginx_line(nginx: stack.Nginx, request_id: str) -> str:
    """NGINX's access line for the request; NGINX writes it just after answering, so wait (bounded)."""
    lines = wait_until(lambda: [line for line in nginx.access_log.read_text().splitlines()
                                if f"request_id={request_id}" in line], 10, interval=0.05)
    assert lines, f"no NGINX access line for {request_id}"
    return lines[0]


def test_without_a_client_id_nginx_gives_its_own_to_the_app_and_both_log_it(site, cat_png):
    nginx, app = site.nginx, site.uwsgi
    response = requests.post(f"{nginx.url}/predict", files={"image": cat_png}, timeout=120)
    assert response.status_code == 200
    assert len(response.raw.headers.getlist("X-Request-ID")) == 1  # NGINX's copy; the app's is hidden
    request_id = response.headers["X-Request-ID"]
    assert NEW_ID.fullmatch(request_id)
    line, = access_lines(app.log, request_id)  # every JSON line of the log parses, or this fails
    assert tuple(line) == ACCESS_FIELDS
    assert (line["method"], line["path"], line["status"], line["model"], line["server"], line["images"]) == (
        "POST", "/predict", 200, SITE_MODEL, "local", 1)
    assert all(isinstance(line[f"{name}_ms"], float) for name in ("decode", "inference", "total"))
    assert '"POST /predict HTTP/1.1" 200' in nginx_line(nginx, request_id)


@pytest.mark.parametrize(("sent", "kept"), [("client.id:9-x_y", True), ("a" * 129, False), ("a b", False),
                                            ('a"b', False)])
def test_nginx_keeps_a_sane_client_id_and_replaces_any_other(site, sent, kept):
    nginx, app = site.nginx, site.uwsgi
    logs = (app.log, nginx.access_log)
    since = [log.stat().st_size for log in logs]  # the site's logs hold the other tests' requests too
    response = requests.get(f"{nginx.url}/models", headers={"X-Request-ID": sent}, timeout=30)
    request_id = response.headers["X-Request-ID"]
    assert request_id == sent if kept else NEW_ID.fullmatch(request_id)
    assert len(access_lines(app.log, request_id)) == 1
    nginx_line(nginx, request_id)
    if not kept:
        assert not any(sent.encode() in log.read_bytes()[start:] for log, start in zip(logs, since))


def test_nginx_errors_carry_the_id_in_the_body_and_the_header(site):
    nginx = site.nginx
    too_long = requests.get(f"{nginx.url}/models?q=" + "a" * 9000, timeout=30)  # NGINX's own 414
    missing = requests.get(f"{nginx.url}/nowhere", headers={"X-Request-ID": "mine"}, timeout=30)  # the app's 404
    for response, status in ((too_long, 414), (missing, 404)):
        assert response.status_code == status
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]
    assert missing.headers["X-Request-ID"] == "mine"


# --- the documentation --------------------------------------------------------------------------

def test_the_docs_name_every_field_of_the_access_line():
    page = (ROOT / "docs" / "monitoring.md").read_text()
    section = page.split("## Logs and request ids", 1)[1].split("\n## ", 1)[0]
    assert [name for name in ACCESS_FIELDS if f"`{name}`" not in section] == []
