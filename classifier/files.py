"""Writing a file so that other processes see either the old file or the whole new one, and
telling whether a file is still the one that was checked (its stamp, its SHA-256).

Weights, conversions, exports and their records are read by several worker processes while
one of them writes; a reader must never find half a file under the final name.
"""

from __future__ import annotations

import hashlib
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


def file_stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file does, short of hashing it: its inode and ctime too, so
    that a same-size file copied in with its times kept (``cp -p``, ``rsync -t``) is noticed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None
