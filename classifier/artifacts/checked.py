"""A file made once and trusted afterwards through the record of its check, kept beside it.

The record is JSON holding the SHA-256 of every file it vouches for, so a process that
did not make the file (a serving worker) trusts it without repeating the check, and a file
changed, cut short or replaced after its check is not trusted. Reading a record hashes
the files again only when one of them changed (inode, size or time stamps): ``GET /models``,
the page and every load read records. Making or checking one holds a file lock, so that of
many processes one does it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from filelock import FileLock

from classifier.files import file_sha256, file_stamp, write_text

Record = TypeVar("Record")


class CheckedFile(Generic[Record]):
    """``onnx_path`` and the files beside it, vouched for by the record at ``record_path``.

    A subclass names its record type and which record field holds which file's digest."""

    record_type: ClassVar[type]

    def __init__(self, onnx_path: Path) -> None:
        self.onnx_path = onnx_path
        self.record_path = onnx_path.with_suffix(".json")

    def digests(self) -> Mapping[str, Path]:
        """Record field → the file whose SHA-256 it holds."""
        return {"onnx_sha256": self.onnx_path}

    def record(self) -> Record | None:
        """The stored record if it describes the files now on disk, else ``None`` (also for a
        record that cannot be read: missing, a folder, no permission — a state, not a failure)."""
        fields = tuple(self.digests().items())
        stamps = tuple(file_stamp(path) for path in (self.record_path, *(path for _, path in fields)))
        return _stored(self.record_type, self.record_path, fields, stamps)

    def lock(self) -> FileLock:
        """Held while making or checking this file."""
        self.onnx_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.record_path) + ".lock")

    def store(self, record: Record, **stamped: object) -> Record:
        """Keep ``record`` as this file's verdict, stamped with the versions that made it."""
        record = dataclasses.replace(record, **stamped, made=versions())
        write_text(self.record_path, json.dumps(dataclasses.asdict(record), indent=1))
        return record


@functools.lru_cache(maxsize=128)
def _stored(record_type: type, record_path: Path, fields: tuple[tuple[str, Path], ...],
            stamps: tuple[tuple[int, ...] | None, ...]) -> Any:
    """The record at ``record_path`` if each digest field matches its file; keyed on the
    files' stamps, so a file is hashed again only after it changed."""
    try:
        record = record_type.from_json(json.loads(record_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return record if all(getattr(record, field) == file_sha256(path) for field, path in fields) else None


def key(parts: Mapping[str, object]) -> str:
    """A short name for everything a file depends on: new inputs, a new file name."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    made = {name: version(name) for name in ("keras", "tf2onnx", "onnxruntime")}
    return {**made, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@functools.cache
def version(distribution: str) -> str:
    """Without importing the package: a serving worker never imports Keras. Read once per
    process (0.4 ms each): files are keyed on versions at every load and ``GET /models``, and
    a process runs the versions it imported, whatever is installed since."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"
