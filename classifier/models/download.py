"""Fetching Keras' weights files: one download per file across processes, checked before use.

A request for a model whose weights are missing must answer at once (503): the download
runs in a background thread (``BackgroundDownloads``), its progress is shared through a small
file, and what went wrong is kept in a ``weights.Note`` that every process reads, so all
workers tell the same story. ``python3 -m classifier download`` calls ``download`` directly.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from filelock import FileLock, Timeout

from classifier import metrics
from classifier.config import Settings
from classifier.files import atomic_write, write_text
from classifier.models.registry import REGISTRY
from classifier.models.weights import KerasWeights, Note, WeightsRejected, rejected_path
from classifier.urls import public_url  # a mirror's URL may carry credentials

log = logging.getLogger(__name__)

# The models whose weights a download fetches: a serving process shows their download-failure
# series at 0 from its first scrape (web/hooks.py).
DOWNLOADABLE = sorted({spec.weights.model for spec in REGISTRY.values() if spec.weights.downloadable})

Progress = Callable[[int, int | None], None]

_CHUNK = 1 << 20
CONNECT_TIMEOUT = 10  # seconds to reach the download host
READ_TIMEOUT = 60  # seconds of silence mid-transfer before giving up
RETRY_FAILED_AFTER = 60  # seconds before a failed download is tried again by a request
RETRY_UNREACHABLE_AFTER = 600  # the same after the host could not be reached at all
FIRST_ANSWER_WAIT = 5.0  # seconds a request waits to learn whether a new download connects


class Unreachable(Exception):
    """The download host could not be reached (no route, no DNS, refused, timed out)."""


def download(weights: KerasWeights, settings: Settings, progress: Progress | None = None) -> Path:
    """Fetch ``weights`` into the Keras cache and return the final path.

    One process downloads a file at a time (a file lock, so uWSGI workers agree); the bytes
    go to a temporary name, must be as long as the server said and hold the model's layers
    (and match the published MD5), and only then are renamed into place. A file that fails
    is kept as ``<name>.rejected``; every failure is noted for ``GET /models``.
    """
    final = settings.keras_cache_dir / weights.file_name
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_file():
            return final
        shared = _ProgressFile(final, progress)
        try:
            with atomic_write(final) as partial:
                _fetch(weights.url(settings), partial, shared, metrics.DOWNLOAD_BYTES.labels(weights.model))
                _check(weights, partial, final)
        except Exception as error:
            _note_failure(weights, settings, error)
            raise
        finally:
            _ProgressFile.remove(final)
    Note.clear(settings, weights.file_name)
    log.info("downloaded %s from %s", weights.file_name, public_url(weights.url(settings)))
    return final


def _check(weights: KerasWeights, partial: Path, final: Path) -> None:
    try:
        weights.check_download(partial)
    except WeightsRejected:
        os.replace(partial, rejected_path(final))
        raise


def _note_failure(weights: KerasWeights, settings: Settings, error: Exception) -> None:
    kind = "unreachable" if isinstance(error, Unreachable) else "failed"
    reason = describe(error)
    Note(kind, reason, time.time()).write(settings, weights.file_name)
    metrics.DOWNLOAD_FAILURES.labels(weights.model, kind).inc()
    log.warning("download of %s from %s failed: %s", weights.file_name, public_url(weights.url(settings)), reason)


def _fetch(url: str, target: Path, progress: _ProgressFile, received: metrics.Counter) -> None:
    try:
        response = requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.ConnectionError as error:
        raise Unreachable(str(error)) from error
    with response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        progress(done, total)
        with target.open("wb") as stream:
            for chunk in response.iter_content(_CHUNK):
                stream.write(chunk)
                done += len(chunk)
                received.inc(len(chunk))
                progress(done, total)
    if total is not None and done != total:
        raise WeightsRejected(f"the transfer was cut short: {done:,} of {total:,} bytes")


def describe(error: Exception) -> str:
    """A download failure in a few words, without a traceback or the server's folders."""
    if isinstance(error, Unreachable):
        return "could not reach the download host"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the transfer was cut short (fewer bytes than its Content-Length)"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"the download host answered HTTP {error.response.status_code}"
    if isinstance(error, requests.RequestException):
        return f"the transfer failed ({type(error).__name__})"
    if isinstance(error, OSError):
        return f"the file could not be written ({error.strerror or type(error).__name__})"
    return str(error) or type(error).__name__


class _ProgressFile:
    """Shares a download's progress with the other processes through a small JSON file;
    it exists from the moment the host answers until the download ends.

    Written at every chunk (one per megabyte, a few dozen bytes each time): throttling by
    time left the shown figure stale for as long as the host then went quiet."""

    def __init__(self, final: Path, forward: Progress | None) -> None:
        self._path = self.path_for(final)
        self._forward = forward

    def __call__(self, done: int, total: int | None) -> None:
        write_text(self._path, json.dumps({"done": done, "total": total}))
        if self._forward:
            self._forward(done, total)

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


def progress(weights: KerasWeights, settings: Settings) -> dict[str, int | None] | None:
    """``{"done", "total"}`` while some process is downloading ``weights``, else ``None``.

    A progress file whose download lock nobody holds was left by a process that stopped
    mid-download (killed, restarted): that download is not running, whatever the file says.
    """
    final = settings.keras_cache_dir / weights.file_name
    shared = _ProgressFile.read(final)
    return shared if shared is not None and _locked(final) else None


def _locked(final: Path) -> bool:
    lock = FileLock(str(final) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def may_retry(note: Note | None) -> bool:
    """Whether a request may start another download after ``note``."""
    if note is None or note.kind == "rejected":
        return True
    wait = RETRY_UNREACHABLE_AFTER if note.kind == "unreachable" else RETRY_FAILED_AFTER
    return note.age() >= wait


class BackgroundDownloads:
    """Starts at most one download per file in this process, in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def start(self, weights: KerasWeights, settings: Settings) -> None:
        """Start fetching unless a fetch runs here already; then wait (at most
        ``FIRST_ANSWER_WAIT`` s) until the host has answered or the attempt has failed, so
        that the request that started it can tell which."""
        with self._lock:
            answered = self._running.get(weights.file_name)
            if answered is None:
                answered = self._running[weights.file_name] = threading.Event()
                threading.Thread(target=self._run, args=(weights, settings, answered), daemon=True,
                                 name=f"download {weights.file_name}").start()
        answered.wait(FIRST_ANSWER_WAIT)

    def running(self, weights: KerasWeights) -> bool:
        """A download of ``weights`` runs in this process (it may still be connecting)."""
        return weights.file_name in self._running

    def _run(self, weights: KerasWeights, settings: Settings, answered: threading.Event) -> None:
        def signal(done: int, total: int | None) -> None:
            answered.set()

        try:
            download(weights, settings, signal)
        except Exception:  # noqa: BLE001 - download notes and logs every failure
            pass
        finally:
            answered.set()
            with self._lock:
                self._running.pop(weights.file_name, None)
