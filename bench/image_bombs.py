"""What each hostile image of bench/hostile.py costs to prepare for a 224x224 model.

    python3 -m bench.image_bombs
    python3 -m bench.image_bombs --files "RLE BMP, 4 KB" "16-bit PNG 7000x7000"
    python3 -m bench.image_bombs --bodies

``--bodies`` sends each costly request body of bench/hostile.py (HOSTILE_BODIES: JSON too
long or too wide, issue 21) through NGINX to a uWSGI worker (uwsgi.ini, one worker, no model
needed) and prints the worker's CPU time and its peak resident size above its idle size,
read from /proc as tests/test_image_bombs.py does, and the answer.

Each file is built, then handed to ``images.model_input`` with the default limits in a
Python process of its own, so one file's memory cannot hide another's. Prints the CPU time,
the peak resident size above the process's size before the call (VmHWM, reset through
/proc/self/clear_refs; Linux only), the file's decode cost in billions of pixel scans
(``image_checks.decode_cost``, what CLASSIFIER_MAX_REQUEST_COST budgets), the CPU time per
pixel scan of the files decoded, and the answer: "ok" or the error's code. docs/images.md and
SECURITY.md carry these figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import requests

from bench import stack
from bench.hostile import HOSTILE_BODIES, IMAGE_BOMBS

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import sys, time
from pathlib import Path
from bench.hostile import IMAGE_BOMBS
from classifier.imaging import images
from classifier.config import Settings
from classifier.errors import ClassifierError

def kib(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0])

data = IMAGE_BOMBS[{name!r}][0]()
cost = images.decode_cost(data, images.ImageLimits.from_settings(Settings()))
Path("/proc/self/clear_refs").write_text("5")
before, started = kib("VmRSS"), time.process_time()
try:
    images.model_input(data, 224)
    answer = "ok"
except ClassifierError as error:
    answer = error.code
cpu = time.process_time() - started
per_cost = f"{{cpu / cost * 1e9:5.2f}}" if cost and answer == "ok" else "    -"
print(f"{{len(data):>10,}} B {{cpu:6.2f}} s {{(kib('VmHWM') - before) / 1024:6.0f}} MiB {{cost / 1e9:6.2f}} {{per_cost}}  {{answer}}")
"""


def images(names: list[str]) -> None:
    print(f"{'file':40} {'size':>12} {'CPU':>8} {'peak':>10} {'cost G':>6} {'ns/px-scan':>5}  answer")
    for name in names:
        script = MEASURE.format(name=name)
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
        print(f"{name:40} {result.stdout.rstrip()}", flush=True)


def bodies() -> None:
    with tempfile.TemporaryDirectory(prefix="bodies-") as folder:
        work = Path(folder)
        address = f"127.0.0.1:{stack.free_port()}"
        env = {"CLASSIFIER_WARMUP": "0", "CLASSIFIER_RANDOM_WEIGHTS": "1", "TMPDIR": folder}
        nginx = stack.start_nginx(work / "nginx", {"127.0.0.1:8001": address})
        server = stack.start_uwsgi(work, "app", address, env, processes=1, threads=1)
        try:
            stack.wait_for(f"{nginx.url}/healthz", server)
            (worker,) = [stack.Worker(psutil.Process(pid)) for pid in server.worker_pids()]
            idle = worker.process.memory_info().rss
            print(f"{'body':40} {'size':>12} {'CPU':>8} {'peak growth':>12}  answer")
            for name, (build, _, _) in HOSTILE_BODIES.items():
                body = build()
                response, used, peak = worker.measure(lambda: requests.post(  # noqa: B023 (called at once)
                    f"{nginx.url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=600))
                answer = f"{response.status_code} {response.json()['error']['code']}"
                print(f"{name:40} {len(body):>10,} B {used:6.2f} s {(peak - idle) / 2**20:8.0f} MiB  {answer}",
                      flush=True)
        finally:
            server.stop()
            nginx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", action="store_true", help="costly JSON bodies through NGINX to uWSGI")
    parser.add_argument("--files", nargs="+", choices=list(IMAGE_BOMBS), default=list(IMAGE_BOMBS), metavar="NAME",
                        help="the hostile images to measure, named as printed (default: all)")
    args = parser.parse_args()
    if args.bodies:
        bodies()
    else:
        images(args.files)


if __name__ == "__main__":
    main()
