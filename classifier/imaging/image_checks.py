"""Refusing costly images from their headers and markers, before any pixel is decoded.

A small upload can declare a canvas that takes gigabytes or minutes to decode. Each rule
here bounds one way of doing that, at the cost of reading a header or counting markers:
segments and chunks Pillow parses in Python, pixels, aspect ratio, decoders written in
Python, progressive JPEG scans, and the memory the decode will take (docs/images.md has the
measurements).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from PIL import Image, JpegImagePlugin

from classifier.config import Settings
from classifier.errors import ImageTooComplex, TooManyPixels

# Bytes per pixel of Pillow's storage for each mode (RGB is stored in 4 bytes, like RGBA).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Full-size buffers a decoder holds besides Pillow's image, in multiples of the image's size:
# Pillow decodes WebP through libwebp's animation decoder, which keeps a canvas and the previous
# frame, then copies the frame to bytes and into the image: a 16383x2990 WebP peaks at 748 MB,
# 3.8 times its 196 MB of pixels (SECURITY.md).
_DECODER_COPIES = {"WEBP": 3}
# libtiff decodes a whole strip or tile into a buffer of its own: a 7000x7000 float TIFF in one
# strip peaks at 375 MiB, in strips of 64 rows at 211 MiB. YCbCr (JPEG-compressed) TIFFs are
# read through libtiff's RGBA interface, 4 bytes a pixel.
_TIFF_ROWS_PER_STRIP, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 278, 322, 323
_TIFF_BITS_PER_SAMPLE, _TIFF_PHOTOMETRIC, _TIFF_YCBCR = 258, 262, 6
# libjpeg keeps every DCT coefficient (2 bytes a sample) of a multi-scan JPEG until the last scan.
_COEFFICIENT_BYTES = 2
# A pixel's decode and conversion in decode_cost, in scans of it.
PIXEL_WEIGHT = 32
_SOS = b"\xff\xda"  # start of scan
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8"
_FILL = re.compile(rb"\xff+")  # a marker's FF, and any fill bytes before it
_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # JPEG markers without a length: TEM, RSTn, SOI


@dataclass(frozen=True)
class ImageLimits:
    """What decoding one upload may cost; each is a ``CLASSIFIER_*`` setting (defaults in
    config.py, measurements in docs/images.md)."""

    max_pixels: int
    max_aspect_ratio: float
    max_jpeg_scans: int
    max_segments: int
    max_decode_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(**{field.name: getattr(settings, field.name) for field in fields(cls)})


def check_structure(data: bytes, limits: ImageLimits) -> None:
    """Refuse a JPEG or PNG made of more pieces than ``limits.max_segments``, before Pillow
    opens it: Pillow reads a JPEG's segments up to the first scan, and a PNG's chunks, in
    Python (10 MiB of empty JPEG segments took 3.8 s and 338 MB, of FF fill bytes 3.7 s, of
    empty PNG chunks 2.3 s). Counting stops one past the limit, so it costs little itself."""
    if data.startswith(_PNG_SIGNATURE):
        pieces, what = _png_chunks(data, limits.max_segments), "chunks"
    elif data.startswith(_JPEG_START):
        pieces, what = _jpeg_header_pieces(data, limits.max_segments), "segments and fill bytes before its first scan"
    else:
        return
    if pieces > limits.max_segments:
        raise ImageTooComplex(f"The image has more than {limits.max_segments:,} {what}.")


def check_header(image: Image.Image, data: bytes, limits: ImageLimits) -> None:
    """Refuse what is too large or too slow to decode, from the opened but undecoded ``image``."""
    width, height = image.size
    if width * height > limits.max_pixels:
        raise TooManyPixels(too_many_pixels_message(image.size, limits.max_pixels))
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise ImageTooComplex(f"The image is {width}x{height} pixels; the longer side may be at most "
                              f"{limits.max_aspect_ratio:g} times the shorter.")
    python_decoders = {tile.codec_name for tile in image.tile} & set(Image.DECODERS)
    if python_decoders:  # about 100 times slower per pixel than Pillow's C decoders
        raise ImageTooComplex(f"{image.format} images compressed this way ({', '.join(sorted(python_decoders))}) "
                              "are not accepted; save it uncompressed or as PNG or JPEG.")
    scans = jpeg_scans(image, data)
    if scans > limits.max_jpeg_scans:
        raise ImageTooComplex(f"The JPEG has {scans:,} scans; at most {limits.max_jpeg_scans} are accepted "
                              "(a progressive JPEG usually has about 10).")


def check_memory(image: Image.Image, full_size: tuple[int, int], data: bytes, limits: ImageLimits) -> None:
    """Refuse an image whose decode would take more than ``limits.max_decode_bytes``.

    ``image`` is ready to load (a JPEG already told to decode at a reduced scale), and
    ``full_size`` is its size before that reduction.
    """
    needed = decode_bytes(image, full_size, data)
    if needed > limits.max_decode_bytes:
        raise TooManyPixels(f"Decoding this {full_size[0]}x{full_size[1]} {image.mode} {image.format} image "
                            f"would take {needed / 2**20:,.0f} MiB; at most "
                            f"{limits.max_decode_bytes / 2**20:,.0f} MiB are allowed.")


def decode_bytes(image: Image.Image, full_size: tuple[int, int], data: bytes) -> int:
    """The memory Pillow and its decoder will hold for ``image``: its pixels in Pillow's storage,
    the decoder's own full-size copies, a multi-scan JPEG's coefficients, libtiff's strip."""
    width, height = image.size
    pixels = width * height * _BYTES_PER_PIXEL.get(image.mode, 4)
    total = pixels * (1 + _DECODER_COPIES.get(image.format, 0))
    if jpeg_scans(image, data) > 1:
        total += _COEFFICIENT_BYTES * _jpeg_samples(image, full_size)
    if any(tile.codec_name == "libtiff" for tile in image.tile):
        total += _libtiff_buffer(image)
    return total


def decode_cost(image: Image.Image, data: bytes) -> int:
    """What decoding ``image`` costs, in pixel scans: its pixels times its JPEG scans plus
    ``PIXEL_WEIGHT``. libjpeg reads every coefficient once per scan, whatever scale it decodes
    at, and every format inflates and converts each pixel, which costs up to as much as 32
    scans (an RGBA PNG; ``bench/image_bombs.py`` prints each file's cost and CPU time per
    pixel scan, SECURITY.md has the figures)."""
    width, height = image.size
    return width * height * (PIXEL_WEIGHT + jpeg_scans(image, data))


def jpeg_scans(image: Image.Image, data: bytes) -> int:
    """How many scans a JPEG has, at most: every scan starts with the bytes FF DA, which the
    coded data never contains (an FF there is followed by 00); other segments rarely do."""
    return data.count(_SOS) if isinstance(image, JpegImagePlugin.JpegImageFile) else 0


def too_many_pixels_message(size: tuple[int, int], max_pixels: int) -> str:
    return f"The image is {size[0]}x{size[1]} pixels; at most {max_pixels:,} pixels are accepted."


def _png_chunks(data: bytes, most: int) -> int:
    """Chunks in a PNG up to IEND, counted no further than one past ``most``."""
    count, position = 0, len(_PNG_SIGNATURE)
    while count <= most and position + 8 <= len(data):
        count += 1
        if data[position + 4:position + 8] == b"IEND":
            break
        position += 12 + int.from_bytes(data[position:position + 4], "big")
    return count


def _jpeg_header_pieces(data: bytes, most: int) -> int:
    """Segments and fill bytes up to a JPEG's first scan, counted no further than one past
    ``most``. Pillow steps over other stray bytes quickly, so they are skipped, not counted."""
    count, position = 0, len(_JPEG_START)
    while count <= most:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            break
        fill = _FILL.match(data, position).end() - position - 1
        count += fill + 1
        position += fill
        marker = data[position + 1] if position + 1 < len(data) else 0xDA
        if marker == 0xDA:
            break
        position += 2 if marker in _STANDALONE else 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return count


def _libtiff_buffer(image: Image.Image) -> int:
    """Bytes of the strip or tile libtiff decodes into before Pillow copies it out."""
    tags = image.tag_v2
    width, height = image.size
    block = (tags.get(_TIFF_TILE_WIDTH, width) * tags.get(_TIFF_TILE_LENGTH, 0)
             or width * min(height, tags.get(_TIFF_ROWS_PER_STRIP, height)))
    if tags.get(_TIFF_PHOTOMETRIC) == _TIFF_YCBCR:
        return block * 4
    return block * sum(tags.get(_TIFF_BITS_PER_SAMPLE, (8,))) // 8


def _jpeg_samples(image: JpegImagePlugin.JpegImageFile, full_size: tuple[int, int]) -> int:
    """Samples over all components at full size; subsampled components (4:2:0 chroma) have fewer."""
    width, height = full_size
    sampling = [(horizontal, vertical) for _id, horizontal, vertical, _table in image.layer]
    most_h, most_v = max(h for h, _ in sampling), max(v for _, v in sampling)
    return sum(math.ceil(width * h / most_h) * math.ceil(height * v / most_v) for h, v in sampling)
