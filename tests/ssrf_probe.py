"""Run by test_ssrf.py inside a network namespace of its own (loopback only), as
``python3 -m tests.ssrf_probe`` from the project root; prints JSON.

Every forbidden address is bound to this namespace's loopback, and one listener on all
addresses at ports 80 and 443 records every connection, so "no connection was made" is
observed, not assumed, and no packet can leave the machine whatever the code under test does.
A small DNS server plays the rebinding attacker: its first answer for ``rebind.test`` is an
allowed address, every later one the metadata service.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from pathlib import Path

from app import create_app
from bench.servers import QuietHandler, StubServer
from classifier.errors import ClassifierError
from classifier.forwarding.client import Timeouts, forward

REBINDING_NAME = "rebind.test"
connections: list[str] = []
dns_answers: list[str] = []


def record_connections(port: int) -> None:
    """Listen on every address of the namespace (IPv4 and IPv6) and note what was reached."""
    server = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            connections.append(f"{conn.getsockname()[0]}:{port}")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()


def rebinding_dns_server() -> None:
    """Answers ``A rebind.test`` with 127.0.0.1 once, then with 169.254.169.254 (TTL 0).

    A stand-in for an attacker's name server, which is outside our control; every other
    question gets "no such name", AAAA questions an empty answer.
    """
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))

    def serve() -> None:
        while True:
            query, peer = server.recvfrom(512)
            server.sendto(_dns_answer(query), peer)

    threading.Thread(target=serve, daemon=True).start()


def _dns_answer(query: bytes) -> bytes:
    end = query.index(b"\0", 12) + 5  # the question: labels, a zero byte, type and class
    labels, offset = [], 12
    while query[offset]:
        labels.append(query[offset + 1:offset + 1 + query[offset]].decode())
        offset += 1 + query[offset]
    qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
    name_known = ".".join(labels).lower() == REBINDING_NAME
    answers = b""
    if name_known and qtype == 1:
        address = "127.0.0.1" if not dns_answers else "169.254.169.254"
        dns_answers.append(address)
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(address)
    flags = 0x8180 if name_known else 0x8183  # a response, recursion available; NXDOMAIN
    header = struct.pack("!HHHHHH", struct.unpack("!H", query[:2])[0], flags, 1, 1 if answers else 0, 0, 0)
    return header + query[12:end] + answers


def redirecting_remote() -> str:
    """An allowed remote (on 127.0.0.1) that redirects to the metadata service."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return StubServer(Handler).url + "predict"  # serves until the probe exits


def forward_directly(url: str, image: bytes) -> str:
    """Forward without the up-front ``check_url``: only the connection-time guard stands in the way."""
    try:
        forward(url, [("cat.png", image)], {}, Timeouts(connect=2, read=2))
    except ClassifierError as error:
        return error.code
    return "answered"


def main() -> None:
    image = Path(sys.argv[1]).read_bytes()
    urls = json.loads(sys.argv[2]) + [redirecting_remote()]
    unchecked_urls = json.loads(sys.argv[3])
    for port in (80, 443):
        record_connections(port)
    rebinding_dns_server()
    client = create_app({"random_weights": True, "warmup": False, "allow_custom_remote": True}).test_client()
    answers = {}
    for url in urls:
        response = client.post("/predict", query_string={"server": "custom", "remote_url": url},
                               data=image, content_type="image/png")
        answers[url] = [response.status_code, response.get_json()["error"]["code"]]
    unchecked = {url: forward_directly(url, image) for url in unchecked_urls}
    print(json.dumps({"answers": answers, "unchecked": unchecked, "dns_answers": dns_answers,
                      "connections": connections}))


if __name__ == "__main__":
    main()
