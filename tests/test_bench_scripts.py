"""The benchmarks that tests/test_bench.py does not run, each run once as ``python3 -m
bench.NAME`` at its smallest settings: it must finish and print a line per case, its
figures above zero. What the figures are is the benchmarks' business; no speed is asserted.

Not run here: bench/serving.py, minutes of uWSGI, NGINX and TensorFlow even at its smallest
(``--models EfficientNetLite0 --seconds 1 --requests 10 --clients 4``): tests/test_bench.py
checks its arithmetic over a run it recorded, and ``--help`` below that it starts;
bench/int8.py runs in tests/test_int8.py beside the int8 form that module makes anyway;
bench/load.py and bench/prometheus.py are helpers, no scripts (tests/test_load_client.py,
tests/test_metrics.py); bench/containers.py belongs to tests/test_containers.py."""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
import sys

import pytest
from conftest import PHOTOS, ROOT
from PIL import Image

from bench.hostile import HOSTILE_BODIES, IMAGE_BOMBS

NUMBER = r"\d[\d,]*(?:\.\d+)?"


def bench(*args: str, timeout: float = 300, **env: str) -> list[str]:
    """``python3 -m bench.ARGS...`` in the worktree, with ``env`` added; the lines it printed."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def numbers(text: str) -> list[float]:
    return [float(number.replace(",", "")) for number in re.findall(NUMBER, text)]


def test_the_explain_benchmark_measures_both_photos(keras_home):
    """bench/explain.py for the bundled model (its checked export already in the cache)."""
    header, *rows = bench("bench.explain", "--models", "EfficientNetLite0", "--repeats", "1",
                          KERAS_HOME=str(keras_home))
    assert header.split()[:3] == ["model", "photo", "runtime"], header
    assert [row.split()[:3] for row in rows] == [["EfficientNetLite0", "451x300", "onnx"],
                                                 ["EfficientNetLite0", "4032x3024", "onnx"]], rows
    for row in rows:
        forward, predict, explained, explain, ratio, plain, answer, heatmap = numbers(row.split(None, 3)[3])
        assert min(forward, predict, explained, explain, ratio) > 0, row
        assert plain < answer and 0 < heatmap < answer, row  # the explanation adds the heatmap


@pytest.mark.slow  # starts python3 app.py and stub remotes
def test_the_hostile_remote_benchmark_answers_every_remote(tmp_path):
    """bench/hostile_remote.py, the slow-headers remote cut after 2 + 3 s instead of 30 + 3 s:
    each hostile answer becomes the error SECURITY.md names, none holds the app."""
    lines = bench("bench.hostile_remote", CLASSIFIER_REMOTE_READ_TIMEOUT="2", KERAS_HOME=str(tmp_path))
    columns = [numbers(line[52:]) for line in lines]  # after the case's name, 52 wide: status, bytes, CPU s, s
    assert [status for status, *_ in columns] == [502, 502, 502, 504], lines
    assert all(size > 0 and cpu >= 0 and wall >= 0 for _, size, cpu, wall in columns), lines  # 0.0: under 0.05 s


@pytest.mark.slow  # a process per file
def test_the_image_bombs_benchmark_measures_each_file_it_is_given():
    """bench/image_bombs.py for a refused file and a decoded one (each answers as
    IMAGE_BOMBS expects): the decoded one's CPU, memory, cost and CPU per pixel scan."""
    refused, decoded = "RLE BMP, 4 KB", "16-bit PNG 7000x7000"
    header, *rows = bench("bench.image_bombs", "--files", refused, decoded)
    assert header.split()[0] == "file", header
    assert [row.startswith(name) for row, name in zip(rows, (refused, decoded))] == [True, True], rows
    assert rows[0].endswith(IMAGE_BOMBS[refused][2]) and rows[1].endswith("ok"), rows
    size, cpu, peak, cost, per_scan = numbers(rows[1].removeprefix(decoded))
    assert min(size, cpu, peak, cost, per_scan) > 0, rows[1]


@pytest.mark.slow
@pytest.mark.stack  # uWSGI behind NGINX
def test_the_image_bombs_benchmark_sends_every_body_to_a_worker():
    """``--bodies``: every costly JSON body through NGINX to a uWSGI worker, answered with the
    status and code HOSTILE_BODIES expects, its size and the worker's CPU above zero."""
    header, *rows = bench("bench.image_bombs", "--bodies")
    assert header.split()[0] == "body", header
    assert len(rows) == len(HOSTILE_BODIES), rows
    for row, (name, (_, status, code)) in zip(rows, HOSTILE_BODIES.items()):
        assert row.startswith(name) and row.endswith(f"{status} {code}"), row
        size, cpu = numbers(row.removeprefix(name))[:2]
        assert size > 0 and cpu > 0, row


@pytest.mark.slow
@pytest.mark.stack  # uWSGI, NGINX and Prometheus
def test_the_metrics_graph_benchmark_draws_and_measures_scrapes(keras_home, tmp_path):
    """bench/metrics_graph.py for 1 s of traffic (the graphs still look 10 s back) and 50
    scrapes of each kind: the picture, and /metrics' size, series and cost. Fifty, because the
    workers' CPU is counted in 10 ms clock ticks: 5 scrapes of about 1 ms each once read as 0."""
    out = tmp_path / "graph.png"
    lines = bench("bench.metrics_graph", "--seconds", "1", "--scrapes", "50", "--out", str(out), timeout=600,
                  KERAS_HOME=str(keras_home))
    wrote, scrapes, folder, dead = lines[-4:]
    assert wrote.startswith(f"wrote {out}") and Image.open(out).size == (800, 448), lines
    assert re.match(rf"/metrics: {NUMBER} bytes, \d+ series; 50 scrapes: median", scrapes), scrapes
    assert all(value > 0 for value in numbers(scrapes.split(" MB")[0])), scrapes
    assert re.match(r"multiprocess folder: [1-9]\d* files", folder), folder
    assert dead.startswith("with 100 dead workers' files more: median") and min(numbers(dead)) > 0, dead


@pytest.mark.slow  # builds a Keras model
def test_the_baseline_app_answers_as_bench_serving_times_it(monkeypatch):
    """bench/baseline_app.py, which bench/serving.py serves under uWSGI as the original app's
    yardstick: a raw JPEG body and a form upload both get the model's top predictions
    (MobileNetV2 with random weights: the values do not matter to a timing)."""
    monkeypatch.setenv("BASELINE_MODEL", "MobileNetV2")
    client = importlib.import_module("bench.baseline_app").app.test_client()
    photo = PHOTOS["chelsea"].read_bytes()
    raw = client.post("/predict", data=photo, content_type="image/jpeg")
    form = client.post("/predict", data={"image": (io.BytesIO(photo), "chelsea.jpg")})
    for answer in (raw, form):
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.json["model"] == "MobileNetV2" and len(answer.json["predictions"]) > 0, answer.json
    assert client.get("/healthz").status_code == 200


@pytest.mark.slow  # a process importing the benchmark
def test_the_serving_benchmark_starts():
    """bench/serving.py takes too long for the suite (docstring); it starts and says what it takes."""
    lines = bench("bench.serving", "--help")
    assert any("--keras-home" in line for line in lines) and any("--sweep" in line for line in lines), lines
