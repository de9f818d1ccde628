"""Models loaded and ready to run, kept once per process.

A model is loaded on first use, with a lock so that concurrent first requests load it once,
and warmed with one dummy batch so that the first real request does not pay for tracing or
for the runtime's first-run allocations.

Which runtime runs it follows ``Serving.runtime`` (``CLASSIFIER_RUNTIME``):

- ``keras``: the Keras model as a compiled ``tf.function`` (``runtimes.KerasRuntime``).
- ``onnx``: ONNX Runtime on the model's export (``exports.py``), made and checked against
  Keras on first use, or found already checked on disk; in that case this process never
  imports TensorFlow. A model whose export fails or differs runs on Keras, with a warning.
- ``auto`` (the default): like ``onnx`` where the check also found ONNX Runtime the faster
  of the two, else Keras. With random weights ``auto`` means ``keras``: random weights are
  for tests, which should not spend seconds exporting every model they touch; ``onnx``
  with random weights exports in each process, to a folder of its own (benchmarks).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import Settings
from .exports import Export
from .models import ModelSpec
from .runtimes import KerasRuntime, OnnxRuntime, Runtime, use_tensorflow_threads

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is not news


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
        self.scores(np.zeros((1, size, size, 3), dtype=np.uint8))

    @property
    def model(self) -> keras.Model | None:
        """The Keras model when Keras runs this one; ``None`` under ONNX Runtime."""
        return getattr(self.runtime, "model", None)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 1000) for uint8 RGB crops (N, size, size, 3)."""
        return self.runtime.scores(self.spec.preprocess(pixels))


def load(spec: ModelSpec, weights_path: Path | None, serving: Serving) -> LoadedModel:
    """Build or open ``spec`` with these weights (``None``: random) in the chosen runtime."""
    weights = "random" if weights_path is None else "imagenet"
    if serving.runtime == "keras":
        return LoadedModel(spec, weights, keras_runtime(spec, weights_path, serving.threads))
    return LoadedModel(spec, weights, _runtime_from_export(spec, weights_path, serving))


def keras_runtime(spec: ModelSpec, weights_path: Path | None, threads: int | None = None) -> KerasRuntime:
    """The Keras model with the weights in ``weights_path``, or random ones."""
    use_tensorflow_threads(threads)
    model = spec.build()
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return KerasRuntime(model, spec.input_size)


def _runtime_from_export(spec: ModelSpec, weights_path: Path | None, serving: Serving) -> Runtime:
    """ONNX Runtime if the export is checked (and, for ``auto``, faster); else Keras.

    TensorFlow is imported only when the export must be made or checked, or is not used.
    """
    export = Export(spec, weights_path, serving.exports_dir)
    record, checked_with = export.record(), None
    if record is None:
        with export.lock():
            record = export.record()
            if record is None:
                checked_with = keras_runtime(spec, weights_path, serving.threads)
                record = export.make(checked_with, serving.threads)
                log.info("%s: checked %s: %s", spec.name, export.onnx_path, record.reason)
    if record.verified and (serving.runtime == "onnx" or record.faster_than_keras()):
        log.info("%s: running on ONNX Runtime (%s; %s ms against Keras' %s ms)",
                 spec.name, record.reason, record.onnx_ms, record.keras_ms)
        return OnnxRuntime(export.onnx_path, serving.threads)
    if record.verified:
        log.info("%s: running on Keras, faster than its ONNX export here (%s ms against %s ms)",
                 spec.name, record.keras_ms, record.onnx_ms)
    else:
        log.warning("%s: running on Keras, not its ONNX export %s: %s (delete %s to check it again)",
                    spec.name, export.onnx_path, record.reason, export.record_path)
    return checked_with or keras_runtime(spec, weights_path, serving.threads)


class ModelPool:
    """The loaded models of this process, keyed by model, weights file and runtime."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, Path | None, Serving], LoadedModel] = {}
        self._locks: dict[tuple[str, Path | None, Serving], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, spec: ModelSpec, weights_path: Path | None, serving: Serving = Serving()) -> LoadedModel:
        key = (spec.name, weights_path, serving)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                log.info("loading %s with %s weights (runtime %s)", spec.name, weights_path or "random",
                         serving.runtime)
                self._models[key] = load(spec, weights_path, serving)
        return self._models[key]

    def is_loaded(self, spec: ModelSpec, weights_path: Path | None, serving: Serving = Serving()) -> bool:
        return (spec.name, weights_path, serving) in self._models


# Models are expensive; every app and CLI call in a process shares this pool.
POOL = ModelPool()
