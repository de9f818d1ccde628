"""``python3 -m classifier``: what a person sees in a terminal, and its exit codes."""

from __future__ import annotations

import json
import subprocess

from classifier import Settings
from classifier.exports import Export
from classifier.models import REGISTRY
from conftest import PHOTOS, run_classifier


def run(*args: str, tmp_path, random_weights: bool = True) -> subprocess.CompletedProcess:
    return run_classifier(*args, CLASSIFIER_RANDOM_WEIGHTS="1" if random_weights else "0", KERAS_HOME=str(tmp_path),
                          CLASSIFIER_OFFLINE="1")


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


def test_export_prepares_what_a_worker_serves(tmp_path):
    """``export`` makes and checks the export that a server would otherwise make in a request;
    run again, it finds it checked (the engine serves a checked export without TensorFlow:
    tests/test_runtimes.py)."""
    result = run("export", tmp_path=tmp_path, random_weights=False)
    assert result.returncode == 0, result.stderr
    assert "EfficientNetLite0: checked export in" in result.stdout
    assert "same top-5" in result.stderr  # what the check found, from the engine's log
    settings = Settings(keras_home=tmp_path)
    spec = REGISTRY["EfficientNetLite0"]
    export = Export(spec, spec.weights.find(settings), settings.exports_dir)
    assert export.record() is not None and export.record().verified
    assert f"checked {export.onnx_path.name}" in result.stderr
    assert "ResNet50" not in result.stdout + result.stderr  # no weights here: not attempted by default

    again = run("export", "EfficientNetLite0", tmp_path=tmp_path, random_weights=False)
    assert again.returncode == 0 and "EfficientNetLite0: checked export in" in again.stdout
    assert f"checked {export.onnx_path.name}" not in again.stderr  # found checked, not checked again


def test_export_reports_models_it_cannot_export(tmp_path):
    missing = run("export", "ResNet50", tmp_path=tmp_path, random_weights=False)
    assert missing.returncode == 1
    assert "ResNet50: unavailable: resnet50_weights_tf_dim_ordering_tf_kernels.h5 is not here" in missing.stderr
    assert run("export", "AlexNet", tmp_path=tmp_path, random_weights=False).returncode == 2
    assert run("export", tmp_path=tmp_path).returncode == 2  # random weights: nothing to keep
