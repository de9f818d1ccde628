"""Run by test_ssrf.py inside a network namespace of its own (loopback only); prints JSON.

The cloud-metadata addresses are bound to this namespace's loopback with a listener that
records every connection, so "no connection was made" is observed, not assumed, and no
packet can leave the machine whatever the code under test does.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app  # noqa: E402

FORBIDDEN = ["169.254.169.254", "fd00:ec2::254"]
connections: list[str] = []


def record_connections(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server = socket.create_server((address, port), family=family)

    def accept() -> None:
        while True:
            conn, peer = server.accept()
            connections.append(f"{address}:{port} from {peer[0]}")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()


def redirecting_remote() -> str:
    """An allowed remote (on 127.0.0.1) that redirects to the metadata service."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/predict"


def main() -> None:
    image = Path(sys.argv[1]).read_bytes()
    urls = json.loads(sys.argv[2]) + [redirecting_remote()]
    for address in FORBIDDEN:
        for port in (80, 443):
            record_connections(address, port)
    client = create_app({"random_weights": True, "warmup": False, "allow_custom_remote": True}).test_client()
    answers = {}
    for url in urls:
        response = client.post("/predict", query_string={"server": "custom", "remote_url": url},
                               data=image, content_type="image/png")
        answers[url] = [response.status_code, response.get_json()["error"]["code"]]
    print(json.dumps({"answers": answers, "connections": connections}))


if __name__ == "__main__":
    main()
