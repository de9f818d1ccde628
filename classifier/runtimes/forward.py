"""The two ways a model's forward pass runs: compiled Keras, or ONNX Runtime on its export.

Both take a preprocessed float32 batch (N, size, size, 3) and return probabilities (N, 1000),
and, for a model that can be explained, its last feature map (N, h, w, K) from the same pass
with the dense head's weights (``head``), which is all Grad-CAM needs (``explain.py``).
``OnnxRuntime`` needs only ``onnxruntime`` and numpy: a worker that serves exports never
imports TensorFlow, which is what makes it start in a fraction of a second and stay small.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from classifier.files import file_sha256, file_stamp
from classifier.models.registry import FeatureMap, ModelSpec
from classifier.runtimes.explain import DenseHead, class_map, scaled
from classifier.runtimes.gradcam import GradientCam
from classifier.runtimes.in_flight import InFlight, this_instance

if TYPE_CHECKING:
    import keras
    import onnxruntime

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """A forward pass; ``name`` is what the logs and the benchmarks call it. ``head`` is the
    dense layer after the feature map, ``None`` for a model ``forward`` gives no map for."""

    name: str
    head: DenseHead | None
    explainable: bool
    batch_size: int
    """Images of one request run through one pass (and held decoded at once), unless
    ``CLASSIFIER_BATCH_SIZE`` says otherwise: what bench/batching.py found fastest."""

    def scores(self, batch: np.ndarray) -> np.ndarray: ...

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def class_map(self, batch: np.ndarray | None, features: np.ndarray | None, class_number: int) -> np.ndarray:
        """Grad-CAM (h, w) in [0, 1] of one image: from ``features`` (its pass's feature map), or
        for a head that is not pooling then dense, from gradients on ``batch`` (a batch of one)."""
        ...


class KerasRuntime:
    """The Keras model as a ``tf.function`` with a fixed input signature.

    Per-request ``Model.predict`` rebuilds its data pipeline every call and costs several
    times more; the compiled function is traced once, on the first (warm-up) call. With a
    ``feature_map`` it returns that layer's output too (``served``, the model an export is
    made of), at no extra cost: the pass computes it anyway. A model whose head is not
    pooling then dense is explained with gradients instead (``gradcam.py``).
    """

    name = "keras"
    # ms per image of a 16-photo request, one thread, by batch 1/2/4/8/16, two runs on a busy
    # 2-core machine (bench/batching.py): EfficientNetLite0 43/28/28/26/25 and 36/47/37/22/24,
    # MobileNetV2 33/31/26/24/28. Each call of the compiled function costs a few ms of its own.
    batch_size = 8

    def __init__(self, model: keras.Model, input_size: int, feature_map: FeatureMap | None = None) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.head = dense_head(model, feature_map) if feature_map else None
        self.explainable = feature_map is not None
        needs_gradients = feature_map is not None and self.head is None
        self._gradient_cam = GradientCam(model, feature_map.find(model), input_size) if needs_gradients else None
        if self.head is not None:
            self.served = keras.Model(model.inputs, [model.output, feature_map.find(model).output])
        else:
            self.served = model
        signature = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32)]
        self._forward = tf.function(lambda batch: self.served(batch, training=False), input_signature=signature)

    def class_map(self, batch: np.ndarray | None, features: np.ndarray | None, class_number: int) -> np.ndarray:
        if self._gradient_cam is not None:
            return scaled(self._gradient_cam(batch, class_number)[0])
        return class_map(features[0], self.head, class_number)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(batch)[0]

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self._forward(batch)
        if self.head is None:
            return np.asarray(outputs), None
        return np.asarray(outputs[0]), np.asarray(outputs[1])


def dense_head(model: keras.Model, feature_map: FeatureMap) -> DenseHead | None:
    """The dense layer's weights when the head after ``feature_map`` is global average pooling
    then that one dense layer with softmax (what the Grad-CAM shortcut needs), else ``None``."""
    import keras

    if not feature_map.gap_dense:
        return None
    layer = feature_map.find(model)
    after = model.layers[model.layers.index(layer) + 1:]
    if not (len(after) == 2 and isinstance(after[0], keras.layers.GlobalAveragePooling2D)
            and isinstance(after[1], keras.layers.Dense) and after[1].activation is keras.activations.softmax):
        raise ValueError(f"{model.name}: the layers after {layer.name} are not global average pooling and "
                         "a softmax dense layer; its registry entry must not say gap_dense")
    kernel, bias = after[1].get_weights()
    return DenseHead(kernel, bias)


_tensorflow_threads: list[int | None] = []  # what this process asked TensorFlow for, once


def use_tensorflow_threads(threads: int | None) -> None:
    """Size TensorFlow's thread pools; call before building a model.

    TensorFlow takes thread counts only before its first operation, so the first call in a
    process decides; a later, different request is logged and ignored. Also quiets TensorFlow's
    start-up banner, which is not news, before anything imports it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


@functools.cache
def keras_installed() -> bool:
    """Whether Keras can run models here: TensorFlow, its backend, is installed (it is not in
    the container image, requirements-runtime.txt). Looked up once, without importing it."""
    return importlib.util.find_spec("tensorflow") is not None


def keras_runtime(spec: ModelSpec, weights_path: Path | None, threads: int | None = None) -> KerasRuntime:
    """The Keras model of ``spec`` with the weights in ``weights_path``, or random ones."""
    use_tensorflow_threads(threads)
    model = spec.build()
    if weights_path is not None:
        model.load_weights(str(weights_path))
    return KerasRuntime(model, spec.input_size, spec.feature_map)


class OnnxRuntime:
    """An ONNX Runtime session on an exported model file.

    ``threads`` fixes the intra-op pool of every pass. ``None`` (the default) makes the
    threads follow the load: a pass that is the only one running in the instance
    (``runtimes/in_flight.py``: every worker process counts) runs on a session with a thread per core,
    one that overlaps others on a one-thread session, so a lone client gets the machine and
    concurrent passes do not fight over cores. The one-thread session is made by the first
    pass that overlaps another (a few hundred ms, once): a process whose passes never overlap
    (one worker, one thread) never holds it, and one that does holds a second copy of the
    model (~34 MB for EfficientNetLite0; uwsgi.ini has the figures). ``ran`` counts the
    passes by the threads they ran on.

    ``sha256``, the digest a check recorded, is required of the bytes every session is made
    from: a file changed since (``GET /readyz`` reports it) fails the load, and later leaves
    the passes on the session made from the checked bytes, with a warning.
    """

    name = "onnx"
    # ms per image of a 16-photo request, one thread, by batch 1/2/4/8/16 (bench/batching.py):
    # EfficientNetLite0 28/28/28/25/28 and 16/15/16/19/22, MobileNetV2 26/22/21/23/38; the
    # pass alone, EfficientNetLite0 15.6/15.2/17/22/19 and 11.4/11.2/17.6/13.2/14.5 ms per image.
    # No batch is faster beyond the noise and large ones are slower: one image at a time.
    batch_size = 1

    def __init__(self, path: Path, threads: int | None = None, head: DenseHead | None = None,
                 in_flight: InFlight | None = None, sha256: str | None = None) -> None:
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on, not the host's
        self.following_load = threads is None and cores > 1
        self._in_flight = (in_flight or this_instance()) if self.following_load else None
        self._path, self._sha256 = path, sha256
        self._busiest = cores if threads is None else threads
        self._sessions = {self._busiest: _session(path, self._busiest, sha256)}
        self._making = threading.Lock()
        self.ran: Counter[int] = Counter()
        session = self._sessions[self._busiest]
        self._input = session.get_inputs()[0].name
        self._outputs = [output.name for output in session.get_outputs()]
        self.head = head if len(self._outputs) == 2 else None
        self.explainable = self.head is not None

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self._outputs[:1], batch)[0]

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and, from an export with the feature map as its second output, that map."""
        outputs = self._run(self._outputs, batch)
        return outputs[0], (outputs[1] if self.head is not None else None)

    def _run(self, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
        if self._in_flight is None:
            return self._run_on(self._busiest, outputs, batch)
        with self._in_flight.running() as passes:
            return self._run_on(self._busiest if passes == 1 else 1, outputs, batch)

    def _run_on(self, threads: int, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
        threads, session = self._session_on(threads)
        self.ran[threads] += 1  # a count lost to two threads at once would only be a statistic
        return session.run(outputs, {self._input: batch})

    def _session_on(self, threads: int) -> tuple[int, onnxruntime.InferenceSession]:
        """The session on ``threads`` threads (made now, once), or the busiest one where the
        file changed since it was checked."""
        if threads not in self._sessions:
            with self._making:
                if threads not in self._sessions:
                    self._sessions[threads] = self._made(threads)
        session = self._sessions[threads]
        return (threads, session) if session is not None else (self._busiest, self._sessions[self._busiest])

    def _made(self, threads: int) -> onnxruntime.InferenceSession | None:
        try:
            return _session(self._path, threads, self._sha256)
        except ChangedFile as error:
            log.warning("%s; passes stay on the %d-thread session made from the checked file", error, self._busiest)
            return None

    def class_map(self, batch: np.ndarray | None, features: np.ndarray, class_number: int) -> np.ndarray:
        return class_map(features[0], self.head, class_number)


class ChangedFile(Exception):
    """An ONNX file whose bytes no longer hash to the digest its check recorded."""


def _session(path: Path, threads: int, sha256: str | None = None) -> onnxruntime.InferenceSession:
    """A session whose passes run on ``threads`` threads. Given ``sha256``, the file must hash
    to it and keep its version (inode, size, times) while the session reads it: a session
    made from its bytes in memory would hold ~20 MB more for EfficientNetLite0. Idle threads
    do not spin-wait, so a neighbour process busy on the same cores is not slowed by this one
    waiting for work."""
    import onnxruntime

    stamp = file_stamp(path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise ChangedFile(f"{path.name} changed since it was checked")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    if sha256 is not None and file_stamp(path) != stamp:
        raise ChangedFile(f"{path.name} changed while it was read")
    return session
