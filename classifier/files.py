"""Writing a file so that other processes see either the old file or the whole new one.

Weights, conversions, exports and their records are read by several worker processes while
one of them writes; a reader must never find half a file under the final name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` if the block succeeds.

    The temporary name ends with ``target``'s own name, so tools that choose a format by
    suffix (``.weights.h5``, ``.onnx``) write the right one. A failed block leaves nothing.
    ``mode``: readable by the other users a service may run as (``mkstemp`` would give 0600).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{os.getpid()}-{threading.get_ident()}.part.{target.name}")
    try:
        yield partial
        os.chmod(partial, mode)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    """``target.write_text(text)``, atomically."""
    with atomic_write(target) as partial:
        partial.write_text(text)


def write_bytes(target: Path, data: bytes) -> None:
    """``target.write_bytes(data)``, atomically."""
    with atomic_write(target) as partial:
        partial.write_bytes(data)
