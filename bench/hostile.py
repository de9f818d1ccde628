"""Hostile and malformed requests, shared by the tests and the hostile benchmarks."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

from PIL import Image


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG (a 1x1 image's data) whose header claims ``width`` x ``height`` pixels."""
    png = encode(Image.new("L", (1, 1)), "PNG")
    header = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + header + struct.pack(">I", zlib.crc32(header)) + png[33:]


def animated_gif(frames: int) -> bytes:
    images = [Image.new("L", (16, 16), i % 256) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:])


def jpeg_with_corrupt_exif(cat: bytes) -> bytes:
    jpeg = encode(Image.open(io.BytesIO(cat)).convert("RGB"), "JPEG")
    garbage = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff" + b"\xde\xad" * 40  # IFD offset past the end
    segment = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    return jpeg[:2] + segment + jpeg[2:]


def hostile_requests(cat: bytes) -> dict[str, tuple[dict, set[int]]]:
    """name: (keyword arguments for requests.post, acceptable statuses)."""
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>'
    return {
        "empty body": (dict(data=b"", headers={"Content-Type": "image/png"}), {400}),
        "missing image field": (dict(files={"picture": ("a.png", cat)}), {400}),
        "non-image bytes": (dict(files={"image": ("a.jpg", b"\x00\x01garbage" * 100)}), {415}),
        "html named .jpg": (dict(files={"image": ("a.jpg", b"<html><script>alert(1)</script></html>")}), {415}),
        "svg named .jpg": (dict(files={"image": ("a.jpg", svg)}), {415}),
        "truncated jpeg": (dict(files={"image": ("a.jpg", encode(Image.open(io.BytesIO(cat)).convert("RGB"), "JPEG")[:3000])}), {400}),
        "truncated png": (dict(files={"image": ("a.png", cat[: len(cat) // 3])}), {400}),
        "decompression bomb": (dict(files={"image": ("bomb.png", png_declaring(30000, 30000))}), {400}),
        "animated gif, 3000 frames": (dict(files={"image": ("a.gif", animated_gif(3000))}), {200}),
        "corrupt exif": (dict(files={"image": ("a.jpg", jpeg_with_corrupt_exif(cat))}), {200}),
        "invalid base64": (dict(json={"image": "not*base64!"}), {400}),
        "data url, wrong type": (dict(json={"image": "data:text/plain;base64,aGVsbG8="}), {415}),
        "data url, no type": (dict(json={"image": "data:;base64,aGVsbG8="}), {415}),
        "malformed json": (dict(data=b'{"image": ', headers={"Content-Type": "application/json"}), {400}),
        "deeply nested json": (dict(data=b"[" * 200_000 + b"]" * 200_000, headers={"Content-Type": "application/json"}), {400, 413}),
        "huge json": (dict(data=b'{"image": "' + b"A" * 20_000_000 + b'"}', headers={"Content-Type": "application/json"}), {413}),
        "many files": (dict(files=[("image", (f"{i}.png", b"x")) for i in range(200)]), {413}),
        "huge field": (dict(files={"image": ("a.png", cat)}, data={"model": "x" * 2_000_000}), {413}),
        "top_k -1": (dict(files={"image": ("a.png", cat)}, data={"top_k": "-1"}), {400}),
        "top_k 0": (dict(files={"image": ("a.png", cat)}, data={"top_k": "0"}), {400}),
        "top_k 10000": (dict(files={"image": ("a.png", cat)}, data={"top_k": "10000"}), {400}),
        "top_k abc": (dict(files={"image": ("a.png", cat)}, data={"top_k": "abc"}), {400}),
        "unknown model": (dict(files={"image": ("a.png", cat)}, data={"model": "Nope"}), {400}),
        "non-utf-8 filename": (dict(files={"image": (b"\xff\xfe\xfa.png".decode("latin-1"), cat)}), {200}),
        "wrong content type": (dict(data=cat, headers={"Content-Type": "text/csv"}), {415}),
        "missing content type": (dict(data=cat, headers={"Content-Type": ""}), {415}),
    }


# --- image bombs: small files that are costly to decode (issue 11) -------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _deflated(row: bytes, rows: int) -> bytes:
    """``rows`` copies of ``row``, deflated without ever holding them all in memory."""
    compressor = zlib.compressobj(9)
    batch = max(1, 1_000_000 // len(row))
    parts = [compressor.compress(row * min(batch, rows - done)) for done in range(0, rows, batch)]
    return b"".join(parts) + compressor.flush()


# PNG colour type and bit depth, samples per pixel, for each Pillow mode the builder writes.
_PNG_TYPES = {"L": (0, 8, 1), "I;16": (0, 16, 1), "RGB": (2, 8, 3), "P": (3, 8, 1), "LA": (4, 8, 2),
              "RGBA": (6, 8, 4)}


def blank_png(width: int, height: int, mode: str) -> bytes:
    """A black ``width`` x ``height`` PNG, written chunk by chunk (Pillow would need the pixels
    in memory first). Palette images get a transparent entry (tRNS), as the issue's bomb has."""
    colour_type, depth, samples = _PNG_TYPES[mode]
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    palette = _chunk(b"PLTE", bytes(3 * 256)) + _chunk(b"tRNS", b"\x00") if mode == "P" else b""
    row = bytes(1 + width * samples * depth // 8)  # filter type 0, then black pixels
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + palette
            + _chunk(b"IDAT", _deflated(row, height)) + _chunk(b"IEND", b""))


def blank_tiff(side: int, bits: int, sample_format: int, rows_per_strip: int = 64,
               unknown_tags: int = 0) -> bytes:
    """A black ``side`` x ``side`` greyscale TIFF, deflate-compressed, every strip pointing at the
    same compressed bytes. ``sample_format`` 1 is unsigned integers, 3 floating point;
    ``unknown_tags`` private tags (libtiff warns about each) are added to the directory."""
    strip = _deflated(bytes(side * bits // 8), rows_per_strip)
    strips = -(-side // rows_per_strip)
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, bits), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, strips, None), (277, 3, 1, 1), (278, 4, 1, rows_per_strip), (279, 4, strips, None),
               (339, 3, 1, sample_format)] + [(40000 + i, 3, 1, 0) for i in range(unknown_tags)]
    ifd_size = 2 + 12 * len(entries) + 4
    offsets_at = 8 + ifd_size
    counts_at = offsets_at + 4 * strips
    data_at = counts_at + 4 * strips
    arrays = {273: (offsets_at, data_at), 279: (counts_at, len(strip))}
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if value is None:  # one value is stored in the entry itself, more at an offset
            value = arrays[tag][count == 1]
        ifd += struct.pack("<HHI", tag, kind, count) + struct.pack("<H2x" if kind == 3 else "<I", value)
    ifd += struct.pack("<I", 0)
    return (b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack(f"<{strips}I", *[data_at] * strips)
            + struct.pack(f"<{strips}I", *[len(strip)] * strips) + strip)


def rle_bmp(width: int, rows: int) -> bytes:
    """An 8-bit RLE-compressed BMP (BI_RLE8) of ``rows`` rows of one pixel and an end-of-line:
    Pillow's RLE decoder is Python code, and pads each row to ``width`` a byte at a time."""
    palette = bytes(4 * 256)
    height = rows
    pixels = b"\x01\x00\x00\x00" * rows + b"\x00\x01"  # (1 pixel, colour 0), end of line; end of bitmap
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _segments(jpeg: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment after SOI; a scan's end includes its coded data."""
    found, position = [], 2
    while position < len(jpeg):
        marker = jpeg[position + 1]
        end = position + 2 if marker == 0xD9 else position + 2 + struct.unpack(">H", jpeg[position + 2:position + 4])[0]
        if marker == 0xDA:  # the coded data runs to the next marker other than RSTn
            end = jpeg.index(b"\xff", end)
            while jpeg[end + 1] == 0 or 0xD0 <= jpeg[end + 1] <= 0xD7:
                end = jpeg.index(b"\xff", end + 2)
        found.append((marker, position, end))
        position = end
    return found


def progressive_jpeg_with_scans(side: int, scans: int) -> bytes:
    """A black progressive JPEG whose last scan (an AC refinement, 12 bytes with its Huffman
    table) is repeated until the file has ``scans`` scans: libjpeg decodes every one."""
    jpeg = encode(Image.new("RGB", (side, side)), "JPEG", progressive=True)
    segments = _segments(jpeg)
    (table, *_), (scan, *_), (end, *_) = segments[-3:]
    assert (table, scan, end) == (0xC4, 0xDA, 0xD9)
    repeated = jpeg[segments[-3][1]:segments[-2][2]]
    present = sum(marker == 0xDA for marker, _, _ in segments)
    return jpeg[:segments[-1][1]] + repeated * max(0, scans - present) + jpeg[segments[-1][1]:]


def jpeg_with_exif_flood(entries: int = 5000) -> bytes:
    """A small JPEG whose EXIF block has ``entries`` tags, each declaring more data than the
    block holds: Pillow warns once per tag while reading it."""
    ifd = struct.pack("<H", entries) + b"".join(
        struct.pack("<HHII", 0x9000 + i, 4, 100_000, 0xFFFFFF00) for i in range(entries)) + bytes(4)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    jpeg = encode(Image.new("RGB", (64, 64), (90, 120, 40)), "JPEG")
    return jpeg[:2] + segment + jpeg[2:]


def jpeg_with_empty_segments(count: int) -> bytes:
    """A small JPEG with ``count`` empty APP5 segments (4 bytes each) before its tables."""
    jpeg = encode(Image.new("RGB", (64, 64)), "JPEG")
    return jpeg[:2] + b"\xff\xe5\x00\x02" * count + jpeg[2:]


def png_with_empty_chunks(count: int) -> bytes:
    """A small PNG with ``count`` empty private chunks (12 bytes each) before its pixel data."""
    png = blank_png(64, 64, "L")
    pixels_at = png.index(b"IDAT") - 4
    return png[:pixels_at] + _chunk(b"prVt", b"") * count + png[pixels_at:]


def png_with_corrupt_pixels(png: bytes) -> bytes:
    """``png`` with its compressed pixels made undecodable (a reserved deflate block type),
    its chunk's length and CRC still right: the header reads, the pixels do not."""
    at = png.index(b"IDAT")
    length = int.from_bytes(png[at - 4:at], "big")
    body = b"\x78\x9c" + b"\xff" * (length - 2)
    return png[:at - 4] + _chunk(b"IDAT", body) + png[at + 4 + length + 4:]


def blank_webp(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A lossless black WebP: a 16383 x 2990 one is a few dozen bytes."""
    return encode(Image.new(mode, (width, height)), "WEBP", lossless=True, method=0)


# Each image bomb: name -> (builder, the status it must get, its error code; None: a prediction).
# tests/test_image_bombs.py sends them to uWSGI, bench/image_bombs.py measures their cost.
IMAGE_BOMBS: dict[str, tuple[Callable[[], bytes], int, str | None]] = {
    "progressive JPEG, 100 000 scans": (lambda: progressive_jpeg_with_scans(2048, 100_000), 400,
                                        "image_too_complex"),
    "progressive JPEG 7000x7000, 32 scans": (lambda: progressive_jpeg_with_scans(7000, 32), 200, None),
    "RLE BMP, 4 KB": (lambda: rle_bmp(20_000, 1000), 400, "image_too_complex"),
    "palette PNG 1x49,999,999 with tRNS": (lambda: blank_png(1, 49_999_999, "P"), 400, "image_too_complex"),
    "RGBA PNG 1x49,999,999": (lambda: blank_png(1, 49_999_999, "RGBA"), 400, "image_too_complex"),
    "LA PNG 1x49,999,999": (lambda: blank_png(1, 49_999_999, "LA"), 400, "image_too_complex"),
    "RGBA PNG 7000x7000": (lambda: blank_png(7000, 7000, "RGBA"), 200, None),
    "palette PNG 7000x7000 with tRNS": (lambda: blank_png(7000, 7000, "P"), 200, None),
    "16-bit PNG 7000x7000": (lambda: blank_png(7000, 7000, "I;16"), 200, None),
    "WebP 16383x2990": (lambda: blank_webp(16383, 2990), 400, "too_many_pixels"),
    "WebP 8000x2000": (lambda: blank_webp(8000, 2000), 200, None),
    "16-bit TIFF 7000x7000": (lambda: blank_tiff(7000, 16, 1), 200, None),
    "float TIFF 7000x7000": (lambda: blank_tiff(7000, 32, 3), 200, None),
    "float TIFF 7000x7000 in one strip": (lambda: blank_tiff(7000, 32, 3, rows_per_strip=7000), 400,
                                          "too_many_pixels"),
    "16-bit TIFF 7000x7000 in one strip": (lambda: blank_tiff(7000, 16, 1, rows_per_strip=7000), 200, None),
    "EXIF block of 5000 broken entries": (jpeg_with_exif_flood, 200, None),
    "JPEG of 2.5 million empty segments": (lambda: jpeg_with_empty_segments(2_500_000), 400, "image_too_complex"),
    "PNG of 800 000 empty chunks": (lambda: png_with_empty_chunks(800_000), 400, "image_too_complex"),
}


# --- request bodies that are costly to parse (issue 21) -------------------------------------

def _json_list(item: bytes, count: int, prefix: bytes = b'{"images": [', suffix: bytes = b"]}") -> bytes:
    return prefix + b",".join([item] * count) + suffix


def json_padded_past_the_shape_check() -> bytes:
    """The costliest JSON the shape check lets through: as many empty strings as it allows in
    'images', and a long string filling the rest of the 64 MiB body."""
    head = _json_list(b'""', 4 * 2**20 - 1, suffix=b'], "pad": "')
    return head + b"A" * (64 * 2**20 - len(head) - 2) + b'"}'


# Each costly body: name -> (builder, the status it must get, its error code). Sent to a uWSGI
# worker through NGINX by tests/test_image_bombs.py; bench/image_bombs.py --bodies measures them.
HOSTILE_BODIES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "JSON of 3 million empty images": (lambda: _json_list(b'""', 3_000_000), 413, "too_many_images"),
    "JSON of 64 MiB of {}": (lambda: _json_list(b"{}", 64 * 2**20 // 3 - 1, b"[", b"]"), 400, "invalid_request"),
    "JSON padded past the shape check": (json_padded_past_the_shape_check, 413, "too_many_images"),
}
