"""Measure the memory of one uWSGI worker with each model loaded, for sizing `processes`.

    python3 -m remote.measure_memory [--predictions 10] [--models MobileNetV2 ...] [--runtime keras]

For each model, starts `uwsgi --ini uwsgi.ini` with one worker on loopback ports (warm-up
off, downloads off, weights that need converting converted beforehand), sends predictions
of a real photo with that model, and reads the worker's memory with psutil, and how long
its first prediction took (with `--runtime keras`: loading TensorFlow, building the model,
tracing its graph; what uWSGI's harakiri must allow for): RSS (what `ps` and `top` show),
USS (memory that only this worker holds: what each extra worker adds) and PSS. A model
whose pretrained weights are not on this machine is measured with random weights: same
architecture, same number of weights, same memory. The last row is one worker that has
served every model, since any worker loads whichever model a request asks for (if some
model needs random weights, that worker starts again with random weights for all of the
models that follow). Prints a Markdown table (remote/README.md has one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from bench import stack

ROOT = Path(__file__).resolve().parent.parent

MODELS = ("MobileNetV2", "ResNet50", "NASNetMobile", "EfficientNetLite0")
MIB = 1024 * 1024
PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"  # 451x300, shipped with the app


class Instance:
    """One uWSGI worker of one thread, answering plain HTTP on a loopback port."""

    def __init__(self, folder: Path, random_weights: bool, runtime: str | None = None) -> None:
        http = f"127.0.0.1:{stack.free_port()}"
        env = {"CLASSIFIER_UWSGI_HTTP": http, "CLASSIFIER_WARMUP": "0", "CLASSIFIER_OFFLINE": "1",
               "KERAS_HOME": os.environ.get("KERAS_HOME", str(folder / "keras")),
               "CLASSIFIER_RANDOM_WEIGHTS": "1" if random_weights else "0",
               **({"CLASSIFIER_RUNTIME": runtime} if runtime else {})}
        self.server = stack.start_uwsgi(folder, "worker", f"127.0.0.1:{stack.free_port()}", env, 1, 1)
        self.url = f"http://{http}"
        try:
            stack.wait_for(self.url + "/healthz", self.server, timeout=120)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def predict(self, image: bytes, model: str) -> requests.Response:
        try:
            return requests.post(self.url + "/predict", files={"image": (PHOTO.name, image)},
                                 data={"model": model}, timeout=300)
        except requests.RequestException:
            tail = self.server.log.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(tail), file=sys.stderr)
            raise

    def worker(self) -> psutil.Process:
        (worker,) = psutil.Process(self.server.process.pid).children()
        return worker

    def memory(self) -> tuple[float, float, float]:
        info = self.worker().memory_full_info()
        return info.rss / MIB, info.uss / MIB, info.pss / MIB

    def runtimes(self) -> str:
        """Which inference libraries the worker has loaded."""
        maps = Path(f"/proc/{self.worker().pid}/maps").read_text()
        found = [name for name, library in (("TensorFlow", "libtensorflow"), ("ONNX Runtime", "onnxruntime"))
                 if library in maps]
        return " + ".join(found) or "-"

    def stop(self) -> None:
        """Stop uWSGI, and wait for its worker too, so the next instance is measured alone."""
        process = self.server.process
        workers = psutil.Process(process.pid).children() if process.poll() is None else []
        self.server.stop()
        psutil.wait_procs(workers, timeout=10)


def measure(models: list[str], predictions: int, image: bytes, folder: Path, runtime: str | None) -> dict[str, str]:
    """Row cells for one worker that has served ``models``, in that order."""
    weights = []
    first = 0.0
    instance = Instance(folder, random_weights=False, runtime=runtime)
    try:
        for model in models:
            started = time.monotonic()
            response = instance.predict(image, model)
            if response.status_code == 503:  # no pretrained weights here: measure random ones
                instance.stop()
                instance = Instance(folder, random_weights=True, runtime=runtime)
                started = time.monotonic()
                response = instance.predict(image, model)
            first = max(first, time.monotonic() - started)
            response.raise_for_status()
            weights.append(response.json()["weights"])
            for _ in range(predictions - 1):
                instance.predict(image, model).raise_for_status()
        rss, uss, pss = instance.memory()
        runtimes = instance.runtimes()
    finally:
        instance.stop()
    return {"weights": "/".join(sorted(set(weights))), "runtime": runtimes, "first": f"{first:.1f}",
            "rss": f"{rss:,.0f}", "uss": f"{uss:,.0f}", "pss": f"{pss:,.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", type=int, default=10, help="predictions per model before measuring")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--runtime", help="CLASSIFIER_RUNTIME for the workers (default: the app's own default)")
    args = parser.parse_args()
    image = PHOTO.read_bytes()
    with tempfile.TemporaryDirectory(prefix="classifier-memory-") as tmp:
        folder = Path(tmp)
        # Weights that ship in another format are converted once per host, on first use; do
        # that first, so that the workers measured load the converted file as they normally do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSIFIER_")}
        env.setdefault("KERAS_HOME", str(folder / "keras"))
        if args.runtime:
            env["CLASSIFIER_RUNTIME"] = args.runtime
        subprocess.run([sys.executable, "-m", "classifier", "predict", str(PHOTO)], cwd=ROOT,
                       env={**env, "CLASSIFIER_OFFLINE": "1"}, check=True, capture_output=True, timeout=600)
        idle = Instance(folder, random_weights=True)
        try:
            requests.get(idle.url + "/", timeout=30).raise_for_status()
            rss, uss, pss = idle.memory()
        finally:
            idle.stop()
        rows = [("app loaded, no model yet", "-", "-", "-", f"{rss:,.0f}", f"{uss:,.0f}", f"{pss:,.0f}")]
        keys = ("weights", "runtime", "first", "rss", "uss", "pss")
        for model in args.models:
            cells = measure([model], args.predictions, image, folder, args.runtime)
            rows.append((model, *(cells[key] for key in keys)))
            print(f"measured {model}", file=sys.stderr)
        if len(args.models) > 1:
            cells = measure(args.models, args.predictions, image, folder, args.runtime)
            rows.append(("all of them, one after another", *(cells[key] for key in keys)))
    print("| worker has loaded | weights | runtime | first prediction s | RSS MiB | USS MiB | PSS MiB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
