"""Decoding and framing an upload, by photo size: what Pillow's JPEG draft mode saves.

    python3 -m bench.decode [--repeats 15]

The bundled photo (451x300) and the same photo scaled up to phone-camera sizes and saved as
JPEG at quality 92, each decoded and framed for a 224x224 model (``images.decode`` then
``images.center_crop``) two ways: as the app does it, with the JPEG decoder scaling by 1/2,
1/4 or 1/8 while the picture stays large enough (``min_side``), and decoding every pixel.
Prints medians in ms and their ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from PIL import Image

from classifier.imaging import images

ROOT = Path(__file__).resolve().parent.parent

PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
SIZES = [(2016, 1512), (4032, 3024), (8064, 6048)]  # 3, 12 and 48 megapixels: under the default limit
MODEL_SIZE = 224


def photos() -> list[tuple[str, bytes]]:
    original = PHOTO.read_bytes()
    picture = Image.open(io.BytesIO(original)).convert("RGB")
    made = [(f"{picture.width}x{picture.height}", original)]
    for width, height in SIZES:
        buffer = io.BytesIO()
        picture.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=92)
        made.append((f"{width}x{height}", buffer.getvalue()))
    return made


def median_ms(data: bytes, min_side: int | None, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        images.center_crop(images.decode(data, min_side=min_side), MODEL_SIZE)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    side = images.decode_side_for(MODEL_SIZE)
    print(f"{'photo':<11}{'JPEG KB':>9}{'draft ms':>10}{'full ms':>9}{'full/draft':>12}")
    for name, data in photos():
        draft, full = median_ms(data, side, args.repeats), median_ms(data, None, args.repeats)
        print(f"{name:<11}{len(data) / 1024:>9.0f}{draft:>10.1f}{full:>9.1f}{full / draft:>12.1f}")


if __name__ == "__main__":
    main()
