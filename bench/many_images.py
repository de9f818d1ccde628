"""What the largest request of several images costs a uWSGI worker: CPU time, peak memory and
wall time, against the 60 s harakiri limit (uwsgi.ini).

    python3 -m bench.many_images [--images 32] [--keras-home DIR]

One uWSGI worker of one thread with the project's uwsgi.ini, the pretrained EfficientNetLite0
(the default model) warmed up first. Each request is sent to uWSGI's HTTP port; the worker's
CPU time is read before and after, and its peak resident size (VmHWM) is reset before each
request through /proc/<pid>/clear_refs (Linux only). The requests:

- phone photos: ``--images`` 12-megapixel JPEGs (4032x3024, 2.6 MiB each at quality 90, what a phone
  takes), as many as fit the 64 MiB body as multipart;
- the same as JSON (base64: a third larger, so fewer fit);
- costly images: ``--images`` copies of the costliest accepted file of bench/hostile.py to
  decode (a 49-megapixel, 32-scan progressive JPEG: about 1 s of CPU each);
- a series: ``--series`` real photos (the tests' three, in turn) sent one per request, then
  8 and 32 per request, one request at a time: images per second each way.

docs/many-images.md and SECURITY.md carry these figures.
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image

from bench import stack
from bench.hostile import progressive_jpeg_with_scans
from bench.photos import PHOTOS
from classifier import Settings

ROOT = Path(__file__).resolve().parent.parent

PHONE_SIZE = (4032, 3024)


def phone_photo(seed: int) -> bytes:
    """A 12-megapixel JPEG with a phone photo's detail: a real photo scaled up, with sensor noise."""
    photo = Image.open(PHOTOS["chelsea"]).convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 6, (PHONE_SIZE[1], PHONE_SIZE[0], 3))
    pixels = np.clip(np.asarray(photo, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def measure(url: str, worker: psutil.Process, send: dict) -> dict[str, object]:
    Path(f"/proc/{worker.pid}/clear_refs").write_text("5")
    cpu = sum(worker.cpu_times()[:2])
    started = time.perf_counter()
    response = requests.post(url + "/predict", timeout=120, **send)
    wall = time.perf_counter() - started
    status = Path(f"/proc/{worker.pid}/status").read_text()
    peak_mib = int(status.split("VmHWM:")[1].split()[0]) / 1024
    rss_mib = int(status.split("VmRSS:")[1].split()[0]) / 1024
    body = response.json()
    answered = sum("predictions" in result for result in body.get("results", []))
    return {"status": response.status_code, "answered": answered, "cpu_s": sum(worker.cpu_times()[:2]) - cpu,
            "wall_s": wall, "peak_mib": peak_mib, "rss_after_mib": rss_mib,
            "error": body.get("error", {}).get("code")}


def series(url: str, count: int, per_request: int) -> float:
    """Images per second for ``count`` real photos sent ``per_request`` to a request, in turn."""
    data = [path.read_bytes() for path in PHOTOS.values()]
    photos = [(f"{index}.jpg", data[index % len(data)]) for index in range(count)]
    started = time.perf_counter()
    for start in range(0, count, per_request):
        chunk = photos[start:start + per_request]
        requests.post(url + "/predict", files=[("image", item) for item in chunk], timeout=120).raise_for_status()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=Settings().max_images)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--keras-home", type=Path, help=stack.KERAS_HOME_HELP)
    args = parser.parse_args()
    limit = Settings().max_request_bytes
    photos = [phone_photo(seed) for seed in range(args.images)]
    multipart_count = min(args.images, limit // (max(map(len, photos)) + 1024))
    json_count = min(args.images, limit * 3 // 4 // (max(map(len, photos)) + 1024))
    costly = progressive_jpeg_with_scans(7000, 32)
    requests_ = {
        f"{multipart_count} phone JPEGs, multipart": {"files": [("image", (f"{i}.jpg", photos[i]))
                                                                for i in range(multipart_count)]},
        f"{json_count} phone JPEGs, JSON": {"json": {"images": [base64.b64encode(p).decode()
                                                                for p in photos[:json_count]]}},
        f"{args.images} costly JPEGs (49 MP, 32 scans), multipart": {
            "files": [("image", (f"{i}.jpg", costly)) for i in range(args.images)]},
    }
    print(f"phone JPEG: {len(photos[0]) / 2**20:.2f} MiB; costly JPEG: {len(costly) / 2**20:.2f} MiB")
    with tempfile.TemporaryDirectory() as folder:
        http = f"127.0.0.1:{stack.free_port()}"
        server = stack.start_uwsgi(Path(folder), "many", f"127.0.0.1:{stack.free_port()}",
                                   {"CLASSIFIER_UWSGI_HTTP": http, "CLASSIFIER_OFFLINE": "1",
                                    "KERAS_HOME": str(stack.keras_home(Path(folder), args.keras_home))},
                                   processes=1, threads=1)
        try:
            url = f"http://{http}"
            stack.wait_until_ok(url + "/healthz", server.process, 120)
            worker = server.workers()[0]
            requests.post(url + "/predict", files={"image": ("w.jpg", photos[0])}, timeout=120).raise_for_status()
            print(f"worker idle after one prediction: {worker.memory_info().rss / 2**20:.0f} MiB")
            for name, send in requests_.items():
                figures = measure(url, worker, send)
                print(f"{name:48} " + "  ".join(f"{key} {value:.2f}" if isinstance(value, float) else
                                                 f"{key} {value}" for key, value in figures.items()), flush=True)
            for per_request in (1, 8, args.images):
                rate = series(url, args.series, per_request)
                print(f"{args.series} photos, {per_request} per request: {rate:.1f} images/s", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
