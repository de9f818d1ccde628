"""The one way the benchmarks and the tests wait for something outside their process (a
server starting, a log line written, a model loaded): poll until it holds, bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(poll: Callable[[], T], timeout: float, done: Callable[[T], object] = bool,
               interval: float = 0.2) -> T:
    """Call ``poll`` until ``done`` holds for what it returns, or ``timeout`` seconds have
    passed; return the last value either way, for the caller to check and word its failure
    (a poll may also raise, to stop at once). The sleep is only between polls: the wait ends
    as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while not done(value := poll()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value
