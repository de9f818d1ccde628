"""A bounded load of good and hostile requests against uWSGI + NGINX on 127.0.0.1.

    python3 -m bench.hostile_load [--requests 300] [--clients 4] [--json]
    python3 -m bench.hostile_load --victim [--attack png|jpeg] [--seconds 40] [--json]

Every third request is a real photo; the others cycle through the hostile inputs of
tests/hostile.py (bombs, truncated files, huge bodies, malformed JSON, ...). It prints the
answers by status, how many good requests failed, how many 5xx came back, and the uWSGI
workers' memory before and after. tests/test_hostile_load.py runs it and checks the counts.

``--victim`` measures one address's share of the workers (issue 21): from 127.0.0.1 an
attacker keeps sending the costliest request the service accepts, from 4 threads (as many at
once as NGINX lets through; a refused one is sent again 50 ms later), while a person at
127.0.0.2 sends a photo every 2 s. NGINX runs with all its limits, uWSGI with uwsgi.ini's 2
workers and the real EfficientNetLite0. It prints how many of the person's photos were
answered 200 within 5 s, their latencies, the attacker's answers by status and the workers'
CPU time. ``--attack png``: 10 RGBA PNGs of 7000x7000 (the costliest per pixel scan, 1.9 MB);
``jpeg``: 32 copies of a 49-megapixel 32-scan progressive JPEG (the issue's form, 9.3 MB).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench import stack
from bench.hostile import blank_png, hostile_requests, progressive_jpeg_with_scans

ROOT = Path(__file__).resolve().parent.parent

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


ATTACKS = {
    "png": lambda: [("image", (f"{n}.png", blank_png(7000, 7000, "RGBA"))) for n in range(10)],
    "jpeg": lambda: [("image", (f"{n}.jpg", jpeg)) for jpeg in [progressive_jpeg_with_scans(7000, 32)]
                     for n in range(32)],
}
VICTIM_EVERY, VICTIM_WITHIN = 2.0, 5.0  # seconds


def _session_at(address: str) -> requests.Session:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback)."""
    class SourceAddress(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: object, **kwargs: object) -> None:
            super().init_poolmanager(*args, **kwargs, source_address=(address, 0))

    session = requests.Session()
    session.mount("http://", SourceAddress())
    return session


def victim_run(url: str, attack: list, seconds: float) -> dict[str, object]:
    """The attacker's load and the person's photos, for ``seconds``; the person's outcomes."""
    stop, attacker_statuses = threading.Event(), collections.Counter()

    def attacker() -> None:
        with _session_at("127.0.0.1") as client:
            while not stop.is_set():
                try:
                    status = client.post(f"{url}/predict", files=attack, timeout=(5, 120)).status_code
                except requests.RequestException:
                    status = 0
                attacker_statuses[status] += 1
                if status == 429:
                    time.sleep(0.05)

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # the attacker's first requests are being computed
    photo, latencies, statuses = PHOTO.read_bytes(), [], []
    with _session_at("127.0.0.2") as client:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            sent = time.monotonic()
            try:
                statuses.append(client.post(f"{url}/predict", files={"image": ("chelsea.jpg", photo)},
                                            timeout=(5, VICTIM_WITHIN)).status_code)
            except requests.RequestException:
                statuses.append(0)  # no answer within VICTIM_WITHIN
            latencies.append(time.monotonic() - sent)
            time.sleep(max(0.0, sent + VICTIM_EVERY - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(timeout=130)
    on_time = sum(1 for status, latency in zip(statuses, latencies) if status == 200 and latency <= VICTIM_WITHIN)
    return {
        "victim_sent": len(statuses),
        "victim_ok_within_5s": on_time,
        "victim_ratio": round(on_time / len(statuses), 3),
        "victim_statuses": dict(collections.Counter(statuses)),
        "victim_latency_s": {"median": round(statistics.median(latencies), 2), "max": round(max(latencies), 2)},
        "attacker_statuses": dict(sorted(attacker_statuses.items())),
    }


def _victim_main(args: argparse.Namespace) -> dict[str, object]:
    """uWSGI (uwsgi.ini's 2 workers, EfficientNetLite0) behind NGINX with every limit on."""
    with tempfile.TemporaryDirectory(prefix="victim-") as folder:
        work = Path(folder)
        address = f"127.0.0.1:{stack.free_port()}"
        env = {"CLASSIFIER_DEFAULT_MODEL": "EfficientNetLite0", "TMPDIR": folder}
        nginx = stack.start_nginx(work / "nginx", {"127.0.0.1:8001": address})
        server = stack.start_uwsgi(work, "app", address, env, processes=2, threads=1)
        try:
            stack.wait_for(f"{nginx.url}/healthz", server)
            with _session_at("127.0.0.3") as client:  # both workers load the model
                for _ in range(6):
                    client.post(f"{nginx.url}/predict", files={"image": ("a.jpg", PHOTO.read_bytes())}, timeout=300)
            cpu = server.cpu_seconds()
            report = victim_run(nginx.url, ATTACKS[args.attack](), args.seconds)
            report["workers_cpu_s"] = round(server.cpu_seconds() - cpu, 1)
            report["attack"] = args.attack
        finally:
            server.stop()
            nginx.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--victim", action="store_true", help="one address's share of the workers (issue 21)")
    parser.add_argument("--attack", choices=sorted(ATTACKS), default="png")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--json", action="store_true", help="print one JSON document (for the test)")
    args = parser.parse_args()
    if args.victim:
        _print(_victim_main(args), args.json)
        return
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
    _print(report, args.json)


def _print(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
