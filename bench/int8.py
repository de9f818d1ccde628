"""int8 forms against fp32: forward pass at batch 1 on one thread, agreement, cold start, memory.

    python3 -m bench.int8 [MODEL ...] [--keras-home DIR] [--repeats N]

For each model with weights here (default: all), ``classifier export`` makes and checks its
fp32 export and int8 form (once; then they are read from the Keras cache), then this prints:
both forward passes (median ms, interleaved) and the speed-up, the int8 form's agreement with
fp32 on the held-out photos and their augmentations (as its check measures it), and a fresh
worker-like process's start to first predictions of both forms, and its memory then.
``compare`` is what bench/serving.py calls with the two files of one model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from classifier.artifacts import quantize
from classifier.artifacts.convert import median_ms
from classifier.artifacts.exports import Export
from classifier.artifacts.int8 import HELD_OUT, Int8Record, int8_form
from classifier.config import Settings
from classifier.models.registry import REGISTRY, ModelSpec
from classifier.models.weights import Found
from classifier.runtimes.forward import OnnxRuntime
from classifier.serving.pool import Serving

ROOT = Path(__file__).resolve().parent.parent

PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
WORKER = """
import sys, time
started = float(sys.argv[1])
import psutil
from classifier import Classifier, Settings
classifier = Classifier(Settings.from_env(warmup=False, int8_min_top1=0.0, int8_min_top5=0.0))
photo = open(sys.argv[2], "rb").read()
for name in sys.argv[3:]:
    classifier.classify(photo, name, 5)
rss_mb = psutil.Process().memory_info().rss / 2**20
print(time.time() - started, rss_mb, "tensorflow" in sys.modules, "onnx" in sys.modules)
"""


def compare(spec: ModelSpec, fp32_path: Path, int8_path: Path, threads: int = 1, repeats: int = 50) -> dict:
    """Figures for one model's fp32 export and int8 form (``spec`` is the fp32 entry)."""
    fp32, int8 = OnnxRuntime(fp32_path, threads), OnnxRuntime(int8_path, threads)
    batch = quantize.augmented_batch(spec, HELD_OUT)
    expected = quantize.scores_each(fp32, batch)
    agreement = quantize.agreement(expected, quantize.scores_each(int8, batch))
    times = median_ms({"fp32": fp32, "int8": int8}, batch[:1], repeats)
    return {"model": spec.name, "threads": threads, "fp32_ms": times["fp32"], "int8_ms": times["int8"],
            "speedup": round(times["fp32"] / times["int8"], 2), "images": len(batch), **agreement}


def cold_start(keras_home: Path, names: list[str]) -> dict:
    """A fresh process (what a worker imports, no warm-up) classifying with ``names`` in turn."""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(time.time()), str(PHOTO), *names], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=True)
    seconds, rss, tensorflow, onnx = done.stdout.split()[-4:]
    return {"seconds": round(float(seconds), 2), "rss_mb": round(float(rss)), "tensorflow": tensorflow == "True",
            "onnx": onnx == "True"}


def files(spec: ModelSpec, settings: Settings) -> tuple[Path, Path, Int8Record]:
    """Make (or find) both forms with ``classifier export``; their paths and the int8 record
    (one that fails its bar makes the command exit 1, and is measured all the same)."""
    names = [spec.name, f"{spec.name}-int8"]  # a named model makes only that form
    done = subprocess.run([sys.executable, "-m", "classifier", "export", *names], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "KERAS_HOME": str(settings.keras_home)}, timeout=1800)
    found = Found(spec.weights.find(settings), spec.weights, settings)
    serving = Serving.from_settings(Settings(keras_home=settings.keras_home, runtime="onnx"))
    form = int8_form(REGISTRY[f"{spec.name}-int8"], found.path, serving.exports_dir)
    record = form.record()
    if record is None or not record.verified:
        raise RuntimeError(done.stderr[-2000:])
    return Export(spec, found.path, serving.exports_dir).onnx_path, form.onnx_path, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL")
    parser.add_argument("--keras-home", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    settings = Settings.from_env(**({"keras_home": args.keras_home} if args.keras_home else {}))
    specs = [REGISTRY[name] for name in args.models] or [
        spec for spec in REGISTRY.values() if spec.int8_of is None and spec.weights.find(settings)]
    print(f"{'model':<18}{'fp32 ms':>8}{'int8 ms':>8}{'x':>6}{'top-1':>7}{'top-5':>6}{'images':>7}"
          f"{'  cold start s (fp32+int8)':>27}{'RSS MB':>7}  tensorflow/onnx imported")
    for spec in specs:
        fp32_path, int8_path, _ = files(spec, settings)
        got = compare(spec, fp32_path, int8_path, repeats=args.repeats)
        start = cold_start(settings.keras_home, [spec.name, f"{spec.name}-int8"])
        print(f"{spec.name:<18}{got['fp32_ms']:>8.2f}{got['int8_ms']:>8.2f}{got['speedup']:>6.2f}"
              f"{got['top1_agreement']:>7.1%}{got['top5_overlap']:>6.2f}{got['images']:>7}"
              f"{start['seconds']:>27.2f}{start['rss_mb']:>7}  {start['tensorflow']}/{start['onnx']}")
        print(json.dumps({**got, "cold_start": start}))


if __name__ == "__main__":
    main()
