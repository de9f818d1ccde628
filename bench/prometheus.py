"""Debian's Prometheus for tests and benchmarks: started on a loopback port with
remote/prometheus/prometheus.yml (its target and intervals substituted), queried over its
HTTP API; and Debian's Alertmanager with remote/prometheus/alertmanager.yml (its receiver
substituted). Used by tests/test_metrics.py and bench/metrics_graph.py; each stopped by its
own process id.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.polling import wait_until
from bench.stack import ROOT, free_port, stop, wait_until_ok

PROMETHEUS_DIR = ROOT / "remote" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Debian's package names its binary prometheus-alertmanager; upstream's is alertmanager.
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")


@dataclass
class Prometheus:
    process: subprocess.Popen
    url: str

    def query(self, expr: str) -> dict[tuple, float]:
        """An instant query: each series' labels (sorted pairs) → value."""
        data = self._get("/api/v1/query", query=expr)
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in data["result"]}

    def value(self, expr: str) -> float | None:
        """The value of a query that gives one series, or None while it gives none."""
        result = self.query(expr)
        if len(result) > 1:
            raise ValueError(f"{expr} gives {len(result)} series")
        return next(iter(result.values()), None)

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> dict[tuple, list[tuple[float, float]]]:
        """Each series' labels → its (time, value) points from ``start`` to ``end``."""
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return {tuple(sorted(r["metric"].items())): [(float(t), float(v)) for t, v in r["values"]]
                for r in data["result"]}

    def wait_for(self, expr: str, expected: float, timeout: float = 60) -> None:
        """Until ``expr`` equals ``expected`` (a few scrapes); TimeoutError with what it was."""
        if (value := wait_until(lambda: self.value(expr), timeout, lambda v: v == expected, 0.25)) != expected:
            raise TimeoutError(f"{expr} is {value}, expected {expected}")

    def stop(self) -> None:
        stop(self.process)

    def _get(self, path: str, **params: object) -> dict:
        document = requests.get(self.url + path, params=params, timeout=10).json()
        if document["status"] != "success":
            raise RuntimeError(f"{path} {params}: {document}")
        return document["data"]


def _substituted(name: str, replacements: dict[str, str]) -> str:
    """remote/prometheus/``name`` with each text replaced; KeyError if one is no longer there."""
    text = (PROMETHEUS_DIR / name).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise KeyError(f"{old!r} is no longer in remote/prometheus/{name}")
        text = text.replace(old, new)
    return text


def config(folder: Path, target: str, interval: str = "1s", alertmanager: str | None = None) -> Path:
    """remote/prometheus/prometheus.yml scraping ``target`` (host:port) every ``interval``,
    sending alerts to ``alertmanager`` (host:port), or nowhere: never to an Alertmanager that
    may be running on this machine's port 9093."""
    text = _substituted("prometheus.yml", {
        "scrape_interval: 15s": f"scrape_interval: {interval}",
        "evaluation_interval: 15s": f"evaluation_interval: {interval}",
        '["127.0.0.1:80"]': f'["{target}"]',
        '["127.0.0.1:9093"]': f'["{alertmanager}"]' if alertmanager else "[]",
        "- classifier-alerts.yml": f"- {PROMETHEUS_DIR / 'classifier-alerts.yml'}"})
    path = folder / "prometheus.yml"
    path.write_text(text)
    return path


def start_prometheus(folder: Path, target: str, interval: str = "1s", alertmanager: str | None = None) -> Prometheus:
    """Prometheus scraping ``target``, its data in ``folder``; ready when this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "prometheus.log"
    process = subprocess.Popen([PROMETHEUS, f"--config.file={config(folder, target, interval, alertmanager)}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    instance = Prometheus(process, f"http://127.0.0.1:{port}")
    try:
        wait_until_ok(instance.url + "/-/ready", process, 60, log=log)
    except BaseException:
        instance.stop()
        raise
    return instance


@dataclass
class Alertmanager:
    process: subprocess.Popen
    address: str  # host:port, for prometheus.yml

    def alerts(self) -> list[dict]:
        """The alerts it holds now (its API v2), each with ``labels``, ``status`` and more."""
        return requests.get(f"http://{self.address}/api/v2/alerts", timeout=10).json()

    def stop(self) -> None:
        stop(self.process)


def start_alertmanager(folder: Path, webhook: str, group_wait: str = "1s") -> Alertmanager:
    """Alertmanager with remote/prometheus/alertmanager.yml, delivering to ``webhook`` after
    ``group_wait``, on loopback only (no cluster port); ready when this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    path, log, port = folder / "alertmanager.yml", folder / "alertmanager.log", free_port()
    path.write_text(_substituted("alertmanager.yml", {"https://hooks.example.org/REPLACE-WITH-YOUR-WEBHOOK": webhook,
                                                      "group_wait: 30s": f"group_wait: {group_wait}"}))
    process = subprocess.Popen([ALERTMANAGER, f"--config.file={path}", f"--storage.path={folder / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                "--log.level=warn"],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    instance = Alertmanager(process, f"127.0.0.1:{port}")
    try:
        wait_until_ok(f"http://{instance.address}/-/ready", process, 60, log=log)
    except BaseException:
        instance.stop()
        raise
    return instance
