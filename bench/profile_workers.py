"""Where a uWSGI worker's CPU goes under load, beyond the forward pass itself.

    python3 -m bench.profile_workers [--model EfficientNetLite0] [--clients 4] [--seconds 10] [--rate 200]

Starts the production stack (uwsgi.ini behind the project's NGINX site, as bench/serving.py
does, per-client limits off), warms every worker, then puts ``--clients`` clients on
``/predict`` with the test JPEG (a second of it unsampled first) while py-spy samples every
worker (``py-spy record --subprocesses`` on the uWSGI master; py-spy is in
requirements-test.txt). Samples inside ONNX Runtime's ``InferenceSession.run`` are the
forward pass: they are counted, then left out; the rest is what a request costs the worker
besides it, printed as the functions with the most CPU of their own (self) and with the most
CPU under them (cumulative), in CPU ms per request. The CPU of the workers, NGINX and the
load client over the same run is printed too.

The model's checked export is made first (``python3 -m classifier export``), in the Keras
folder of this environment (``KERAS_HOME``), as a deployment makes it before traffic.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import load, stack

ROOT = Path(__file__).resolve().parent.parent

IMAGE = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
PY_SPY = str(Path(sys.executable).with_name("py-spy")) if Path(sys.executable).with_name("py-spy").is_file() \
    else shutil.which("py-spy")
# The forward pass: ONNX Runtime's Python wrapper calls into its C++ session here.
FORWARD_FRAME = ("run (", "onnxruntime_inference_collection.py")
# A worker running no Python: uWSGI's C code reading a request or writing an answer.
UWSGI_ITSELF = "(uWSGI itself: no Python frame)"


@dataclass
class Profile:
    """py-spy's samples of the workers: the forward pass's count, and the rest by function."""

    rate: int
    forward: int
    other: int
    own: Counter[str]
    under: Counter[str]

    @classmethod
    def from_raw(cls, text: str, rate: int) -> Profile:
        """From py-spy's ``raw`` format: one stack a line, root first, ``;``-separated, then its count."""
        forward, other, own, under = 0, 0, Counter(), Counter()
        for line in text.splitlines():
            stack_text, _, count_text = line.rpartition(" ")
            if not stack_text or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(frame) for frame in stack_text.split(";") if not frame.startswith("process ")]
            if any(all(part in frame for part in FORWARD_FRAME) for frame in stack_text.split(";")):
                forward += count
                continue
            other += count
            frames = frames or [UWSGI_ITSELF]
            own[frames[-1]] += count
            for frame in set(frames):
                under[frame] += count
        return cls(rate, forward, other, own, under)

    def print(self, cpu_ms: float, top: int) -> None:
        """The tables, each function's share of the samples as a share of ``cpu_ms``, the
        workers' measured CPU per request: py-spy samples a thread that waits for a core as
        running, so on a busy machine sample counts stand for more than CPU time."""
        per_sample = cpu_ms / max(self.forward + self.other, 1)
        print(f"{self.forward + self.other} worker samples at {self.rate}/s: forward pass "
              f"{self.forward * per_sample:.2f} ms/request, everything else {self.other * per_sample:.2f} ms/request")
        for title, counts in (("self", self.own), ("cumulative", self.under)):
            print(f"\ntop {top} by {title} CPU, forward pass excluded (CPU ms per request, share of the rest)")
            for frame, samples in counts.most_common(top):
                print(f"{samples * per_sample:8.3f} {100 * samples / max(self.other, 1):5.1f}%  {frame}")


def _short(frame: str) -> str:
    """``function (file:line)`` with the file relative to the project or to site-packages."""
    for prefix in (f"{ROOT}/", "site-packages/", "lib/python3."):
        if prefix in frame:
            head, _, tail = frame.partition("(")
            return head + "(" + tail.split(prefix, 1)[1].split("/", 1 if prefix == "lib/python3." else 0)[-1]
    return frame


def export_ahead(model: str) -> None:
    """The checked export the workers will serve, made now if it is not there."""
    result = subprocess.run([sys.executable, "-m", "classifier", "export", model], cwd=ROOT, text=True,
                            capture_output=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        raise SystemExit(f"no export of {model}: {result.stdout}{result.stderr[-2000:]}")


def record(server: stack.Server, output: Path, seconds: float, rate: int) -> subprocess.Popen:
    """py-spy sampling the master's workers for ``seconds`` (only threads running Python: an
    idle worker waiting for a request is not sampled)."""
    if PY_SPY is None:
        raise SystemExit("py-spy is not installed: pip install -r requirements-test.txt")
    command = [PY_SPY, "record", "--pid", str(server.process.pid), "--subprocesses", "--format", "raw",
               "--function", "--rate", str(rate), "--duration", str(round(seconds)), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def cpu_times(server: stack.Server, nginx: stack.Nginx) -> tuple[float, float, float]:
    """CPU seconds so far of the workers, NGINX and this process (the load client)."""
    return server.cpu_seconds(), nginx.cpu_seconds(), time.process_time()


def profile(args: argparse.Namespace, work: Path) -> None:
    address = f"127.0.0.1:{stack.free_port()}"
    env = {"CLASSIFIER_DEFAULT_MODEL": args.model, "CLASSIFIER_OFFLINE": "1", "CLASSIFIER_RUNTIME": "onnx",
           "TMPDIR": str(work)}
    nginx = stack.start_nginx(work / "nginx", {"127.0.0.1:8001": address}, rate_limit=False)
    server = stack.start_uwsgi(work, "profile", address, env, args.processes, args.threads)
    try:
        stack.wait_for(nginx.url + "/healthz", server)
        image = IMAGE.read_bytes()
        load.warm(nginx.url, image, args.model, args.processes * args.threads + 1)
        # And a second of the load itself: a worker makes its one-thread ONNX Runtime session the
        # first time its pass overlaps another's (runtimes/forward.py), a one-off, not per request.
        load.concurrent(nginx.url, image, args.model, args.clients, 1)
        output = work / "profile.raw"
        spy = record(server, output, args.seconds, args.rate)
        before = cpu_times(server, nginx)
        # The clients run a second past py-spy's window, which starts a moment after launch.
        run = load.concurrent(nginx.url, image, args.model, args.clients, args.seconds + 1)
        after = cpu_times(server, nginx)
        _, errors = spy.communicate(timeout=60)
        if spy.returncode or not output.is_file():
            raise SystemExit(f"py-spy failed: {errors[-2000:]}")
        served = len(run.latencies)
        print(f"{args.model}, {args.processes} worker(s) x {args.threads} thread(s), {args.clients} clients, "
              f"{run.seconds:.1f} s: {run.throughput:.0f} req/s, p50 {run.percentile(50):.1f} ms, "
              f"{run.errors} errors")
        cpu_ms = [1000 * (b - a) / max(served, 1) for a, b in zip(before, after)]
        print("CPU ms/request: " + ", ".join(f"{part} {ms:.2f}" for part, ms in zip(("workers", "nginx", "client"),
                                                                                      cpu_ms)))
        Profile.from_raw(output.read_text(), args.rate).print(cpu_ms[0], args.top)
        if args.raw:
            shutil.copy(output, args.raw)
    finally:
        server.stop()
        nginx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="EfficientNetLite0", help="a model whose weights are here")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10, help="length of the sampled load run")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25, help="functions listed in each table")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's samples here (its raw format)")
    args = parser.parse_args()
    export_ahead(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        profile(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
