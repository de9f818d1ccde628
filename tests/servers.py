"""Loopback stand-ins for hosts out of our control (a remote service, Keras' weights host).

Plain library code with no pytest in it, so ``ssrf_probe.py`` (run as a script inside a
network namespace) uses the same servers as the tests; conftest wraps them in fixtures.
"""

from __future__ import annotations

import http.server
import socket
import threading
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


@contextmanager
def silent_listener() -> Iterator[str]:
    """A base URL whose port takes connections (the kernel's backlog does) and never answers:
    a remote that hangs."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
