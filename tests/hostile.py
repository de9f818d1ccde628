"""Hostile and malformed requests, shared by tests/test_hostile_inputs.py and bench/hostile_load.py."""

from __future__ import annotations

import io
import struct
import zlib

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
