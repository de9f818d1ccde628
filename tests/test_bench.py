"""The benchmarks. The quick ones run end to end at their smallest settings and produce every
figure docs/benchmarks.md's tables come from: bench/decode.py, batching.py, many_images.py and
hostile_cli.py. bench/serving.py's tables and the figures it derives are checked over a run
it recorded, tests/data/serving-run.json (``python3 -m bench.serving --models EfficientNetLite0
--seconds 1 --requests 10 --clients 4`` on this 2-core machine): a live run is minutes of
uWSGI, NGINX and TensorFlow processes whose only checks were this arithmetic, while what it
measures is tested where it lives (the stack in test_deployment, TensorFlow-free ONNX
Runtime workers in test_runtimes, the load client's counts in test_load_client, int8 forms
and their figures in test_int8). What the figures are is the benchmarks' business; no speed
is asserted."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from bench import serving
from classifier.models.registry import REGISTRY

MODEL = "EfficientNetLite0"  # real weights from pip: the ONNX server runs the production path
RECORDED_RUN = json.loads((ROOT / "tests" / "data" / "serving-run.json").read_text())
RECORD = RECORDED_RUN["results"]
(RECORDED,) = RECORD["models"]
RECORDED_CORES = int(RECORDED_RUN["machine"].split()[0])  # "2 cores, ..."


def recorded_model() -> serving.Model:
    """The recorded run's model, as bench/serving.py holds it once measured (no files: the
    report reads only the figures)."""
    return serving.Model(REGISTRY[MODEL], Path("unused.h5"), None, True, raw=RECORDED["raw"],
                         serving=RECORDED["serving"], worker=RECORDED["worker"], int8=RECORDED["int8"])


def test_the_serving_report_prints_every_table_and_records_what_was_measured(tmp_path, capsys):
    """``report`` over the recorded figures: every table, and the record as measured, with
    the goals derived again from the limits and the ONNX Runtime server's figures (against
    this machine's cores)."""
    args = argparse.Namespace(processes=2, threads=1, runtime_threads=0, clients=4, seconds=1, results=tmp_path)
    serving.report([recorded_model()], RECORD["worker_with_every_model"], args, 60)
    printed = capsys.readouterr().out
    for table in ("raw forward pass", "/predict through uWSGI + NGINX", "one request, beyond the forward pass",
                  "goals, ONNX Runtime server", "int8 against fp32", "worker: start"):
        assert table in printed
    for server in ("onnx", "keras", "baseline"):
        assert f"{MODEL:<18}{server:<9}" in printed, server
    (written,) = tmp_path.glob("serving-*.json")
    (model,) = json.loads(written.read_text())["results"]["models"]
    assert model.pop("goals") == serving.goals(RECORDED["raw"]["limits"], RECORDED["serving"]["onnx"])
    assert model == {key: value for key, value in RECORDED.items() if key != "goals"}


@pytest.mark.parametrize("runtime", ["keras", "onnx"])
def test_raw_figures_are_derived_from_the_batches_measured(runtime):
    recorded = RECORDED["raw"][runtime]
    batches = {int(size): ms for size, ms in recorded["per_batch_ms"].items()}
    figures = serving.raw_figures(batches, recorded["all_cores"])
    assert figures["b1_ms"] == batches[1]
    assert figures["best_batch"] == min(batches, key=lambda size: batches[size] / size)
    assert figures["best_ms_per_image"] == pytest.approx(batches[figures["best_batch"]] / figures["best_batch"])
    assert figures["all_cores_best"] == max(figures["all_cores"].values()) > 0
    assert json.loads(json.dumps(figures)) == recorded


def test_the_goals_are_ratios_to_the_limits_measured_in_the_same_run():
    """F1 is the one-thread pass, Fbest the fastest thread count of 1..cores, D decode + crop;
    the goals divide the ONNX Runtime server's figures by them (issue 15)."""
    limits, served = RECORDED["raw"]["limits"], RECORDED["serving"]["onnx"]
    goals = serving.goals(limits, served, RECORDED_CORES)
    assert goals["lone"] == pytest.approx(served["one"]["p50"] / (limits["Fbest_ms"] + limits["D_ms"]))
    cores_limit = 1000 * RECORDED_CORES / (limits["F1_ms"] + limits["D_ms"])
    assert goals["load"] == pytest.approx(served["many"]["throughput"] / cores_limit)
    assert goals == RECORDED["goals"]


def test_cpu_figures_are_shares_of_all_cores_and_ms_per_request():
    """CPU per request is each part's share of all cores over the many-client run, times the
    run's length, over its requests; a run without requests divides by one, not zero."""
    before, after = (10.0, 1.0, 5.0, 100.0), (13.0, 1.5, 5.2, 102.0)  # CPU s: workers, NGINX, client; clock
    share, per_request = serving.cpu_figures(before, after, requests=40, cores=2)
    assert share == pytest.approx({"workers": 0.75, "nginx": 0.125, "client": 0.05})
    ms_of_all_cores_per_request = 1000 * 2 * 2 / 40
    assert per_request == pytest.approx({part: share[part] * ms_of_all_cores_per_request for part in share})
    assert serving.cpu_figures(before, after, requests=0, cores=2)[1] == pytest.approx({"workers": 3000, "nginx": 500,
                                                                                "client": 200})


@pytest.mark.slow  # runs the benchmark as a process
def test_the_decode_benchmark_times_every_photo_size_both_ways():
    result = subprocess.run([sys.executable, "-m", "bench.decode", "--repeats", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["451x300", "2016x1512", "4032x3024", "8064x6048"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


def test_the_batching_benchmark_measures_every_batch_on_both_runtimes(tmp_path, prepared_keras_home):
    """bench/batching.py, behind CLASSIFIER_BATCH_SIZE's defaults, at its smallest settings."""
    result = subprocess.run([sys.executable, "-m", "bench.batching", "--models", MODEL, "--seconds", "0.05", "--repeats", "1",
                             "--results", str(tmp_path), "--keras-home", str(prepared_keras_home)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "batching.json").read_text())
    assert set(figures) == {f"{MODEL} onnx", f"{MODEL} keras"}
    for measured in figures.values():
        for kind in ("forward_ms_per_image", "request_ms_per_image"):
            assert list(measured[kind]) == ["1", "2", "4", "8", "16"] and all(ms > 0 for ms in measured[kind].values())


def test_the_request_calls_benchmark_counts_both_cases(keras_home):
    """bench/request_calls.py at its smallest settings: a line for each case, with its counts."""
    result = subprocess.run([sys.executable, "-m", "bench.request_calls", "--requests", "2", "--keras-home",
                             str(keras_home)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"model={MODEL}", "no model, no configured default"], lines
    assert all(" function calls, " in line and " stat calls " in line for line in lines), lines


def test_the_many_images_benchmark_answers_every_request(prepared_keras_home):
    """bench/many_images.py against a real one-worker uWSGI, at its smallest settings."""
    result = subprocess.run([sys.executable, "-m", "bench.many_images", "--images", "2", "--series", "3",
                             "--keras-home", str(prepared_keras_home)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum("status 200  answered 2 " in line for line in lines) == 3, result.stdout
    assert sum("images/s" in line for line in lines) == 3, result.stdout


@pytest.mark.slow  # runs the benchmark as a process, with a server to test the CLI against
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


@pytest.mark.stack
def test_the_tls_benchmark_times_both_schemes_both_ways():
    """bench/tls.py at its smallest: http and https, kept-alive and a new connection each."""
    result = subprocess.run([sys.executable, "-m", "bench.tls", "--requests", "3"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {f"{scheme} {way}" for scheme in ("http", "https")
                           for way in ("kept-alive", "new connection each")}
    assert all(0 < case["median_ms"] <= case["p95_ms"] for case in report.values())
