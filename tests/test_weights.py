"""Weights for real, without the internet: files in the cache, a copied folder, a local
mirror standing in for Keras' download host (which this machine cannot reach), files that
are not what they claim, and one wording of every model's state wherever it is shown."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import (
    ROOT,
    classifier_command,
    copy_of,
    free_port,
    run_classifier,
    wait_until_healthy,
)

from bench import stack
from bench.polling import wait_until
from bench.servers import QuietHandler, StubServer
from classifier import Classifier, Settings
from classifier.cli.weights_layouts import layout_of
from classifier.errors import ModelUnavailable, UnsupportedImageType
from classifier.models.layouts import expected_layouts
from classifier.models.registry import REGISTRY
from classifier.models.weights import KerasWeights
from classifier.serving.pool import ModelPool

MOBILENET = REGISTRY["MobileNetV2"].weights
RESNET = REGISTRY["ResNet50"].weights
NASNET = REGISTRY["NASNetMobile"].weights
LITE = REGISTRY["EfficientNetLite0"].weights
PORTAL_PAGE = b"<html><body>Sign in to the hotel Wi-Fi to continue</body></html>"


class Mirror(StubServer):
    """A local HTTP server standing in for Keras' weights host: serves files, counts requests."""

    def __init__(self, files: dict[str, bytes], delay: float = 0.0, cut_at: int | None = None) -> None:
        """``cut_at``: announce the whole file but close the connection after this many bytes."""
        self.files, self.delay, self.cut_at, self.requests = files, delay, cut_at, []
        mirror = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = body[:mirror.cut_at]
                for start in range(0, len(sent), 1 << 20):
                    self.wfile.write(sent[start:start + (1 << 20)])
                    time.sleep(mirror.delay)

        super().__init__(Handler)


@pytest.fixture
def mirror() -> Iterator[callable]:
    mirrors: list[Mirror] = []

    def start(files: dict[str, bytes], delay: float = 0.0, cut_at: int | None = None) -> Mirror:
        mirrors.append(Mirror(files, delay, cut_at))
        return mirrors[-1]

    yield start
    for m in mirrors:
        m.close()


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(keras_home=tmp_path / "keras", warmup=False, **overrides)


def home_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A Keras home whose cache holds ``files``; returns the home."""
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (cache / name).write_bytes(content)
    return tmp_path / "keras"


def by_name(models: list[dict]) -> dict[str, dict]:
    return {m["name"]: m for m in models}


def wait_for_status(client, name: str, wanted: set[str], seconds: float = 60) -> dict:
    """Poll ``/models`` (bounded) until ``name`` is in one of the ``wanted`` states."""
    return wait_until(lambda: by_name(client.get("/models").json["models"])[name], seconds,
                      lambda model: model["status"] in wanted, interval=0.1)


def test_every_keras_model_has_a_shipped_layout():
    """A model added to REGISTRY without ``python3 -m classifier.cli.weights_layouts`` run after it would
    have its weights files checked only for being HDF5 (docs/models.md, "Adding a model")."""
    keras_models = [spec.name for spec in REGISTRY.values()
                    if spec.int8_of is None and isinstance(spec.weights, KerasWeights)]
    assert keras_models and [name for name in keras_models if name not in expected_layouts()] == []


@pytest.mark.slow  # builds Keras models or runs processes
def test_shipped_layouts_are_those_keras_writes(built_model):
    """``data/weights_layouts.json`` lets a worker check a file without TensorFlow; it must
    say what Keras itself writes and reads for each architecture."""
    for name in ("MobileNetV2", "ResNet50", "NASNetMobile"):
        assert expected_layouts()[name] == layout_of(built_model(name)), name


@pytest.mark.slow  # builds Keras models or runs processes
def test_file_in_the_keras_cache_is_found_and_used(tmp_path, mobilenet_h5, cat_png):
    settings = settings_for(tmp_path, runtime="keras")  # the file is the subject, not its export (test_runtimes)
    home_with(tmp_path, {MOBILENET.file_name: mobilenet_h5})
    classifier = Classifier(settings)
    mobilenet = by_name(classifier.models())["MobileNetV2"]
    assert (mobilenet["status"], mobilenet["status_text"], mobilenet["ready"]) == ("ready", "ready", True)
    result = classifier.classify(cat_png, "MobileNetV2", top_k=1000)
    assert result.weights == "imagenet"
    # The scores are those of the weights in the file, not of a fresh random model.
    reference = REGISTRY["MobileNetV2"].build()
    reference.load_weights(str(settings.keras_cache_dir / MOBILENET.file_name))
    from classifier.imaging import images
    crop = images.model_input(cat_png, 224)[None]
    expected = np.asarray(reference(REGISTRY["MobileNetV2"].preprocess(crop)))[0]
    got = {p.class_id: p.score for p in result.predictions}
    from classifier.models.labels import class_index
    np.testing.assert_allclose([got[wnid] for wnid, _ in class_index()], expected, atol=1e-5)


@pytest.mark.slow  # builds Keras models or runs processes
def test_operator_weights_dir_is_found(tmp_path, mobilenet_h5):
    folder = tmp_path / "copied"
    folder.mkdir()
    (folder / MOBILENET.file_name).write_bytes(mobilenet_h5)
    classifier = Classifier(settings_for(tmp_path, weights_dir=folder, runtime="keras"))  # no export: test_runtimes
    assert MOBILENET.find(classifier.settings) == folder / MOBILENET.file_name
    assert classifier.load_model("MobileNetV2").weights == "imagenet"


def test_a_corrupt_weights_file_leaves_the_page_models_and_default_working(serve_app, tmp_path, mobilenet_h5,
                                                                           cat_png):
    """Issue 11.5: garbage in ResNet50's file made /, /models and default predictions 503."""
    home = home_with(tmp_path, {MOBILENET.file_name: mobilenet_h5, RESNET.file_name: b"\0garbage" * 4096})
    url = serve_app(KERAS_HOME=str(home), CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_OFFLINE="1",
                    CLASSIFIER_DEFAULT_MODEL="", CLASSIFIER_RUNTIME="keras", CLASSIFIER_WARMUP="0")
    assert requests.get(url + "/", timeout=60).status_code == 200
    listing = requests.get(url + "/models", timeout=60)
    assert listing.status_code == 200 and listing.json()["default"] == "MobileNetV2"
    resnet = by_name(listing.json()["models"])["ResNet50"]
    assert resnet["status"] == "unavailable" and not resnet["ready"]
    assert resnet["status_text"] == (f"unavailable: the weights file {RESNET.file_name} is not a complete HDF5 "
                                     f"weights file (Unable to synchronously open file (file signature not found))")
    assert str(tmp_path) not in listing.text
    default = requests.post(url + "/predict", files={"image": cat_png}, timeout=120)
    assert default.status_code == 200 and default.json()["model"] == "MobileNetV2"

    broken = requests.post(url + "/predict?model=ResNet50", files={"image": cat_png}, timeout=120)
    assert broken.status_code == 503 and broken.json()["error"]["code"] == "model_unavailable"
    message = broken.json()["error"]["message"]
    assert message.startswith(f"ResNet50: unavailable: the weights file {RESNET.file_name} is not a complete HDF5")
    assert "moved aside as" in message and str(tmp_path) not in message
    cache = home / "models"
    assert not (cache / RESNET.file_name).exists() and (cache / f"{RESNET.file_name}.rejected").exists()
    after = by_name(requests.get(url + "/models", timeout=60).json()["models"])["ResNet50"]
    assert message.startswith(f"ResNet50: {after['status_text']}.") and "CLASSIFIER_OFFLINE" not in message


@pytest.mark.parametrize("served", ["captive portal", "cut short"])
def test_a_download_that_is_not_the_weights_is_refused_and_never_the_default(make_app, mirror, mobilenet_h5,
                                                                             cat_png, tmp_path, served):
    """Issue 11.6: Keras publishes no hash for MobileNetV2; its file is checked by content."""
    if served == "captive portal":
        server, reason = mirror({MOBILENET.path: PORTAL_PAGE}), "is not a complete HDF5 weights file"
    else:
        server, reason = mirror({MOBILENET.path: mobilenet_h5}, cut_at=len(mobilenet_h5) // 2), "cut short"
    client = make_app(random_weights=False, weights_mirror=server.url, runtime="keras").test_client()
    first = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert first.status_code == 503
    model = wait_for_status(client, "MobileNetV2", {"unavailable"})
    assert model["status"] == "unavailable" and reason in model["status_text"], model
    cache = tmp_path / "keras" / "models"
    assert not (cache / MOBILENET.file_name).exists()
    assert (cache / f"{MOBILENET.file_name}.rejected").exists() == (served == "captive portal")
    assert client.get("/models").json["default"] == "EfficientNetLite0"
    again = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert again.json["error"]["message"].startswith(f"MobileNetV2: {model['status_text']}.")
    assert again.headers["Retry-After"].isdigit() and server.requests == ["/" + MOBILENET.path]


@pytest.mark.slow  # builds Keras models or runs processes
def test_a_model_that_fails_to_load_is_not_rebuilt_on_every_request(tmp_path, cat_png, caplog):
    """Issue 11.7: EfficientNetLite0's converted file damaged; each request rebuilt the model."""
    settings = settings_for(tmp_path, offline=True, runtime="keras")
    converted = home_with(tmp_path, {}) / "models" / LITE.converted_path(settings, LITE.find(settings)).name
    converted.write_bytes(b"\0damaged" * 1000)
    classifier = Classifier(settings, pool=ModelPool(), downloads=None)
    with caplog.at_level(logging.INFO, logger="classifier"):
        for _ in range(3):
            with pytest.raises(ModelUnavailable) as raised:
                classifier.classify(cat_png, "EfficientNetLite0")
    assert sum(r.getMessage().startswith("loading EfficientNetLite0") for r in caplog.records) == 1
    assert raised.value.message.startswith("EfficientNetLite0: unavailable: it failed to load: ")
    assert str(tmp_path) not in raised.value.message
    assert by_name(classifier.models())["EfficientNetLite0"]["status"] == "unavailable"
    assert classifier.default_model != "EfficientNetLite0"
    converted.unlink()  # a changed file is tried again: here, converted afresh
    assert classifier.classify(cat_png, "EfficientNetLite0").weights == "imagenet"
    assert by_name(classifier.models())["EfficientNetLite0"]["status"] == "loaded"


def test_the_default_model_follows_weights_that_arrive_or_go(tmp_path, mobilenet_h5):
    """The default (the first usable model) is kept between requests, not found again from
    every model's state each time; a weights file arriving or going is still noticed at once."""
    home = home_with(tmp_path, {})
    classifier = Classifier(settings_for(tmp_path, offline=True), pool=ModelPool(), downloads=None)
    assert classifier.default_model == "EfficientNetLite0"  # its weights come with a pip package
    (home / "models" / MOBILENET.file_name).write_bytes(mobilenet_h5)
    assert classifier.default_model == "MobileNetV2"  # first in the registry, usable now
    (home / "models" / MOBILENET.file_name).unlink()
    assert classifier.default_model == "EfficientNetLite0"


def test_models_listing_has_no_side_effects(make_app, tmp_path):
    """Issue 11.8: /models hashed files and converted EfficientNetLite0's checkpoint."""
    home_with(tmp_path, {RESNET.file_name: PORTAL_PAGE})
    client = make_app(random_weights=False, offline=True).test_client()
    for _ in range(2):
        models = by_name(client.get("/models").json["models"])
        assert client.get("/").status_code == 200
    assert models["EfficientNetLite0"]["status"] == "ready" and models["ResNet50"]["status"] == "unavailable"
    cache = tmp_path / "keras" / "models"
    assert sorted(p.name for p in cache.iterdir()) == [RESNET.file_name]  # nothing converted, moved or noted


@pytest.mark.slow  # builds Keras models or runs processes
def test_offline_missing_weights_is_503_naming_the_model_and_others_keep_working(make_app, cat_png, tmp_path,
                                                                                 prepared_keras_home):
    """EfficientNetLite0 already prepared in the cache (its first use is tests/test_first_use.py's)."""
    app = make_app(random_weights=False, offline=True, keras_home=copy_of(prepared_keras_home, tmp_path / "keras"))
    client = app.test_client()
    response = client.post("/predict?model=NASNetMobile", data=cat_png, content_type="image/png")
    assert response.status_code == 503 and "Retry-After" not in response.headers
    nasnet = by_name(client.get("/models").json["models"])["NASNetMobile"]
    assert nasnet["status_text"] == (f"unavailable: {NASNET.file_name} is not here and downloads are off "
                                     "(CLASSIFIER_OFFLINE=1)")
    assert response.json["error"]["message"] == (
        f"NASNetMobile: {nasnet['status_text']}. Copy {NASNET.file_name} into CLASSIFIER_WEIGHTS_DIR, or run "
        "`classifier download NASNetMobile` on a machine with internet and copy it from there.")
    assert not (tmp_path / "keras" / "models" / (NASNET.file_name + ".lock")).exists()
    # The bundled model still answers, and it is the default.
    assert client.get("/models").json["default"] == "EfficientNetLite0"
    ok = client.post("/predict", data=cat_png, content_type="image/png")
    assert ok.status_code == 200 and ok.json["model"] == "EfficientNetLite0" and ok.json["weights"] == "imagenet"


def test_when_the_download_host_cannot_be_reached_every_answer_says_so(serve_app, tmp_path, cat_png):
    """Issue 16.6: offline, answers flipped between 'being downloaded' and 'could not be
    downloaded'. Now the first answer already says what is true, and it stays so."""
    url = serve_app(KERAS_HOME=str(tmp_path / "keras"), CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_DEFAULT_MODEL="",
                    CLASSIFIER_WEIGHTS_MIRROR=f"http://127.0.0.1:{free_port()}/", CLASSIFIER_WARMUP="0")
    before = by_name(requests.get(url + "/models", timeout=60).json()["models"])["ResNet50"]
    assert (before["status"], before["status_text"]) == ("download needed", "download needed")
    answers = [requests.post(url + "/predict?model=ResNet50", files={"image": cat_png}, timeout=60)
               for _ in range(3)]
    after = by_name(requests.get(url + "/models", timeout=60).json()["models"])["ResNet50"]
    assert after["status_text"] == "unavailable: could not reach the download host"
    for answer in answers:
        assert answer.status_code == 503 and "Retry-After" not in answer.headers
        assert answer.json()["error"]["message"] == (
            f"ResNet50: {after['status_text']}. {after['hint'][0].upper()}{after['hint'][1:]}.")
    assert "CLASSIFIER_WEIGHTS_DIR" in after["hint"] and "CLASSIFIER_OFFLINE=1" in after["hint"]


@pytest.mark.slow  # builds Keras models or runs processes
def test_background_download_answers_503_at_once_then_serves(make_app, mirror, mobilenet_h5, cat_png, tmp_path):
    files = {MOBILENET.path: mobilenet_h5}
    server = mirror(files, delay=0.3)  # ~15 chunks of 1 MiB: a few seconds
    client = make_app(random_weights=False, weights_mirror=server.url, runtime="keras").test_client()
    first = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert first.status_code == 503 and first.headers["Retry-After"].isdigit()
    assert first.json["error"]["message"].startswith("MobileNetV2: weights downloading")
    seen_progress = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = by_name(client.get("/models").json["models"])["MobileNetV2"]
        if model["status"] == "downloading":
            if model["progress"]["done"] > 0:
                seen_progress = True
                assert model["progress"]["total"] == len(mobilenet_h5)
                assert model["status_text"].startswith("weights downloading ") and model["status_text"][-1] == "%"
        elif model["status"] == "ready":
            break
        time.sleep(0.2)
    assert model["status"] == "ready" and seen_progress
    assert server.requests == ["/" + MOBILENET.path]
    done = client.post("/predict?model=MobileNetV2", data=cat_png, content_type="image/png")
    assert done.status_code == 200 and done.json["weights"] == "imagenet"


def test_a_download_left_unfinished_by_a_stopped_process_is_not_shown_as_running(make_app, tmp_path):
    """A worker killed mid-download leaves its progress file; no lock is held any more."""
    home_with(tmp_path, {f".{MOBILENET.file_name}.progress": b'{"done": 10, "total": 100}'})
    client = make_app(random_weights=False).test_client()
    assert by_name(client.get("/models").json["models"])["MobileNetV2"]["status"] == "download needed"


def test_undecodable_upload_is_refused_before_any_model_is_touched(tmp_path):
    """An image that cannot be decoded is the image's fault, whatever state the model is in."""
    classifier = Classifier(settings_for(tmp_path, offline=True), pool=ModelPool(), downloads=None)
    with pytest.raises(UnsupportedImageType):  # not ModelUnavailable, though ResNet50 has no weights
        classifier.classify(b"not an image at all", "ResNet50")


def test_timing_total_is_the_whole_wait_with_the_load_on_its_own(tmp_path, cat_png):
    """Issue 16.8: a cold request that took seconds reported its inference alone as total."""
    classifier = Classifier(settings_for(tmp_path, random_weights=True), pool=ModelPool(), downloads=None)
    cold = classifier.classify(cat_png, "MobileNetV2").timing_ms
    rounding = 0.02  # each figure is rounded to 0.01 ms
    assert cold["total"] + rounding >= cold["load"] + cold["decode"] + cold["inference"]
    assert cold["load"] > cold["inference"]  # building a model costs more than running it once
    warm = classifier.classify(cat_png, "MobileNetV2").timing_ms
    assert "load" not in warm and warm["total"] + rounding >= warm["decode"] + warm["inference"]


@pytest.mark.stack  # a uWSGI worker
def test_uwsgi_workers_log_model_loads_and_failures_with_reasons(tmp_path, mobilenet_h5, cat_png):
    """Issue 16.7: under uWSGI the app logged nothing at INFO (logging was set up only by
    ``python app.py`` and the CLI)."""
    home = home_with(tmp_path, {MOBILENET.file_name: mobilenet_h5, RESNET.file_name: PORTAL_PAGE})
    http = f"127.0.0.1:{free_port()}"
    env = {"KERAS_HOME": str(home), "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_RUNTIME": "keras",
           "CLASSIFIER_DEFAULT_MODEL": "MobileNetV2", "CLASSIFIER_UWSGI_HTTP": http,
           "CLASSIFIER_WEIGHTS_MIRROR": f"http://127.0.0.1:{free_port()}/"}
    server = stack.start_uwsgi(tmp_path, "app", f"127.0.0.1:{free_port()}", env, processes=1, threads=1)
    try:
        wait_until_healthy(f"http://{http}", server.process)
        for model, status in (("MobileNetV2", 200), ("ResNet50", 503), ("NASNetMobile", 503)):
            answer = requests.post(f"http://{http}/predict?model={model}", files={"image": cat_png}, timeout=120)
            assert answer.status_code == status, answer.text
    finally:
        stack.stop(server.process)
    log = server.log.read_text(errors="replace")
    assert "loading MobileNetV2 with mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5 weights" in log
    assert f"ResNet50 is unavailable: the weights file {RESNET.file_name} is not a complete HDF5" in log
    assert f"download of {NASNET.file_name} from http://127.0.0.1:" in log
    assert "failed: could not reach the download host" in log


def cli_env(tmp_path: Path, mirror_url: str) -> dict[str, str]:
    return {"KERAS_HOME": str(tmp_path / "keras"), "CLASSIFIER_WEIGHTS_MIRROR": mirror_url}


def test_download_command_fetches_and_verifies(mirror, mobilenet_h5, tmp_path):
    server = mirror({MOBILENET.path: mobilenet_h5, RESNET.path: PORTAL_PAGE})
    result = run_classifier("download", "MobileNetV2", "ResNet50", **cli_env(tmp_path, server.url))
    assert result.returncode == 1
    assert (tmp_path / "keras" / "models" / MOBILENET.file_name).read_bytes() == mobilenet_h5
    assert "MobileNetV2: saved" in result.stdout
    assert f"ResNet50: cannot download {server.url}{RESNET.path}: the downloaded {RESNET.file_name} is not " \
           "a complete HDF5 weights file" in result.stderr
    names = sorted(p.name for p in (tmp_path / "keras" / "models").iterdir() if not p.name.endswith(".lock"))
    # The rejected file is kept aside for a look, never under the name the service loads.
    assert names == [f".{RESNET.file_name}.note.json", MOBILENET.file_name, f"{RESNET.file_name}.rejected"]


def test_download_command_when_the_host_is_unreachable(tmp_path):
    result = run_classifier("download", "NASNetMobile", **cli_env(tmp_path, f"http://127.0.0.1:{free_port()}/"))
    assert result.returncode == 1
    assert "NASNetMobile: cannot download" in result.stderr and "could not reach the download host" in result.stderr


@pytest.mark.slow  # builds Keras models or runs processes
def test_concurrent_processes_download_a_file_once(mirror, mobilenet_h5, tmp_path):
    server = mirror({MOBILENET.path: mobilenet_h5}, delay=0.1)
    env = cli_env(tmp_path, server.url)
    command = classifier_command("download", "MobileNetV2")
    processes = [subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    assert server.requests == ["/" + MOBILENET.path]
    assert (tmp_path / "keras" / "models" / MOBILENET.file_name).read_bytes() == mobilenet_h5


def test_unknown_model_in_download_command(tmp_path):
    result = run_classifier("download", "AlexNet", **cli_env(tmp_path, "http://127.0.0.1:9/"))
    assert result.returncode == 2 and "Unknown model 'AlexNet'" in result.stderr


def test_classify_without_background_downloads_explains(tmp_path, cat_png):
    classifier = Classifier(settings_for(tmp_path), downloads=None)
    with pytest.raises(ModelUnavailable, match="run `classifier download ResNet50`"):
        classifier.classify(cat_png, "ResNet50")


@pytest.mark.slow  # builds Keras models or runs processes
def test_weights_replaced_or_deleted_while_a_model_is_loaded_are_noticed_by_the_next_prediction(
        tmp_path, mobilenet_h5, cat_png):
    """A prediction looks at its weights file once and cheaply (a ``stat``, no path parsing
    or package look-up redone): a loaded model is served from memory, but a file replaced
    since is loaded afresh and one deleted is unavailable at once."""
    import h5py

    from classifier.models.labels import class_index

    settings = settings_for(tmp_path, offline=True, runtime="keras")
    path = home_with(tmp_path, {MOBILENET.file_name: mobilenet_h5}) / "models" / MOBILENET.file_name
    classifier = Classifier(settings, pool=ModelPool(), downloads=None)
    first, again = (classifier.classify(cat_png, "MobileNetV2") for _ in range(2))
    assert "load" in first.timing_ms and "load" not in again.timing_ms
    assert by_name(classifier.models())["MobileNetV2"]["status"] == "loaded"

    replacement = tmp_path / "replacement.h5"
    replacement.write_bytes(mobilenet_h5)
    with h5py.File(replacement, "r+") as file:  # the same layout, other values: class 7 always wins
        bias = next(file[name] for name in _datasets(file) if "predictions" in name and "bias" in name)
        bias[7] = 1000.0
    os.replace(replacement, path)
    replaced = classifier.classify(cat_png, "MobileNetV2")
    assert "load" in replaced.timing_ms and replaced.predictions[0].class_id == class_index()[7][0]
    assert "load" not in classifier.classify(cat_png, "MobileNetV2").timing_ms

    path.unlink()
    with pytest.raises(ModelUnavailable, match="is not here and downloads are off"):
        classifier.classify(cat_png, "MobileNetV2")
    assert by_name(classifier.models())["MobileNetV2"]["status"] == "unavailable"


def _datasets(file) -> list[str]:
    names: list[str] = []
    file.visititems(lambda name, item: names.append(name) if hasattr(item, "shape") else None)
    return names
