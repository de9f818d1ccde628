"""Prometheus metrics: counted where the work happens, summed over uWSGI's workers, and read
by a real Prometheus.

The fast tests use the Flask test client in this process (one process: prometheus_client's
default registry). The stack tests start uWSGI with ``uwsgi.ini`` (2 workers) behind NGINX
with ``remote/nginx/`` (as tests/test_deployment.py does) and Debian's ``prometheus``
scraping it through NGINX with ``remote/prometheus/prometheus.yml`` and its alerting rules
(target and intervals substituted), and check what Prometheus stored against what was sent.
Every process a test starts is stopped by the test, by its own process id.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import ROOT, Uwsgi, copy_of, free_port, start_uwsgi
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support.nginx import client_at

from bench.polling import wait_until
from bench.prometheus import (
    ALERTMANAGER,
    AMTOOL,
    PROMETHEUS,
    PROMETHEUS_DIR,
    PROMTOOL,
    Alertmanager,
    Prometheus,
    start_alertmanager,
    start_prometheus,
)
from bench.servers import QuietHandler, StubServer
from bench.stack import Nginx, start_nginx
from classifier import Classifier, Settings, metrics
from classifier.models import download
from classifier.models.registry import REGISTRY as MODELS
from classifier.serving.pool import ModelPool

if not (PROMETHEUS and PROMTOOL and ALERTMANAGER and AMTOOL):
    pytest.fail("prometheus, promtool, alertmanager or amtool not installed: "
                "apt-get install prometheus prometheus-alertmanager", pytrace=False)

NOT_AN_IMAGE = b"this is not an image"


def sample(name: str, **labels: str) -> float:
    """A value from this process's registry (0 before the series exists)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def predict(client, image: bytes, **fields: str):
    return client.post("/predict", data={"image": (io.BytesIO(image), "x.png"), **fields},
                       content_type="multipart/form-data")


# --- in this process: what is counted, with which labels ---------------------------------------

def test_predictions_are_counted_by_model_server_and_outcome(make_app, cat_png):
    client = make_app(default_model="MobileNetV2").test_client()
    ok = {"model": "MobileNetV2", "server": "local", "outcome": "ok"}
    bad = {"model": "default", "server": "local", "outcome": "unsupported_image_type"}
    unknown = {"model": "unknown", "server": "local", "outcome": "unknown_model"}
    before = {name: sample("classifier_predictions_total", **labels)
              for name, labels in (("ok", ok), ("bad", bad), ("unknown", unknown))}
    images = sample("classifier_images_total", model="MobileNetV2")
    inferences = sample("classifier_inference_seconds_count", model="MobileNetV2", runtime="keras")
    decodes = sample("classifier_decode_seconds_count")

    assert predict(client, cat_png).status_code == 200
    assert predict(client, cat_png, model="MobileNetV2").status_code == 200
    assert predict(client, NOT_AN_IMAGE).status_code == 415
    assert predict(client, cat_png, model="Evil\nName{label=\"x\"}").status_code == 400

    assert sample("classifier_predictions_total", **ok) == before["ok"] + 2
    assert sample("classifier_predictions_total", **bad) == before["bad"] + 1
    assert sample("classifier_predictions_total", **unknown) == before["unknown"] + 1
    assert sample("classifier_images_total", model="MobileNetV2") == images + 2
    assert sample("classifier_inference_seconds_count", model="MobileNetV2", runtime="keras") == inferences + 2
    assert sample("classifier_decode_seconds_count") == decodes + 2
    # A name a client made up never becomes a label value.
    assert "Evil" not in client.get("/metrics").text


def test_requests_are_labelled_by_route_never_by_raw_path(client):
    unmatched = sample("classifier_requests_total", endpoint="unmatched", status="404")
    static = sample("classifier_requests_total", endpoint="/static/<path:filename>", status="404")
    models = sample("classifier_request_seconds_count", endpoint="/models")
    for path in ("/no/such/page", "/another-one", "/wp-admin.php?x=1"):
        assert client.get(path).status_code == 404
    assert client.get("/static/missing.css").status_code == 404
    assert client.get("/models").status_code == 200
    assert sample("classifier_requests_total", endpoint="unmatched", status="404") == unmatched + 3
    assert sample("classifier_requests_total", endpoint="/static/<path:filename>", status="404") == static + 1
    assert sample("classifier_request_seconds_count", endpoint="/models") == models + 1
    text = client.get("/metrics").text
    assert "wp-admin" not in text and "another-one" not in text


def test_metrics_are_served_only_to_allowed_addresses(make_app):
    client = make_app().test_client()
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 200, address
        assert response.mimetype == "text/plain"
        families = {family.name for family in text_string_to_metric_families(response.text)}
        assert {"classifier_requests", "classifier_predictions", "classifier_build_info"} <= families
    for address in ("10.0.0.5", "192.168.1.2", "2001:db8::1", "::ffff:10.0.0.5"):
        response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 403, address
        assert response.json["error"]["code"] == "forbidden"
        assert "CLASSIFIER_METRICS_ALLOW" in response.json["error"]["message"]
    # An operator's Prometheus elsewhere: its network instead of loopback.
    client = make_app(metrics_allow="10.0.0.0/8").test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403


def test_a_malformed_allow_list_stops_start_up(make_app):
    with pytest.raises(ValueError, match="CLASSIFIER_METRICS_ALLOW='10.0.0.0/33'"):
        make_app(metrics_allow="10.0.0.0/33")


def test_build_info_names_the_versions(client):
    text = client.get("/metrics").text
    [info] = [s for f in text_string_to_metric_families(text) if f.name == "classifier_build_info" for s in f.samples]
    assert info.value == 1
    assert info.labels["version"] == "1.0.0"
    assert info.labels["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info.labels["onnxruntime"] != "none" and info.labels["keras"] != "none"


def test_a_model_load_is_timed_and_counted_once(tmp_path):
    """A pool of its own, so that this load really happens here (the shared pool may hold it)."""
    classifier = Classifier(Settings(random_weights=True, warmup=False, keras_home=tmp_path), pool=ModelPool(),
                            downloads=None)
    labels = {"model": "MobileNetV2", "runtime": "keras"}
    loaded, loads = sample("classifier_models_loaded", **labels), sample("classifier_model_load_seconds_count", **labels)
    classifier.load_model("MobileNetV2")
    classifier.load_model("MobileNetV2")
    assert sample("classifier_models_loaded", **labels) == loaded + 1
    assert sample("classifier_model_load_seconds_count", **labels) == loads + 1
    assert sample("classifier_model_load_seconds_sum", **labels) > 0


class _Junk(QuietHandler):
    """A weights mirror (standing in for Keras' host, out of our control) serving 1000 bytes of junk."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)


def test_downloads_count_bytes_and_failures(stub_server, tmp_path):
    weights = MODELS["ResNet50"].weights
    received = sample("classifier_weights_download_bytes_total", model="ResNet50")
    failed = sample("classifier_weights_download_failures_total", model="ResNet50", kind="failed")
    unreachable = sample("classifier_weights_download_failures_total", model="ResNet50", kind="unreachable")

    junk = Settings(keras_home=tmp_path / "a", weights_mirror=stub_server(_Junk).url)
    with pytest.raises(Exception, match="HDF5"):
        download.download(weights, junk)
    nobody = Settings(keras_home=tmp_path / "b", weights_mirror=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(download.Unreachable):
        download.download(weights, nobody)

    assert sample("classifier_weights_download_bytes_total", model="ResNet50") == received + 1000
    assert sample("classifier_weights_download_failures_total", model="ResNet50", kind="failed") == failed + 1
    assert sample("classifier_weights_download_failures_total", model="ResNet50",
                  kind="unreachable") == unreachable + 1


def test_every_models_download_failures_are_exported_at_zero_before_any_download(client):
    """So that Prometheus sees a model's first failure as an increase (the alert's timeline is
    in classifier-alerts.test.yml; the real stack's below)."""
    text = client.get("/metrics").text
    exported = {(s.labels["model"], s.labels["kind"]) for f in text_string_to_metric_families(text)
                if f.name == "classifier_weights_download_failures" for s in f.samples}
    downloadable = {spec.weights.model for spec in MODELS.values() if spec.weights.downloadable}
    assert exported >= {(model, kind) for model in downloadable for kind in ("unreachable", "failed")}
    assert {"MobileNetV2", "ResNet50", "NASNetMobile"} <= downloadable


class _Broken(QuietHandler):
    """A remote instance (out of our control) that fails every prediction."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_forwarded_predictions_are_timed_and_counted_by_server(make_app, stub_server, cat_png):
    client = make_app(allow_custom_remote=True).test_client()
    outcome = {"model": "default", "server": "custom", "outcome": "remote_error"}
    forwarded, failed = sample("classifier_forward_seconds_count", server="custom"), sample(
        "classifier_predictions_total", **outcome)
    response = predict(client, cat_png, server="custom", remote_url=stub_server(_Broken).url + "predict")
    assert response.status_code == 502
    assert sample("classifier_forward_seconds_count", server="custom") == forwarded + 1
    assert sample("classifier_predictions_total", **outcome) == failed + 1


FIRST_READ_BY_MANY_THREADS = """
import threading
from classifier import metrics
start, failures = threading.Barrier(16), []
def read():
    start.wait()
    try:
        metrics.IMAGES
    except Exception as error:
        failures.append(repr(error))
threads = [threading.Thread(target=read) for _ in range(16)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(failures)
"""


def test_threads_reading_the_metrics_first_at_once_declare_them_once():
    """The metrics are declared at their first read, not at import; sixteen threads reading
    one at the same moment in a fresh process get it, none a registry error for a second
    declaration (without the lock, 15 of 16 did)."""
    done = subprocess.run([sys.executable, "-c", FIRST_READ_BY_MANY_THREADS], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


# --- several processes sharing a folder: prometheus_client's multiprocess mode -----------------

WORKER = """
import sys, types
if sys.argv[3] == "uwsgi":  # uWSGI's embedded module, as a worker has it (out of our control: faked)
    sys.modules["uwsgi"] = types.ModuleType("uwsgi")
from classifier import metrics
metrics.PREDICTIONS.labels("MobileNetV2", "local", "ok").inc(int(sys.argv[1]))
metrics.MODELS_LOADED.labels("MobileNetV2", "keras").inc()
if sys.argv[2] == "scrape":
    sys.stdout.write(metrics.exposition()[0].decode())
"""


def run_worker(folder: Path, predictions: int, then: str = "exit", kind: str = "uwsgi") -> str:
    """A process recording ``predictions``, with this test as its parent (its "master"); a
    uWSGI worker, or (``kind="child"``) a process such as the export child."""
    result = subprocess.run([sys.executable, "-c", WORKER, str(predictions), then, kind], cwd=ROOT, check=True,
                            env={**os.environ, metrics.FOLDER_VARIABLE: str(folder)},
                            capture_output=True, text=True, timeout=120)
    return result.stdout


def totals(text: str) -> dict[str, float]:
    """Each family's samples summed, from Prometheus' text format."""
    return {family.name: sum(s.value for s in family.samples if not s.name.endswith("_created"))
            for family in text_string_to_metric_families(text)}


def test_dead_processes_keep_their_counts_but_not_their_gauges(tmp_path):
    folder = tmp_path / "metrics"
    run_worker(folder, 5)
    scraped = totals(run_worker(folder, 2, then="scrape"))
    assert scraped["classifier_predictions"] == 7  # the first process's 5 count after it exited
    assert scraped["classifier_models_loaded"] == 1  # only the live process has a model loaded
    assert scraped["classifier_build_info"] == 1  # one version running
    # A process that is not a uWSGI worker never empties the folder, whoever its parent.
    (folder / "master").write_text("1 another master")
    assert totals(run_worker(folder, 1, then="scrape", kind="child"))["classifier_predictions"] == 8
    # A worker of a new master (another mark) starts from nothing: the folder is emptied.
    assert totals(run_worker(folder, 3, then="scrape"))["classifier_predictions"] == 3


def test_the_export_child_does_not_write_the_workers_metrics(monkeypatch, tmp_path):
    from classifier.artifacts.child import child_environment

    monkeypatch.setenv(metrics.FOLDER_VARIABLE, str(tmp_path))
    assert metrics.FOLDER_VARIABLE not in child_environment(Settings(keras_home=tmp_path))


# --- Prometheus' own tools on the example files -------------------------------------------------

def test_promtool_accepts_the_scrape_config_and_rules():
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "classifier-alerts.yml"]):
        result = subprocess.run([PROMTOOL, *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config():
    result = subprocess.run([AMTOOL, "check-config", "alertmanager.yml"], cwd=PROMETHEUS_DIR, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_when_it_should():
    """classifier-alerts.test.yml feeds made-up series to every rule and says when each fires."""
    result = subprocess.run([PROMTOOL, "test", "rules", "classifier-alerts.test.yml"], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "classifier-alerts.test.yml").read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (PROMETHEUS_DIR / "classifier-alerts.yml").read_text()))
    assert tested == defined


# --- the real stack: uWSGI (2 workers) behind NGINX, scraped by Prometheus ----------------------

@dataclass
class Stack:
    uwsgi: Uwsgi
    nginx: Nginx
    prometheus: Prometheus
    folder: Path  # the multiprocess folder
    started: float  # time.time() when Prometheus began scraping


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prepared_keras_home: Path) -> Iterator[Stack]:
    """uwsgi.ini's 2 workers behind NGINX, scraped every second, serving EfficientNetLite0 from
    its prepared export (each worker start, respawn and reload loads it in about a second).
    The metrics folder holds a stale file of 1000 predictions from an earlier run, which
    the new master must wipe."""
    base = tmp_path_factory.mktemp("metrics-stack")
    folder = base / "metrics"
    run_worker(folder, 1000)
    app = start_uwsgi(base, "uwsgi", CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_DEFAULT_MODEL="EfficientNetLite0",
                      CLASSIFIER_OFFLINE="1", KERAS_HOME=str(copy_of(prepared_keras_home, base / "keras")),
                      PROMETHEUS_MULTIPROC_DIR=str(folder),
                      CLASSIFIER_UWSGI_FIFO=str(base / "uwsgi.fifo"))
    processes: list[Callable[[], None]] = [app.stop]
    try:
        nginx = start_nginx(base / "nginx", {"127.0.0.1:8001": app.address}, rate_limit=False)
        processes.append(nginx.stop)
        started = time.time()
        prometheus = start_prometheus(base / "prometheus", nginx.url.removeprefix("http://"))
        processes.append(prometheus.stop)
        yield Stack(app, nginx, prometheus, folder, started)
    finally:
        for stop_process in reversed(processes):
            stop_process()


@dataclass
class Sent:
    """What a round of requests got, as the client saw it."""

    statuses: list[int]
    latencies: list[float]  # seconds, at the client
    server_totals: list[float]  # seconds, the answers' timing_ms.total


def send(url: str, image: bytes, ok: int, not_images: int, unknown_models: int) -> Sent:
    """The requests in a mixed order, 4 at a time, so both workers take some."""
    jobs = [(image, {})] * ok + [(NOT_AN_IMAGE, {})] * not_images + \
        [(image, {"model": "NoSuchModel"})] * unknown_models
    jobs = [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: (i * 7919) % len(jobs))]

    def one(job: tuple[bytes, dict[str, str]]) -> tuple[int, float, float | None]:
        started = time.monotonic()
        response = requests.post(url + "/predict", files={"image": ("x.png", job[0], "image/png")}, data=job[1],
                                 timeout=90)
        total = response.json().get("timing_ms", {}).get("total") if response.status_code == 200 else None
        return response.status_code, time.monotonic() - started, total and total / 1000

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, jobs))
    return Sent([r[0] for r in results], [r[1] for r in results], [r[2] for r in results if r[2] is not None])


def per_worker(folder: Path, pids: set[int], family: str = "classifier_predictions",
               kind: str = "counter") -> dict[int, float]:
    """Each worker's own value of ``family`` (a count, by default), read from its own ``kind``
    file in the multiprocess folder: what the worker wrote, not a scrape Prometheus may not
    have taken yet."""
    values = {}
    for pid in pids:
        path = folder / f"{kind}_{pid}.db"
        families = MultiProcessCollector.merge([str(path)]) if path.exists() else []
        values[pid] = sum(s.value for f in families if f.name == family for s in f.samples)
    return values


def bucket_bounds(value: float) -> tuple[float, float]:
    """The histogram bucket ``value`` falls in: (lower bound, upper bound)."""
    bounds = (*metrics.LATENCY_BUCKETS, math.inf)
    return max((b for b in bounds if b < value), default=0.0), min(b for b in bounds if b >= value)


def wait_for_workers(uwsgi: Uwsgi, done: Callable[[set[int]], bool], timeout: float = 180) -> None:
    """Until uWSGI runs 2 workers and ``done`` holds for their process ids (respawn, reload)."""
    now = wait_until(uwsgi.workers, timeout, lambda now: len(now) == 2 and done(now), interval=0.1)
    assert len(now) == 2 and done(now), f"uWSGI's workers are {now}"


@pytest.mark.stack  # Prometheus scraping uWSGI behind NGINX
def test_prometheus_totals_match_what_was_sent_across_workers_a_killed_worker_and_a_reload(stack, cat_png):
    prometheus, uwsgi = stack.prometheus, stack.uwsgi
    prometheus.wait_for("sum(classifier_models_loaded)", 2, timeout=120)  # both workers warmed up
    predictions = 'sum(classifier_predictions_total{server="local"})'

    first = send(stack.nginx.url, cat_png, ok=40, not_images=10, unknown_models=6)
    assert (first.statuses.count(200), first.statuses.count(415), first.statuses.count(400)) == (40, 10, 6)
    workers = uwsgi.workers()
    served = per_worker(stack.folder, workers)
    assert len(served) == 2 and all(served.values()) and sum(served.values()) == 56, served
    prometheus.wait_for(predictions, 56)  # not 1056: the stale file of an earlier run was wiped
    by_outcome = prometheus.query("sum by (model, outcome) (classifier_predictions_total)")
    assert by_outcome == {(("model", "EfficientNetLite0"), ("outcome", "ok")): 40,
                          (("model", "default"), ("outcome", "unsupported_image_type")): 10,
                          (("model", "unknown"), ("outcome", "unknown_model")): 6}
    assert prometheus.query('sum by (status) (classifier_requests_total{endpoint="/predict"})') == {
        (("status", "200"),): 40, (("status", "415"),): 10, (("status", "400"),): 6}
    assert prometheus.value("sum(classifier_images_total)") == 40
    assert prometheus.query('{model="NoSuchModel"}') == {}

    # p95 of /predict from the histogram: finite, and within what the requests took.
    p95 = prometheus.value('histogram_quantile(0.95, sum by (le) (classifier_request_seconds_bucket'
                           '{endpoint="/predict"}))')
    assert p95 is not None and math.isfinite(p95)
    assert bucket_bounds(min(first.server_totals))[0] <= p95 <= bucket_bounds(max(first.latencies))[1]

    # Every scrape tells the same totals, whichever worker answers it.
    with ThreadPoolExecutor(max_workers=2) as pool:
        scrapes = list(pool.map(lambda _: requests.get(stack.nginx.url + "/metrics", timeout=10).text, range(10)))
    assert {totals(text)["classifier_predictions"] for text in scrapes} == {56}

    # A worker killed mid-life: uWSGI respawns it; its counts stay, nothing doubles.
    victim = max(served, key=served.get)
    os.kill(victim, signal.SIGKILL)
    wait_for_workers(uwsgi, lambda now: victim not in now and len(now - workers) == 1)
    # The new one warmed up, seen in its own file: Prometheus' last scrape may precede the kill
    # (then its 2 is stale), and a chain reload sent while a worker still loads skips it.
    [respawned] = uwsgi.workers() - workers
    loaded = wait_until(lambda: per_worker(stack.folder, {respawned}, "classifier_models_loaded", "gauge_livesum"),
                        120, lambda loaded: loaded[respawned] == 1, interval=0.1)
    assert loaded == {respawned: 1}, loaded
    prometheus.wait_for("sum(classifier_models_loaded)", 2, timeout=120)  # the dead one gone
    second = send(stack.nginx.url, cat_png, ok=20, not_images=4, unknown_models=0)
    assert second.statuses.count(200) == 20
    prometheus.wait_for(predictions, 80)
    prometheus.wait_for('sum(classifier_predictions_total{outcome="ok"})', 60)
    prometheus.wait_for('sum(classifier_requests_total{endpoint="/predict"})', 80)

    # A chain reload (systemctl reload) replaces both workers: the totals carry on.
    before_reload = uwsgi.workers()
    with open(uwsgi.settings["CLASSIFIER_UWSGI_FIFO"], "w") as fifo:
        fifo.write("c")
    wait_for_workers(uwsgi, lambda now: not now & before_reload)
    prometheus.wait_for("sum(classifier_models_loaded)", 2, timeout=120)
    assert send(stack.nginx.url, cat_png, ok=8, not_images=0, unknown_models=0).statuses == [200] * 8
    prometheus.wait_for(predictions, 88)

    # Over the whole run: no counter ever went backwards, and no more than 2 workers ever
    # counted as having the model loaded (the reload's old worker is gone before its
    # replacement loads).
    end = time.time()
    assert prometheus.value("sum(resets(classifier_predictions_total[10m])) + "
                            "sum(resets(classifier_requests_total[10m]))") == 0
    [history] = prometheus.query_range(predictions, stack.started, end).values()
    values = [value for _, value in history]
    assert values == sorted(values) and max(values) <= 88  # the last step may precede the last scrape
    [loaded] = prometheus.query_range("sum(classifier_models_loaded)", stack.started, end).values()
    assert max(value for _, value in loaded) == 2


@pytest.mark.stack  # Prometheus scraping uWSGI behind NGINX
def test_metrics_through_nginx_only_for_the_allow_list(stack):
    allowed = requests.get(stack.nginx.url + "/metrics", timeout=10)
    assert allowed.status_code == 200 and allowed.headers["Content-Type"].startswith("text/plain")
    refused = client_at("127.0.0.2").get(stack.nginx.url + "/metrics", timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"] == {"code": "forbidden",
                                       "message": "GET /metrics is served only to the addresses this server lists.",
                                       "request_id": refused.headers["X-Request-ID"]}
    # Prometheus, on loopback, scrapes it.
    up = stack.prometheus.query('up{job="classifier"}')
    assert list(up.values()) == [1]


# --- an alert from the real stack to the operator: uWSGI, Prometheus, Alertmanager, a webhook --

class _Webhook(QuietHandler):
    """The operator's webhook (alertmanager.yml's receiver): keeps each notification's JSON."""

    def do_POST(self) -> None:
        self.server.notifications.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Alerting:
    prometheus: Prometheus
    alertmanager: Alertmanager
    notifications: list[dict]  # what the webhook received


@pytest.fixture(scope="module")
def first_failed_download(tmp_path_factory: pytest.TempPathFactory, cat_png: bytes) -> Iterator[Alerting]:
    """uwsgi.ini's workers, whose weights mirror does not answer, scraped every second by
    Prometheus sending alerts to Alertmanager with alertmanager.yml (delivering to a webhook
    here). Once Prometheus has scraped the app, one request for MobileNetV2 starts its
    weights' first download, which fails: a 503, and the counter's first increment."""
    base = tmp_path_factory.mktemp("alerting")
    with StubServer(_Webhook) as webhook:
        webhook.server.notifications = []
        app = start_uwsgi(base, "uwsgi", CLASSIFIER_WARMUP="0", KERAS_HOME=str(base / "keras"),
                          CLASSIFIER_WEIGHTS_MIRROR=f"http://127.0.0.1:{free_port()}/")
        processes: list[Callable[[], None]] = [app.stop]
        try:
            alertmanager = start_alertmanager(base / "alertmanager", webhook.url)
            processes.append(alertmanager.stop)
            prometheus = start_prometheus(base / "prometheus", app.http.removeprefix("http://"),
                                          alertmanager=alertmanager.address)
            processes.append(prometheus.stop)
            prometheus.wait_for('up{job="classifier"}', 1)
            response = requests.post(app.http + "/predict", data={"model": "MobileNetV2"}, timeout=30,
                                     files={"image": ("cat.jpg", cat_png, "image/jpeg")})
            assert response.status_code == 503, response.text
            yield Alerting(prometheus, alertmanager, webhook.server.notifications)
        finally:
            for stop_process in reversed(processes):
                stop_process()


@pytest.mark.stack  # Prometheus scraping uWSGI behind NGINX
def test_a_models_first_failed_download_fires_the_alert(first_failed_download):
    """Before, the series first appeared at 1, increase() saw 0, and the alert never fired."""
    prometheus = first_failed_download.prometheus
    prometheus.wait_for('classifier_weights_download_failures_total{model="MobileNetV2", kind="unreachable"}', 1)
    prometheus.wait_for('count(ALERTS{alertname="ClassifierWeightsDownloadFailing", alertstate="firing", '
                        'model="MobileNetV2", severity="warning"})', 1, timeout=30)
    # A lone 503 is not a host answering nothing.
    assert prometheus.query('ALERTS{alertname="ClassifierNoPredictions"}') == {}


@pytest.mark.stack  # Prometheus scraping uWSGI behind NGINX
def test_a_firing_alert_reaches_alertmanager_and_the_webhook(first_failed_download):
    wanted = {"alertname": "ClassifierWeightsDownloadFailing", "model": "MobileNetV2", "severity": "warning"}
    delivered = wait_until(lambda: [alert for notification in first_failed_download.notifications
                                    for alert in notification["alerts"] if wanted.items() <= alert["labels"].items()],
                           60, interval=0.25)
    assert delivered, f"the webhook received {first_failed_download.notifications}"
    assert delivered[0]["status"] == "firing"
    assert delivered[0]["annotations"]["summary"].endswith("downloading MobileNetV2's weights failed in the "
                                                           "last 30 minutes")
    held = [alert for alert in first_failed_download.alertmanager.alerts()
            if wanted.items() <= alert["labels"].items()]
    assert [alert["status"]["state"] for alert in held] == ["active"]
