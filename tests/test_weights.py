"""Weights for real, without the internet: files in the cache, a copied folder, a local
mirror standing in for Keras' download host (which this machine cannot reach), and the
offline and missing-weights answers."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from classifier import Classifier, Settings
from classifier.errors import ModelUnavailable
from classifier.models import REGISTRY
from conftest import ROOT, free_port

MOBILENET = REGISTRY["MobileNetV2"].weights
RESNET = REGISTRY["ResNet50"].weights


@pytest.fixture(scope="module")
def mobilenet_h5(tmp_path_factory) -> bytes:
    """A MobileNetV2 weights file in the legacy .h5 layout Keras publishes (random values)."""
    model = REGISTRY["MobileNetV2"].build()
    path = tmp_path_factory.mktemp("h5") / MOBILENET.file_name
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return path.read_bytes()


class Mirror:
    """A local HTTP server standing in for Keras' weights host: serves files, counts requests."""

    def __init__(self, files: dict[str, bytes], delay: float = 0.0) -> None:
        self.files, self.delay, self.requests = files, delay, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for start in range(0, len(body), 1 << 20):
                    self.wfile.write(body[start:start + (1 << 20)])
                    time.sleep(mirror.delay)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror() -> Iterator[callable]:
    mirrors: list[Mirror] = []

    def start(files: dict[str, bytes], delay: float = 0.0) -> Mirror:
        mirrors.append(Mirror(files, delay))
        return mirrors[-1]

    yield start
    for m in mirrors:
        m.close()


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(keras_home=tmp_path / "keras", warmup=False, **overrides)


def test_file_in_the_keras_cache_is_found_and_used(tmp_path, mobilenet_h5, cat_png):
    settings = settings_for(tmp_path)
    settings.keras_cache_dir.mkdir(parents=True)
    (settings.keras_cache_dir / MOBILENET.file_name).write_bytes(mobilenet_h5)
    classifier = Classifier(settings)
    assert next(m for m in classifier.models() if m["name"] == "MobileNetV2")["status"] == "cached"
    result = classifier.classify(cat_png, "MobileNetV2", top_k=1000)
    assert result.weights == "imagenet"
    # The scores are those of the weights in the file, not of a fresh random model.
    reference = REGISTRY["MobileNetV2"].build()
    reference.load_weights(str(settings.keras_cache_dir / MOBILENET.file_name))
    from classifier import images
    crop = images.model_input(cat_png, 224)[None]
    expected = np.asarray(reference(REGISTRY["MobileNetV2"].preprocess(crop)))[0]
    got = {p.class_id: p.score for p in result.predictions}
    from classifier.labels import class_index
    np.testing.assert_allclose([got[wnid] for wnid, _ in class_index()], expected, atol=1e-5)


def test_operator_weights_dir_is_found(tmp_path, mobilenet_h5):
    folder = tmp_path / "copied"
    folder.mkdir()
    (folder / MOBILENET.file_name).write_bytes(mobilenet_h5)
    classifier = Classifier(settings_for(tmp_path, weights_dir=folder))
    assert MOBILENET.find(classifier.settings) == folder / MOBILENET.file_name
    assert classifier.load_model("MobileNetV2").weights == "imagenet"


def test_file_with_wrong_hash_is_refused(tmp_path, make_app, cat_png):
    app = make_app(random_weights=False, offline=True, keras_home=tmp_path / "keras")
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / RESNET.file_name).write_bytes(b"not the published weights")
    response = app.test_client().post("/predict?model=ResNet50", data=cat_png, content_type="image/png")
    assert response.status_code == 503
    assert response.json["error"]["code"] == "model_unavailable"
    assert "MD5" in response.json["error"]["message"] and RESNET.file_name in response.json["error"]["message"]


def test_offline_missing_weights_is_503_naming_the_model_and_others_keep_working(make_app, cat_png, tmp_path):
    app = make_app(random_weights=False, offline=True)
    client = app.test_client()
    response = client.post("/predict?model=NASNetMobile", data=cat_png, content_type="image/png")
    assert response.status_code == 503
    message = response.json["error"]["message"]
    assert "NASNetMobile" in message and "python -m classifier download NASNetMobile" in message
    assert "CLASSIFIER_OFFLINE" in message
    models = {m["name"]: m for m in client.get("/models").json["models"]}
    assert models["NASNetMobile"]["status"] == "unavailable" and "hint" in models["NASNetMobile"]
    assert not (tmp_path / "keras" / "models" / (REGISTRY["NASNetMobile"].weights.file_name + ".lock")).exists()
    # The bundled model still answers, and it is the default.
    assert client.get("/models").json["default"] == "EfficientNetLite0"
    ok = client.post("/predict", data=cat_png, content_type="image/png")
    assert ok.status_code == 200 and ok.json["model"] == "EfficientNetLite0" and ok.json["weights"] == "imagenet"


def test_background_download_answers_503_at_once_then_serves(make_app, mirror, mobilenet_h5, cat_png, tmp_path):
    files = {MOBILENET.path: mobilenet_h5}
    server = mirror(files, delay=0.3)  # ~15 chunks of 1 MiB: a few seconds
    client = make_app(random_weights=False, weights_mirror=server.url).test_client()
    started = time.monotonic()
    first = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert time.monotonic() - started < 2
    assert first.status_code == 503 and first.headers["Retry-After"].isdigit()
    assert "being downloaded" in first.json["error"]["message"]
    seen_progress = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = next(m for m in client.get("/models").json["models"] if m["name"] == "MobileNetV2")
        if model["status"] == "downloading":
            if model["progress"]["done"] > 0:
                seen_progress = True
                assert model["progress"]["total"] == len(mobilenet_h5)
        elif model["status"] == "cached":
            break
        time.sleep(0.2)
    assert model["status"] == "cached" and seen_progress
    assert server.requests == ["/" + MOBILENET.path]
    done = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert done.status_code == 200 and done.json["weights"] == "imagenet"


def test_failed_background_download_leaves_nothing_and_says_why(make_app, cat_png, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/"
    client = make_app(random_weights=False, weights_mirror=closed).test_client()
    assert client.post("/predict?model=ResNet50", data=cat_png, content_type="image/png").status_code == 503
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        model = next(m for m in client.get("/models").json["models"] if m["name"] == "ResNet50")
        if model["status"] == "unavailable":
            break
        time.sleep(0.1)
    assert model["error"] == "the download host could not be reached"
    again = client.post("/predict?model=ResNet50", data=cat_png, content_type="image/png")
    assert again.status_code == 503 and "could not be downloaded" in again.json["error"]["message"]
    leftovers = [p.name for p in (tmp_path / "keras" / "models").iterdir()
                 if "resnet50" in p.name and not p.name.endswith(".lock")]
    assert leftovers == []


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "classifier", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def cli_env(tmp_path: Path, mirror_url: str) -> dict[str, str]:
    import os
    return {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "CLASSIFIER_WEIGHTS_MIRROR": mirror_url}


def test_download_command_fetches_and_verifies(mirror, mobilenet_h5, tmp_path):
    resnet_bytes = b"pretend resnet weights"
    md5 = hashlib.md5(resnet_bytes).hexdigest()
    assert md5 != RESNET.md5
    server = mirror({MOBILENET.path: mobilenet_h5, RESNET.path: resnet_bytes})
    result = run_cli("download", "MobileNetV2", "ResNet50", env=cli_env(tmp_path, server.url))
    assert result.returncode == 1
    assert (tmp_path / "keras" / "models" / MOBILENET.file_name).read_bytes() == mobilenet_h5
    assert "MobileNetV2: saved" in result.stdout
    assert "ResNet50" in result.stderr and "MD5" in result.stderr
    names = sorted(p.name for p in (tmp_path / "keras" / "models").iterdir() if not p.name.endswith(".lock"))
    assert names == [MOBILENET.file_name]  # the rejected file left nothing behind


def test_download_command_when_the_host_is_unreachable(tmp_path):
    result = run_cli("download", "NASNetMobile", env=cli_env(tmp_path, f"http://127.0.0.1:{free_port()}/"))
    assert result.returncode == 1
    assert "NASNetMobile: cannot download" in result.stderr and "could not be reached" in result.stderr


def test_concurrent_processes_download_a_file_once(mirror, mobilenet_h5, tmp_path):
    server = mirror({MOBILENET.path: mobilenet_h5}, delay=0.1)
    env = cli_env(tmp_path, server.url)
    command = [sys.executable, "-m", "classifier", "download", "MobileNetV2"]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    assert server.requests == ["/" + MOBILENET.path]
    assert (tmp_path / "keras" / "models" / MOBILENET.file_name).read_bytes() == mobilenet_h5


def test_unknown_model_in_download_command(tmp_path):
    result = run_cli("download", "AlexNet", env=cli_env(tmp_path, "http://127.0.0.1:9/"))
    assert result.returncode == 2 and "Unknown model 'AlexNet'" in result.stderr


def test_classify_without_background_downloads_explains(tmp_path, cat_png):
    classifier = Classifier(settings_for(tmp_path), downloads=None)
    with pytest.raises(ModelUnavailable, match="python -m classifier download ResNet50"):
        classifier.classify(cat_png, "ResNet50")
