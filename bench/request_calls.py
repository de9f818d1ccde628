"""How much Python a prediction runs besides decoding and the forward pass, counted exactly.

    python3 -m bench.request_calls [--model EfficientNetLite0] [--requests 200] [--keras-home DIR]

Sends the test JPEG as a raw body to ``POST /predict`` through Flask's test client in this
process, ONNX Runtime on one thread, offline, in a fresh Keras folder unless ``--keras-home``
names one (the model's export is made there first, during the warm-up requests; in a fresh
folder the default model is the bundled EfficientNetLite0), and counts with cProfile, per request: the
function calls and the ``stat`` system calls (``os.stat``, however reached) made. Two
cases: the request names the model, and it names none with no ``CLASSIFIER_DEFAULT_MODEL`` (the
server finds its default). Counts do not depend on how busy the machine is, unlike the times
``bench/profile_workers.py`` samples under load; the CPU ms per request are printed beside them.
``import uwsgi`` fails outside uWSGI, so each request's connection check looks for the module
on ``sys.path`` (a few ``stat`` calls that a uWSGI worker does not make): they are counted apart.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMAGE = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"


def measure(model: str, named: bool, requests: int) -> str:
    """One case's counts per request, as a line."""
    import app

    client = app.create_app({"warmup": False}).test_client()
    image, url = IMAGE.read_bytes(), f"/predict?model={model}" if named else "/predict"

    def post() -> None:
        response = client.post(url, data=image, content_type="image/jpeg")
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {response.text}")

    for _ in range(20):  # the export made, the model loaded, caches warm
        post()
    profile, cpu = cProfile.Profile(), time.process_time()
    profile.enable()
    for _ in range(requests):
        post()
    profile.disable()
    cpu_ms = (time.process_time() - cpu) * 1000 / requests
    entries = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in entries.values()) / requests
    imports = sum(entry[1] for key, entry in entries.items() if key[2] == "_path_stat")
    stats = sum(entry[1] for key, entry in entries.items() if key[2] == "<built-in method posix.stat>") - imports
    case = f"model={model}" if named else "no model, no configured default"
    return (f"{case}: {calls:,.0f} function calls, {stats / requests:.1f} stat calls "
            f"(+{imports / requests:.1f} looking for uwsgi), {cpu_ms:.2f} CPU ms per request (profiled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="EfficientNetLite0", help="a model whose weights are here")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keras-home", help="a Keras folder to use (default: a fresh one)")
    args = parser.parse_args()
    os.environ.update(CLASSIFIER_OFFLINE="1", CLASSIFIER_RUNTIME="onnx", CLASSIFIER_RUNTIME_THREADS="1",
                      KERAS_HOME=args.keras_home or tempfile.mkdtemp(prefix="request-calls-"))
    os.environ.pop("CLASSIFIER_DEFAULT_MODEL", None)
    logging.disable(logging.INFO)  # one access line per request is not what is measured
    for named in (True, False):
        print(measure(args.model, named, args.requests), flush=True)


if __name__ == "__main__":
    main()
