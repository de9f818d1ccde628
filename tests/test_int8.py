"""int8 forms: made by ``classifier export``, measured against fp32, served only above the bar.

EfficientNetLite0 (real weights) is quantized once per session (conftest's ``int8_export``),
by the command line, as a deployment does; a random-weights MobileNetV2 is quantized in the test process, as a
benchmark with random weights does. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS, RIGHT_LABELS, ROOT, copy_of, run_classifier
from PIL import Image
from playwright.sync_api import expect
from support.page import FIRST_ANSWER, expected_options, wait_for_models

from classifier.artifacts import int8 as quantize
from classifier.artifacts.quantize import make_int8
from classifier.config import Settings
from classifier.models.registry import REGISTRY
from classifier.serving.pool import POOL, Serving

pytestmark = pytest.mark.slow  # quantizes the pretrained EfficientNetLite0 and runs the command line

MODEL = "EfficientNetLite0-int8"
SERVE_ANY = {"int8_min_top1": 0.0, "int8_min_top5": 0.0}  # a bar every measured form clears
SERVE_NONE = {"int8_min_top1": 1.01}  # a bar no form clears
# Where the default form's verdict is known: on a CPU with AVX-512 VNNI EfficientNetLite0-int8
# clears the default bar (35 of 36 images, one above it). Quantized kernels differ on CPUs
# without VNNI (an AMD EPYC without it agrees on 31 of 36, 86.1%), so there it is not served;
# the tests check that the state follows the measured figures either way, and assert "the
# default form passes" only on VNNI.
VNNI = "avx512_vnni" in Path("/proc/cpuinfo").read_text()
COMMAND = f"`python3 -m classifier export {MODEL}`"


@pytest.fixture(scope="session")
def exported(int8_export) -> tuple[Path, str]:
    """``int8_export``'s Keras cache and what the command printed."""
    home, result = int8_export
    return home, result.stdout


def test_export_sums_up_the_quantizers_scale_notes_in_one_line(int8_export):
    """ONNX Runtime's quantizer logs a line per weight scale it widens (73 for this model):
    ``classifier export`` says how many in one line instead."""
    _, result = int8_export
    assert "Increased scale" not in result.stderr and "Increasing scale" not in result.stderr
    summary = re.findall(r"^EfficientNetLite0-int8: the quantizer widened (\d+) weight scale\(s\) of (\d+) weight",
                         result.stderr, re.M)
    assert len(summary) == 1 and int(summary[0][0]) >= int(summary[0][1]) > 0, result.stderr


def int8_record(home: Path) -> dict:
    (path,) = (home / "models" / "exports").glob("EfficientNetLite0-*-int8-*.json")
    return json.loads(path.read_text())


def entry(client, name: str) -> dict:
    return next(m for m in client.get("/models").json["models"] if m["name"] == name)


def passes_default_bar(check: dict) -> bool:
    defaults = Settings()
    return check["top1_agreement"] >= defaults.int8_min_top1 and check["top5_overlap"] >= defaults.int8_min_top5


def test_export_makes_and_measures_the_int8_form(exported):
    """The figures are measured over every held-out image; the verdict printed follows them
    against the default bar, and on a VNNI CPU (this machine, CI) the form passes it."""
    home, output = exported
    record = int8_record(home)
    assert record["verified"] and record["int8_of"] == "EfficientNetLite0"
    assert record["photos"] == len(quantize.HELD_OUT) and record["images"] == 9 * record["photos"]
    agreeing = record["top1_agreement"] * record["images"]
    assert abs(agreeing - round(agreeing)) < 0.01 and 0 <= record["top5_overlap"] <= 5  # a share of 36 images
    assert record["speedup"] == round(record["fp32_ms"] / record["int8_ms"], 2)
    int8_file = home / "models" / "exports" / (record_stem(home) + ".onnx")
    assert record["onnx_sha256"] == hashlib.sha256(int8_file.read_bytes()).hexdigest()
    served = passes_default_bar(record)
    said = "served" if served else "not served: it agrees with fp32 too rarely"
    verdict = rf"^EfficientNetLite0-int8: {said}: top-1 equal to fp32 on"
    assert re.search(verdict, output, re.M), output
    if VNNI:  # this machine's known result (97.2%, 4.86 of 5)
        assert served, record


def test_the_int8_benchmark_measures_both_forms(exported, tmp_path):
    """bench/int8.py at its smallest (one model, one timed pass each), here beside the form
    this module makes anyway rather than quantizing again elsewhere: a copy of the cache in
    which ``classifier export`` finds both forms checked. Its figures agree with the form's
    check, and the fresh worker it starts imports neither TensorFlow nor ``onnx``."""
    home = copy_of(exported[0], tmp_path / "keras")
    result = subprocess.run([sys.executable, "-m", "bench.int8", "EfficientNetLite0", "--repeats", "1",
                             "--keras-home", str(home)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    header, row, line = result.stdout.splitlines()
    assert header.split()[:3] == ["model", "fp32", "ms"] and row.split()[0] == "EfficientNetLite0", result.stdout
    figures, record = json.loads(line), int8_record(home)
    assert figures["fp32_ms"] > 0 and figures["int8_ms"] > 0 and figures["speedup"] > 0, figures
    assert (figures["images"], figures["top1_agreement"]) == (record["images"], record["top1_agreement"]), figures
    start = figures["cold_start"]
    assert start["seconds"] > 0 and start["rss_mb"] > 0 and not start["tensorflow"] and not start["onnx"], start


def record_stem(home: Path) -> str:
    (path,) = (home / "models" / "exports").glob("EfficientNetLite0-*-int8-*.json")
    return path.stem


@pytest.fixture
def served(exported, make_app):
    return make_app(random_weights=False, keras_home=exported[0], **SERVE_ANY).test_client()


@pytest.mark.parametrize("photo", RIGHT_LABELS)
def test_the_int8_form_gets_the_right_labels_over_http(served, photo):
    depth, acceptable = RIGHT_LABELS[photo]
    response = served.post("/predict", data=PHOTOS[photo].read_bytes(), content_type="image/png",
                           query_string={"model": MODEL, "top_k": 5, "explain": 1})
    assert response.status_code == 200, response.json
    assert response.json["model"] == MODEL and response.json["weights"] == "imagenet"
    labels = [p["label"] for p in response.json["predictions"][:depth]]
    assert acceptable & set(labels), labels
    assert response.json["explanation"]["heatmap"], "Grad-CAM from the int8 form's feature map"


def test_models_shows_precision_and_the_measured_check(served, exported):
    int8, fp32 = entry(served, MODEL), entry(served, "EfficientNetLite0")
    record = int8_record(exported[0])
    assert fp32["precision"] == "fp32" and "int8_of" not in fp32
    assert int8["precision"] == "int8" and int8["int8_of"] == "EfficientNetLite0" and int8["ready"]
    assert int8["explainable"] and not int8["default"]
    assert int8["check"] == {key: record[key] for key in int8["check"]}
    assert set(int8["check"]) == {"top1_agreement", "top5_overlap", "photos", "images", "fp32_ms", "int8_ms",
                                  "speedup"}


def test_the_page_offers_the_default_models_passing_int8_form_first(exported, make_app):
    """With the default settings (and bar): the default model's int8 form is offered first iff
    its figures clear the bar, which they do on a VNNI CPU (this machine, CI)."""
    default = make_app(random_weights=False, keras_home=exported[0]).test_client()
    check = entry(default, MODEL)["check"]
    assert entry(default, MODEL)["ready"] == passes_default_bar(check)
    if VNNI:
        assert passes_default_bar(check), check
    text = f"{MODEL} — {check['speedup']}x faster, agrees {round(check['top1_agreement'] * 100)}%"
    page = default.get("/").get_data(as_text=True)
    if passes_default_bar(check):
        assert re.search(rf'<option value="{MODEL}" selected>{text}</option>', page), page
    else:
        assert re.search(r'<option value="EfficientNetLite0" selected>', page)
    failing = make_app(random_weights=False, keras_home=exported[0], **SERVE_NONE).test_client()
    page = failing.get("/").get_data(as_text=True)
    assert re.search(r'<option value="EfficientNetLite0" selected>', page)
    assert entry(failing, MODEL)["status"] == "unavailable"
    assert f'<option value="{MODEL}">{MODEL} (unavailable)</option>' in page  # the reason is in /models


def test_the_page_script_names_int8_forms_with_their_figures_and_classifies_with_one(exported, serve_app, browser):
    """In Chromium: the script's own model list (rebuilt from GET /models) says what the
    template says, the passing int8 form stays chosen, and a photo is classified with it.
    The list is compared once the warm-up has ended ("preparing" until then)."""
    url = serve_app(CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_OFFLINE="1", KERAS_HOME=str(exported[0]),
                    CLASSIFIER_DEFAULT_MODEL="", CLASSIFIER_INT8_MIN_TOP1="0.01", CLASSIFIER_INT8_MIN_TOP5="0.01")
    models = list(wait_for_models(url, lambda models: "preparing" not in {m["status"] for m in models.values()},
                                  FIRST_ANSWER / 1000).values())
    page = browser.new_page()
    try:
        page.add_init_script("""new MutationObserver((changes) => {
            if (changes.some((c) => c.target.id === "model" && c.removedNodes.length))
                document.documentElement.dataset.modelRendered = "1";
            }).observe(document, { childList: true, subtree: true });""")
        page.goto(url)
        expect(page.locator("html")).to_have_attribute("data-model-rendered", "1", timeout=60_000)
        expect(page.locator("#model option")).to_have_text(expected_options(models))
        expect(page.get_by_label("Model")).to_have_value(MODEL)
        page.set_input_files("#image", PHOTOS["chelsea"])
        expect(page.locator("#result .prediction")).to_have_count(3, timeout=120_000)
        expect(page.locator(".meta-model")).to_have_text(MODEL)
    finally:
        page.context.close()


def test_a_form_below_the_bar_is_unavailable_with_its_figures(exported, make_app):
    client = make_app(random_weights=False, keras_home=exported[0], **SERVE_NONE).test_client()
    int8 = entry(client, MODEL)
    assert int8["status"] == "unavailable" and not int8["ready"]
    assert "top-1 equal to fp32 on" in int8["error"] and "CLASSIFIER_INT8_MIN_TOP1" in int8["error"]
    response = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png",
                           query_string={"model": MODEL})
    assert response.status_code == 503 and response.json["error"]["code"] == "model_unavailable"
    assert response.json["error"]["message"].startswith(f"{MODEL}: unavailable: it agrees with fp32 too rarely")
    fp32 = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png")
    assert fp32.status_code == 200 and fp32.json["model"] == "EfficientNetLite0"


def copied_home(exported, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the exported Keras cache (a weights path of its own: its own pool entries), and its int8 file."""
    home = copy_of(exported[0], tmp_path / "home")
    return home, home / "models" / "exports" / (record_stem(home) + ".onnx")


def predict_int8(client) -> object:
    return client.post("/predict", data=PHOTOS["coffee"].read_bytes(), content_type="image/png",
                       query_string={"model": MODEL})


def test_a_refused_form_is_never_loaded(exported, make_app, tmp_path):
    """Below the bar, a request is refused before the pool loads it (two ONNX Runtime sessions):
    with a bar it clears, another app in the process finds it ready, not loaded."""
    home, _ = copied_home(exported, tmp_path)
    refused = predict_int8(make_app(random_weights=False, keras_home=home, **SERVE_NONE).test_client())
    assert refused.status_code == 503 and "too rarely" in refused.json["error"]["message"]
    serving = make_app(random_weights=False, keras_home=home, **SERVE_ANY).test_client()
    assert entry(serving, MODEL)["status"] == "ready"
    assert predict_int8(serving).status_code == 200
    assert entry(serving, MODEL)["status"] == "loaded"


def test_a_tampered_int8_file_is_refused_until_export_makes_it_again(exported, make_app, tmp_path):
    """No request quantizes (nor starts a child that would): the changed file is refused with
    the command that makes it again, and served once that command has run."""
    home, int8_file = copied_home(exported, tmp_path)
    data = bytearray(int8_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    int8_file.write_bytes(bytes(data))
    client = make_app(random_weights=False, keras_home=home, **SERVE_ANY).test_client()
    response = predict_int8(client)
    assert response.status_code == 503 and response.json["error"]["code"] == "model_unavailable"
    assert COMMAND in response.json["error"]["message"], response.json
    assert int8_file.read_bytes() == bytes(data)  # untouched: nothing made it again
    assert entry(client, MODEL)["status"] == "unavailable" and entry(client, MODEL)["check"] is None
    result = run_classifier("export", MODEL, KERAS_HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert int8_record(home)["onnx_sha256"] == hashlib.sha256(int8_file.read_bytes()).hexdigest()
    assert predict_int8(client).status_code == 200


def test_a_same_size_file_copied_in_with_its_times_kept_is_noticed(exported, make_app, tmp_path):
    home, int8_file = copied_home(exported, tmp_path)
    client = make_app(random_weights=False, keras_home=home, **SERVE_ANY).test_client()
    assert entry(client, MODEL)["ready"]  # its record is cached now
    data = bytearray(int8_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(bytes(data))
    before = int8_file.stat()
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` leaves it
    os.replace(copy, int8_file)
    assert (int8_file.stat().st_size, int8_file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert entry(client, MODEL)["status"] == "unavailable"


def test_an_unreadable_int8_file_is_a_state_not_a_failure(exported, make_app, tmp_path):
    home, int8_file = copied_home(exported, tmp_path)
    int8_file.unlink()
    int8_file.mkdir()  # reading it fails (IsADirectoryError), for root too
    client = make_app(random_weights=False, keras_home=home, **SERVE_ANY).test_client()
    models = client.get("/models")
    assert models.status_code == 200
    int8 = next(m for m in models.json["models"] if m["name"] == MODEL)
    assert int8["status"] == "unavailable" and COMMAND in int8["hint"]
    assert client.get("/").status_code == 200


def test_a_form_that_could_not_be_made_leaves_the_page_and_models_answering(exported, make_app, tmp_path):
    """``classifier export`` stores an int8 record without figures when the fp32 export failed
    its check (as when quantizing fails): /models shows it unavailable with the reason, its
    ``check`` null, and the page (which once computed None * 100) renders."""
    home, int8_file = copied_home(exported, tmp_path)
    (fp32_record,) = [path for path in (home / "models" / "exports").glob("EfficientNetLite0-*.json")
                      if "-int8-" not in path.name]
    planted = {**json.loads(fp32_record.read_text()), "verified": False, "reason": "planted: it differs from Keras"}
    fp32_record.write_text(json.dumps(planted))  # what Export.store writes for a failed check
    result = run_classifier("export", MODEL, KERAS_HOME=str(home))
    assert result.returncode == 1 and "planted: it differs from Keras" in result.stderr, result.stderr
    assert int8_record(home)["verified"] is False and not int8_file.exists()
    client = make_app(random_weights=False, keras_home=home, **SERVE_ANY).test_client()
    models = client.get("/models")
    assert models.status_code == 200
    int8 = next(m for m in models.json["models"] if m["name"] == MODEL)
    assert int8["status"] == "unavailable" and int8["check"] is None
    assert "its fp32 export is not served: planted: it differs from Keras" in int8["error"]
    page = client.get("/")
    assert page.status_code == 200
    option = re.search(rf'<option value="{MODEL}">([^<]*)</option>', page.get_data(as_text=True))
    assert option and option[1] == f"{MODEL} (unavailable)", option  # the reason is in /models, above
    assert predict_int8(client).status_code == 503


def test_hashing_happens_once_per_file_version_not_per_request(served):
    """An int8 prediction and ``GET /models`` hash no file once the form is loaded: the
    calibration photos are hashed once per process, the int8 file once per version.
    (``hashlib.file_digest`` is counted, not replaced: it is the standard library's.)"""
    assert predict_int8(served).status_code == 200
    real = hashlib.file_digest
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    hashlib.file_digest = counted
    try:
        assert predict_int8(served).status_code == 200 and served.get("/models").status_code == 200
    finally:
        hashlib.file_digest = real
    assert calls == []


def test_random_weights_leave_int8_forms_unavailable_at_once(client):
    int8 = entry(client, "MobileNetV2-int8")
    assert int8["status"] == "unavailable" and int8["check"] is None
    assert "checked only for real weights" in int8["error"]
    response = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png",
                           query_string={"model": "MobileNetV2-int8"})
    assert response.status_code == 503 and response.json["error"]["code"] == "model_unavailable"


def test_a_random_weights_int8_form_fails_its_check_and_the_server_keeps_serving(make_app):
    """A request never makes an int8 form; made here as a benchmark makes one (random weights
    are this process's own), it fails its check, is refused and is never loaded."""
    app = make_app(runtime="onnx")
    client = app.test_client()
    response = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png",
                           query_string={"model": "MobileNetV2-int8"})
    assert response.status_code == 503 and response.json["error"]["code"] == "model_unavailable"
    assert "`python3 -m classifier export MobileNetV2-int8`" in response.json["error"]["message"]
    serving = Serving.from_settings(app.extensions["classifier"].settings)
    assert not list(serving.exports_dir.glob("*-int8-*"))  # nothing quantized for the request
    spec = REGISTRY["MobileNetV2-int8"]
    assert not make_int8(spec, None, serving.exports_dir, serving.threads).passes(app.extensions["classifier"].settings)
    response = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png",
                           query_string={"model": "MobileNetV2-int8"})
    assert response.status_code == 503
    assert "it agrees with fp32 too rarely: top-1 equal to fp32 on" in response.json["error"]["message"]
    assert not POOL.is_loaded(spec, None, serving)
    int8 = entry(client, "MobileNetV2-int8")
    assert int8["status"] == "unavailable" and int8["check"]["top1_agreement"] < 0.97
    assert int8["check"]["images"] == 9 * len(quantize.HELD_OUT)
    fp32 = client.post("/predict", data=PHOTOS["chelsea"].read_bytes(), content_type="image/png",
                       query_string={"model": "MobileNetV2"})
    assert fp32.status_code == 200


def thumbnail(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((32, 32)), dtype=np.float32)


def test_calibration_and_held_out_photos_are_apart_and_never_label_test_photos():
    calibration, held_out = quantize.calibration_photos(), quantize.HELD_OUT
    assert len(calibration) >= 5 and len(held_out) >= 4
    digest = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (*calibration, *held_out)}
    assert not {digest[p] for p in calibration} & {digest[p] for p in held_out}
    assert not {p.stem for p in calibration} & {p.stem for p in held_out}
    for photo in calibration:
        assert photo.stem not in PHOTOS
        for other in (*held_out, *PHOTOS.values()):  # not the same picture, re-encoded or resized
            assert np.mean(np.abs(thumbnail(photo) - thumbnail(other))) > 20, (photo.name, other.name)
    assert {"chelsea", "coffee", "grace_hopper"} <= {p.stem for p in held_out}
