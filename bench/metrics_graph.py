"""The picture in docs/monitoring.md, from a real run, and what a scrape costs.

Starts uwsgi.ini's 2 workers (the bundled EfficientNetLite0, offline) behind NGINX and
Debian's Prometheus scraping /metrics every second; sends predictions for about 90 s (some
uploads that are not images, some for a model without weights, one worker killed with
SIGKILL two thirds of the way); then
draws four graphs from Prometheus' query API into a PNG, and measures /metrics itself:
its size, its time and the workers' CPU per scrape, and the multiprocess folder's files.

    python3 -m bench.metrics_graph                       # writes bench/metrics-graph.png
    python3 -m bench.metrics_graph --seconds 30 --out /tmp/graph.png
    python3 -m bench.metrics_graph --seconds 1 --scrapes 5 --out /tmp/graph.png   # the smallest run
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import requests  # noqa: E402

from bench.prometheus import Prometheus, start_prometheus  # noqa: E402  (after choosing the backend)
from bench.stack import ROOT, free_port, start_nginx, start_uwsgi, wait_until_ok  # noqa: E402

CAT = (ROOT / "classifier" / "data" / "photos" / "chelsea.jpg").read_bytes()


def traffic(url: str, seconds: float, kill: Callable[[], None]) -> float:
    """Predictions at about 8 a second from 4 clients, with the default model; one upload in
    ten is not an image, and from a third of the way one request in five asks for ResNet50,
    whose weights are not here (offline: 503). ``kill`` runs at two thirds. Returns when the
    worker was killed (``time.time()``)."""
    started, killed = time.monotonic(), []
    stop_at = started + seconds

    def client(number: int) -> None:
        sent = 0
        while time.monotonic() < stop_at:
            late = time.monotonic() - started > seconds / 3
            image = b"not an image" if (sent + number) % 10 == 0 else CAT
            fields = {"model": "ResNet50"} if late and sent % 5 == 0 else {}
            try:
                requests.post(url + "/predict", files={"image": ("cat.jpg", image, "image/jpeg")}, data=fields,
                              timeout=60)
            except requests.RequestException:
                pass  # the killed worker's request: NGINX answers 502
            sent += 1
            time.sleep(max(0.0, started + sent * 0.5 - time.monotonic()))

    def killer() -> None:
        time.sleep(seconds * 2 / 3)
        killed.append(time.time())
        kill()

    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(client, n) for n in range(4)] + [pool.submit(killer)]
        for future in futures:
            future.result()
    return killed[0]


def outcome_rate(outcome: str) -> str:
    return f'sum(rate(classifier_predictions_total{{outcome="{outcome}"}}[10s])) or vector(0)'


def quantile(q: float, histogram: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{selector}[10s])))"


PANELS = (
    ("Predictions per second, by outcome", "", {
        outcome: outcome_rate(outcome) for outcome in ("ok", "unsupported_image_type", "model_unavailable")}),
    ("/predict latency (ms)", "ms", {
        "p50": quantile(0.5, "classifier_request_seconds", '{endpoint="/predict"}'),
        "p95": quantile(0.95, "classifier_request_seconds", '{endpoint="/predict"}'),
    }),
    ("Forward pass and decoding, p95 (ms)", "ms", {
        "forward pass": quantile(0.95, "classifier_inference_seconds"),
        "decoding": quantile(0.95, "classifier_decode_seconds"),
    }),
    ("Predictions (total) and workers with the model loaded", "", {
        "predictions (left)": "sum(classifier_predictions_total)",
        "workers with the model (right)": "sum(classifier_models_loaded) or vector(0)",
    }),
)


def gaps_as_breaks(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Times and values with a break (NaN) where scrapes are missing, instead of a line across."""
    times, values = [], []
    for (time_, value), previous in zip(points, [None, *points]):
        if previous is not None and time_ - previous[0] > 2.5:
            times.append(time_)
            values.append(float("nan"))
        times.append(time_)
        values.append(value)
    return times, values


def draw(prometheus: Prometheus, start: float, end: float, killed: float, out: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(10, 5.6), dpi=80, sharex=True)
    for axis, (title, unit, queries) in zip(axes.flat, PANELS):
        twin = axis.twinx() if "(right)" in " ".join(queries) else None
        for (name, expr), colour in zip(queries.items(), ("tab:blue", "tab:orange", "tab:red")):
            points = next(iter(prometheus.query_range(expr, start, end).values()), [])
            times, values = gaps_as_breaks([(t - start, v * 1000 if unit == "ms" else v) for t, v in points])
            target = twin if twin is not None and "(right)" in name else axis
            target.plot(times, values, label=name, color=colour, drawstyle="steps-post" if target is twin else None)
        axis.axvline(killed - start, color="grey", linestyle=":", label="a worker killed")
        axis.set_title(title, fontsize=10)
        handles = axis.get_legend_handles_labels()
        if twin is not None:
            twin.set_ylim(0, 2.5)
            twin.set_yticks([0, 1, 2])
            handles = tuple(a + b for a, b in zip(handles, twin.get_legend_handles_labels()))
        axis.legend(*handles, fontsize=8, loc="upper left")
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("seconds")
    figure.suptitle("EfficientNetLite0 on ONNX Runtime, uWSGI's 2 workers behind NGINX, 2 shared cores; "
                    "Prometheus scraping every second", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, pil_kwargs={"optimize": True})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


def scrape_cost(url: str, server, count: int) -> str:
    """``count`` scrapes: the median time at the client and the workers' CPU per scrape."""
    cpu_before, times = server.cpu_seconds(), []
    for _ in range(count):
        started = time.perf_counter()
        requests.get(url + "/metrics", timeout=10).raise_for_status()
        times.append(time.perf_counter() - started)
    cpu = (server.cpu_seconds() - cpu_before) / count
    return f"median {statistics.median(times) * 1000:.1f} ms at the client, {cpu * 1000:.1f} ms of worker CPU each"


def measure_scrapes(url: str, server, folder: Path, scrapes: int, dead_workers: int = 100) -> None:
    """What /metrics costs: its size and series, time and workers' CPU over ``scrapes`` scrapes, memory;
    the multiprocess folder (files per worker, bytes on disk); and the same scrape once
    ``dead_workers`` more workers have died (their files copied under process ids that
    cannot exist), as after that many crashes or reloads without a restart."""
    text = requests.get(url + "/metrics", timeout=10).text
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    rss_before = server.worker_rss_mb()
    cost = scrape_cost(url, server, scrapes)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".db")
    print(f"/metrics: {len(text):,} bytes, {len(series)} series; {scrapes} scrapes: {cost}; "
          f"worker RSS {rss_before} -> {server.worker_rss_mb()} MB")
    print(f"multiprocess folder: {len(files)} files ({', '.join(p.name for p in files)}), "
          f"{sum(p.stat().st_blocks * 512 for p in files) / 1024:.0f} KiB on disk "
          f"({sum(p.stat().st_size for p in files) / 1024:.0f} KiB apparent, sparse)")
    impossible = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    for kind in ("counter", "histogram"):
        largest = max(folder.glob(f"{kind}_*.db"), key=lambda p: p.stat().st_size)
        for i in range(dead_workers):
            shutil.copy(largest, folder / f"{kind}_{impossible + i}.db")
    print(f"with {dead_workers} dead workers' files more: {scrape_cost(url, server, scrapes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "metrics-graph.png")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed, with and without dead workers' files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metrics-graph-") as temp:
        folder = Path(temp)
        metrics_folder = folder / "metrics"
        address = f"127.0.0.1:{free_port()}"
        # The bundled EfficientNetLite0, from the usual Keras cache (its checked ONNX export
        # made once), as a fresh install serves it; offline, so ResNet50 cannot run.
        env = {"CLASSIFIER_OFFLINE": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_folder)}
        direct = f"127.0.0.1:{free_port()}"  # scrapes to measure, past NGINX's 20 a second
        server = start_uwsgi(folder, "uwsgi", address, env, processes=2, threads=1,
                             extra=["--http-socket", direct])
        stoppers = [server.stop]
        try:
            nginx = start_nginx(folder / "nginx", {"127.0.0.1:8001": address}, rate_limit=False)
            stoppers.append(nginx.stop)
            wait_until_ok(nginx.url + "/healthz", server.process, 120, log=server.log)
            prometheus = start_prometheus(folder / "prometheus", nginx.url.removeprefix("http://"))
            stoppers.append(prometheus.stop)
            prometheus.wait_for("sum(classifier_models_loaded)", 2, timeout=600)
            # The graphs start 10 s into the traffic: their rates look 10 s back.
            start = time.time() + 10
            killed = traffic(nginx.url, args.seconds + 10, lambda: os.kill(server.worker_pids()[0], signal.SIGKILL))
            draw(prometheus, start, time.time(), killed, args.out)
            measure_scrapes(f"http://{direct}", server, metrics_folder, args.scrapes)
        finally:
            for stop in reversed(stoppers):
                stop()


if __name__ == "__main__":
    main()
