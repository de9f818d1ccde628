"""One deadline for a whole HTTP exchange, whatever it is waiting for.

A timeout per read never fires on a server that sends a byte now and then: a remote that
drips its status line and headers, or its body, would hold a worker (or the CLI) for ever.
``Deadline`` cuts the exchange's connection once its time is up: the server reading the
body, the status line, a header, the answer. Connections hand their socket to the deadline
of the thread that uses them (``WatchedConnection``).
"""

from __future__ import annotations

import socket
import threading


class Deadline:
    """Cuts this thread's connection ``seconds`` after entering; ``expired`` says whether it
    did (what was read up to then may look like a complete answer)."""

    _this_thread = threading.local()  # the deadline of the exchange this thread is making

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._connection: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        Deadline._this_thread.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        Deadline._this_thread.current = None

    @classmethod
    def watch(cls, connection: socket.socket | None) -> None:
        """The socket this thread's exchange goes over, to be cut at its deadline."""
        deadline = getattr(cls._this_thread, "current", None)
        if deadline is not None and connection is not None:
            with deadline._lock:
                deadline._connection = connection
            if deadline.expired:
                deadline._cut()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            if self._connection is not None:
                try:
                    self._connection.shutdown(socket.SHUT_RDWR)  # a blocked send or recv returns at once
                except OSError:  # closed already
                    pass


class WatchedConnection:
    """Mixed into a urllib3 connection: hands its socket to this thread's ``Deadline``, a new
    one once connected, a kept-alive one when a request starts on it."""

    def connect(self) -> None:
        super().connect()
        Deadline.watch(self.sock)

    def request(self, *args: object, **kwargs: object) -> None:
        Deadline.watch(self.sock)
        super().request(*args, **kwargs)
