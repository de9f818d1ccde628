"""The two ways a model's forward pass runs: compiled Keras, or ONNX Runtime on its export.

Both take a preprocessed float32 batch (N, size, size, 3) and return probabilities (N, 1000).
``OnnxRuntime`` needs only ``onnxruntime`` and numpy: a worker that serves exports never
imports TensorFlow, which is what makes it start in a fraction of a second and stay small.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """A forward pass; ``name`` is what the logs and the benchmarks call it."""

    name: str

    def scores(self, batch: np.ndarray) -> np.ndarray: ...


class KerasRuntime:
    """The Keras model as a ``tf.function`` with a fixed input signature.

    Per-request ``Model.predict`` rebuilds its data pipeline every call and costs several
    times more; the compiled function is traced once, on the first (warm-up) call.
    """

    name = "keras"

    def __init__(self, model: keras.Model, input_size: int) -> None:
        import tensorflow as tf

        self.model = model
        signature = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32)]
        self._forward = tf.function(lambda batch: model(batch, training=False), input_signature=signature)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(batch))


_tensorflow_threads: list[int | None] = []  # what this process asked TensorFlow for, once


def use_tensorflow_threads(threads: int | None) -> None:
    """Size TensorFlow's thread pools; call before building a model.

    TensorFlow takes thread counts only before its first operation, so the first call in a
    process decides; a later, different request is logged and ignored.
    """
    if _tensorflow_threads:
        if _tensorflow_threads[0] != threads:
            log.warning("TensorFlow already runs with %s threads; %s not applied", _tensorflow_threads[0], threads)
        return
    _tensorflow_threads.append(threads)
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            log.warning("TensorFlow started before its threads could be set to %d", threads)


class OnnxRuntime:
    """An ONNX Runtime session on an exported model file.

    ``threads`` is the intra-op pool of this session (``None``: one per core). Several
    worker processes on few cores should split the cores between them; idle threads do not
    spin-wait, so a busy neighbour process is not slowed by this one waiting for work.
    """

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]
