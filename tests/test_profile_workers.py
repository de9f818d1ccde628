"""bench/profile_workers.py: py-spy on the real uWSGI workers behind NGINX under load, and the tables
it prints from py-spy's samples. No speed is asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

from bench import profile_workers as bench_profile

FORWARD = "run (onnxruntime/capi/onnxruntime_inference_collection.py)"
RAW = f"""\
process 10:"uWSGI master";process 11:"uWSGI worker 1";predict (app.py);classify (service.py);{FORWARD} 6
process 10:"uWSGI master";process 11:"uWSGI worker 1";predict (app.py);classify (service.py);framed (images.py) 3
process 10:"uWSGI master";process 12:"uWSGI worker 2";predict (app.py);jsonify (flask/json/__init__.py) 1
process 10:"uWSGI master";process 12:"uWSGI worker 2" 2
"""


def test_samples_in_the_forward_pass_are_counted_then_left_out():
    profile = bench_profile.Profile.from_raw(RAW, rate=100)
    assert (profile.forward, profile.other) == (6, 6)
    assert profile.own == {"framed (images.py)": 3, "jsonify (flask/json/__init__.py)": 1,
                           bench_profile.UWSGI_ITSELF: 2}
    assert profile.under["predict (app.py)"] == 4 and profile.under["classify (service.py)"] == 3
    assert not any("onnxruntime" in frame for frame in profile.under)


def test_printed_milliseconds_share_the_workers_cpu_by_samples(capsys):
    bench_profile.Profile.from_raw(RAW, rate=100).print(cpu_ms=12.0, top=2)  # 1 ms per sample
    printed = capsys.readouterr().out
    assert "forward pass 6.00 ms/request, everything else 6.00 ms/request" in printed
    assert "   3.000  50.0%  framed (images.py)" in printed
    assert "   4.000  66.7%  predict (app.py)" in printed


@pytest.mark.stack  # profiles uWSGI behind NGINX
def test_a_profile_of_the_real_stack_names_the_apps_functions():
    result = subprocess.run([sys.executable, "-m", "bench.profile_workers", "--seconds", "2", "--top", "40"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout
    served = re.search(r"(\d+) req/s, p50 [\d.]+ ms, (\d+) errors", printed)
    assert served and int(served.group(1)) > 0 and served.group(2) == "0", printed
    assert re.search(r"CPU ms/request: workers [\d.]+, nginx [\d.]+, client [\d.]+", printed)
    cumulative = printed.split("by cumulative CPU")[1]
    assert "Classifier.classify_request (classifier/serving/service.py" in cumulative and "onnxruntime" not in cumulative
