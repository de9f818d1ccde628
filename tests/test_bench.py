"""The benchmarks end to end at their smallest settings: they produce every figure the
README's Benchmarks tables come from (bench/serving.py for both runtimes and the baseline,
through the real uWSGI and NGINX). What the figures are is the benchmarks' business; no
speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

MODEL = "EfficientNetLite0"  # real weights from pip: the ONNX server runs the production path


def test_the_serving_benchmark_reports_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/serving.py", "--models", MODEL, "--seconds", "1", "--requests", "10",
         "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for table in ("raw forward pass", "/predict through uWSGI + NGINX", "one request, beyond the forward pass",
                  "worker: start"):
        assert table in result.stdout
    (record,) = tmp_path.glob("serving-*.json")
    results = json.loads(record.read_text())["results"]
    (model,) = results["models"]
    every_model = results["worker_with_every_model"]
    assert every_model["runtime"] == "onnx" and not every_model["tensorflow"] and every_model["rss_mb"] > 0

    assert model["raw"]["predict"]["b1_ms"] > 0
    for runtime in ("keras", "onnx"):
        raw = model["raw"][runtime]
        assert set(raw["per_batch_ms"]) == {"1", "2", "4", "8"} and raw["all_cores_best"] > 0
    for kind in ("onnx", "keras", "baseline"):
        served = model["serving"][kind]
        for load in ("one", "many"):
            assert served[load]["requests"] > 0 and served[load]["errors"] == 0, (kind, load)
        assert served["first_prediction_s"] > served["healthz_s"] > 0
        # CPU times tick in 10 ms steps: in a one-second run NGINX and the client may show none.
        cpu = served["cpu_ms_per_request"]
        assert len(served["worker_rss_mb"]) == 2 and cpu["workers"] > 0 and min(cpu.values()) >= 0
    for kind in ("onnx", "keras"):
        assert model["serving"][kind]["http_floor_ms"] > 0
    assert set(model["serving"]["onnx"]["one"]["app_timing_ms"]) == {"decode", "inference", "total"}
    assert model["serving"]["onnx"]["weights"] == "file, checked export"
    onnx_worker, keras_worker = model["worker"]["onnx"], model["worker"]["keras"]
    assert onnx_worker["runtime"] == "onnx" and onnx_worker["tensorflow"] is False
    assert keras_worker["runtime"] == "keras" and keras_worker["tensorflow"] is True


def test_the_decode_benchmark_times_every_photo_size_both_ways():
    result = subprocess.run([sys.executable, "bench/decode.py", "--repeats", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["451x300", "2016x1512", "4032x3024", "8064x6048"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])
