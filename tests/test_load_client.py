"""bench/load.py, the benchmarks' load client, against a real HTTP server on loopback: what
it counts must mean what ``http.client`` counted (latencies of successful answers, errors,
the app's ``timing_ms`` medians), whichever way the server frames its answers and whether
or not it keeps the connection. The server here stands in for NGINX, which the benchmarks
run; it answers the way an HTTP/1.1 server may."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import load

IMAGE = b"\xff\xd8" + bytes(range(256)) * 200  # 51 KB: more than one send on a small socket buffer


class Handler(BaseHTTPRequestHandler):
    """Answers ``POST /predict?model=M`` by M: ``ok`` (200 with ``timing_ms``), ``chunked`` (the
    same, in chunks), ``close`` (200, then closes), anything else 400. Every body it reads
    must be the whole image."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert body == IMAGE and self.headers["Content-Type"] == "image/jpeg"
        model = self.path.partition("model=")[2]
        status = 200 if model in ("ok", "chunked", "close") else 400
        answer = json.dumps({"timing_ms": {"decode": 1.0, "inference": float(len(self.connections))}}).encode()
        self.send_response(status)
        if model == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (answer[:5], answer[5:]):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(answer)))
        if model == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url():
    Handler.connections = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize("model", ["ok", "chunked"])
def test_one_client_counts_answers_and_reads_the_apps_timings(url, model):
    run = load.sequential(url, IMAGE, model, count=5, seconds=60)
    assert len(run.latencies) == 5 and run.errors == 0 and all(ms > 0 for ms in run.latencies)
    assert run.timing_ms == {"decode": 1.0, "inference": 1.0}  # one connection kept for all five
    assert len(Handler.connections) == 1


def test_answers_other_than_the_one_expected_are_errors(url):
    refused = load.sequential(url, IMAGE, "-", count=3, seconds=60)
    assert (len(refused.latencies), refused.errors) == (0, 3)
    expected = load.sequential(url, IMAGE, "-", count=3, seconds=60, expect=400)
    assert (len(expected.latencies), expected.errors) == (3, 0)


def test_a_connection_the_server_closes_is_opened_again(url):
    run = load.sequential(url, IMAGE, "close", count=4, seconds=60)
    assert (len(run.latencies), run.errors) == (4, 0) and len(Handler.connections) == 4


def test_many_clients_keep_a_connection_each_until_the_time_is_up(url):
    run = load.concurrent(url, IMAGE, "ok", clients=3, seconds=0.5)
    assert run.errors == 0 and len(run.latencies) >= 3 and run.seconds >= 0.5
    assert len(Handler.connections) == 3


def test_a_server_that_is_not_there_gives_errors_not_a_hang(url):
    closed = url.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1 of loopback
    run = load.concurrent(closed, IMAGE, "ok", clients=2, seconds=0.2)
    assert run.latencies == [] and run.errors >= 2
