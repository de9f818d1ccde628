"""One way to wait for something outside the test process: poll until it holds, bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(poll: Callable[[], T], timeout: float, done: Callable[[T], object] = bool,
               what: str = "the condition", interval: float = 0.2) -> T:
    """Call ``poll`` until ``done`` holds for what it returns, and return that; fail with
    ``what`` and the last value seen once ``timeout`` seconds have passed. The sleep is only
    between polls: the wait ends as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = poll()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} never held in {timeout} s: last {value!r}"
        time.sleep(interval)
