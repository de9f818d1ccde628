"""Models loaded and ready to run, kept once per process.

A model is loaded on first use, with a lock so that concurrent first requests load it once,
and warmed with one dummy batch so that the first real request does not pay for tracing or
for the runtime's first-run allocations.

Which runtime runs it follows ``Serving.runtime`` (``CLASSIFIER_RUNTIME``):

- ``keras``: the Keras model as a compiled ``tf.function`` (``runtimes.KerasRuntime``).
- ``onnx``: ONNX Runtime on the model's export (``artifacts/exports.py``), found already checked on
  disk or made and checked on first use by a child process (``python3 -m classifier export``),
  so this process never imports TensorFlow (1.7 GB against 140 MB per worker). An int8
  form (``artifacts/int8.py``) is served only once ``python3 -m classifier export`` has made and
  checked it ahead of traffic: no request or child process quantizes. A model
  whose export fails twice, or differs from Keras, runs on Keras here, with a warning.
- ``auto`` (the default): like ``onnx`` where the check also found ONNX Runtime the faster
  of the two, else Keras. With random weights ``auto`` means ``keras``: random weights are
  for tests, which should not spend seconds exporting every model they touch; ``onnx``
  with random weights exports in each process, to a folder of its own (benchmarks).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classifier import metrics
from classifier.artifacts.child import CHILD_ATTEMPTS, made_in_child
from classifier.artifacts.exports import Export
from classifier.artifacts.int8 import int8_form
from classifier.config import Settings
from classifier.models.registry import ModelSpec
from classifier.models.weights import FileKey, Found, WeightsRejected
from classifier.runtimes.forward import OnnxRuntime, Runtime, keras_runtime

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
INT8_NEEDS = "CLASSIFIER_RUNTIME=onnx or auto, with ImageNet weights"


@dataclass(frozen=True)
class Serving:
    """How this process runs models: the runtime setting, the exports folder, threads."""

    runtime: str = "keras"
    exports_dir: Path | None = None
    threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Serving:
        runtime = "keras" if settings.runtime == "auto" and settings.random_weights else settings.runtime
        if runtime == "keras":
            return cls(runtime, None, settings.runtime_threads)
        exports_dir = _private_exports_dir(os.getpid()) if settings.random_weights else settings.exports_dir
        return cls(runtime, exports_dir, settings.runtime_threads)


@functools.lru_cache(maxsize=1)
def _private_exports_dir(pid: int) -> Path:
    """Exports of random weights, for this process only: each process builds its own random
    weights, so an export made elsewhere would be of another model. Removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"classifier-exports-{pid}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class LoadedModel:
    """One model with its weights, callable on a batch of uint8 RGB crops."""

    def __init__(self, spec: ModelSpec, weights: str, runtime: Runtime) -> None:
        self.spec = spec
        self.weights = weights
        self.runtime = runtime
        size = spec.input_size
        blank = np.zeros((1, size, size, 3), dtype=np.uint8)
        _, features = self.scores_and_features(blank)
        if self.explainable:  # traces the GradientTape's function, for a model explained with one
            self.class_map(blank, features, 0)

    @property
    def model(self) -> keras.Model | None:
        """The Keras model when Keras runs this one; ``None`` under ONNX Runtime."""
        return getattr(self.runtime, "model", None)

    @property
    def explainable(self) -> bool:
        return self.runtime.explainable

    def class_map(self, pixels: np.ndarray, features: np.ndarray | None, class_number: int) -> np.ndarray:
        """Grad-CAM of ``class_number`` for one crop (``pixels`` a batch of one), from the
        ``features`` of its pass (``scores_and_features``) where the head allows; only a model
        explained with gradients (no ``features``) needs the crop preprocessed again."""
        batch = self.spec.preprocess(pixels) if features is None else None
        return self.runtime.class_map(batch, features, class_number)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 1000) for uint8 RGB crops (N, size, size, 3)."""
        return self.runtime.scores(self.spec.preprocess(pixels))

    def scores_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``scores`` and, from the same pass, the last feature map (N, h, w, K) if explainable."""
        return self.runtime.forward(self.spec.preprocess(pixels))


def load(spec: ModelSpec, found: Found | None, serving: Serving) -> LoadedModel:
    """Build or open ``spec`` with these weights (``None``: random) in the chosen runtime."""
    weights = "random" if found is None else "imagenet"
    if found is not None:
        found.check()
    if spec.int8_of is not None:
        return LoadedModel(spec, weights, _int8_runtime(spec, found, serving))
    if serving.runtime == "keras" or spec.explained_by_gradients:
        return LoadedModel(spec, weights, keras_runtime(spec, found and found.loadable(), serving.threads))
    return LoadedModel(spec, weights, _runtime_from_export(spec, found, serving))


def _runtime_from_export(spec: ModelSpec, found: Found | None, serving: Serving) -> Runtime:
    """ONNX Runtime if the export is checked (and, for ``auto``, faster); else Keras.

    TensorFlow is imported here only when Keras must serve the model; a missing export is
    made by a child process when the weights come from settings this process can hand on
    (else, for random weights and benchmarks, here).
    """
    export = Export(spec, found and found.path, serving.exports_dir)
    record, keras = export.record(), None
    if record is None and found is not None and found.settings is not None:
        record = made_in_child(export, found.settings)
        if record is None:
            log.warning("%s: running on Keras: no export after %d attempts (see above)", spec.name, CHILD_ATTEMPTS)
            return keras_runtime(spec, found.loadable(), serving.threads)
    if record is None:
        # Random weights (tests, benchmarks): this process's own model, so only it can export it.
        from classifier.artifacts.convert import make_export

        record, keras = make_export(spec, found, serving.exports_dir, serving.threads)
    if record.verified and (serving.runtime == "onnx" or record.faster_than_keras()):
        log.info("%s: running on ONNX Runtime (%s; %s ms against Keras' %s ms)",
                 spec.name, record.reason, record.onnx_ms, record.keras_ms)
        return OnnxRuntime(export.onnx_path, serving.threads, export.head(), sha256=record.onnx_sha256)
    if record.verified:
        log.info("%s: running on Keras, faster than its ONNX export here (%s ms against %s ms)",
                 spec.name, record.keras_ms, record.onnx_ms)
    else:
        log.warning("%s: running on Keras, not its ONNX export %s: %s (delete %s to check it again)",
                    spec.name, export.onnx_path.name, record.reason, export.record_path.name)
    return keras or keras_runtime(spec, found and found.loadable(), serving.threads)


def _int8_runtime(spec: ModelSpec, found: Found | None, serving: Serving) -> OnnxRuntime:
    """ONNX Runtime on the int8 form that ``classifier export`` made and checked; never made
    here (the catalog refuses a form without a record, or below the bar, before loading)."""
    if serving.runtime == "keras":
        raise LoadFailed(f"int8 forms run on ONNX Runtime, and this server runs Keras ({INT8_NEEDS})")
    form = int8_form(spec, found and found.path, serving.exports_dir)
    record = form.record()
    if record is None or not record.verified:
        raise LoadFailed(record.reason if record else f"not made: run `python3 -m classifier export {spec.name}`")
    return OnnxRuntime(form.onnx_path, serving.threads, form.export.head(), sha256=record.onnx_sha256)


class LoadFailed(Exception):
    """Loading failed, now or earlier for the same weights file; ``reason`` says why."""

    def __init__(self, reason: str, rejected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rejected = rejected


Key = tuple[str, tuple[FileKey | None, ...] | None, Serving]


class ModelPool:
    """The loaded models of this process, keyed by model, weights file version and runtime.

    A load that fails is remembered for the same key (the same file, size and time stamp),
    so later requests answer at once instead of rebuilding the model each time; a changed
    file is a new key and is tried again.
    """

    def __init__(self) -> None:
        self._models: dict[Key, LoadedModel] = {}
        self._failures: dict[Key, LoadFailed] = {}
        self.generation = 0
        """Counts the loads begun and the failures here: a model's state may have changed since."""
        self._locks: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()
        # Models being loaded now (or a warm-up about to), by name and runtime: a conversion
        # changes the weights' key midway.
        self._loading: Counter[tuple[str, Serving]] = Counter()

    def get(self, spec: ModelSpec, weights: Found | Path | None, serving: Serving = Serving()) -> LoadedModel:
        """The loaded model, loading it now if needed; ``LoadFailed`` if it cannot load."""
        return self.get_or_load(spec, weights, serving)[0]

    def get_or_load(self, spec: ModelSpec, weights: Found | Path | None,
                    serving: Serving = Serving()) -> tuple[LoadedModel, bool]:
        """The model and whether it was loaded already (else this call loaded it, or waited
        while another did): a request reports that time as its ``load``, from one key lookup."""
        found = Found(weights) if isinstance(weights, Path) else weights
        key = _key(spec, found, serving)
        model = self._models.get(key)
        if model is not None:
            return model, True
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._failures:
                raise self._failures[key]
            if key not in self._models:
                self.generation += 1
                with self.loading(spec, serving):
                    # Stored under the key after loading as well: a conversion adds a file to it.
                    self._models[key] = self._models[_key(spec, found, serving)] = self._load(spec, found, serving)
        return self._models[key], False

    @contextlib.contextmanager
    def loading(self, spec: ModelSpec, serving: Serving) -> Iterator[None]:
        """``spec`` counts as being loaded here (``is_loading``) for the block: a load, or a
        warm-up from the moment it is decided until its load has ended."""
        name = (spec.name, serving)
        with self._guard:
            self._loading[name] += 1
        try:
            yield
        finally:
            with self._guard:
                self._loading[name] -= 1

    def _load(self, spec: ModelSpec, found: Found | None, serving: Serving) -> LoadedModel:
        log.info("loading %s with %s weights (runtime %s)", spec.name, found.path.name if found else "random",
                 serving.runtime)
        key = _key(spec, found, serving)
        started = time.perf_counter()
        try:
            loaded = load(spec, found, serving)
        except Exception as error:  # noqa: BLE001 - any failure to build or load means "unavailable"
            failure = LoadFailed(_reason(error), rejected=isinstance(error, WeightsRejected))
            if not failure.rejected:
                log.exception("%s failed to load", spec.name)
            log.warning("%s is unavailable: %s", spec.name, failure.reason)
            self._failures[key] = self._failures[_key(spec, found, serving)] = failure
            self.generation += 1
            raise failure from error
        metrics.model_loaded(spec.name, loaded.runtime.name, time.perf_counter() - started)
        return loaded

    def is_loading(self, spec: ModelSpec, serving: Serving = Serving()) -> bool:
        """Whether this process is loading ``spec`` now (requests for it wait)."""
        return self._loading[(spec.name, serving)] > 0

    def is_loaded(self, spec: ModelSpec, weights: Found | Path | None, serving: Serving = Serving()) -> bool:
        return self.loaded(spec, weights, serving) is not None

    def loaded(self, spec: ModelSpec, weights: Found | Path | None, serving: Serving = Serving()) -> LoadedModel | None:
        """The model if this process has loaded it with these weights; never loads."""
        return self._models.get(_key(spec, weights, serving))

    def failure(self, spec: ModelSpec, weights: Found | Path | None, serving: Serving = Serving()) -> str | None:
        """Why loading these weights failed in this process, if it did."""
        failure = self._failures.get(_key(spec, weights, serving))
        return failure and failure.reason


def _key(spec: ModelSpec, weights: Found | Path | None, serving: Serving) -> Key:
    found = Found(weights) if isinstance(weights, Path) else weights
    return spec.name, found and found.key(), serving


def _reason(error: Exception) -> str:
    """The error in one line, naming files but not the server's folders."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return _FOLDERS.sub(r"\1", text)


_FOLDERS = re.compile(r"(?:/[\w.@+-]+)+/([\w.@+-]+)")  # an absolute path: keep its last part


# Models are expensive; every app and CLI call in a process shares this pool.
POOL = ModelPool()
