"""A bounded load of good and hostile requests against uWSGI + NGINX on 127.0.0.1.

    python3 bench/hostile_load.py [--requests 300] [--clients 4] [--json]

Every third request is a real photo; the others cycle through the hostile inputs of
tests/hostile.py (bombs, truncated files, huge bodies, malformed JSON, ...). It prints the
answers by status, how many good requests failed, how many 5xx came back, and the uWSGI
workers' memory before and after. tests/test_hostile_load.py runs it and checks the counts.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench import stack  # noqa: E402
from hostile import hostile_requests  # noqa: E402

PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"


def workload(count: int) -> list[tuple[str, dict, set[int]]]:
    """``count`` requests: (name, requests.post arguments, acceptable statuses)."""
    photo = PHOTO.read_bytes()
    good = ("good", dict(files={"image": ("chelsea.jpg", photo, "image/jpeg")}), {200})
    bad = itertools.cycle([(name, kwargs, statuses) for name, (kwargs, statuses) in hostile_requests(photo).items()])
    return [good if i % 3 == 0 else next(bad) for i in range(count)]


def run(url: str, jobs: list[tuple[str, dict, set[int]]], clients: int) -> list[tuple[str, int, bool]]:
    def send(job: tuple[str, dict, set[int]]) -> tuple[str, int, bool]:
        name, kwargs, acceptable = job
        try:
            response = requests.post(f"{url}/predict", timeout=120, **kwargs)
        except requests.RequestException:
            return name, 0, False
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return name, response.status_code, response.status_code in acceptable and is_json

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(send, jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON document (for the test)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-load-") as folder:
        work = Path(folder)
        address = f"127.0.0.1:{stack.free_port()}"
        env = {"CLASSIFIER_RANDOM_WEIGHTS": "1", "CLASSIFIER_DEFAULT_MODEL": "MobileNetV2",
               "KERAS_HOME": str(work / "keras"), "TMPDIR": folder}
        nginx = stack.start_nginx(work / "nginx", {"127.0.0.1:8001": address}, rate_limit=False)
        server = stack.start_uwsgi(work, "app", address, env, processes=2, threads=1)
        try:
            stack.wait_for(f"{nginx.url}/healthz", server)
            run(nginx.url, workload(6), args.clients)  # load the model in both workers
            rss_before, pids_before = server.worker_rss_mb(), server.worker_pids()
            started = time.monotonic()
            results = run(nginx.url, workload(args.requests), args.clients)
            seconds = time.monotonic() - started
            rss_after, pids_after = server.worker_rss_mb(), server.worker_pids()
        finally:
            server.stop()
            nginx.stop()
    report = {
        "requests": len(results),
        "seconds": round(seconds, 1),
        "good_failed": sum(1 for name, _, ok in results if name == "good" and not ok),
        "unexpected": sorted({f"{name}: {status}" for name, status, ok in results if not ok}),
        "server_errors": sum(1 for _, status, _ in results if status >= 500 or status == 0),
        "statuses": dict(sorted(collections.Counter(status for _, status, _ in results).items())),
        "worker_rss_mb_before": rss_before,
        "worker_rss_mb_after": rss_after,
        "workers_respawned": len(set(pids_after) - set(pids_before)),
    }
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
