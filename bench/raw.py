"""The raw forward pass, without a server: latency per batch size and per thread count,
all-core throughput, and the decode + crop every request pays before its pass.

All-core throughput runs the forward pass in several processes at once (this file run as a
script is one of them), started together, in each way of splitting the cores: P processes
with C/P runtime threads each, at batch 1 and at a larger batch.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from classifier.config import Settings
from classifier.imaging import images
from classifier.models.registry import REGISTRY
from classifier.runtimes.forward import OnnxRuntime, Runtime

ROOT = Path(__file__).resolve().parent.parent


def batch_of(size: int, count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


def latency_ms(runtime: Runtime, batch: np.ndarray, seconds: float = 3.0, at_most: int = 300) -> float:
    """Median time of one call, after two warm-up calls."""
    return median_ms(lambda: runtime.scores(batch), seconds, at_most)


def median_ms(call: Callable[[], object], seconds: float, at_most: int = 300) -> float:
    """Median time of ``call``, after two warm-up calls, over about ``seconds`` (5 calls at least)."""
    call()
    call()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < at_most and (time.perf_counter() - started < seconds or len(times) < 5):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def per_threads(export: Path, size: int, seconds: float) -> dict[int, float]:
    """Median ms of a batch-1 pass on a session with a fixed pool of 1, 2, ... cores threads."""
    cores = os.cpu_count() or 1
    return {threads: latency_ms(OnnxRuntime(export, threads), batch_of(size, 1), seconds / cores)
            for threads in range(1, cores + 1)}


def decode_ms(photo: bytes, size: int, seconds: float) -> float:
    """Median ms of decoding and cropping ``photo`` for a ``size`` model, by the call the
    service makes for each upload (``service.py``), with the default limits."""
    limits = images.ImageLimits.from_settings(Settings())
    return median_ms(lambda: images.framed(photo, size, limits), seconds)


def per_batch(runtime: Runtime, size: int, seconds: float = 3.0,
              batches: tuple[int, ...] = (1, 2, 4, 8)) -> dict[int, float]:
    """Median ms per call at each batch size, each timed for about ``seconds``."""
    return {count: latency_ms(runtime, batch_of(size, count), seconds) for count in batches}


def all_cores(kind: str, target: str, splits: list[tuple[int, int, int]], seconds: float) -> dict[str, float]:
    """Images per second for each (processes, threads, batch), every process running at once.

    ``kind`` is ``onnx`` (``target``: an exported file) or ``keras`` (``target``: a model name,
    built with random weights in each process).
    """
    results = {}
    for processes, threads, batch in splits:
        workers = [subprocess.Popen([sys.executable, "-m", "bench.raw", kind, target, str(threads), str(batch),
                                     str(seconds)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(processes)]
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all start together
            worker.stdin.write("go\n")
            worker.stdin.flush()
        total = sum(json.loads(worker.communicate(timeout=seconds + 120)[0])["images_per_second"]
                    for worker in workers)
        results[f"{processes}x{threads} b{batch}"] = total
    return results


def _worker(kind: str, target: str, threads: int, batch: int, seconds: float) -> None:
    if kind == "onnx":
        runtime: Runtime = OnnxRuntime(Path(target), threads)
        size = 224
    else:
        from classifier.runtimes.forward import keras_runtime

        spec = REGISTRY[target]
        runtime, size = keras_runtime(spec, None, threads), spec.input_size
    pixels = batch_of(size, batch)
    runtime.scores(pixels)
    runtime.scores(pixels)
    print("ready", flush=True)
    sys.stdin.readline()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runtime.scores(pixels)
        done += batch
    print(json.dumps({"images_per_second": done / (time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
