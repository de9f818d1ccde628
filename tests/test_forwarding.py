"""Forwarding for real: app instances on loopback ports, one sending images to another.

The instances run with random weights, so two processes hold different models: an answer
that matches the remote's own and not the forwarding instance's proves who answered.
"""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from classifier.remote import HOP_HEADER
from conftest import free_port

MODEL = "ResNet50"  # random ResNet50 weights give distinct, non-uniform scores


@pytest.fixture(scope="module")
def pair(serve_app) -> tuple[str, str]:
    """Two instances configured as each other's remote: a forwarding loop waiting to happen."""
    port_a, port_b = free_port(), free_port()
    env = {"CLASSIFIER_DEFAULT_MODEL": MODEL}
    url_b = serve_app(port=port_b, CLASSIFIER_REMOTE_URL=f"http://127.0.0.1:{port_a}/predict", **env)
    url_a = serve_app(port=port_a, CLASSIFIER_REMOTE_URL=f"{url_b}/predict", **env)
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


def test_remote_errors_come_back_as_502_with_the_remote_message(pair, cat_png):
    url_a, _ = pair
    response = predict(url_a, cat_png, server="remote", model="AlexNet")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "remote_error" and "Unknown model 'AlexNet'" in error["message"]


def test_custom_remote_url_is_allowed_for_python_app_py(pair, cat_png):
    url_a, url_b = pair
    response = predict(url_a, cat_png, server="custom", remote_url=f"{url_b}/predict")
    assert response.json()["server"] == "custom"
    assert scores(response) == scores(predict(url_b, cat_png))


# The failure cases need no second model: a test client forwards over real HTTP to
# listeners that misbehave on purpose (a remote we do not control).

@pytest.fixture
def silent_listener() -> Iterator[str]:
    """Accepts connections and never answers: a remote that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []
    threading.Thread(target=lambda: connections.append(server.accept()[0]), daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/predict"
    for connection in connections:
        connection.close()
    server.close()


@pytest.fixture
def fake_remote() -> Iterator[callable]:
    """A remote answering fixed status, headers and body, to test what we accept from it.

    With ``pause``, the body goes out one byte at a time, ``pause`` seconds apart.
    """
    servers = []

    def start(status: int, body: bytes, headers: dict[str, str] | None = None, pause: float = 0) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 1 if pause else max(len(body), 1)
                try:
                    for offset in range(0, len(body), step):
                        self.wfile.write(body[offset:offset + step])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:
                    pass  # we hung up on it: the point of the test

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/predict"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def forward_with(make_app, remote_url: str, cat_png: bytes, **settings: object):
    client = make_app(remote_url=remote_url, **settings).test_client()
    return client.post("/predict?server=remote", data=cat_png, content_type="image/png")


def test_remote_down_is_502(make_app, cat_png):
    response = forward_with(make_app, f"http://127.0.0.1:{free_port()}/predict", cat_png)
    assert response.status_code == 502 and response.json["error"]["code"] == "remote_error"
    assert "could not be reached" in response.json["error"]["message"]


def test_remote_timeout_is_504(make_app, silent_listener, cat_png):
    response = forward_with(make_app, silent_listener, cat_png, remote_read_timeout=1.0)
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


def test_remote_with_a_huge_answer_is_capped(make_app, fake_remote, cat_png):
    response = forward_with(make_app, fake_remote(200, b"[" + b"0," * 3_000_000 + b"0]"), cat_png)
    assert response.status_code == 502 and "exceeded" in response.json["error"]["message"]


def test_python_app_py_sends_no_version_banner(pair):
    server = requests.get(f"{pair[0]}/healthz", timeout=10).headers.get("Server", "")
    assert "Werkzeug" not in server and "Python" not in server
