"""The bounded hostile load of bench/hostile_load.py through uWSGI + NGINX: only correctness
is checked here (no good request fails, no 5xx); the bench prints the figures."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_mixed_good_and_hostile_load_loses_nothing():
    result = subprocess.run([sys.executable, "bench/hostile_load.py", "--requests", "150", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["requests"] == 150
    assert report["good_failed"] == 0
    assert report["server_errors"] == 0
    assert report["unexpected"] == []
    assert len(report["worker_rss_mb_after"]) == 2
    assert report["workers_respawned"] == 0  # both workers survived, none was killed and replaced
