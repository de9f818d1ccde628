"""HTTP load on 127.0.0.1: one client in sequence, or N clients in a closed loop.

Each client keeps one connection open (``http.client``, no session machinery), so the
client's own cost per request stays small next to the server's. The image goes as the raw
body (``Content-Type: image/jpeg``), one of the API's three forms. Every loop stops by
itself: after so many requests or seconds (one client), seconds (N clients) or rounds
(warming up).
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import numpy as np


@dataclass
class Run:
    """Latencies (ms) of the successful requests, and what the run achieved."""

    latencies: list[float]
    seconds: float
    errors: int
    timing_ms: dict[str, float] = field(default_factory=dict)
    """Medians of the app's own ``timing_ms`` parts that every answer reports (decode, inference, total)."""

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


class Client:
    """One keep-alive connection posting one image for one model."""

    def __init__(self, url: str, image: bytes, model: str) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname, parts.port
        self._path = "/predict?" + urlencode({"model": model})
        self._image = image
        self._connection = http.client.HTTPConnection(self._host, self._port, timeout=300)

    def post(self) -> tuple[int, float, bytes]:
        """Status (0: no answer), milliseconds, body."""
        started = time.perf_counter()
        try:
            self._connection.request("POST", self._path, self._image, {"Content-Type": "image/jpeg"})
            response = self._connection.getresponse()
            body = response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=300)
            status, body = 0, b""
        return status, (time.perf_counter() - started) * 1000, body

    def close(self) -> None:
        self._connection.close()


def sequential(url: str, image: bytes, model: str, count: int, seconds: float, expect: int = 200) -> Run:
    """One client, one request after another; answers other than ``expect`` count as errors."""
    client = Client(url, image, model)
    latencies, timings, errors, started = [], [], 0, time.perf_counter()
    while len(latencies) + errors < count and time.perf_counter() - started < seconds:
        status, ms, body = client.post()
        if status == expect:
            latencies.append(ms)
            timings.append(json.loads(body).get("timing_ms", {}))
        else:
            errors += 1
    client.close()
    # Parts every answer reports: a cold worker's one-off "load" is not a per-request cost.
    parts = set.intersection(*(set(timing) for timing in timings)) if timings else set()
    medians = {part: statistics.median(t[part] for t in timings) for part in parts}
    return Run(latencies, time.perf_counter() - started, errors, medians)


def concurrent(url: str, image: bytes, model: str, clients: int, seconds: float) -> Run:
    """``clients`` clients, each sending its next request as soon as its last is answered."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def loop() -> None:
        client = Client(url, image, model)
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            status, ms, _ = client.post()
            with lock:
                if status == 200:
                    latencies.append(ms)
                else:
                    errors[0] += 1
        client.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join(timeout=seconds + 300)
    return Run(latencies, time.perf_counter() - started, errors[0])


def warm(url: str, image: bytes, model: str, clients: int, rounds: int = 3) -> None:
    """Bursts of ``clients`` parallel requests, so that every worker has loaded the model
    (a burst larger than one worker's threads must reach more than one worker)."""
    def once() -> None:
        client = Client(url, image, model)
        client.post()
        client.close()

    for _ in range(rounds):
        burst = [threading.Thread(target=once) for _ in range(clients)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(timeout=600)
