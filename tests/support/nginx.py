"""Clients of the NGINX site as the stack tests need them: from an address of their own, an
upload NGINX holds half-sent, and its access log read back as fields."""

from __future__ import annotations

import re
import socket

import requests

from bench.stack import Nginx


class _SourceAddressAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs, source_address=(self.address, 0))


def client_at(address: str) -> requests.Session:
    """A client connecting from ``address`` (any 127.x.y.z is loopback), so that NGINX's
    per-address limits count it apart from the other tests' 127.0.0.1."""
    session = requests.Session()
    session.mount("http://", _SourceAddressAdapter(address))
    return session


def hold_upload(port: int, source: str, size: int) -> socket.socket:
    """A /predict upload from ``source`` of all but the last byte of ``size``: NGINX holds
    it in memory, waiting for the rest, unless it refused it when the headers came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\n\r\n" % size)
    sock.sendall(bytes(size - 1))
    return sock


def first_answer(sock: socket.socket) -> bytes:
    """The status line NGINX answered an upload with, once the client gives up on it: a
    refusal was sent when the headers came; an upload NGINX held has no answer (b"")."""
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    try:
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return answer.split(b"\r\n", 1)[0]


def access_log_entries(nginx: Nginx, since: int = 0, request: str = "POST /predict") -> list[dict[str, str]]:
    """The ``name=value`` fields of each access-log line from byte ``since`` on for ``request``
    (its line in the log starts with it; "" for every line), with the whole line as ``line``."""
    text = nginx.access_log.read_bytes()[since:].decode(errors="replace")
    return [dict(re.findall(r"(\w+)=([^\s,]+(?:, [^\s,]+)*)", line)) | {"line": line}
            for line in text.splitlines() if f'"{request}' in line]
