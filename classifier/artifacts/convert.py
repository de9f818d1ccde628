"""Making and checking an ONNX export (build time: imports TensorFlow and tf2onnx).

An export is made from the loaded Keras model (``model.export(format="onnx")``), then run
beside it on real photos (``data/photos``, CC0, see its README): it passes with the same
top-5 classes and every score within ``exports.TOLERANCE`` (the feature map of an
explainable model within ``exports.FEATURE_TOLERANCE`` of its largest value). Both passes are
timed too, so the ``auto`` runtime serves the export only where it is the faster. A file that
fails its check without a record (cut short, damaged) is made again once before a failure is
recorded. Run by ``python3 -m classifier export`` — and so by a worker's export child.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from classifier.files import file_sha256
from classifier.artifacts.exports import (
    FEATURE_TOLERANCE,
    PHOTOS,
    TOLERANCE,
    Export,
    Record,
    head_path,
)
from classifier.files import atomic_write
from classifier.imaging import images
from classifier.models.registry import ModelSpec
from classifier.models.weights import Found
from classifier.runtimes.forward import KerasRuntime, OnnxRuntime, keras_runtime

log = logging.getLogger(__name__)

TOP = 5
_TIMING_REPEATS = 7


def make_export(spec: ModelSpec, found: Found | None, folder: Path,
                threads: int | None = None) -> tuple[Record, KerasRuntime | None]:
    """Make and check ``spec``'s export in ``folder`` unless it is checked already; returns
    its record and the Keras model if one was built."""
    export = Export(spec, found and found.path, folder)
    with export.lock():
        record = export.record()
        if record is not None:
            return record, None
        keras = keras_runtime(spec, found and found.loadable(), threads)
        record = make(export, keras, threads)
    log.info("%s: checked %s: %s", spec.name, export.onnx_path.name, record.reason)
    return record, keras


def make(export: Export, keras: KerasRuntime, threads: int | None = None) -> Record:
    """Export ``keras`` unless the file exists, check the file, and store the record.

    Call with ``export.lock()`` held. An existing file without a matching record is checked
    as it is (it may be a good export whose process stopped before writing the record); if
    it fails (cut short, damaged), it is made again once before a failure is recorded.
    """
    spec = export.spec
    if keras.head is not None:
        with atomic_write(export.head_path) as partial:
            keras.head.save(partial)
    if export.onnx_path.is_file():
        record = verify(spec, keras, export.onnx_path, threads)
        if record.verified:
            return export.store(record)
        log.warning("%s: the export %s failed its check (%s); making it again",
                    spec.name, export.onnx_path.name, record.reason)
        export.onnx_path.unlink()
    try:
        _export(keras.served, spec.input_size, export.onnx_path)
    except Exception as error:  # noqa: BLE001 - tf2onnx fails in many ways; any means "no export"
        log.exception("%s: ONNX export failed", spec.name)
        return export.store(Record(spec.name, None, False, f"the export failed: {error}"))
    return export.store(verify(spec, keras, export.onnx_path, threads))


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
    times = median_ms({"keras": keras, "onnx": onnx}, batch[:1], _TIMING_REPEATS)
    verified = diff <= TOLERANCE and same_top and (feature_diff or 0) <= FEATURE_TOLERANCE
    if verified:
        features = "" if feature_diff is None else f", feature map within {feature_diff:.1e} of its largest value"
        reason = f"same top-{TOP}, scores within {diff:.1e}{features} on {len(names)} photos"
    else:
        reason = (f"differs from Keras on {len(names)} photos: largest score difference {diff:.1e} "
                  f"(allowed {TOLERANCE:.0e}), top-{TOP} {'the same' if same_top else 'different'}, "
                  f"feature map within {feature_diff or 0:.1e} of its largest value (allowed {FEATURE_TOLERANCE:.0e})")
    return Record(spec.name, sha256, verified, reason, diff, feature_diff, head_sha256, times["keras"],
                  times["onnx"], names)


def _feature_diff(expected: np.ndarray | None, got: np.ndarray | None) -> float | None:
    """The largest difference between two feature maps, as a share of the largest value."""
    if expected is None or got is None:
        return None
    return float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


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
