"""Measure the memory of one uWSGI worker with each model loaded, for sizing `processes`.

    python remote/measure_memory.py [--predictions 10] [--models MobileNetV2 ...]

For each model, starts `uwsgi --ini uwsgi.ini` with one worker on loopback ports (warm-up
off, downloads off, weights that need converting converted beforehand), sends predictions of a real photo with that model, and reads the
worker's memory with psutil, and how long its first prediction took (loading TensorFlow,
building the model, tracing its graph: what uWSGI's harakiri must allow for): RSS (what `ps` and `top` show), USS (memory that only this
worker holds: what each extra worker adds) and PSS. A model whose pretrained weights are not
on this machine is measured with random weights: same architecture, same number of weights,
same memory. The last row is one worker that has served every model, since any worker loads
whichever model a request asks for. Prints a Markdown table (remote/README.md has one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("MobileNetV2", "ResNet50", "NASNetMobile", "EfficientNetLite0")
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo() -> Path:
    import skimage.data  # a test requirement; any JPEG or PNG would do

    return Path(skimage.data.__file__).parent / "chelsea.png"


class Instance:
    def __init__(self, folder: Path, random_weights: bool, runtime: str | None = None) -> None:
        self.port = free_port()
        uwsgi = Path(sys.executable).with_name("uwsgi")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLASSIFIER_", "UWSGI_"))}
        env.update(CLASSIFIER_UWSGI_SOCKET=f"127.0.0.1:{free_port()}",
                   CLASSIFIER_UWSGI_HTTP=f"127.0.0.1:{self.port}", CLASSIFIER_UWSGI_PROCESSES="1",
                   CLASSIFIER_WARMUP="0", CLASSIFIER_OFFLINE="1")
        env.setdefault("KERAS_HOME", str(folder / "keras"))
        if random_weights:
            env["CLASSIFIER_RANDOM_WEIGHTS"] = "1"
        if runtime:
            env["CLASSIFIER_RUNTIME"] = runtime
        command = [str(uwsgi) if uwsgi.is_file() else shutil.which("uwsgi"), "--ini", str(ROOT / "uwsgi.ini")]
        self.log = (folder / "uwsgi.log").open("ab")
        self.process = subprocess.Popen(command, env=env, cwd=folder, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uwsgi exited with {self.process.returncode}; see {folder / 'uwsgi.log'}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError("uwsgi did not become healthy")

    def predict(self, image: bytes, model: str) -> requests.Response:
        try:
            return requests.post(self.url + "/predict", files={"image": ("photo.png", image)},
                                 data={"model": model}, timeout=300)
        except requests.RequestException:
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace").splitlines()[-30:]
            print("\n".join(tail), file=sys.stderr)
            raise

    def worker(self) -> psutil.Process:
        (worker,) = psutil.Process(self.process.pid).children()
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
        workers = psutil.Process(self.process.pid).children() if self.process.poll() is None else []
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        psutil.wait_procs(workers, timeout=10)
        self.log.close()


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
    image = photo().read_bytes()
    with tempfile.TemporaryDirectory(prefix="classifier-memory-") as tmp:
        folder = Path(tmp)
        # Weights that ship in another format are converted once per host, on first use; do
        # that first, so that the workers measured load the converted file as they normally do.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSIFIER_")}
        env.setdefault("KERAS_HOME", str(folder / "keras"))
        if args.runtime:
            env["CLASSIFIER_RUNTIME"] = args.runtime
        subprocess.run([sys.executable, "-m", "classifier", "predict", str(photo())], cwd=ROOT,
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
