"""HTTP load on 127.0.0.1: one client in sequence, or N clients in a closed loop.

The load client shares the machine's cores with the server it measures, so it does as little
as it can per request: every client is one keep-alive connection, all of them served by one
thread through ``selectors``; the request's bytes (a raw ``image/jpeg`` body, one of the
API's three forms) are built once and sent again and again, and an answer is read only as
far as its status and the end of its body (``Content-Length``, or chunks). ``http.client``
in a thread per client cost 0.36 ms of CPU a request here, this 0.16 ms (bench/profile_workers.py
prints it). Every loop stops by itself: after so many requests or seconds (one client),
seconds (N clients) or rounds (warming up); a connection that stays silent for
``TIMEOUT`` seconds fails its request.
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import numpy as np

TIMEOUT = 300  # seconds a request may wait for its answer
_HEAD_END = b"\r\n\r\n"


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


@dataclass(frozen=True)
class Answer:
    """One request's outcome: its status (0: no answer), milliseconds and body."""

    status: int
    ms: float
    body: bytes


def request_bytes(url: str, image: bytes, model: str) -> tuple[tuple[str, int], bytes]:
    """The server's address, and the whole ``POST /predict?model=...`` with ``image`` as its body."""
    parts = urlsplit(url)
    head = (f"POST /predict?{urlencode({'model': model})} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {len(image)}\r\n\r\n")
    return (parts.hostname, parts.port), head.encode("ascii") + image


def parse_answer(received: bytes | bytearray) -> tuple[int, bytes, bool] | None:
    """``(status, body, keep the connection)`` once ``received`` holds a whole answer, else None."""
    end = received.find(_HEAD_END)
    if end < 0:
        return None
    status_line, *lines = bytes(received[:end]).lower().split(b"\r\n")
    headers = {name.strip(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    keep, start = headers.get(b"connection") != b"close", end + len(_HEAD_END)
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _chunked(received, start)
        return None if body is None else (int(status_line.split()[1]), body, keep)
    size = int(headers.get(b"content-length", 0))
    if len(received) < start + size:
        return None
    return int(status_line.split()[1]), bytes(received[start:start + size]), keep


def _chunked(received: bytes | bytearray, start: int) -> bytes | None:
    """A chunked body from ``start`` once its last (empty) chunk has arrived, else None."""
    body = bytearray()
    while True:
        line_end = received.find(b"\r\n", start)
        if line_end < 0:
            return None
        size = int(bytes(received[start:line_end]).split(b";")[0], 16)
        start = line_end + 2
        if len(received) < start + size + 2:
            return None
        if size == 0:
            return bytes(body)
        body += received[start:start + size]
        start += size + 2


class Connection:
    """One client: a keep-alive connection sending the same request, one at a time."""

    def __init__(self, address: tuple[str, int], request: bytes) -> None:
        self._address, self._request = address, memoryview(request)
        self.socket: socket.socket | None = None
        self.keep = True
        """Whether the connection may carry the next request (the server did not close it)."""
        self.started, self._sent, self._received = 0.0, 0, bytearray()

    def begin(self) -> bool:
        """Open the connection if needed and start a request; True once it is all sent."""
        if self.socket is None:
            self.socket = socket.create_connection(self._address, timeout=TIMEOUT)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socket.setblocking(False)
        self.started, self._sent, self._received = time.perf_counter(), 0, bytearray()
        return self.write()

    def write(self) -> bool:
        """Send what the socket takes now; True once the whole request is sent."""
        try:
            self._sent += self.socket.send(self._request[self._sent:])
        except BlockingIOError:
            pass
        return self._sent == len(self._request)

    def read(self) -> Answer | None:
        """What has arrived; the answer once it is whole."""
        data = self.socket.recv(1 << 17)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._received += data
        parsed = parse_answer(self._received)
        if parsed is None:
            return None
        status, body, self.keep = parsed
        return Answer(status, (time.perf_counter() - self.started) * 1000, body)

    def failed(self) -> Answer:
        """The request had no answer; the connection is not used again."""
        self.keep = False
        return Answer(0, (time.perf_counter() - self.started) * 1000, b"")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket, self.keep = None, True


def closed_loop(url: str, image: bytes, model: str, clients: int, more: Callable[[], bool],
                answered: Callable[[Answer], None]) -> None:
    """``clients`` connections, each sending its next request as soon as its last is answered
    while ``more()`` says so; ``answered`` gets every outcome. One thread, no HTTP library."""
    address, request = request_bytes(url, image, model)
    selector = selectors.DefaultSelector()
    busy: set[Connection] = set()

    def start(connection: Connection) -> None:
        opened = connection.socket is None
        try:
            events = selectors.EVENT_READ if connection.begin() else selectors.EVENT_WRITE
        except OSError:
            answer = connection.failed()
            _forget(selector, connection)
            answered(answer)
            return
        # A kept connection stays registered for reading: most requests cost no change here.
        if opened:
            selector.register(connection.socket, events, connection)
        elif events != selectors.EVENT_READ:
            selector.modify(connection.socket, events, connection)
        busy.add(connection)

    def finish(connection: Connection, answer: Answer) -> None:
        busy.discard(connection)
        if not connection.keep:
            _forget(selector, connection)
        answered(answer)
        if more():
            start(connection)

    connections = [Connection(address, request) for _ in range(clients)]
    for connection in connections:
        if more():
            start(connection)
    while busy:
        events = selector.select(TIMEOUT)
        if not events:  # every connection silent for TIMEOUT seconds
            for connection in list(busy):
                finish(connection, connection.failed())
        for key, mask in events:
            if (answer := _step(key.data, mask, selector)) is not None:
                finish(key.data, answer)
    for connection in connections:
        connection.close()
    selector.close()


def _forget(selector: selectors.BaseSelector, connection: Connection) -> None:
    """Close ``connection``, first taking it out of ``selector`` if it is there."""
    if connection.socket is not None and connection.socket in selector.get_map():
        selector.unregister(connection.socket)
    connection.close()


def _step(connection: Connection, mask: int, selector: selectors.BaseSelector) -> Answer | None:
    """Send more of the request or read more of the answer, as the socket allows; the
    answer (or the failure) once the request is over."""
    try:
        if mask & selectors.EVENT_WRITE:
            if connection.write():
                selector.modify(connection.socket, selectors.EVENT_READ, connection)
            return None
        return connection.read()
    except OSError:
        return connection.failed()


def sequential(url: str, image: bytes, model: str, count: int, seconds: float, expect: int = 200) -> Run:
    """One client, one request after another; answers other than ``expect`` count as errors."""
    latencies, timings, errors, started = [], [], [0], time.perf_counter()

    def answered(answer: Answer) -> None:
        if answer.status == expect:
            latencies.append(answer.ms)
            timings.append(json.loads(answer.body).get("timing_ms", {}))
        else:
            errors[0] += 1

    closed_loop(url, image, model, 1, lambda: len(latencies) + errors[0] < count
                and time.perf_counter() - started < seconds, answered)
    # Parts every answer reports: a cold worker's one-off "load" is not a per-request cost.
    parts = set.intersection(*(set(timing) for timing in timings)) if timings else set()
    medians = {part: statistics.median(t[part] for t in timings) for part in parts}
    return Run(latencies, time.perf_counter() - started, errors[0], medians)


def concurrent(url: str, image: bytes, model: str, clients: int, seconds: float) -> Run:
    """``clients`` clients, each sending its next request as soon as its last is answered."""
    latencies: list[float] = []
    errors = [0]

    def answered(answer: Answer) -> None:
        if answer.status == 200:
            latencies.append(answer.ms)
        else:
            errors[0] += 1

    started = time.perf_counter()
    deadline = started + seconds
    closed_loop(url, image, model, clients, lambda: time.perf_counter() < deadline, answered)
    return Run(latencies, time.perf_counter() - started, errors[0])


def warm(url: str, image: bytes, model: str, clients: int, rounds: int = 3) -> None:
    """Bursts of ``clients`` parallel requests, so that every worker has loaded the model
    (a burst larger than one worker's threads must reach more than one worker)."""
    for _ in range(rounds):
        left = [clients]

        def more() -> bool:
            left[0] -= 1
            return left[0] >= 0

        closed_loop(url, image, model, clients, more, lambda answer: None)
