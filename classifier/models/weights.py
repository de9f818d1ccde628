"""Where pretrained weights are on this machine, and whether a file there is usable.

Keras' own ``weights="imagenet"`` would download synchronously inside a request and hang a
worker for minutes (or fail on a host without internet). Instead the service builds the
architecture itself and loads a file it has found and checked here; ``download.py`` fetches
a missing one. Finding and checking are cheap and have no side effects, so ``GET /models``
can report them; only ``prepare`` (before a load) may convert a file or hash it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from filelock import FileLock

from classifier.config import Settings
from classifier.files import write_text
from classifier.models import layouts

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_CHUNK = 1 << 20


class WeightsRejected(Exception):
    """A weights file that cannot be what it claims; the message says why, naming the file."""


FileKey = tuple[str, int, int, int]


def file_key(path: Path) -> FileKey | None:
    """What identifies one version of a file cheaply: a changed file gets a new key, even
    one rewritten in place with its size and time stamp restored (the change time moves)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass(frozen=True)
class Note:
    """The last thing that went wrong fetching or checking a file, shared by all processes.

    ``kind``: ``unreachable`` (the host could not be reached), ``failed`` (the download or
    its check failed) or ``rejected`` (a file that was here failed its check and was moved
    aside). Kept beside the cache as ``.<file>.note.json`` until a good file arrives.
    """

    kind: str
    reason: str
    at: float

    @staticmethod
    def path_for(settings: Settings, file_name: str) -> Path:
        return settings.keras_cache_dir / f".{file_name}.note.json"

    @classmethod
    def read(cls, settings: Settings, file_name: str) -> Note | None:
        try:
            return cls(**json.loads(cls.path_for(settings, file_name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, settings: Settings, file_name: str) -> None:
        write_text(self.path_for(settings, file_name), json.dumps(self.__dict__))

    @classmethod
    def clear(cls, settings: Settings, file_name: str) -> None:
        cls.path_for(settings, file_name).unlink(missing_ok=True)

    def age(self) -> float:
        return time.time() - self.at


@dataclass(frozen=True)
class KerasWeights:
    """A weights file that Keras publishes for ``model``; ``md5`` is Keras' published hash, if any.

    ``path`` is relative to Keras' download folder (or to the operator's mirror of it).
    """

    model: str
    file_name: str
    path: str
    md5: str | None = None
    downloadable: ClassVar[bool] = True

    def find(self, settings: Settings) -> Path | None:
        """The first existing copy: the operator's folder wins over the Keras cache."""
        for folder in filter(None, [settings.weights_dir, settings.keras_cache_dir]):
            path = folder / self.file_name
            if path.is_file():
                return path
        return None

    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` cannot load into the model (cheap: HDF5 metadata only)."""
        key = file_key(path)
        return _layout_problem(key, self.model) if key else "has disappeared"

    def check(self, path: Path) -> None:
        """Raise ``WeightsRejected`` unless the layout and (where Keras publishes one) the MD5
        are right; the hash is computed once per file version and process (0.2 s for 98 MB)."""
        problem = self.problem(path) or self._md5_problem(path)
        if problem:
            raise WeightsRejected(f"the weights file {path.name} {problem}")

    def prepare(self, path: Path, settings: Settings) -> Path:
        """The file Keras loads: ``path`` itself, once checked."""
        self.check(path)
        return path

    def _md5_problem(self, path: Path) -> str | None:
        key = file_key(path)
        if self.md5 and key and _md5(*key) != self.md5:
            return f"does not match Keras' published MD5 {self.md5}"
        return None

    def check_download(self, path: Path) -> None:
        """Raise ``WeightsRejected`` unless a freshly downloaded file is right."""
        problem = self.problem(path) or self._md5_problem(path)
        if problem:
            raise WeightsRejected(f"the downloaded {self.file_name} {problem}")

    def url(self, settings: Settings) -> str:
        base = settings.weights_mirror or KERAS_WEIGHTS_URL
        return base.rstrip("/") + "/" + self.path

    def how_to_copy(self) -> str:
        return f"copy {self.file_name} into CLASSIFIER_WEIGHTS_DIR"


@dataclass(frozen=True)
class ConvertedWeights:
    """Weights that ship inside a pip package in another format, converted before first use.

    The converted file is cached beside Keras' own downloads under a name derived from the
    source file, so the conversion runs once per host and a changed source is re-converted.
    """

    model: str
    source: Callable[[], str | None]
    convert: Callable[[str, str], None]
    package: str
    downloadable: ClassVar[bool] = False

    def find(self, settings: Settings) -> Path | None:
        """The packaged source file, if the package is installed (nothing is converted)."""
        source = _package_file(self.source)
        return source if source and source.is_file() else None

    def problem(self, path: Path) -> str | None:
        return None if path.is_file() else "has disappeared"

    def converted_path(self, settings: Settings, source: Path) -> Path:
        return settings.keras_cache_dir / f"{source.stem}.weights.h5"

    def check(self, path: Path) -> None:
        """The package's own file: nothing to check before converting it."""

    def prepare(self, source: Path, settings: Settings) -> Path:
        """The converted file, converting it now (once across processes; imports Keras)."""
        target = self.converted_path(settings, source)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(target) + ".lock"):
                if not target.is_file():
                    self.convert(str(source), str(target))
        return target

    def how_to_get(self) -> str:
        return f"install the pip package {self.package} (it is in requirements.txt)"


Weights = KerasWeights | ConvertedWeights


@dataclass(frozen=True)
class Found:
    """A weights file found here, with what turns it into the file Keras loads.

    ``path`` is what identifies the weights (exports are keyed by its content); without
    ``weights`` it is already a file Keras loads, as in the tests and benchmarks.
    """

    path: Path
    weights: Weights | None = None
    settings: Settings | None = None

    def key(self) -> tuple[FileKey | None, ...]:
        """The versions of every file these weights are loaded from: the file found and,
        for converted weights, the converted file (a change to either is a new key)."""
        converted = isinstance(self.weights, ConvertedWeights) and self.settings is not None
        derived = (file_key(self.weights.converted_path(self.settings, self.path)),) if converted else ()
        return (file_key(self.path) or (str(self.path), -1, -1, -1), *derived)

    def check(self) -> None:
        if self.weights is not None:
            self.weights.check(self.path)

    def loadable(self) -> Path:
        """The file for ``model.load_weights`` (may convert it now, importing Keras)."""
        if self.weights is None or self.settings is None:
            return self.path
        return self.weights.prepare(self.path, self.settings)


def loadable(weights: Weights, settings: Settings) -> Path | None:
    """The file Keras loads for ``weights`` (converting or checking it now), if it is here."""
    found = weights.find(settings)
    return weights.prepare(found, settings) if found else None


_PACKAGE_FILES: dict[Callable[[], str | None], Path] = {}


def _package_file(source: Callable[[], str | None]) -> Path | None:
    """Where ``source`` says a package's file is, asked once per process (every prediction
    finds its weights; asking ``importlib.resources`` cost more than the rest of the look):
    a package stays where it was imported from. Not remembered while it is not installed,
    so one installed later is found."""
    if source not in _PACKAGE_FILES:
        path = source()
        if path is None:
            return None
        _PACKAGE_FILES[source] = Path(path)
    return _PACKAGE_FILES[source]


@functools.lru_cache(maxsize=64)
def _layout_problem(key: FileKey, model: str) -> str | None:
    """Remembered per file version: ``GET /models`` asks on every call."""
    return layouts.problem(Path(key[0]), model)


@functools.lru_cache(maxsize=32)
def _md5(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """Hash of a weights file, remembered while its size and mtime stay the same."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rejected_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejected")


def move_aside(path: Path, reason: str, settings: Settings) -> str:
    """Rename a file that failed its check to ``<name>.rejected`` and note why for every
    process; returns the reason as ``GET /models`` will tell it."""
    try:
        path.replace(rejected_path(path))
        reason = f"{reason} (moved aside as {rejected_path(path).name})"
    except OSError as error:
        reason = f"{reason} (it could not be moved aside: {error.strerror})"
    Note("rejected", reason, time.time()).write(settings, path.name)
    return reason
