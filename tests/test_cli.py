"""``python -m classifier predict``: what a person sees in a terminal, and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import PHOTOS, ROOT


def run(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLASSIFIER_RANDOM_WEIGHTS": "1", "KERAS_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "classifier", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_predict_prints_ranked_labels(tmp_path):
    result = run("predict", str(PHOTOS["chelsea"]), "--model", "ResNet50", "--top-k", "4", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{PHOTOS['chelsea']} (ResNet50, random weights)"
    assert len(lines) == 5
    percentages = [float(line.split("%")[0]) for line in lines[1:]]
    assert percentages == sorted(percentages, reverse=True)


def test_predict_json_matches_the_api_shape(tmp_path):
    result = run("predict", str(PHOTOS["coffee"]), str(PHOTOS["grace_hopper"]), "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["image"] for d in documents] == [str(PHOTOS["coffee"]), str(PHOTOS["grace_hopper"])]
    for document in documents:
        assert {"model", "weights", "server", "predictions", "result", "timing_ms"} <= set(document)
        assert len(document["predictions"]) == 3


def test_bad_files_are_reported_and_the_rest_still_classified(tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list")
    missing = tmp_path / "missing.png"
    result = run("predict", str(not_an_image), str(missing), str(PHOTOS["chelsea"]), tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"{not_an_image}: The data is not an image" in result.stderr
    assert f"{missing}:" in result.stderr and "No such file" in result.stderr
    assert str(PHOTOS["chelsea"]) in result.stdout and "Traceback" not in result.stderr


def test_invalid_options_exit_2(tmp_path):
    assert run("predict", str(PHOTOS["chelsea"]), "--top-k", "0", tmp_path=tmp_path).returncode == 2
    assert run("predict", str(PHOTOS["chelsea"]), "--model", "AlexNet", tmp_path=tmp_path).returncode == 2
