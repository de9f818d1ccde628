"""Tests for classifier.imaging.images: bytes to upright 8-bit RGB, limits, and the ImageNet crop.

Every image is generated in memory with Pillow, so each test states exactly which pixels
went in and which must come out.
"""

import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from conftest import encode
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bench import hostile
from bench.hostile import png_declaring
from classifier.config import Settings
from classifier.errors import (
    ImageTooComplex,
    InvalidImage,
    TooManyPixels,
    UnsupportedImageType,
)
from classifier.imaging.images import ImageLimits, center_crop, decode, model_input

RED, GREEN, BLUE, BLACK, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)


def limits(**changes: object) -> ImageLimits:
    """The service's default limits with ``changes``."""
    return ImageLimits.from_settings(Settings(**changes))


def decoded(data: bytes, **options: object) -> np.ndarray:
    """Decode with the default limits; assert the contract's mode and return the pixels."""
    image = decode(data, **options)
    assert image.mode == "RGB"
    return np.asarray(image)


def two_colours(size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...],
                mode: str = "RGB") -> Image.Image:
    """Left half one colour, right half another."""
    width, height = size
    image = Image.new(mode, size, left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def assert_colour(pixel: np.ndarray, expected: tuple[int, int, int], tolerance: int = 0) -> None:
    difference = np.abs(pixel.astype(int) - np.array(expected))
    assert difference.max() <= tolerance, f"{tuple(pixel)} is not {expected} (±{tolerance})"


# --- formats -----------------------------------------------------------------------------

LEFT, RIGHT = (200, 30, 60), (20, 120, 220)


@pytest.mark.parametrize(
    ("format", "options", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 6),
        ("PNG", {}, 0),
        ("GIF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
    ],
)
def test_each_format_decodes_to_rgb(format, options, tolerance):
    data = encode(two_colours((32, 32), LEFT, RIGHT), format, **options)
    pixels = decoded(data)
    assert pixels.shape == (32, 32, 3)
    assert_colour(pixels[16, 4], LEFT, tolerance)
    assert_colour(pixels[16, 27], RIGHT, tolerance)


def test_animated_gif_gives_first_frame():
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2  # really animated
    assert_colour(decoded(data)[4, 4], RED)


# --- EXIF orientation ----------------------------------------------------------------------

# How a camera stores the upright image for each EXIF orientation, written from the EXIF
# spec's row/column description with numpy, independently of Pillow's transpose table.
STORED_AS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # flipped
    5: lambda a: a.transpose(1, 0, 2),  # row 0 is the left side, column 0 the top
    6: lambda a: np.rot90(a, 1),  # row 0 is the right side, column 0 the top
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # row 0 is the right side, column 0 the bottom
    8: lambda a: np.rot90(a, -1),  # row 0 is the left side, column 0 the bottom
}


def quadrants() -> np.ndarray:
    """64x32, a different colour in each quadrant, so every rotation and mirror is distinct.

    Quadrant edges fall on 16-pixel JPEG blocks, which keeps JPEG's colours clean.
    """
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:16, :32], pixels[:16, 32:], pixels[16:, :32], pixels[16:, 32:] = RED, BLUE, GREEN, BLACK
    return pixels


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied(format, orientation):
    upright = quadrants()
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[orientation](upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 95} if format == "JPEG" else {}
    pixels = decoded(encode(stored, format, exif=exif, **options))
    assert pixels.shape == upright.shape
    tolerance = 12 if format == "JPEG" else 0
    for row, column in [(8, 16), (8, 48), (24, 16), (24, 48)]:
        assert_colour(pixels[row, column], tuple(upright[row, column]), tolerance)


# --- alpha, modes and bit depths -------------------------------------------------------------


@pytest.mark.parametrize(("format", "options"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_alpha_is_composited_on_white(format, options):
    """A transparent black pixel must not come out black: the colour under alpha 0 is arbitrary."""
    image = Image.new("RGBA", (2, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 128)])
    pixels = decoded(encode(image, format, **options))
    assert_colour(pixels[0, 0], WHITE)
    assert_colour(pixels[0, 1], (255, 128, 128), tolerance=1)


def test_grayscale_alpha_is_composited_on_white():
    image = Image.new("LA", (3, 1))
    image.putdata([(0, 0), (0, 255), (0, 128)])
    pixels = decoded(encode(image, "PNG"))
    assert_colour(pixels[0, 0], WHITE)
    assert_colour(pixels[0, 1], BLACK)
    assert_colour(pixels[0, 2], (128, 128, 128), tolerance=1)


@pytest.mark.parametrize("format", ["PNG", "GIF"])
def test_palette_transparent_index_becomes_white(format):
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN])
    image.putdata([0, 1])
    pixels = decoded(encode(image, format, transparency=1))
    assert_colour(pixels[0, 0], RED)
    assert_colour(pixels[0, 1], WHITE)


@pytest.mark.parametrize(
    ("mode", "key", "other"),
    [("L", 50, 200), ("RGB", (50, 60, 70), (200, 10, 30))],
)
def test_png_transparent_colour_key_becomes_white(mode, key, other):
    """PNG's tRNS chunk also marks one grey or RGB value as transparent, not only palette entries."""
    image = two_colours((2, 1), key, other, mode)
    pixels = decoded(encode(image, "PNG", transparency=key))
    assert_colour(pixels[0, 0], WHITE)
    assert_colour(pixels[0, 1], (other,) * 3 if mode == "L" else other)


def test_grayscale_becomes_rgb():
    pixels = decoded(encode(two_colours((2, 1), 77, 230, "L"), "PNG"))
    assert_colour(pixels[0, 0], (77, 77, 77))
    assert_colour(pixels[0, 1], (230, 230, 230))


def test_palette_becomes_rgb():
    image = Image.new("P", (2, 1))
    image.putpalette([*LEFT, *RIGHT])
    image.putdata([0, 1])
    pixels = decoded(encode(image, "PNG"))
    assert_colour(pixels[0, 0], LEFT)
    assert_colour(pixels[0, 1], RIGHT)


def test_one_bit_becomes_black_and_white():
    pixels = decoded(encode(two_colours((16, 1), 0, 1, "1"), "PNG"))
    assert_colour(pixels[0, 0], BLACK)
    assert_colour(pixels[0, 15], WHITE)


@pytest.mark.parametrize(("format", "tolerance"), [("JPEG", 6), ("TIFF", 0)])
def test_cmyk_becomes_rgb(format, tolerance):
    image = two_colours((32, 32), (0, 255, 255, 0), (0, 0, 0, 255), "CMYK")  # red | black
    pixels = decoded(encode(image, format))
    assert_colour(pixels[16, 4], RED, tolerance)
    assert_colour(pixels[16, 27], BLACK, tolerance)


def test_16_bit_grayscale_is_scaled_not_clipped():
    """Pillow's own I;16 -> L conversion clips at 255, which would turn 32896 (mid-grey) white."""
    image = Image.fromarray(np.array([[65535, 32896, 257, 0]], dtype=np.uint16))
    assert image.mode == "I;16"
    pixels = decoded(encode(image, "PNG"))
    assert pixels[0, :, 0].tolist() == [255, 128, 1, 0]
    assert (pixels == pixels[..., :1]).all()  # still grey


# --- errors ----------------------------------------------------------------------------------

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>'


def test_empty_bytes_are_invalid():
    with pytest.raises(InvalidImage) as caught:
        decode(b"")
    assert caught.type is InvalidImage and caught.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"<!DOCTYPE html><html><body><img src='cat.jpg'></body></html>",
        SVG,
    ],
    ids=["random", "html", "svg"],
)
def test_non_images_are_unsupported(data):
    with pytest.raises(UnsupportedImageType) as caught:
        decode(data)
    assert caught.value.status == 415


@pytest.mark.parametrize("format", ["ICO", "PCX"])
def test_images_outside_the_accepted_formats_are_unsupported(format):
    """Pillow reads these, but the service accepts only its six formats."""
    with pytest.raises(UnsupportedImageType):
        decode(encode(Image.new("RGB", (16, 16), RED), format))


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_image_is_invalid(format):
    """Noise keeps the file large, so the cut lands in the pixel data, past a valid header."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), format)
    with pytest.raises(InvalidImage) as caught:
        decode(data[: len(data) // 2])
    assert caught.type is InvalidImage and caught.value.status == 400


@pytest.mark.parametrize(
    "side",
    [30_000, 8_000],  # beyond Pillow's own bomb limit; only over ours (64 Mpx > 50 Mpx)
)
def test_decompression_bomb_is_refused_from_the_header(side):
    data = png_declaring(side, side)
    assert len(data) < 100
    with pytest.raises(TooManyPixels) as caught:
        decode(data)
    assert caught.value.status == 400


def test_image_over_max_pixels_is_refused():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(TooManyPixels):
        decode(data, limits(max_pixels=5_000))


def test_image_at_max_pixels_is_accepted():
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode(data, limits(max_pixels=5_000)).size == (100, 50)


# --- costly images: refused from headers and markers (issue 11) ------------------------------


def test_jpeg_with_more_scans_than_the_limit_is_refused():
    data = hostile.progressive_jpeg_with_scans(64, 33)
    with pytest.raises(ImageTooComplex) as caught:
        decode(data)
    assert caught.value.status == 400 and "33 scans" in caught.value.message
    assert decode(data, limits(max_jpeg_scans=33)).size == (64, 64)


def test_ordinary_progressive_jpeg_is_accepted():
    data = encode(two_colours((64, 64), LEFT, RIGHT), "JPEG", progressive=True, quality=95)
    assert 1 < data.count(b"\xff\xda") <= 10
    assert_colour(decoded(data)[32, 4], LEFT, tolerance=6)


@pytest.mark.parametrize("size", [(201, 10), (10, 201)], ids=["wide", "tall"])
def test_aspect_ratio_over_the_limit_is_refused(size):
    with pytest.raises(ImageTooComplex):
        decode(encode(Image.new("L", size), "PNG"))
    assert decode(encode(Image.new("L", (200, 10)), "PNG")).size == (200, 10)  # 20:1 is allowed


@pytest.mark.parametrize("build", [hostile.jpeg_with_empty_segments, hostile.png_with_empty_chunks],
                         ids=["JPEG segments", "PNG chunks"])
def test_files_of_more_pieces_than_the_limit_are_refused_before_opening(build):
    """Pillow parses these in Python; the count stops one past the limit."""
    with pytest.raises(ImageTooComplex):
        decode(build(101), limits(max_segments=100))
    assert decode(build(80), limits(max_segments=100)).size == (64, 64)


@settings(max_examples=300, deadline=None)
@given(signature=st.sampled_from([b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]), rest=st.binary(max_size=200),
       most=st.integers(1, 5))
def test_counting_pieces_of_any_bytes_gives_an_image_error_at_worst(signature, rest, most):
    """The counters walk untrusted lengths and markers: whatever the bytes, an answer, never a crash."""
    try:
        decode(signature + rest, limits(max_segments=most))
    except (InvalidImage, UnsupportedImageType):
        pass


def test_jpeg_fill_bytes_count_as_pieces():
    """Pillow reads FF fill bytes before a marker one at a time."""
    jpeg = encode(Image.new("RGB", (64, 64)), "JPEG")
    tables = jpeg.index(b"\xff\xdb")
    with pytest.raises(ImageTooComplex):
        decode(jpeg[:tables] + b"\xff" * 200 + jpeg[tables:], limits(max_segments=100))


def test_real_photos_are_well_within_the_piece_limit(cat_png):
    grace_hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    for data in (cat_png, grace_hopper.read_bytes()):
        decode(data, limits(max_segments=50))


def test_rle_bmp_is_refused_before_its_python_decoder_runs():
    with pytest.raises(ImageTooComplex) as caught:
        decode(hostile.rle_bmp(200, 10))
    assert "bmp_rle" in caught.value.message


@pytest.mark.parametrize(
    ("data", "needed"),
    [
        (lambda: hostile.blank_png(1000, 1000, "P"), 10**6),
        (lambda: hostile.blank_png(1000, 1000, "RGBA"), 4 * 10**6),
        (lambda: hostile.blank_webp(1000, 1000), 16 * 10**6),  # and libwebp's three copies
        (lambda: hostile.blank_tiff(1000, 16, 1), 2 * 10**6 + 2 * 64_000),  # and libtiff's strip of 64 rows
        (lambda: hostile.blank_tiff(1000, 32, 3), 4 * 10**6 + 4 * 64_000),
        (lambda: hostile.blank_tiff(1000, 32, 3, rows_per_strip=1000), 8 * 10**6),
    ],
    ids=["palette", "RGBA", "WebP", "16-bit TIFF", "float TIFF", "float TIFF in one strip"],
)
def test_decode_over_the_memory_limit_is_refused(data, needed):
    data = data()
    with pytest.raises(TooManyPixels):
        decode(data, limits(max_decode_bytes=needed - 1))
    assert decode(data, limits(max_decode_bytes=needed)).size == (1000, 1000)


def test_multi_scan_jpeg_counts_its_coefficients():
    """libjpeg keeps 2 bytes a sample until the last scan: 4:2:0 has 1.5 samples a pixel."""
    data = encode(Image.new("RGB", (1024, 1024)), "JPEG", progressive=True)
    output = 256 * 256 * 4  # decoded at 1/4 scale for min_side 256
    needed = output + 2 * 1024 * 1024 * 3 // 2
    with pytest.raises(TooManyPixels):
        decode(data, limits(max_decode_bytes=needed - 1), min_side=256)
    assert decode(data, limits(max_decode_bytes=needed), min_side=256).size == (256, 256)


def test_exif_flood_gives_one_log_line(caplog):
    """5 000 EXIF tags declaring more data than the block holds: Pillow warns once per tag."""
    with caplog.at_level("WARNING"):
        decoded(hostile.jpeg_with_exif_flood())
    assert len(caplog.records) == 1
    assert "5000 warning(s)" in caplog.records[0].getMessage()


# --- reducing before converting -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["P", "LA", "I;16"])
def test_reduced_conversion_keeps_colours_and_framing(mode):
    """Large images of other modes are converted a strip at a time, each reduced at once;
    the result must be the same colours in the same places as converting the whole image."""
    if mode == "P":
        image = Image.new("P", (1200, 2600))
        image.putpalette([*LEFT, *RIGHT, *GREEN])
        image.paste(1, (600, 0, 1200, 2600))
        image.paste(2, (0, 2000, 1200, 2600))
        data, left, right = encode(image, "PNG", transparency=2), LEFT, RIGHT
    elif mode == "LA":
        image = two_colours((1200, 2600), (50, 255), (200, 255), "LA")
        image.paste((0, 0), (0, 2000, 1200, 2600))
        data, left, right = encode(image, "PNG"), (50,) * 3, (200,) * 3
    else:
        pixels = np.full((2600, 1200), 12850, dtype=np.uint16)  # 50 in 8 bits
        pixels[:, 600:] = 51400  # 200
        pixels[2000:] = 65535
        data, left, right = encode(Image.fromarray(pixels), "PNG"), (50,) * 3, (200,) * 3
    pixels = decoded(data, min_side=256)
    assert pixels.shape == (2600 // 4, 1200 // 4, 3)  # reduced by 4: shorter side 300 >= 256
    assert_colour(pixels[100, 10], left)
    assert_colour(pixels[100, 290], right)
    assert_colour(pixels[600, 10], WHITE)  # transparent, or white, at the bottom


def test_orientation_is_applied_after_reducing():
    upright = np.kron(quadrants(), np.ones((8, 8, 1), dtype=np.uint8))  # 512 x 256
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[6](upright)))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decoded(encode(stored, "PNG", exif=exif), min_side=64)
    assert pixels.shape == (64, 128, 3)  # upright, reduced by 4
    for row, column in [(16, 32), (16, 96), (48, 32), (48, 96)]:
        assert_colour(pixels[row, column], tuple(upright[row * 4, column * 4]))


def test_model_input_is_the_centre_crop_of_the_decoded_image():
    data = encode(Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 451, 3), dtype=np.uint8)),
                  "PNG")
    expected = center_crop(decode(data), 224)
    np.testing.assert_array_equal(model_input(data, 224, limits()), expected)


# --- JPEG draft decoding -------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return encode(two_colours((2000, 1500), LEFT, RIGHT), "JPEG")


def test_min_side_decodes_jpeg_smaller_but_large_enough(large_jpeg):
    width, height = decode(large_jpeg, min_side=256).size
    assert width < 2000 and height < 1500
    assert min(width, height) >= 256
    assert width / height == pytest.approx(2000 / 1500, rel=0.01)


def test_without_min_side_jpeg_is_full_size(large_jpeg):
    assert decode(large_jpeg).size == (2000, 1500)


# --- center_crop -----------------------------------------------------------------------------


def test_center_crop_shape_and_dtype():
    crop = center_crop(Image.new("RGB", (300, 200), LEFT), 224)
    assert crop.dtype == np.uint8
    assert crop.shape == (224, 224, 3)
    assert_colour(crop[100, 100], LEFT)


@pytest.mark.parametrize("size", [(400, 256), (256, 400)], ids=["wide", "tall"])
def test_center_crop_at_256_is_exactly_the_centre_224_square(size):
    """At shorter side 256 the ImageNet transform scales by 1, so it must be a pure crop."""
    noise = np.random.default_rng(2).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    top, left = (size[1] - 224) // 2, (size[0] - 224) // 2
    crop = center_crop(Image.fromarray(noise), 224)
    np.testing.assert_array_equal(crop, noise[top:top + 224, left:left + 224])


@pytest.mark.parametrize("size", [(768, 512), (512, 768)], ids=["wide", "tall"])
def test_center_crop_drops_the_outer_sixteenth(size):
    """Shorter side 512 -> crop 224 keeps the centre 448 square; everything else is red.

    The red border stops 2 source pixels short of that square, because the bilinear filter
    legitimately reads ~1.5 source pixels past the box edge when halving.
    """
    width, height = size
    side = min(size) * 7 // 8
    left, top = (width - side) // 2, (height - side) // 2
    image = Image.new("RGB", size, RED)
    image.paste(GREEN, (left - 2, top - 2, left + side + 2, top + side + 2))
    crop = center_crop(image, 224)
    assert (crop == GREEN).all()


def test_center_crop_upscales_a_small_image():
    crop = center_crop(two_colours((16, 8), RED, BLUE), 224)
    assert crop.shape == (224, 224, 3)
    assert_colour(crop[112, 10], RED)
    assert_colour(crop[112, 213], BLUE)
