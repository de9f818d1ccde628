"""Bytes in, a model-sized RGB array out: decoding, normalising and cropping images.

Everything happens in memory, and every step has a cost bounded before it runs:
image_checks refuses what is too large or slow from the header, a JPEG is decoded at the
smallest scale the model needs, and the conversions to 8-bit RGB run on strips of rows that
are reduced at once, so no full-size copy is made per mode change. docs/images.md has the
rules and the measured worst cases.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from classifier.config import Settings
from classifier.errors import (
    ClassifierError,
    InvalidImage,
    TooManyPixels,
    UnsupportedImageType,
)
from classifier.imaging import image_checks
from classifier.imaging.image_checks import ImageLimits

__all__ = ["FORMATS", "Decoded", "Framed", "ImageLimits", "center_crop", "decode", "decode_side_for", "framed",
           "model_input", "region"]

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# The usual ImageNet evaluation transform: scale the shorter side to size / 0.875
# (256 for 224) and keep the centred size x size square. Aspect ratio is preserved, and the
# models see the same framing they were evaluated with.
CROP_FRACTION = 0.875

# Pixels converted at a time: a strip of rows this large is converted to RGB and reduced
# before the next one, so a mode change never copies the whole image (4 MB per strip).
STRIP_PIXELS = 1_000_000

# EXIF orientation (tag 0x0112) to the transpose that makes the stored pixels upright.
ORIENTATION = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_SWAPPING_SIDES = (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                   Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)

# Greyscale modes wider than 8 bits: 32-bit integers, 16-bit integers (three byte orders), floats.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
# catch_warnings swaps process-wide state; decoding threads take turns (uWSGI runs one per worker).
_WARNINGS_LOCK = threading.Lock()
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """An upright 8-bit RGB ``image`` as decoded, perhaps reduced, and ``full_size``, the
    size of the whole image upright, in whose pixels boxes such as ``Framed.crop`` are given."""

    image: Image.Image
    full_size: tuple[int, int]

    def region(self, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
        """The part ``box`` of the whole upright image, resized to ``size``."""
        (width, height), image = self.full_size, self.image
        scale_x, scale_y = image.size[0] / width, image.size[1] / height
        left, top = min(max(box[0], 0), width - 1), min(max(box[1], 0), height - 1)
        right, bottom = min(max(box[2], left + 1), width), min(max(box[3], top + 1), height)
        return image.resize(size, Image.Resampling.BILINEAR,
                            box=(left * scale_x, top * scale_y, right * scale_x, bottom * scale_y))


@dataclass(frozen=True)
class Framed:
    """A model's input and where it came from: ``crop`` is ``(left, top, right, bottom)`` in
    the pixels of the uploaded image after EXIF orientation, so a heatmap over the input can
    be laid over the photo; ``photo`` is the image it was cut from, when asked to keep it."""

    pixels: np.ndarray
    crop: tuple[int, int, int, int]
    photo: Decoded | None = None


def model_input(data: bytes, size: int, limits: ImageLimits | None = None) -> np.ndarray:
    """The image in ``data`` as a model's ``size`` x ``size`` uint8 RGB input (H, W, 3).

    Needs no model, only its input size: an upload is decoded, or refused with an
    ``InvalidImage`` or ``UnsupportedImageType``, before any model is loaded. ``limits``
    default to the settings' defaults (config.py).
    """
    return framed(data, size, limits).pixels


def framed(data: bytes, size: int, limits: ImageLimits | None = None, keep_photo: bool = False) -> Framed:
    """``model_input`` with the crop box it took, in the uploaded image's upright pixels; with
    ``keep_photo``, the decoded image too, so a heatmap can be drawn over it without decoding
    the upload again (its shorter side is at least ``decode_side_for(size)``)."""
    photo = _decode(data, limits, decode_side_for(size))
    image, upright_size = photo.image, photo.full_size
    scale_x, scale_y = upright_size[0] / image.size[0], upright_size[1] / image.size[1]
    left, top, right, bottom = crop_box(image.size)
    left, top, width, height = (round(left * scale_x), round(top * scale_y),
                                round((right - left) * scale_x), round((bottom - top) * scale_y))
    crop = (left, top, min(left + width, upright_size[0]), min(top + height, upright_size[1]))
    return Framed(center_crop(image, size), crop, photo if keep_photo else None)


def decode(data: bytes, limits: ImageLimits | None = None, *, min_side: int | None = None) -> Image.Image:
    """Decode ``data`` to an upright 8-bit RGB image, reduced while its shorter side stays at
    least ``min_side`` (all the later resize needs); the whole image when ``min_side`` is None.

    Decoder warnings (a corrupt EXIF block gives one per tag) become one log line.
    """
    return _decode(data, limits, min_side).image


def _decode(data: bytes, limits: ImageLimits | None, min_side: int | None) -> Decoded:
    """``decode``, with the size of the whole image once upright (before any reduction)."""
    if not data:
        raise InvalidImage("The image is empty.")
    limits = limits or ImageLimits.from_settings(Settings())
    image_checks.check_structure(data, limits)
    with _warnings_logged():
        image = _open(data)
        image_checks.check_header(image, data, limits)
        full_size = image.size
        if min_side and isinstance(image, JpegImagePlugin.JpegImageFile):
            image.draft("RGB", (min_side, min_side))  # libjpeg scales by 1/2, 1/4 or 1/8
        image_checks.check_memory(image, full_size, data, limits)
        _load(image)
        orientation = _orientation(image)
        reduced = _reduced_rgb(image, _reduction(image.size, min_side))
    if orientation not in _UPRIGHT:
        return Decoded(reduced, full_size)
    swapped = _UPRIGHT[orientation] in _SWAPPING_SIDES
    return Decoded(reduced.transpose(_UPRIGHT[orientation]), full_size[::-1] if swapped else full_size)


def region(data: bytes, box: tuple[int, int, int, int], size: tuple[int, int],
           limits: ImageLimits | None = None) -> Image.Image:
    """The part ``box`` of the upright image (its full-size pixels, as ``Framed.crop``), resized
    to ``size``: decoded only as large as a crop of the model's framing needs at that size."""
    return _decode(data, limits, decode_side_for(max(size))).region(box, size)


def decode_cost(data: bytes, limits: ImageLimits) -> int:
    """``image_checks.decode_cost`` of ``data``, from its header alone; 0 for an upload that
    will be refused before any pixel is decoded (it costs nothing to decode)."""
    try:
        image_checks.check_structure(data, limits)
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoding it later logs them once
            return image_checks.decode_cost(_open(data), data)
    except ClassifierError:
        return 0


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Return the central ``size`` x ``size`` crop at ImageNet framing as uint8 (H, W, 3).

    Cropping and scaling are one resample: the crop box is computed in source pixels
    and handed to ``resize``, which is faster and sharper than resizing then cropping.
    """
    resized = image.resize((size, size), Image.Resampling.BILINEAR, box=crop_box(image.size), reducing_gap=3.0)
    return np.asarray(resized, dtype=np.uint8)


def crop_box(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred square at ImageNet framing, ``(left, top, right, bottom)`` in source pixels."""
    width, height = image_size
    side = min(width, height) * CROP_FRACTION
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode_side_for(size: int) -> int:
    """The smallest shorter side a decoded image needs for ``center_crop(image, size)``."""
    return round(size / CROP_FRACTION)


@contextlib.contextmanager
def _warnings_logged() -> Iterator[None]:
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        logger.warning("Decoding an upload gave %d warning(s); the first: %s", len(caught), caught[0].message)


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImageType(
            "The data is not an image in a supported format "
            f"({', '.join(FORMATS)})."
        ) from None
    except Image.DecompressionBombError:  # Pillow's own limit, above ours by default
        raise TooManyPixels("The image declares too many pixels.") from None
    except _DECODE_ERRORS:
        raise InvalidImage("The image header is corrupt.") from None
    if 0 in image.size:
        raise InvalidImage("The image has no pixels.")
    return image


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except Image.DecompressionBombError:
        raise TooManyPixels("The image declares too many pixels.") from None
    except _DECODE_ERRORS:
        raise InvalidImage(f"The {image.format} image is truncated or corrupt.") from None


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation; a broken EXIF block leaves the pixels as stored."""
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except _DECODE_ERRORS + (KeyError, ZeroDivisionError):
        return 1


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The largest whole factor that keeps the shorter side at least ``min_side``."""
    return max(1, min(size) // min_side) if min_side else 1


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """``image`` as 8-bit RGB, each ``factor`` x ``factor`` box averaged to one pixel.

    Other modes are converted a strip of rows at a time, each strip reduced before the
    next is converted: the only full-size image is the decoded one.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image.reduce(factor) if factor > 1 else image
    width, height = image.size
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        reduced.paste(_rgb_strip(image.crop((0, top, width, min(top + rows, height))), factor), (0, top // factor))
    return reduced


def _rgb_strip(strip: Image.Image, factor: int) -> Image.Image:
    """One strip as reduced 8-bit RGB. 16-bit, 32-bit and float samples are averaged before
    they are scaled to 8 bits: the same values, with factor² fewer pixels to convert (a 7000x7000
    float TIFF: 0.05 s instead of 0.5 s). Palette indices and alpha are converted first."""
    if factor == 1:
        return _to_rgb(strip)
    if strip.mode in _WIDE_MODES:
        return _to_rgb((strip if strip.mode in ("I", "F") else strip.convert("I")).reduce(factor))
    return _to_rgb(strip).reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: alpha over white, 16-bit and float scaled, CMYK and palette converted."""
    if image.mode in _WIDE_MODES:
        image = _to_8bit(image)
    if image.mode in ("1", "L", "P", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")  # palette index or PNG tRNS colour key to alpha
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Pillow's own conversion clips 16-bit values at 255, which turns most photos white."""
    pixels = np.asarray(image, dtype=np.float32)
    if image.mode != "F":  # 16-bit integers: 65535 / 257 == 255
        pixels = pixels / 257.0
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mode="L")
