"""Per model: the raw forward pass against ``/predict`` over real HTTP, measured in one run.

    python bench/predict_latency.py [--requests 50] [--models MobileNetV2 ResNet50 ...]

The server is ``python app.py`` on a loopback port with random weights (the timings do not
depend on the weight values). The raw figure is ``LoadedModel.scores`` on one prepared
crop in this process; ``/predict`` adds decoding, resizing, JSON and HTTP, so the ratio
p50 / raw is the server's overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["CLASSIFIER_RANDOM_WEIGHTS"] = "1"

from classifier import images  # noqa: E402
from classifier.engine import POOL  # noqa: E402
from classifier.models import REGISTRY  # noqa: E402


def photo() -> bytes:
    import skimage.data

    return (Path(skimage.data.__file__).parent / "chelsea.png").read_bytes()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def raw_forward_ms(name: str, image: bytes, repeats: int) -> float:
    spec = REGISTRY[name]
    loaded = POOL.get(spec, None)
    crop = images.center_crop(images.decode(image, max_pixels=10**8), spec.input_size)[None]
    loaded.scores(crop)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loaded.scores(crop)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "CLASSIFIER_WARMUP": "0"}
    process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def predict_ms(url: str, name: str, image: bytes, count: int) -> list[float]:
    session = requests.Session()
    files = {"image": ("cat.png", image)}
    session.post(url, files=files, data={"model": name}, timeout=300).raise_for_status()  # load + warm
    times = []
    for _ in range(count):
        start = time.perf_counter()
        session.post(url, files=files, data={"model": name}, timeout=60).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--models", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    image = photo()
    server = start_server(args.port)
    try:
        print(f"{'model':<18}{'raw ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'p50/raw':>9}")
        for name in args.models:
            raw = raw_forward_ms(name, image, args.requests)
            times = predict_ms(f"http://127.0.0.1:{args.port}/predict", name, image, args.requests)
            p50, p95 = percentile(times, 50), percentile(times, 95)
            print(f"{name:<18}{raw:>9.1f}{p50:>9.1f}{p95:>9.1f}{p50 / raw:>9.2f}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
