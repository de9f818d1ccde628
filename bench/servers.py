"""Loopback stand-ins for hosts out of our control (a remote service, Keras' weights host).

Plain library code with no pytest in it, so ``tests/ssrf_probe.py`` (a process of its own
inside a network namespace) and the benchmarks use the same servers as the tests; conftest
wraps them in fixtures.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that writes no access log, which would only clutter test output."""

    def log_message(self, *args: object) -> None:
        pass


def answering_json(body: bytes) -> type[QuietHandler]:
    """A handler that reads any POST and answers 200 with the JSON ``body``: a remote instance
    whose answer a test or a benchmark chose."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class StubServer:
    """``handler`` served on 127.0.0.1 at a free port from a daemon thread until ``close()``."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True, name=handler.__name__).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# A remote that breaks the contract of /predict, for the CLI's --remote (tests/test_cli.py,
# bench/hostile_cli.py): each answer is one that forwarding refuses.
GOOD_PREDICTION = {"label": "tabby", "class_id": "n02123045", "score": 0.5}
GOOD_EXPLANATION = {"class_id": "n02123045", "label": "tabby", "crop": [0, 0, 2, 2], "grid": [[0.5]],
                    "summary": "fine"}


def answer_of_two(**changes: object) -> dict[str, object]:
    """An answer to two images in the API's shape, with ``changes`` made to it and to each result."""
    item = {"predictions": [GOOD_PREDICTION], "timing_ms": {}, "explanation": GOOD_EXPLANATION}
    item.update(changes.pop("item", {}))
    return {"model": "MobileNetV2", "weights": "imagenet", "server": "local", "results": [item, item], **changes}


def without_weights() -> dict[str, object]:
    answer = answer_of_two()
    del answer["weights"]
    return answer


HOSTILE_ANSWERS = {
    "endless answer": None,  # sent as fast as the client reads, for ever
    "slow drip": None,  # a byte every 0.5 s, for ever
    "slow headers": None,  # a status line, then a header a byte every 0.5 s, for ever
    "crop abc": answer_of_two(item={"explanation": {**GOOD_EXPLANATION, "crop": "abc",
                                                    "heatmap": "data:image/png;base64,"}}),
    "heatmap not a PNG": answer_of_two(item={"explanation": {**GOOD_EXPLANATION,
                                                             "heatmap": "data:image/png;base64,aGVsbG8="}}),
    "no weights": without_weights(),
}


# An answer forwarding accepts whose text would drive a terminal (retitle it, set the
# clipboard through OSC 52, clear the screen, CSI in one byte) or a spreadsheet (formulas).
ESCAPES = "\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b1m"
TEXT_THAT_RUNS = {"model": "MobileNetV2" + ESCAPES, "weights": "imagenet" + ESCAPES, "server": "local", "results": [
    {"predictions": [{"label": '=HYPERLINK("http://example.com","tabby")' + ESCAPES, "class_id": "n02123045",
                      "score": 0.5}], "timing_ms": {}},
    {"error": {"code": "invalid_image", "message": "@SUM(1)" + ESCAPES}}]}


def hostile_handler(kind: str) -> type[QuietHandler]:
    """A /predict that answers every request with ``HOSTILE_ANSWERS[kind]``, or ``TEXT_THAT_RUNS``."""

    class Hostile(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if kind != "slow headers":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
            try:
                if kind in ("slow drip", "slow headers"):
                    self.wfile.write(b'{"model": "' if kind == "slow drip" else b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while True:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.5)
                elif kind == "endless answer":
                    self.wfile.write(b'{"model": "')
                    while True:
                        self.wfile.write(b"x" * 65536)
                else:
                    self.wfile.write(json.dumps(HOSTILE_ANSWERS.get(kind, TEXT_THAT_RUNS)).encode())
            except OSError:  # the client hung up, as it should
                pass

    return Hostile


@contextmanager
def silent_listener() -> Iterator[str]:
    """A base URL whose port takes connections (the kernel's backlog does) and never answers:
    a remote that hangs."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
