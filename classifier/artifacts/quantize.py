"""Making and checking int8 forms (build time: imports the ``onnx`` package, through
``onnxruntime.quantization``, only while quantizing).

ONNX Runtime's static quantization with ``int8.SETTINGS``: QDQ format, weights int8 per
channel, activations uint8, ranges calibrated on real photos that ship with the project
(``data/photos/calibration``) and several augmentations of each. The classifier head (the
dense layer and its softmax) stays in float: quantized scores come in steps of 1/255 and
tie, which turns near-equal classes into a coin toss. So do the first few convolutions,
where quantizing cost the most agreement. The form is then run beside the fp32 export on
held-out photos (``int8.HELD_OUT``, none of them calibration photos) and their augmentations.
Only ``python3 -m classifier export`` runs this, ahead of traffic: quantizing takes seconds
to minutes and, calibrating, holds every intermediate output of every calibration image in
memory, none of which a request should pay.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from classifier.files import file_sha256
from classifier.artifacts.convert import make_export, median_ms
from classifier.artifacts.int8 import (
    HELD_OUT,
    SETTINGS,
    Int8Form,
    Int8Record,
    calibration_photos,
    int8_form,
)
from classifier.files import atomic_write
from classifier.imaging import images
from classifier.models.registry import REGISTRY, ModelSpec
from classifier.models.weights import Found
from classifier.runtimes.forward import OnnxRuntime

log = logging.getLogger(__name__)

TOP = 5
TIE = 1e-6  # fp32 scores closer than this are a tie: no class is the top-1
_TIMING_REPEATS = 15


def make_int8(spec: ModelSpec, found: Found | None, folder: Path, threads: int | None = None) -> Int8Record:
    """Make and check the fp32 export, then the int8 form of it, in this process, unless
    they are checked already; only a checked fp32 export is quantized."""
    record, _ = make_export(REGISTRY[spec.int8_of], found, folder, threads)
    form = int8_form(spec, found and found.path, folder)
    with form.lock():
        if not record.verified:
            return form.store(Int8Record(spec.name, spec.int8_of, None, False,
                                         f"its fp32 export is not served: {record.reason}"))
        int8 = form.record()
        if int8 is not None:
            return int8
        int8 = make(form)
    log.info("%s: checked %s: %s", spec.name, form.onnx_path.name, int8.reason)
    return int8


def make(form: Int8Form) -> Int8Record:
    """Quantize the fp32 export (checked already) and check the result; call with ``form.lock()``
    held. A file without a matching record is made again: it may be cut short."""
    spec = form.spec
    try:
        quantize(form.export.onnx_path, form.onnx_path, spec)
    except Exception as error:  # noqa: BLE001 - quantization fails in many ways; any means "no int8 form"
        log.exception("%s: quantization failed", spec.name)
        return form.store(Int8Record(spec.name, spec.int8_of, None, False, f"quantization failed: {error}"))
    return form.store(check(spec, form.export.onnx_path, form.onnx_path))


def quantize(source: Path, target: Path, spec: ModelSpec) -> None:
    """Static QDQ quantization of ``source`` with ``SETTINGS``, calibrated on augmented photos."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="classifier-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        float_nodes = _float_nodes(model.graph)
        # The calibrator prints its progress: to stderr, so that the command's output stays its verdicts.
        with atomic_write(target) as partial, contextlib.redirect_stdout(sys.stderr), _scale_notes() as widened:
            quantize_static(str(prepared), str(partial), _Calibration(spec, model.graph.input[0].name),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=float_nodes,
                            extra_options={"CalibPercentile": SETTINGS["percentile"]})
        if widened:
            log.info("%s: the quantizer widened %d weight scale(s) of %d weight(s), so that each bias stays "
                     "representable in int32", spec.name, len(widened), len(set(widened)))


# ONNX Runtime's quantizer logs a line on the root logger for every weight channel whose
# scale it widens for its bias' sake (73 for EfficientNetLite0): noise in `classifier export`.
_SCALE_NOTE = re.compile(r"Increas(?:ed|ing) scale(?:\[\d+\])? for weight `([^`]*)`")


@contextlib.contextmanager
def _scale_notes() -> Iterator[list[str]]:
    """While the block runs, the quantizer's scale notes are kept from the log; yields the
    weight each was about, one entry per note, for a one-line summary."""
    widened: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        note = _SCALE_NOTE.match(record.getMessage())
        if note:
            widened.append(note.group(1))
        return note is None

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield widened
    finally:
        root.removeFilter(keep)


def _float_nodes(graph: object) -> list[str]:
    """The nodes left in float: the head's ops and the first convolutions (in graph order,
    which is the order they run in), whose quantization costs the most agreement."""
    head = [node.name for node in graph.node if node.op_type in SETTINGS["float_ops"]]
    convs = [node.name for node in graph.node if node.op_type == "Conv"]
    return head + convs[:SETTINGS["float_first_convs"]]


class _Calibration:
    """Feeds ``quantize_static`` the calibration photos' augmentations, one image at a time
    (the duck type of ONNX Runtime's ``CalibrationDataReader``: importing that imports ``onnx``)."""

    def __init__(self, spec: ModelSpec, input_name: str) -> None:
        batch = augmented_batch(spec, calibration_photos())
        self._inputs = iter({input_name: batch[index:index + 1]} for index in range(len(batch)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


def augmentations(image: Image.Image) -> list[Image.Image]:
    """The photo as taken and as a user might frame it: mirrored, cropped, darker, brighter."""
    width, height = image.size

    def crop(share: float, x: float, y: float) -> Image.Image:
        w, h = int(width * share), int(height * share)
        left, top = int((width - w) * x), int((height - h) * y)
        return image.crop((left, top, left + w, top + h))

    return [image, ImageOps.mirror(image), crop(0.8, 0.5, 0.5), crop(0.85, 0, 0), crop(0.85, 1, 1),
            crop(0.7, 0.5, 0.5), ImageEnhance.Brightness(image).enhance(0.7),
            ImageEnhance.Brightness(image).enhance(1.3), ImageOps.mirror(ImageEnhance.Brightness(image).enhance(0.85))]


def augmented_batch(spec: ModelSpec, photos: tuple[Path, ...]) -> np.ndarray:
    """Every augmentation of every photo, framed as uploads are and preprocessed for ``spec``."""
    crops = [images.center_crop(variant, spec.input_size)
             for path in photos for variant in augmentations(images.decode(path.read_bytes()))]
    return spec.preprocess(np.stack(crops))


def check(spec: ModelSpec, fp32_path: Path, int8_path: Path) -> Int8Record:
    """Held-out photos and their augmentations through both; timed at batch 1 on one thread
    each, whatever ``CLASSIFIER_RUNTIME_THREADS`` says: the figures ``/models`` shows (and the
    API describes) are per core, comparable from one machine or setting to another."""
    sha256 = file_sha256(int8_path)
    batch = augmented_batch(spec, HELD_OUT)
    try:
        fp32, int8 = OnnxRuntime(fp32_path, 1), OnnxRuntime(int8_path, 1)
        expected, got = scores_each(fp32, batch), scores_each(int8, batch)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        return Int8Record(spec.name, spec.int8_of, sha256, False, f"ONNX Runtime cannot run the int8 form: {error}")
    figures = agreement(expected, got)
    fp32_ms, int8_ms = time_both(fp32, int8, batch[:1])
    speedup = round(fp32_ms / int8_ms, 2)
    top1, top5 = figures["top1_agreement"], figures["top5_overlap"]
    reason = (f"top-1 equal to fp32 on {top1:.1%} of {len(batch)} images of {len(HELD_OUT)} held-out photos, "
              f"top-5 overlap {top5:.2f} of 5; {int8_ms} ms against fp32's {fp32_ms} ms ({speedup}x)")
    return Int8Record(spec.name, spec.int8_of, sha256, True, reason, top1, top5, len(HELD_OUT), len(batch),
                      fp32_ms, int8_ms, speedup)


def agreement(expected: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Share of rows with the same top-1 class, and the mean top-5 overlap.

    A row whose fp32 best two scores tie (within ``TIE``) has no top-1 to agree with and
    counts as disagreeing: flat scores (random weights) would otherwise agree by tie order."""
    ordered = np.sort(expected, axis=1)
    decided = ordered[:, -1] - ordered[:, -2] > TIE
    top1 = float(np.mean(decided & (expected.argmax(axis=1) == got.argmax(axis=1))))
    overlap = [len(set(np.argsort(-e)[:TOP]) & set(np.argsort(-g)[:TOP])) for e, g in zip(expected, got)]
    return {"top1_agreement": round(top1, 4), "top5_overlap": round(float(np.mean(overlap)), 3)}


def scores_each(runtime: OnnxRuntime, batch: np.ndarray) -> np.ndarray:
    """One image at a time, as the service runs them."""
    return np.concatenate([runtime.scores(batch[index:index + 1]) for index in range(len(batch))])


def time_both(fp32: OnnxRuntime, int8: OnnxRuntime, batch: np.ndarray) -> tuple[float, float]:
    """Median ms of each at ``batch``, interleaved so a busy machine slows them alike."""
    times = median_ms({"fp32": fp32, "int8": int8}, batch, _TIMING_REPEATS)
    return times["fp32"], times["int8"]
