"""int8 forms of the checked ONNX exports: made once, checked against the fp32 export, cached.

An int8 form is the fp32 export (``exports.py``) quantized by ONNX Runtime's static
quantization: QDQ format, weights int8 per channel, activations uint8 (the u8×s8 pairing
the CPU's VNNI instructions run), ranges calibrated on real photos that ship with the project
(``data/photos/calibration``) and several augmentations of each. The classifier head (the
dense layer and its softmax) stays in float: quantized scores come in steps of 1/255 and
tie, which turns near-equal classes into a coin toss. So do the first few convolutions,
where quantizing cost the most agreement (``SETTINGS``).

It is then run beside the fp32 export on held-out photos (``data/photos`` and
``data/photos/held_out``, none of them calibration photos) and their augmentations: the share
of images with the same top-1 class, the mean overlap of the two top-5 lists and both forward
passes' time (one thread each) go into a JSON record beside the file holding its SHA-256, as
for exports, so a worker trusts it without measuring again. Only ``python3 -m classifier
export`` makes and checks one, ahead of traffic: quantizing needs the ``onnx`` package, takes
seconds to minutes and, calibrating, holds every intermediate output of every calibration
image in memory, none of which a request should pay. A file without a record, or that no
longer matches it, is not served until that command is run again. A form is served only if
its figures clear the bar in the settings (``CLASSIFIER_INT8_MIN_TOP1``, 97%, and
``CLASSIFIER_INT8_MIN_TOP5``, 4 of 5: ``passes``).

Files are keyed on the fp32 export's file name (itself a key of the weights and versions),
the quantization settings and the calibration photos' content. Only this module imports the
``onnx`` package (through ``onnxruntime.quantization``), and only while quantizing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageEnhance, ImageOps

from . import images
from .config import Settings
from .exports import PHOTOS, Export, file_sha256, median_ms, versions
from .files import atomic_write, write_text
from .models import ModelSpec
from .runtimes import OnnxRuntime

log = logging.getLogger(__name__)

TOP = 5
TIE = 1e-6  # fp32 scores closer than this are a tie: no class is the top-1
CALIBRATION = PHOTOS / "calibration"
HELD_OUT = (PHOTOS / "chelsea.jpg", PHOTOS / "coffee.jpg", *sorted((PHOTOS / "held_out").glob("*.jpg")))
# What EfficientNetLite0's check preferred (bench/int8.py, docs/int8.md): MinMax and
# Entropy ranges agreed on fewer held-out images than Percentile; QInt8 activations ran no
# faster than fp32 here, QUInt8 ones about twice as fast; the pre-processing (shape inference
# and graph clean-up) raised the agreement from 64% to 89% with MinMax. Most of the error
# that remained came in at the first convolutions (the stem and the first blocks, at full
# resolution): kept in float, the first five agreed on 97% of selection images (photos that
# neither calibrate nor judge) against 84% for none, for a little speed (2.0x became 1.9x).
SETTINGS = {"format": "QDQ", "weights": "QInt8", "per_channel": True, "activations": "QUInt8",
            "calibration": "Percentile", "percentile": 99.999, "pre_process": True,
            "float_ops": ["Gemm", "MatMul", "Softmax"], "float_first_convs": 5}
_TIMING_REPEATS = 15
FORMAT = 1  # bumped when the augmentations or the check change in a way the key cannot see


@dataclass(frozen=True)
class Int8Record:
    """What checking one int8 form found; stored as JSON beside its ``.onnx`` file.

    ``verified``: it was made and ran; whether it is served also takes ``passes``."""

    model: str
    int8_of: str
    onnx_sha256: str | None
    verified: bool
    reason: str
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    photos: int = 0
    images: int = 0
    fp32_ms: float | None = None
    int8_ms: float | None = None
    speedup: float | None = None
    settings: dict[str, object] = dataclasses.field(default_factory=dict)
    made: dict[str, str] = dataclasses.field(default_factory=dict)

    def passes(self, settings: Settings) -> bool:
        """Measured, and agreeing with fp32 at least as often as the settings ask."""
        return (self.verified and self.top1_agreement >= settings.int8_min_top1
                and self.top5_overlap >= settings.int8_min_top5)

    def verdict(self, settings: Settings) -> str:
        """Why it is served or not, with the figures."""
        if not self.verified or self.passes(settings):
            return self.reason
        return (f"it agrees with fp32 too rarely: {self.reason}; needed: top-1 equal on "
                f"{settings.int8_min_top1:.0%} (CLASSIFIER_INT8_MIN_TOP1), top-5 overlap "
                f"{settings.int8_min_top5:g} of 5 (CLASSIFIER_INT8_MIN_TOP5)")

    def check(self) -> dict[str, object]:
        """The measured figures, as ``GET /models`` shows them."""
        return {"top1_agreement": self.top1_agreement, "top5_overlap": self.top5_overlap,
                "photos": self.photos, "images": self.images, "fp32_ms": self.fp32_ms,
                "int8_ms": self.int8_ms, "speedup": self.speedup}


class Int8Form:
    """The cached int8 form of one fp32 export, and its record."""

    def __init__(self, spec: ModelSpec, export: Export) -> None:
        """``spec`` is the int8 registry entry; ``export`` the fp32 export it is made from."""
        self.spec = spec
        self.export = export
        stem = f"{export.onnx_path.name.removesuffix('.onnx')}-int8-{_key(export)}"
        self.onnx_path = export.onnx_path.with_name(f"{stem}.onnx")
        self.record_path = export.onnx_path.with_name(f"{stem}.json")

    def record(self) -> Int8Record | None:
        """The stored record if it describes the int8 file now on disk, else ``None``.

        Hashed again only when either file changes (inode, size or time stamps): ``GET /models``,
        the page and every int8 prediction read it."""
        return _stored(self.record_path, self.onnx_path, _stamp(self.record_path), _stamp(self.onnx_path))

    def lock(self) -> FileLock:
        self.onnx_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.record_path) + ".lock")

    def make(self) -> Int8Record:
        """Quantize the fp32 export (checked already) and check the result; call with ``lock()``
        held. A file without a matching record is made again: it may be cut short."""
        try:
            quantize(self.export.onnx_path, self.onnx_path, self.spec)
        except Exception as error:  # noqa: BLE001 - quantization fails in many ways; any means "no int8 form"
            log.exception("%s: quantization failed", self.spec.name)
            return self.store(Int8Record(self.spec.name, self.spec.int8_of, None, False,
                                         f"quantization failed: {error}"))
        return self.store(check(self.spec, self.export.onnx_path, self.onnx_path))

    def store(self, record: Int8Record) -> Int8Record:
        """Keep ``record`` as this form's verdict. A form that could not be made has no file:
        one left from before (damaged, or made from another export) goes, so that the record
        describes what is on disk and ``/models`` shows why."""
        if record.onnx_sha256 is None:
            self.onnx_path.unlink(missing_ok=True)
        record = dataclasses.replace(record, settings=SETTINGS, made=versions())
        write_text(self.record_path, json.dumps(dataclasses.asdict(record), indent=1))
        return record


@functools.lru_cache(maxsize=64)
def _stored(record_path: Path, onnx_path: Path, *stamps: tuple[int, ...] | None) -> Int8Record | None:
    """The record at ``record_path`` if it describes ``onnx_path``; a file that cannot be read
    (missing, a folder, no permission) has none: a state, not a failure of ``GET /models``."""
    try:
        record = Int8Record(**json.loads(record_path.read_text()))
        digest = file_sha256(onnx_path)
    except (OSError, ValueError, TypeError):
        return None
    return record if record.onnx_sha256 == digest else None


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file does, short of hashing it: its inode and ctime too, so
    that a same-size file copied in with its times kept (``cp -p``, ``rsync -t``) is noticed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


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


def calibration_photos() -> tuple[Path, ...]:
    return tuple(sorted(CALIBRATION.glob("*.jpg")))


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


def _key(export: Export) -> str:
    parts = {"export": export.onnx_path.name, "settings": SETTINGS, "calibration": _calibration_sha256(),
             "format": FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def _calibration_sha256() -> dict[str, str | None]:
    """The calibration photos' content, hashed once per process: they ship with the code,
    and every int8 prediction and ``GET /models`` names an int8 form's files by it."""
    return {path.name: file_sha256(path) for path in calibration_photos()}
