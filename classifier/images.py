"""Bytes in, a model-sized RGB array out: decoding, normalising and cropping images.

Everything happens in memory. Limits are checked on the header before any pixel is decoded,
so a small file that declares a huge canvas (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage, TooManyPixels, UnsupportedImageType

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# The usual ImageNet evaluation transform: scale the shorter side to size / 0.875
# (256 for 224) and keep the centred size x size square. Aspect ratio is preserved, and the
# models see the same framing they were evaluated with.
CROP_FRACTION = 0.875

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


def decode(data: bytes, *, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Decode ``data`` to an upright 8-bit RGB image.

    ``min_side`` lets JPEG decoding skip work: the decoder scales by 1/2, 1/4 or 1/8 while
    both sides stay at least that large, which is all the later resize needs.
    """
    if not data:
        raise InvalidImage("The image is empty.")
    image = _open(data, max_pixels)
    if min_side and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    try:
        image.load()
    except Image.DecompressionBombError:
        raise TooManyPixels(_too_many_pixels_message(image.size, max_pixels)) from None
    except _DECODE_ERRORS:
        raise InvalidImage(f"The {image.format} image is truncated or corrupt.") from None
    return _to_rgb(_upright(image))


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Return the central ``size`` x ``size`` crop at ImageNet framing as uint8 (H, W, 3).

    Cropping and scaling are one resample: the crop box is computed in source pixels
    and handed to ``resize``, which is faster and sharper than resizing then cropping.
    """
    width, height = image.size
    side = min(width, height) * CROP_FRACTION
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(resized, dtype=np.uint8)


def decode_side_for(size: int) -> int:
    """The smallest shorter side a decoded image needs for ``center_crop(image, size)``."""
    return round(size / CROP_FRACTION)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImageType(
            "The data is not an image in a supported format "
            f"({', '.join(FORMATS)})."
        ) from None
    except Image.DecompressionBombError:
        raise TooManyPixels(f"The image declares more than {max_pixels:,} pixels.") from None
    except _DECODE_ERRORS:
        raise InvalidImage("The image header is corrupt.") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(_too_many_pixels_message(image.size, max_pixels))
    if width == 0 or height == 0:
        raise InvalidImage("The image has no pixels.")
    return image


def _too_many_pixels_message(size: tuple[int, int], max_pixels: int) -> str:
    return f"The image is {size[0]}x{size[1]} pixels; at most {max_pixels:,} pixels are accepted."


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS + (KeyError, ZeroDivisionError):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: alpha over white, 16-bit and float scaled, CMYK and palette converted."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
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
