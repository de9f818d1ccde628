"""What a hostile remote costs the instance that forwards to it (issue 21, F).

    python3 -m bench.hostile_remote

Starts ``python3 app.py`` (custom remotes allowed, no warm-up) and, for each answer below, a
loopback remote that gives it; sends the request that remote answers and prints the status,
the size of the answer, the app's CPU seconds for it and the wall time:
- 32 images whose heatmaps each hold 60,000 empty PNG chunks (720 KB, under the 1 MiB an
  image's answer may take);
- a label of 600 KB, which an answer repeats three times;
- a heatmap whose header reads and whose pixels do not, to the page without JavaScript;
- a status line, then a header one byte every 0.5 s, for ever (the deadline of the whole
  exchange, 3 + 30 s by default, ends it; the app inherits the environment, so
  ``CLASSIFIER_REMOTE_READ_TIMEOUT=2`` ends it after 5 s).
Run it in an older checkout to see what the checks in classifier/forwarding/ save (before
issue 22, forwarding waited for the last one's headers without end: no answer in 90 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import requests

from bench.hostile import png_with_corrupt_pixels, png_with_empty_chunks
from bench.servers import StubServer, answering_json, hostile_handler
from bench.stack import free_port, stop, wait_until_ok
from classifier.runtimes.explain import DATA_URL_PREFIX, heatmap_png

ROOT = Path(__file__).resolve().parent.parent

PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
ANSWER = {"model": "MobileNetV2", "weights": "imagenet", "timing_ms": {"total": 1}}


def result(label: str = "tabby", heatmap: bytes | None = None, side: int = 20) -> dict:
    """One image's part of a remote's answer, its prediction ``label``, explained with ``heatmap``
    over a ``side`` square crop."""
    png = heatmap or heatmap_png(np.eye(7), (side, side))
    explanation = {"class_id": "n02123045", "label": "tabby", "crop": [0, 0, side, side], "grid": np.eye(7).tolist(),
                   "heatmap": DATA_URL_PREFIX + base64.b64encode(png).decode(), "summary": "Heat in the centre"}
    return {"predictions": [{"label": label, "class_id": "n02123045", "score": 0.5}], "timing_ms": {"total": 1},
            "explanation": explanation}


def scenarios() -> dict[str, tuple[type, int, str]]:
    """name: (the remote's request handler, images sent, the path they are sent to)."""
    chunks = png_with_empty_chunks(60_000)
    many = [{"filename": f"{i}.jpg", **result(heatmap=chunks, side=64)} for i in range(32)]
    return {
        "32 heatmaps of 60,000 empty chunks, POST /predict": (answering({**ANSWER, "results": many}), 32, "/predict"),
        "a label of 600 KB, POST /predict": (answering({**ANSWER, **result(label="x" * 600_000)}), 1, "/predict"),
        "a heatmap with corrupt pixels, POST / (the page)":
            (answering({**ANSWER, **result(heatmap=png_with_corrupt_pixels(heatmap_png(np.eye(7), (20, 20))))}),
             1, "/"),
        "a header byte every 0.5 s, for ever, POST /predict": (hostile_handler("slow headers"), 1, "/predict"),
    }


def answering(document: dict) -> type:
    return answering_json(json.dumps(document).encode())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options but --help
    port = free_port()
    env = {**os.environ, "CLASSIFIER_WARMUP": "0", "CLASSIFIER_RANDOM_WEIGHTS": "1"}
    app = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, photo = f"http://127.0.0.1:{port}", PHOTO.read_bytes()
    try:
        wait_until_ok(url + "/healthz", app, 120)
        process = psutil.Process(app.pid)
        for name, (handler, images, path) in scenarios().items():
            with StubServer(handler) as remote:
                cpu, started = sum(process.cpu_times()[:2]), time.monotonic()
                fields = {"server": "custom", "remote_url": remote.url + "predict", "explain": "1"}
                response = requests.post(url + path, files=[("image", (f"{i}.jpg", photo)) for i in range(images)],
                                         data=fields, timeout=300)
                spent, wall = sum(process.cpu_times()[:2]) - cpu, time.monotonic() - started
            print(f"{name:52} {response.status_code}  {len(response.content):>11,} bytes  {spent:5.2f} s CPU  "
                  f"{wall:5.1f} s")
    finally:
        stop(app)


if __name__ == "__main__":
    main()
