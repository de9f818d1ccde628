"""ONNX exports of the Keras models: where each is, and what its check found.

Keras stays the source of every model and its weights; an export is a faster way to run the
same function, served only once its check (``convert.py``) found it gives the same top-5
classes as Keras with every score within ``TOLERANCE``. An explainable model's export has a
second output, its last feature map, and the dense head's weights are kept beside it
(``.head.npz``), so that Grad-CAM needs no TensorFlow. The record of the check (``checked.py``)
holds both files' SHA-256, so a worker serves a verified export without importing TensorFlow.

Files are named by the model and a key of everything the export depends on: the content
of the weights file (its SHA-256: about 0.06 s for ResNet50's 98 MB, once per worker and
model) and the Keras and ONNX Runtime versions. New weights or an upgrade give a new key,
so a stale export is never used, even for a file replaced in place with the same size and
time stamp; the same weights copied elsewhere keep theirs. A failed check is recorded
too, so each worker does not repeat it; delete the record (or the ``.onnx`` file, to export
again) to retry.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from classifier.artifacts.checked import CheckedFile, key, version
from classifier.files import file_sha256
from classifier.models.registry import ModelSpec
from classifier.models.weights import FileKey, file_key
from classifier.runtimes.explain import DenseHead

TOLERANCE = 1e-4  # largest difference in any class probability between Keras and the export
FEATURE_TOLERANCE = 1e-4  # largest difference in the feature map, as a share of its largest value
FORMAT = 2  # bumped when what goes into an export changes in a way the key cannot see (2: the feature map)
PHOTOS = Path(__file__).parent.parent / "data" / "photos"


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

    @classmethod
    def from_json(cls, stored: dict[str, object]) -> Record:
        return cls(**{**stored, "photos": tuple(stored.get("photos", ()))})

    def faster_than_keras(self) -> bool:
        return self.onnx_ms is not None and self.keras_ms is not None and self.onnx_ms <= self.keras_ms


class Export(CheckedFile[Record]):
    """The cached export of one model with one set of weights, and its record."""

    record_type = Record

    def __init__(self, spec: ModelSpec, weights: Path | None, folder: Path) -> None:
        """``weights``: the weights file; ``None`` for this process's random weights, whose
        exports must go to a ``folder`` of this process alone."""
        self.spec = spec
        super().__init__(folder / f"{spec.name}-{_key(spec, weights)}.onnx")
        self.head_path = head_path(self.onnx_path)

    def digests(self) -> Mapping[str, Path]:
        return {"onnx_sha256": self.onnx_path, "head_sha256": self.head_path}

    def head(self) -> DenseHead | None:
        """The dense head kept beside a checked export (``record()`` hashed it), if it has one."""
        return DenseHead.load(self.head_path) if self.head_path.is_file() else None


def head_path(onnx_path: Path) -> Path:
    """Where the dense head of an explainable model's export is kept: beside it, same stem."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".head.npz")


def _key(spec: ModelSpec, weights: Path | None) -> str:
    source = "random" if weights is None else {"sha256": _weights_sha256(file_key(weights))}
    feature_map = None if spec.feature_map is None else dataclasses.asdict(spec.feature_map)
    return key({"model": spec.name, "weights": source, "format": FORMAT, "feature_map": feature_map,
                "keras": version("keras"), "onnxruntime": version("onnxruntime")})


@functools.lru_cache(maxsize=32)
def _weights_sha256(weights: FileKey | None) -> str | None:
    """Hashed once per file version and process: a worker keys its exports on every load."""
    return weights and file_sha256(Path(weights[0]))
