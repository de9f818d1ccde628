"""Where the model looked: Grad-CAM from the forward pass alone, as a grid, a heatmap and words.

Every model here ends in global average pooling → dense → softmax. For that head, the logit
of class c is ``z_c = mean over positions of A · W[:, c] + b_c``, so its gradient with respect
to the last feature map A is ``W[:, c] / (h·w)`` at every position: Grad-CAM's pooled
gradients are the dense weights up to that constant, and its map ``ReLU(Σ_k α_k A_k)`` is
``ReLU(A · W[:, c])`` up to a factor that scaling to [0, 1] removes. No gradients are needed
when serving, only the feature map the forward pass computes anyway and one small matrix
product (tests/test_explain.py checks this against the keras.io way with a GradientTape).

The heatmap is drawn with matplotlib's inferno colour map (perceptually uniform, shipped as
``data/inferno.txt``) and its transparency rises with the heat, so it can be laid over the
photo as it is. Pure numpy and Pillow: a worker that serves exports never imports TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.errors import ClassifierError
from classifier.imaging.image_checks import (
    ImageLimits,
    check_header,
    check_memory,
    check_structure,
)
from classifier.imaging.images import Decoded, region

MAX_HEATMAP_SIDE = 512  # the heatmap's longer side, in pixels: enough to lay over a page's preview
OVERLAY_OPACITY = 0.75  # how strongly the hottest part of the map covers the photo in overlay_png
DATA_URL_PREFIX = "data:image/png;base64,"
# What decoding a heatmap may cost, a remote's included: ours is one palette PNG of 5 chunks
# (IHDR, PLTE, tRNS, IDAT, IEND) and at most MAX_HEATMAP_SIDE on its longer side.
HEATMAP_LIMITS = ImageLimits(max_pixels=MAX_HEATMAP_SIDE ** 2, max_aspect_ratio=MAX_HEATMAP_SIDE, max_jpeg_scans=0,
                             max_segments=16, max_decode_bytes=4 * MAX_HEATMAP_SIDE ** 2)
_ROWS = ("top", "centre", "bottom")
_COLUMNS = ("left", "centre", "right")
_CONCENTRATED = 0.5  # the share of the heat one ninth of the crop must hold to be named alone
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE_PALETTE = 3
_FILTER_SUB = 1
_ALPHA_BY_LEVEL = bytes(range(256))  # transparency rises with the heat: clear at 0, opaque at 1


@dataclass(frozen=True)
class DenseHead:
    """The dense layer after global average pooling: ``weights`` (K, classes) and ``bias``."""

    weights: np.ndarray
    bias: np.ndarray

    def save(self, path: Path) -> None:
        with path.open("wb") as stream:
            np.savez(stream, weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> DenseHead:
        with np.load(path) as stored:
            return cls(stored["weights"].astype(np.float32), stored["bias"].astype(np.float32))


@dataclass(frozen=True)
class Explanation:
    """One class's map over the model's input crop, as the API's ``explanation`` object."""

    class_id: str
    label: str
    crop: tuple[int, int, int, int]
    grid: np.ndarray

    def to_json(self) -> dict[str, object]:
        return {
            "class_id": self.class_id,
            "label": self.label,
            "crop": list(self.crop),
            "grid": [[round(float(value), 4) for value in row] for row in self.grid],
            "heatmap": DATA_URL_PREFIX + base64.b64encode(heatmap_png(self.grid, crop_size(self.crop))).decode(),
            "summary": summary(self.grid),
        }


def class_map(features: np.ndarray, head: DenseHead, class_number: int) -> np.ndarray:
    """Grad-CAM of ``class_number`` on one feature map (h, w, K): ``ReLU(A · W[:, c])`` scaled
    to [0, 1], rows top to bottom; all zeros when no position raises the class's logit."""
    return scaled(features.astype(np.float32) @ head.weights[:, class_number])


def scaled(heat: np.ndarray) -> np.ndarray:
    """Grad-CAM's last step: ReLU, then divided by the maximum (all zeros stay zeros)."""
    heat = np.maximum(heat, 0.0)
    peak = float(heat.max())
    return heat / peak if peak > 0 else np.zeros_like(heat)


def crop_size(crop: tuple[int, int, int, int] | list[int]) -> tuple[int, int]:
    """The heatmap's (width, height): the crop's, shrunk to ``MAX_HEATMAP_SIDE`` on its longer side."""
    width, height = max(1, crop[2] - crop[0]), max(1, crop[3] - crop[1])
    scale = min(1.0, MAX_HEATMAP_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def heatmap_png(grid: np.ndarray, size: tuple[int, int]) -> bytes:
    """The grid smoothly enlarged to ``size``, coloured, opaque where hot and clear where cold.

    Written by hand as the cheapest PNG that decodes to this RGBA image: one byte a pixel
    (the heat level) indexing a palette of the colour map with an alpha per entry (tRNS),
    rows filtered "Sub" (a smooth map leaves small, repeating differences) and compressed at
    zlib's fastest level. About a millisecond for a 263×262 map, four times that at 512×512;
    Pillow's RGBA encoder takes five to ten times longer, and its palette encoder, as fast,
    leaves the rows unfiltered: 2.2–2.4 times the bytes in every answer.
    """
    levels = heat_levels(grid, size)
    height, width = levels.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = _FILTER_SUB
    rows[:, 1] = levels[:, 0]
    np.subtract(levels[:, 1:], levels[:, :-1], out=rows[:, 2:])  # wraps modulo 256, as PNG's Sub does
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE_PALETTE, 0, 0, 0)
    return b"".join([_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"PLTE", _colour_map().tobytes()),
                     _chunk(b"tRNS", _ALPHA_BY_LEVEL), _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
                     _chunk(b"IEND", b"")])


def heat_levels(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The grid enlarged bilinearly to ``size`` (width, height), as levels 0..255 (uint8).

    Each output pixel mixes two neighbouring cells per axis, so the enlargement is a gather
    and a blend along each row (of the few grid rows), then of whole rows: no BLAS call
    (whose threads stall on a busy machine) and a fraction of what resizing a float image
    with Pillow costs.
    """
    columns = _blend(grid.astype(np.float32) * 255 + 0.5, *_bilinear(size[0], grid.shape[1]), axis=1)
    return _blend(columns, *_bilinear(size[1], grid.shape[0]), axis=0).astype(np.uint8)  # 0.5 <= value < 256


def _blend(values: np.ndarray, low: np.ndarray, share: np.ndarray, axis: int) -> np.ndarray:
    """``values`` resampled along ``axis``: each position's ``low`` cell plus ``share`` of the
    step to the next one."""
    steps = np.diff(values, axis=axis, append=np.take(values, [-1], axis=axis))
    shape = (-1, 1) if axis == 0 else (1, -1)
    blended = np.take(steps, low, axis=axis)
    blended *= share.reshape(shape)
    blended += np.take(values, low, axis=axis)
    return blended


@functools.lru_cache(maxsize=64)
def _bilinear(length: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``length`` output positions, the cell before it and the share of the next
    one, centres aligned as image resizers align them (a cell's value sits at its centre and
    is held flat beyond the outer centres)."""
    position = np.clip((np.arange(length) + 0.5) * cells / length - 0.5, 0, cells - 1)
    low = np.minimum(position.astype(int), max(cells - 2, 0))
    return low, (position - low).astype(np.float32)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _colour_map() -> np.ndarray:
    """inferno as a (256, 3) uint8 table, low to high."""
    text = resources.files("classifier").joinpath("data/inferno.txt").read_text()
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    return np.frombuffer(bytes.fromhex("".join(rows)), dtype=np.uint8).reshape(-1, 3)


def summary(grid: np.ndarray) -> str:
    """A text alternative to the heatmap, in ninths of the crop: "Heat concentrated in the
    centre-left"; the two hottest ninths when no one of them holds half the heat."""
    total = float(grid.sum())
    if total <= 0:
        return "No heat: no part of the picture raised the score of this class."
    shares = _ninths(grid) / total
    order = np.argsort(shares, axis=None)[::-1]
    first, second = (divmod(int(i), 3) for i in order[:2])
    if shares[first] >= _CONCENTRATED:
        return f"Heat concentrated in the {_region(*first)}"
    return f"Heat mostly in the {_region(*first)} and the {_region(*second)}"


def _ninths(grid: np.ndarray) -> np.ndarray:
    """The grid's heat summed over a 3×3 split, each cell counted where its centre lies."""
    rows, columns = grid.shape
    row_third = (3 * (np.arange(rows) + 0.5) / rows).astype(int)
    column_third = (3 * (np.arange(columns) + 0.5) / columns).astype(int)
    ninths = np.zeros((3, 3))
    np.add.at(ninths, (row_third[:, None], column_third[None, :]), grid)
    return ninths


def _region(row: int, column: int) -> str:
    if (row, column) == (1, 1):
        return "centre"
    return f"{_ROWS[row]}-{_COLUMNS[column]}"


def overlay_png(photo: bytes | Decoded, explanation: Mapping[str, object], limits: ImageLimits | None = None) -> bytes:
    """The photo's crop with the explanation's heatmap blended over it, as PNG bytes, at the
    heatmap's size: what the CLI writes and the page shows without JavaScript. ``photo`` is
    the image as the prediction decoded it (``Framed.photo``), or its bytes, then decoded
    within ``limits`` and no larger than the heatmap needs (JPEG draft), as for a prediction."""
    crop = tuple(int(value) for value in explanation["crop"])  # type: ignore[union-attr]
    heatmap = heatmap_image(explanation).convert("RGBA")
    if isinstance(photo, Decoded):
        cropped = photo.region(crop, heatmap.size).convert("RGBA")  # type: ignore[arg-type]
    else:
        cropped = region(photo, crop, heatmap.size, limits).convert("RGBA")  # type: ignore[arg-type]
    alpha = np.asarray(heatmap)[..., 3].astype(np.float32) * OVERLAY_OPACITY
    heatmap.putalpha(Image.fromarray(alpha.astype(np.uint8), mode="L"))
    out = io.BytesIO()
    Image.alpha_composite(cropped, heatmap).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def heatmap_image(explanation: Mapping[str, object]) -> Image.Image:
    """The explanation's heatmap PNG, decoded, once checked to be the size ``crop_size`` gives
    its crop (at most ``MAX_HEATMAP_SIDE``) and within ``HEATMAP_LIMITS`` (image_checks: few
    chunks, as Pillow reads each in Python and 60,000 empty ones took 0.2 s): a remote's
    explanation cannot make this server, or a browser, decode an image of a size or cost it
    chose, and one that does not decode (a corrupt IDAT) is refused here, not where it is
    drawn. ``ValueError`` otherwise."""
    data = png_bytes(str(explanation["heatmap"]))
    try:
        check_structure(data, HEATMAP_LIMITS)
        heatmap = Image.open(io.BytesIO(data), formats=("PNG",))  # reads the header only
        if heatmap.size != crop_size(explanation["crop"]):  # type: ignore[arg-type]
            raise ValueError("the heatmap is not the size of its crop")
        check_header(heatmap, data, HEATMAP_LIMITS)
        check_memory(heatmap, heatmap.size, data, HEATMAP_LIMITS)
        heatmap.load()
    except ClassifierError as error:
        raise ValueError(f"the heatmap costs too much to decode: {error.message}") from error
    except (OSError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError) as error:
        raise ValueError("the heatmap is not a readable PNG") from error
    return heatmap


def png_bytes(url: str) -> bytes:
    """The PNG in a ``data:image/png;base64,`` URL; ``ValueError`` if it holds anything else."""
    if not url.startswith(DATA_URL_PREFIX):
        raise ValueError("the heatmap is not a data:image/png;base64 URL")
    try:
        data = base64.b64decode(url[len(DATA_URL_PREFIX):], validate=True)
    except binascii.Error as error:
        raise ValueError("the heatmap is not valid base64") from error
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("the heatmap is not a PNG")
    return data
