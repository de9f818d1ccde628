"""The benchmarks end to end at their smallest settings: they produce every figure the
README's Benchmarks tables come from (bench/serving.py for both runtimes and the baseline,
through the real uWSGI and NGINX), and the figures agree with each other and with the
machine. What the figures are is the benchmarks' business; no speed is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # runs the benchmark scripts as processes, some with uWSGI and NGINX

MODEL = "EfficientNetLite0"  # real weights from pip: the ONNX server runs the production path
SECONDS, REQUESTS, CLIENTS = 1, 10, 4  # each load run's length, one-client requests, clients
SERVERS = ("onnx", "keras", "baseline")


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, int8_export) -> tuple[str, dict]:
    """One run of bench/serving.py: what it printed, and the record it wrote. It starts from
    the session's Keras cache with both forms made (as after ``classifier export``), so it
    measures them without converting, exporting or quantizing again."""
    results = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "bench.serving", "--models", MODEL, "--seconds", str(SECONDS),
         "--requests", str(REQUESTS), "--clients", str(CLIENTS), "--results", str(results),
         "--keras-home", str(int8_export[0])],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = results.glob("serving-*.json")
    return result.stdout, json.loads(record.read_text())["results"]


def test_the_serving_benchmark_prints_every_table(serving):
    printed, results = serving
    for table in ("raw forward pass", "/predict through uWSGI + NGINX", "one request, beyond the forward pass",
                  "goals, ONNX Runtime server", "worker: start"):
        assert table in printed
    assert [model["model"] for model in results["models"]] == [MODEL]


def test_raw_figures_are_derived_from_the_batches_measured(serving):
    (model,) = serving[1]["models"]
    assert model["raw"]["predict"]["b1_ms"] > 0
    for runtime in ("keras", "onnx"):
        raw = model["raw"][runtime]
        batches = {int(size): ms for size, ms in raw["per_batch_ms"].items()}
        assert set(batches) == {1, 2, 4, 8} and min(batches.values()) > 0
        assert raw["b1_ms"] == batches[1]
        assert raw["best_batch"] == min(batches, key=lambda size: batches[size] / size)
        assert raw["best_ms_per_image"] == pytest.approx(batches[raw["best_batch"]] / raw["best_batch"])
        assert raw["all_cores_best"] == max(raw["all_cores"].values()) > 0


def test_the_goals_are_ratios_to_the_limits_measured_in_the_same_run(serving):
    """F1 is the one-thread pass, Fbest the fastest thread count of 1..cores, D decode + crop;
    the goals divide the ONNX Runtime server's figures by them (issue 15)."""
    (model,) = serving[1]["models"]
    limits, served = model["raw"]["limits"], model["serving"]["onnx"]
    by_threads = {int(threads): ms for threads, ms in limits["per_threads_ms"].items()}
    assert list(by_threads) == list(range(1, os.cpu_count() + 1)) and min(by_threads.values()) > 0
    assert limits["F1_ms"] == by_threads[1]
    assert limits["Fbest_ms"] == by_threads[limits["best_threads"]] == min(by_threads.values())
    assert limits["D_ms"] > 0
    goals = model["goals"]
    assert goals["lone"] == pytest.approx(served["one"]["p50"] / (limits["Fbest_ms"] + limits["D_ms"]))
    cores_limit = 1000 * os.cpu_count() / (limits["F1_ms"] + limits["D_ms"])
    assert goals["load"] == pytest.approx(served["many"]["throughput"] / cores_limit)


@pytest.mark.parametrize("server", SERVERS)
def test_request_counts_agree_with_throughput_and_latencies(serving, server):
    """A run lasted requests / throughput seconds. Its clients were busy for at least the sum
    of its latencies, of which half were at least the median; the one-client run stops
    after --requests, the many-client one only after --seconds."""
    served = serving[1]["models"][0]["serving"][server]
    for load, clients in (("one", 1), ("many", CLIENTS)):
        run = served[load]
        assert run["requests"] > 0 and run["errors"] == 0, load
        assert 0 < run["p50"] <= run["p95"] <= run["p99"], load
        seconds = run["requests"] / run["throughput"]
        assert clients * seconds >= run["requests"] / 2 * run["p50"] / 1000, load
    assert served["one"]["requests"] <= REQUESTS
    assert served["many"]["requests"] / served["many"]["throughput"] >= SECONDS


@pytest.mark.parametrize("server", SERVERS)
def test_cpu_figures_fit_the_cores_and_the_request_count(serving, server):
    """CPU per request is the parts' share of all cores over the many-client run, times the
    run's length, over its requests; together the parts cannot use more than every core.
    CPU times tick in 10 ms steps: in a one-second run NGINX and the client may show none,
    the workers that ran every prediction must show some."""
    served = serving[1]["models"][0]["serving"][server]
    share, per_request = served["cpu_share"], served["cpu_ms_per_request"]
    assert set(share) == set(per_request) == {"workers", "nginx", "client"}
    assert per_request["workers"] > 0 and min(per_request.values()) >= 0
    assert sum(share.values()) <= 1.05  # a tick of rounding per process
    ms_of_all_cores_per_request = 1000 * os.cpu_count() / served["many"]["throughput"]
    for part in share:
        assert per_request[part] == pytest.approx(share[part] * ms_of_all_cores_per_request, rel=0.25), part


def test_workers_memory_start_and_runtime(serving):
    """Two workers per server, each holding Python, the app and a model (well over 50 MB);
    TensorFlow, hundreds of MB, only where Keras runs."""
    results = serving[1]
    (model,) = results["models"]
    for server in SERVERS:
        served = model["serving"][server]
        assert len(served["worker_rss_mb"]) == 2 and min(served["worker_rss_mb"]) > 50, server
        assert served["first_prediction_s"] > served["healthz_s"] > 0, server
    assert max(model["serving"]["onnx"]["worker_rss_mb"]) < min(model["serving"]["keras"]["worker_rss_mb"])
    for server in ("onnx", "keras"):
        assert model["serving"][server]["http_floor_ms"] > 0
    assert set(model["serving"]["onnx"]["one"]["app_timing_ms"]) == {"decode", "inference", "total"}
    assert model["serving"]["onnx"]["weights"] == "file, checked export"
    onnx_worker, keras_worker = model["worker"]["onnx"], model["worker"]["keras"]
    assert onnx_worker["runtime"] == "onnx" and onnx_worker["tensorflow"] is False
    assert keras_worker["runtime"] == "keras" and keras_worker["tensorflow"] is True
    every_model = results["worker_with_every_model"]
    assert every_model["runtime"] == "onnx" and not every_model["tensorflow"] and every_model["rss_mb"] > 50


def test_the_decode_benchmark_times_every_photo_size_both_ways():
    result = subprocess.run([sys.executable, "-m", "bench.decode", "--repeats", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["451x300", "2016x1512", "4032x3024", "8064x6048"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


def test_the_batching_benchmark_measures_every_batch_on_both_runtimes(tmp_path, prepared_keras_home):
    """bench/batching.py, behind CLASSIFIER_BATCH_SIZE's defaults, at its smallest settings."""
    result = subprocess.run([sys.executable, "-m", "bench.batching", "--models", MODEL, "--seconds", "0.05",
                             "--results", str(tmp_path), "--keras-home", str(prepared_keras_home)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "batching.json").read_text())
    assert set(figures) == {f"{MODEL} onnx", f"{MODEL} keras"}
    for measured in figures.values():
        for kind in ("forward_ms_per_image", "request_ms_per_image"):
            assert list(measured[kind]) == ["1", "2", "4", "8", "16"] and all(ms > 0 for ms in measured[kind].values())


def test_the_many_images_benchmark_answers_every_request(prepared_keras_home):
    """bench/many_images.py against a real one-worker uWSGI, at its smallest settings."""
    result = subprocess.run([sys.executable, "-m", "bench.many_images", "--images", "2", "--series", "3",
                             "--keras-home", str(prepared_keras_home)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum("status 200  answered 2 " in line for line in lines) == 3, result.stdout
    assert sum("images/s" in line for line in lines) == 3, result.stdout


def test_the_hostile_cli_benchmark_ends_every_run_with_its_reports():
    """bench/hostile_cli.py, with a 2 s read timeout: every hostile answer ends the CLI's run
    (none is killed), each photo failing with a reason in the CSV report."""
    result = subprocess.run([sys.executable, "-m", "bench.hostile_cli", "--seconds", "60"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CLASSIFIER_REMOTE_READ_TIMEOUT": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 6 and all(" exit 1 " in row for row in rows), result.stdout
    assert all(row.endswith(("remote_error remote_error", "remote_timeout remote_timeout")) for row in rows), rows


def test_the_int8_form_is_measured_beside_its_fp32_export(serving):
    """bench/serving.py makes the int8 form as `classifier export` does, times both forward
    passes on one thread, counts their agreement on the held-out images, and serves it."""
    printed, results = serving
    assert "int8 against fp32" in printed
    (model,) = results["models"]
    int8 = model["int8"]
    raw, check = int8["raw"], int8["check"]
    assert raw["fp32_ms"] > 0 and raw["int8_ms"] > 0
    assert raw["speedup"] == pytest.approx(raw["fp32_ms"] / raw["int8_ms"], abs=0.01)
    assert 0 <= raw["top1_agreement"] <= 1 and 0 <= raw["top5_overlap"] <= 5
    assert raw["images"] == check["images"] > 0
    served = int8["serving"]
    for load in ("one", "many"):
        assert served[load]["requests"] > 0 and served[load]["errors"] == 0, load
    assert served["weights"] == "file, checked export"
