"""Models loaded and ready to run, kept once per process.

A model is built on first use, with a lock so that concurrent first requests build it once,
and warmed with one dummy batch so that the first real request does not pay for tracing.
The forward pass is a compiled ``tf.function`` with a fixed input signature: per-request
``Model.predict`` rebuilds its data pipeline every call and costs several times more.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from .models import ModelSpec

log = logging.getLogger(__name__)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner is not news


class LoadedModel:
    """One model with its weights, callable on a batch of uint8 RGB crops."""

    def __init__(self, spec: ModelSpec, weights_path: Path | None) -> None:
        import tensorflow as tf

        self.spec = spec
        self.weights = "random" if weights_path is None else "imagenet"
        self.model = spec.build()
        if weights_path is not None:
            self.model.load_weights(str(weights_path))
        size = spec.input_size
        signature = [tf.TensorSpec([None, size, size, 3], tf.float32)]
        self._forward = tf.function(lambda batch: self.model(batch, training=False), input_signature=signature)
        self.scores(np.zeros((1, size, size, 3), dtype=np.uint8))

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 1000) for uint8 RGB crops (N, size, size, 3)."""
        return np.asarray(self._forward(self.spec.preprocess(pixels)))


class ModelPool:
    """The loaded models of this process, keyed by model and weights file."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, Path | None], LoadedModel] = {}
        self._locks: dict[tuple[str, Path | None], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, spec: ModelSpec, weights_path: Path | None) -> LoadedModel:
        key = (spec.name, weights_path)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                log.info("loading %s with %s weights", spec.name, weights_path or "random")
                self._models[key] = LoadedModel(spec, weights_path)
        return self._models[key]

    def is_loaded(self, spec: ModelSpec, weights_path: Path | None) -> bool:
        return (spec.name, weights_path) in self._models


# Models are expensive; every app and CLI call in a process shares this pool.
POOL = ModelPool()
