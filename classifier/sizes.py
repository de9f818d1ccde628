"""Byte counts as people read them, so every limit the service states is worded one way.

Limits are set in bytes (``CLASSIFIER_MAX_UPLOAD_BYTES``), so they are shown in binary units
with the exact count beside them: ``10 MiB (10,485,760 bytes)``.
"""

from __future__ import annotations

_UNITS = ("bytes", "KiB", "MiB", "GiB")


def binary_size(count: int) -> str:
    """``10485760`` → ``"10 MiB"``, ``1000000`` → ``"976.6 KiB"``, ``512`` → ``"512 bytes"``."""
    exponent = 0
    while exponent < len(_UNITS) - 1 and count >= 1024 ** (exponent + 1):
        exponent += 1
    if exponent == 0:
        return f"{count:,} bytes"
    number = f"{count / 1024 ** exponent:.1f}".removesuffix(".0")
    return f"{number} {_UNITS[exponent]}"


def size_limit(count: int) -> str:
    """A limit as the API's messages state it: ``"10 MiB (10,485,760 bytes)"``."""
    short = binary_size(count)
    return short if count < 1024 else f"{short} ({count:,} bytes)"
