"""ONNX exports of the Keras models: made once, checked against Keras, cached on disk.

Keras stays the source of every model and its weights; an export is a faster way to run the
same function. It is made from the loaded Keras model (``model.export(format="onnx")``),
then run beside it on real photos: it is served only if it gives the same top-5 classes
with every score within ``TOLERANCE``. An explainable model's export has a second output, its
last feature map (checked too, within ``FEATURE_TOLERANCE`` of its largest value), and the
dense head's weights are kept beside it (``.head.npz``), so that Grad-CAM needs no TensorFlow. The outcome goes into a JSON record next to the
``.onnx`` file, holding the file's SHA-256, so a later worker process can serve a verified
export without importing TensorFlow at all; an export file that does not match its record
(changed, corrupted, or never checked) is checked again before any use.

Files are named by the model and a key of everything the export depends on: the content
of the weights file (its SHA-256: about 0.06 s for ResNet50's 98 MB, once per worker and
model) and the Keras and ONNX Runtime versions. New weights or an upgrade give a new key,
so a stale export is never used, even for a file replaced in place with the same size and
time stamp; the same weights copied elsewhere keep theirs. A failed check is recorded
too, so each worker does not repeat it; delete the record (or the ``.onnx`` file, to export
again) to retry. A file that fails its check without a record (cut short, damaged) is made
again once before a failure is recorded. A serving worker has the export made by a child process
(``python3 -m classifier export MODEL``), so that TensorFlow never enters the worker. Photos: two real ones ship in ``data/photos`` (CC0, see its README).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from filelock import FileLock

from . import images
from .config import Settings
from .explain import DenseHead
from .files import atomic_write, write_text
from .models import ModelSpec
from .runtimes import KerasRuntime, OnnxRuntime
from .weights import FileKey, file_key

log = logging.getLogger(__name__)

CHILD_ATTEMPTS = 2  # child processes tried before a worker serves Keras itself
TOLERANCE = 1e-4  # largest difference in any class probability between Keras and the export
FEATURE_TOLERANCE = 1e-4  # largest difference in the feature map, as a share of its largest value
TOP = 5
FORMAT = 2  # bumped when what goes into an export changes in a way the key cannot see (2: the feature map)
PHOTOS = Path(__file__).parent / "data" / "photos"
_TIMING_REPEATS = 7


@dataclass(frozen=True)
class Record:
    """What checking one export found; stored as JSON beside the ``.onnx`` file."""

    model: str
    onnx_sha256: str | None
    verified: bool
    reason: str
    max_abs_diff: float | None = None
    feature_diff: float | None = None
    head_sha256: str | None = None
    keras_ms: float | None = None
    onnx_ms: float | None = None
    photos: tuple[str, ...] = ()
    made: dict[str, str] = dataclasses.field(default_factory=dict)

    def faster_than_keras(self) -> bool:
        return self.onnx_ms is not None and self.keras_ms is not None and self.onnx_ms <= self.keras_ms


class Export:
    """The cached export of one model with one set of weights, and its record."""

    def __init__(self, spec: ModelSpec, weights: Path | None, folder: Path) -> None:
        """``weights``: the weights file; ``None`` for this process's random weights, whose
        exports must go to a ``folder`` of this process alone."""
        self.spec = spec
        stem = f"{spec.name}-{_key(spec, weights)}"
        self.onnx_path = folder / f"{stem}.onnx"
        self.record_path = folder / f"{stem}.json"
        self.head_path = head_path(self.onnx_path)

    def record(self) -> Record | None:
        """The stored record if it describes the ``.onnx`` and head files now on disk, else ``None``."""
        try:
            stored = json.loads(self.record_path.read_text())
            record = Record(**{**stored, "photos": tuple(stored.get("photos", ()))})
        except (OSError, ValueError, TypeError):
            return None
        matches = (record.onnx_sha256 == file_sha256(self.onnx_path)
                   and record.head_sha256 == file_sha256(self.head_path))
        return record if matches else None

    def head(self) -> DenseHead | None:
        """The dense head kept beside a checked export (``record()`` hashed it), if it has one."""
        return DenseHead.load(self.head_path) if self.head_path.is_file() else None

    def lock(self) -> FileLock:
        """Held while making or checking this export, so one process of many does it."""
        self.onnx_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.record_path) + ".lock")

    def make(self, keras: KerasRuntime, threads: int | None = None) -> Record:
        """Export ``keras`` unless the file exists, check the file, and store the record.

        Call with ``lock()`` held. An existing file without a matching record is checked as
        it is (it may be a good export whose process stopped before writing the record); if
        it fails (cut short, damaged), it is made again once before a failure is recorded.
        """
        if keras.head is not None:
            with atomic_write(self.head_path) as partial:
                keras.head.save(partial)
        if self.onnx_path.is_file():
            record = verify(self.spec, keras, self.onnx_path, threads)
            if record.verified:
                return self.store(record)
            log.warning("%s: the export %s failed its check (%s); making it again",
                        self.spec.name, self.onnx_path.name, record.reason)
            self.onnx_path.unlink()
        try:
            _export(keras.served, self.spec.input_size, self.onnx_path)
        except Exception as error:  # noqa: BLE001 - tf2onnx fails in many ways; any means "no export"
            log.exception("%s: ONNX export failed", self.spec.name)
            return self.store(Record(self.spec.name, None, False, f"the export failed: {error}"))
        return self.store(verify(self.spec, keras, self.onnx_path, threads))

    def store(self, record: Record) -> Record:
        """Keep ``record`` (stamped with the versions that made it) as this export's verdict."""
        record = dataclasses.replace(record, made=versions())
        write_text(self.record_path, json.dumps(dataclasses.asdict(record), indent=1))
        return record


def made_in_child(made: Export, settings: Settings) -> Record | None:
    """Run ``python3 -m classifier export MODEL`` (one process at a time) and read its record.

    The child imports TensorFlow, converts and exports, and exits, returning its memory;
    ``None`` if it failed ``CHILD_ATTEMPTS`` times (its output is in the log). Never for an
    int8 form: those are made ahead of traffic only (``quantize.py``).
    """
    with FileLock(str(made.record_path) + ".child.lock"):
        for attempt in range(1, CHILD_ATTEMPTS + 1):
            record = made.record()
            if record is not None:
                return record
            _run_export_child(made.spec, settings, attempt)
        return made.record()


def _run_export_child(spec: ModelSpec, settings: Settings, attempt: int) -> None:
    command = [_python(), "-m", "classifier", "export", spec.name]
    log.info("%s: making its ONNX export in a child process (attempt %d)", spec.name, attempt)
    try:
        done = subprocess.run(command, env=_child_environment(settings), capture_output=True, text=True,
                              timeout=settings.export_timeout, cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        log.warning("%s: the export child ran over %s s and was stopped", spec.name, settings.export_timeout)
        return
    level = logging.INFO if done.returncode == 0 else logging.WARNING
    log.log(level, "%s: export child exited with %d: %s", spec.name, done.returncode,
            (done.stdout + done.stderr).strip()[-2000:])


def _python() -> str:
    """This interpreter. Under uWSGI ``sys.executable`` is the uwsgi binary; the interpreter
    is then the one in ``sys.prefix`` (the virtualenv uWSGI was given, or the system's)."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    names = (f"python{sys.version_info.major}.{sys.version_info.minor}", f"python{sys.version_info.major}")
    found = (Path(sys.prefix) / "bin" / name for name in names)
    return str(next((path for path in found if path.is_file()), sys.executable))


def _child_environment(settings: Settings) -> dict[str, str]:
    """This process's settings as the child reads them (they may differ from the environment)."""
    env = {**os.environ, "KERAS_HOME": str(settings.keras_home), "CLASSIFIER_OFFLINE": "1",
           "CLASSIFIER_RANDOM_WEIGHTS": "0"}
    env.pop("CLASSIFIER_WEIGHTS_DIR", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the workers' metrics are not the child's to write
    if settings.weights_dir:
        env["CLASSIFIER_WEIGHTS_DIR"] = str(settings.weights_dir)
    if settings.runtime_threads:
        env["CLASSIFIER_RUNTIME_THREADS"] = str(settings.runtime_threads)
    return env


def verify(spec: ModelSpec, keras: KerasRuntime, onnx_path: Path, threads: int | None = None) -> Record:
    """Run the photos through both; the export passes with the same top-5 and close scores.

    Also times both at batch 1, interleaved so that a busy machine slows them alike: the
    ``auto`` runtime serves the export only where it is the faster of the two.
    """
    sha256 = file_sha256(onnx_path)
    head_sha256 = file_sha256(head_path(onnx_path))
    names, batch = photo_batch(spec)
    failed = functools.partial(Record, spec.name, sha256, False, head_sha256=head_sha256, photos=names)
    try:
        onnx = OnnxRuntime(onnx_path, threads, keras.head)
        got, got_features = onnx.forward(batch)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        return failed(f"ONNX Runtime cannot run the export: {error}")
    expected, expected_features = keras.forward(batch)
    if got.shape != expected.shape:
        return failed(f"the export answers {got.shape}, Keras {expected.shape}")
    if (got_features is None) != (expected_features is None) or (
            got_features is not None and got_features.shape != expected_features.shape):
        return failed("the export's feature map output is missing or not the shape of Keras'")
    diff = float(np.max(np.abs(got - expected)))
    feature_diff = _feature_diff(expected_features, got_features)
    same_top = all(_same_top(e, g) for e, g in zip(expected, got))
    keras_ms, onnx_ms = _time_both(keras, onnx, batch[:1])
    verified = diff <= TOLERANCE and same_top and (feature_diff or 0) <= FEATURE_TOLERANCE
    if verified:
        features = "" if feature_diff is None else f", feature map within {feature_diff:.1e} of its largest value"
        reason = f"same top-{TOP}, scores within {diff:.1e}{features} on {len(names)} photos"
    else:
        reason = (f"differs from Keras on {len(names)} photos: largest score difference {diff:.1e} "
                  f"(allowed {TOLERANCE:.0e}), top-{TOP} {'the same' if same_top else 'different'}, "
                  f"feature map within {feature_diff or 0:.1e} of its largest value (allowed {FEATURE_TOLERANCE:.0e})")
    return Record(spec.name, sha256, verified, reason, diff, feature_diff, head_sha256, keras_ms, onnx_ms, names)


def _feature_diff(expected: np.ndarray | None, got: np.ndarray | None) -> float | None:
    """The largest difference between two feature maps, as a share of the largest value."""
    if expected is None or got is None:
        return None
    return float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def head_path(onnx_path: Path) -> Path:
    """Where the dense head of an explainable model's export is kept: beside it, same stem."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".head.npz")


def photo_batch(spec: ModelSpec) -> tuple[tuple[str, ...], np.ndarray]:
    """The bundled photos, framed as the service frames uploads and preprocessed for ``spec``."""
    paths = sorted(PHOTOS.glob("*.jpg"))
    crops = [images.model_input(path.read_bytes(), spec.input_size) for path in paths]
    return tuple(path.name for path in paths), spec.preprocess(np.stack(crops))


def _same_top(expected: np.ndarray, got: np.ndarray) -> bool:
    """The same top classes in the same order; classes whose scores tie within the
    tolerance may swap places (random weights give many near-equal scores)."""
    order = np.argsort(-got)[:TOP]
    return bool(np.allclose(expected[order], np.sort(expected)[::-1][:TOP], rtol=0, atol=TOLERANCE))


def _time_both(keras: KerasRuntime, onnx: OnnxRuntime, batch: np.ndarray) -> tuple[float, float]:
    times = median_ms({"keras": keras, "onnx": onnx}, batch, _TIMING_REPEATS)
    return times["keras"], times["onnx"]


def median_ms(runtimes: dict[str, KerasRuntime | OnnxRuntime], batch: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of each runtime's pass on ``batch``, interleaved so a busy machine slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, runtime in runtimes.items():
            started = time.perf_counter()
            runtime.scores(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def _export(model: object, input_size: int, target: Path) -> None:
    """``model.export`` to a temporary name, then renamed: a file at ``target`` is whole."""
    import tensorflow as tf

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it logs every conversion step
    signature = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="pixels")]
    with atomic_write(target) as partial, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch trips NumPy 2's np.object notice
        model.export(str(partial), format="onnx", input_signature=signature, verbose=False)


def _key(spec: ModelSpec, weights: Path | None) -> str:
    source = "random" if weights is None else {"sha256": _weights_sha256(file_key(weights))}
    feature_map = None if spec.feature_map is None else dataclasses.asdict(spec.feature_map)
    parts = {"model": spec.name, "weights": source, "format": FORMAT, "feature_map": feature_map,
             "keras": _version("keras"), "onnxruntime": _version("onnxruntime")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    made = {name: _version(name) for name in ("keras", "tf2onnx", "onnxruntime")}
    return {**made, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@functools.cache
def _version(distribution: str) -> str:
    """Without importing the package: a serving worker never imports Keras. Read once per
    process (0.4 ms each): an int8 prediction and ``GET /models`` key exports on every call,
    and a process runs the versions it imported, whatever is installed since."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=32)
def _weights_sha256(key: FileKey | None) -> str | None:
    """Hashed once per file version and process: a worker keys its exports on every load."""
    return key and file_sha256(Path(key[0]))


def file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except FileNotFoundError:
        return None
