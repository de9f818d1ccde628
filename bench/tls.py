"""What HTTPS costs a client of the deployed site: GET /healthz through NGINX (classifier.conf,
its self-signed certificate, as setup.sh makes without a domain) over http and https, each
on one kept-alive connection and on a new connection per request (a full TLS handshake each).

    python3 -m bench.tls [--requests 300]

Prints one JSON object: per case, the median and 95th-percentile latency in milliseconds,
from one client on this machine (loopback: the network adds nothing; the certificate is
ECDSA P-256, as certbot's and the self-signed one are).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from bench import stack

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # self-signed on purpose


def kept_alive(url: str) -> Callable[[], None]:
    """One GET of ``url`` on a connection kept between calls."""
    session = requests.Session()
    return lambda: _ok(session.get(url, verify=False, timeout=30).status_code)


def new_connection(url: str) -> Callable[[], None]:
    """One GET of ``url`` on a connection of its own (TCP, then a full TLS handshake for https),
    with one client TLS context for all, as a client that keeps its context would."""
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()

    def get() -> None:
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw:
            sock = context.wrap_socket(raw, server_hostname="classifier") if parts.scheme == "https" else raw
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            _ok(int(answer.split(b" ", 2)[1]))

    return get


def _ok(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}")


def measure(get: Callable[[], None], count: int) -> dict[str, float]:
    """``count`` calls of ``get`` in a row, 0.06 s apart (under NGINX's 20 a second per address)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        get()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.06)
    latencies.sort()
    return {"median_ms": round(statistics.median(latencies) * 1000, 2),
            "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tls-") as folder:
        work = Path(folder)
        address = f"127.0.0.1:{stack.free_port()}"
        server = stack.start_uwsgi(work, "app", address, {"CLASSIFIER_WARMUP": "0", "TMPDIR": folder},
                                   processes=2, threads=1)
        nginx = stack.start_nginx(work / "nginx", {"127.0.0.1:8001": address})
        try:
            stack.wait_for(f"{nginx.url}/healthz", server)
            report = {f"{scheme} {name}": measure(client(f"{base}/healthz"), args.requests)
                      for scheme, base in (("http", nginx.url), ("https", nginx.https_url))
                      for name, client in (("kept-alive", kept_alive), ("new connection each", new_connection))}
        finally:
            nginx.stop()
            server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
