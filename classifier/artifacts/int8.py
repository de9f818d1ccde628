"""int8 forms of the checked ONNX exports: where each is, and what its check found.

An int8 form is the fp32 export quantized (``quantize.py``, ahead of traffic only) and then
checked against it on held-out photos: the share of images with the same top-1 class, the
mean overlap of the two top-5 lists and both passes' time go into its record (``checked.py``),
so a worker trusts it without measuring again. A form is served only if its figures clear
the bar in the settings (``CLASSIFIER_INT8_MIN_TOP1``, 97%, and ``CLASSIFIER_INT8_MIN_TOP5``,
4 of 5: ``Int8Record.passes``). A file without a record, or that no longer matches it, is not
served until ``python3 -m classifier export`` is run again.

Files are keyed on the fp32 export's file name (itself a key of the weights and versions),
the quantization settings and the calibration photos' content.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from classifier.artifacts.checked import CheckedFile, key
from classifier.files import file_sha256
from classifier.artifacts.exports import PHOTOS, Export
from classifier.config import Settings
from classifier.models.registry import REGISTRY, ModelSpec

CALIBRATION = PHOTOS / "calibration"
HELD_OUT = (PHOTOS / "chelsea.jpg", PHOTOS / "coffee.jpg", *sorted((PHOTOS / "held_out").glob("*.jpg")))
# What EfficientNetLite0's check preferred (bench/int8.py, docs/int8.md): QDQ
# with per-channel int8 weights and uint8 activations (the u8×s8 pairing VNNI runs), Percentile
# ranges, ONNX Runtime's pre-processing, and in float the head (quantized scores tie in steps
# of 1/255) and the first five convolutions (where quantizing cost the most agreement).
SETTINGS = {"format": "QDQ", "weights": "QInt8", "per_channel": True, "activations": "QUInt8",
            "calibration": "Percentile", "percentile": 99.999, "pre_process": True,
            "float_ops": ["Gemm", "MatMul", "Softmax"], "float_first_convs": 5}
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

    @classmethod
    def from_json(cls, stored: dict[str, object]) -> Int8Record:
        return cls(**stored)

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


class Int8Form(CheckedFile[Int8Record]):
    """The cached int8 form of one fp32 export, and its record."""

    record_type = Int8Record

    def __init__(self, spec: ModelSpec, export: Export) -> None:
        """``spec`` is the int8 registry entry; ``export`` the fp32 export it is made from."""
        self.spec = spec
        self.export = export
        stem = export.onnx_path.name.removesuffix(".onnx")
        super().__init__(export.onnx_path.with_name(f"{stem}-int8-{_key(export)}.onnx"))

    def store(self, record: Int8Record, **stamped: object) -> Int8Record:
        """Keep ``record`` as this form's verdict. A form that could not be made has no file:
        one left from before (damaged, or made from another export) goes, so that the record
        describes what is on disk and ``/models`` shows why."""
        if record.onnx_sha256 is None:
            self.onnx_path.unlink(missing_ok=True)
        return super().store(record, settings=SETTINGS, **stamped)


def int8_form(spec: ModelSpec, weights: Path | None, folder: Path) -> Int8Form:
    """Where the int8 entry ``spec``'s file and record are, beside its fp32 export."""
    return Int8Form(spec, Export(REGISTRY[spec.int8_of], weights, folder))


def calibration_photos() -> tuple[Path, ...]:
    return tuple(sorted(CALIBRATION.glob("*.jpg")))


def _key(export: Export) -> str:
    return key({"export": export.onnx_path.name, "settings": SETTINGS, "calibration": _calibration_sha256(),
                "format": FORMAT})


@functools.cache
def _calibration_sha256() -> dict[str, str | None]:
    """The calibration photos' content, hashed once per process: they ship with the code,
    and every int8 prediction and ``GET /models`` names an int8 form's files by it."""
    return {path.name: file_sha256(path) for path in calibration_photos()}
