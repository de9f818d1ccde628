"""Explanations (issue 12): Grad-CAM served from the forward pass, proved against the keras.io way.

Real models throughout: random weights for the three Keras architectures (enough for the
equality, which holds for any weights), EfficientNetLite0 with its real weights, served
through its checked ONNX export, for the equality and for localisation. Real photos, real
HTTP between two instances; a stub stands in only for a misbehaving remote, which is out of
our control by definition.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import requests
from conftest import KERAS_MODELS, PHOTOS, ROOT, run_classifier
from flask import Flask
from PIL import Image

from bench.servers import answering_json
from classifier.imaging import images
from classifier.models.registry import REGISTRY
from classifier.models.weights import loadable
from classifier.runtimes.explain import (
    MAX_HEATMAP_SIDE,
    OVERLAY_OPACITY,
    heatmap_png,
    overlay_png,
    summary,
)

LITE = "EfficientNetLite0"
DATA_URL = "data:image/png;base64,"


# --- The shortcut is Grad-CAM: the keras.io way on the Keras model against the served grid ----------------

def keras_io_gradcam(model, batch: np.ndarray, feature_layer, class_number: int) -> np.ndarray:
    """Grad-CAM as keras.io's "Grad-CAM class activation visualization" computes it: a model
    returning the last feature map and the logits (the softmax removed from the last layer), a
    GradientTape on the class logit, gradients mean-pooled per channel, the weighted sum of
    channels, ReLU, divided by the maximum. An all-zero map stays all zeros (keras.io would
    divide by zero)."""
    import keras
    import tensorflow as tf

    model.layers[-1].activation = keras.activations.linear  # keras.io: None, which an Activation layer cannot take
    grad_model = keras.Model(model.inputs, [feature_layer.output, model.output])
    with tf.GradientTape() as tape:
        feature_map, logits = grad_model(batch)
        class_logit = logits[:, class_number]
    grads = tape.gradient(class_logit, feature_map)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(feature_map[0] @ pooled_grads[..., tf.newaxis]).numpy()
    heatmap = np.maximum(heatmap, 0)
    return heatmap / heatmap.max() if heatmap.max() > 0 else heatmap


def keras_twin(served, spec):
    """A second Keras model holding the served model's weights (random ones differ per build),
    so that taking its softmax off does not touch the model being served."""
    twin = spec.build()
    twin.set_weights(served.get_weights())
    return twin


def served_explanation(client, photo: Path, model: str, explain_class: str | None = None) -> dict:
    fields = {"model": model, "explain": "1", **({"explain_class": explain_class} if explain_class else {})}
    response = client.post("/predict", data={"image": (io.BytesIO(photo.read_bytes()), photo.name), **fields})
    assert response.status_code == 200, response.json
    return response.json


def assert_same_map(served: dict, keras_model, spec, photo: Path) -> bool:
    """The served grid equals keras.io's Grad-CAM for the same class; True if it is not all zeros."""
    from classifier.models import labels

    batch = spec.preprocess(images.model_input(photo.read_bytes(), spec.input_size)[None])
    class_number = labels.class_numbers(served["explanation"]["class_id"])[0]
    expected = keras_io_gradcam(keras_model, batch, spec.feature_map.find(keras_model), class_number)
    grid = np.array(served["explanation"]["grid"])
    assert grid.shape == expected.shape == (7, 7)
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-3)
    return bool(expected.max() > 0)


@pytest.mark.slow  # builds each Keras model and its gradient twin
@pytest.mark.parametrize("model", KERAS_MODELS)
def test_the_served_map_is_keras_io_grad_cam_for_the_keras_models(client, model):
    """Random weights, served by Keras: the top class (whose map cannot be all zeros: its
    logit is the largest, the bias is zero) and a fixed other class, on every photo."""
    served_model = client.application.extensions["classifier"].load_model(model)
    twin = keras_twin(served_model.model, REGISTRY[model])
    non_trivial = []
    for photo in PHOTOS.values():
        for explain_class in (None, "tabby"):
            answer = served_explanation(client, photo, model, explain_class)
            non_trivial.append(assert_same_map(answer, twin, REGISTRY[model], photo))
            if explain_class is None:
                assert answer["explanation"]["class_id"] == answer["predictions"][0]["class_id"]
    assert sum(non_trivial) >= len(PHOTOS)  # the equality was tested on real maps, not zeros


@pytest.fixture(scope="module")
def lite_weights(keras_home) -> Path:
    from classifier import Settings

    return loadable(REGISTRY[LITE].weights, Settings(keras_home=keras_home))


@pytest.fixture(scope="module")
def lite_client(keras_home, lite_weights) -> Flask:
    """EfficientNetLite0 with its real weights on ONNX Runtime, through its checked export
    (with the feature map output and the head beside it; the module's cache holds it prepared)."""
    from app import create_app

    app = create_app({"keras_home": keras_home, "warmup": False, "runtime": "onnx", "random_weights": False})
    assert app.extensions["classifier"].load_model(LITE).runtime.name == "onnx"
    return app.test_client()


def test_the_served_map_is_keras_io_grad_cam_for_efficientnet_lite0_on_onnx_runtime(lite_client, lite_weights):
    from classifier.runtimes.forward import keras_runtime

    spec = REGISTRY[LITE]
    keras_model = keras_runtime(spec, lite_weights).model
    for photo in PHOTOS.values():
        for explain_class in (None, "tabby", "espresso"):
            assert assert_same_map(served_explanation(lite_client, photo, LITE, explain_class), keras_model, spec,
                                   photo)


def test_the_export_has_the_feature_map_as_a_second_output_and_the_head_beside_it(lite_client, keras_home, tmp_path,
                                                                                   monkeypatch):
    import shutil

    import onnxruntime

    from classifier import Settings
    from classifier.artifacts import exports
    from classifier.runtimes.forward import keras_runtime

    spec, settings = REGISTRY[LITE], Settings(keras_home=keras_home)
    export = exports.Export(spec, spec.weights.find(settings), settings.exports_dir)
    record = export.record()
    assert record.verified and record.feature_diff <= exports.FEATURE_TOLERANCE and "feature map within" in record.reason
    outputs = onnxruntime.InferenceSession(str(export.onnx_path)).get_outputs()
    assert [output.shape[1:] for output in outputs] == [[1000], [7, 7, 1280]]
    kernel, bias = keras_runtime(spec, loadable(spec.weights, settings)).model.get_layer("fc").get_weights()
    np.testing.assert_array_equal(export.head().weights, kernel)
    np.testing.assert_array_equal(export.head().bias, bias)

    copy = exports.Export(spec, spec.weights.find(settings), tmp_path)
    for name in ("onnx_path", "record_path", "head_path"):
        shutil.copy(getattr(export, name), getattr(copy, name))
    assert copy.record() == record
    np.savez(copy.head_path, weights=kernel * 2, bias=bias)  # a head changed since the check is not served
    assert copy.record() is None

    monkeypatch.setattr(exports, "FORMAT", 1)  # exports made before explanations: another key, made again
    assert exports.Export(spec, spec.weights.find(settings), settings.exports_dir).onnx_path != export.onnx_path


def test_a_worker_serving_the_export_explains_without_tensorflow(lite_client, keras_home):
    """What a uWSGI worker does, in a process of its own: explain=1 on the checked export,
    with TensorFlow and Keras never imported."""
    script = """
import json, sys
from app import create_app
client = create_app().test_client()
answer = client.post("/predict?explain=1", data=open(sys.argv[1], "rb").read(), content_type="image/png").json
print(json.dumps({"answer": answer, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "CLASSIFIER_RUNTIME": "onnx", "CLASSIFIER_DEFAULT_MODEL": LITE,
           "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_WARMUP": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(PHOTOS["chelsea"])], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["answer"]["explanation"]["label"] == outcome["answer"]["predictions"][0]["label"]
    assert not outcome["tensorflow"] and not outcome["keras"]


# --- Localisation: the heat lies where the object is --------------------------------------------------------

def heat_share_in(explanation: dict, box: tuple[int, int, int, int]) -> float:
    """The share of the grid's heat that falls inside ``box`` (upload pixels), each grid cell
    spread evenly over the part of the crop it covers."""
    left, top, right, bottom = explanation["crop"]
    grid = np.array(explanation["grid"])
    rows = (np.arange(top, bottom) - top) * grid.shape[0] // (bottom - top)
    columns = (np.arange(left, right) - left) * grid.shape[1] // (right - left)
    heat = grid[rows[:, None], columns[None, :]]
    ys, xs = np.arange(top, bottom)[:, None], np.arange(left, right)[None, :]
    inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
    return float(heat[inside].sum() / heat.sum())


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "grace_hopper"])
def test_the_heat_lies_in_the_quadrant_holding_the_photo(lite_client, photo):
    """The photo, shrunk, in each quadrant of a plain canvas twice its size: the class the
    model sees in the photo alone is explained on the canvas, and most of its heat (mapped
    back through ``crop``) is in that quadrant."""
    picture = Image.open(PHOTOS[photo]).convert("RGB").resize((240, 240))
    alone = io.BytesIO()
    picture.save(alone, format="PNG")
    label = lite_client.post("/predict", data=alone.getvalue(), content_type="image/png").json["predictions"][0]
    for quadrant in ((0, 0), (240, 0), (0, 240), (240, 240)):
        canvas = Image.new("RGB", (480, 480), (200, 200, 200))
        canvas.paste(picture, quadrant)
        upload = io.BytesIO()
        canvas.save(upload, format="PNG")
        answer = lite_client.post(f"/predict?explain=1&explain_class={label['class_id']}", data=upload.getvalue(),
                                  content_type="image/png").json
        explanation = answer["explanation"]
        assert explanation["class_id"] == label["class_id"]
        assert explanation["crop"] == [30, 30, 450, 450]  # the centred 87.5% square, in canvas pixels
        share = heat_share_in(explanation, (*quadrant, quadrant[0] + 240, quadrant[1] + 240))
        assert share > 0.6, (photo, quadrant, share, explanation["summary"])
        vertical, horizontal = ("top" if quadrant[1] == 0 else "bottom"), ("left" if quadrant[0] == 0 else "right")
        assert vertical in explanation["summary"] or horizontal in explanation["summary"], explanation["summary"]


# --- The crop, in the uploaded image's upright pixels ------------------------------------------------------

def test_the_crop_is_reported_in_upright_pixels_of_the_whole_image():
    """A phone photo stored sideways (EXIF orientation 6) and decoded at 1/8 scale (JPEG draft):
    the crop is still in the pixels of the upright, full-size image."""
    stored = Image.new("RGB", (4000, 3000), (90, 120, 150))
    exif = Image.Exif()
    exif[images.ORIENTATION] = 6
    data = io.BytesIO()
    stored.save(data, format="JPEG", exif=exif)
    framed = images.framed(data.getvalue(), 224)
    side = 3000 * images.CROP_FRACTION  # upright: 3000 wide, 4000 high
    expected = ((3000 - side) / 2, (4000 - side) / 2, (3000 + side) / 2, (4000 + side) / 2)
    assert framed.pixels.shape == (224, 224, 3)
    assert np.allclose(framed.crop, expected, atol=8)  # within one pixel of the 1/8-scale decode


# --- The heatmap and its text alternative ------------------------------------------------------------------

def test_the_heatmap_is_inferno_with_alpha_rising_with_heat_at_the_crop_size():
    grid = np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7)
    png = Image.open(io.BytesIO(heatmap_png(grid, (300, 200))))
    rgba = np.asarray(png.convert("RGBA"))
    assert png.size == (300, 200)
    assert rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 255  # cold is clear, the hottest opaque
    inferno = (np.array(matplotlib.colormaps["inferno"].resampled(256)(np.arange(256)))[:, :3] * 255).round()
    np.testing.assert_array_equal(rgba[..., :3], inferno[rgba[..., 3]])  # the colour goes with the heat
    assert np.all(np.diff(rgba[100, :, 3].astype(int)) >= 0)  # heat grows left to right in this grid


@pytest.mark.parametrize("grid, words", [
    (np.pad(np.ones((2, 2)), ((2, 3), (0, 5))), "Heat concentrated in the centre-left"),
    (np.pad(np.ones((2, 2)), ((0, 5), (5, 0))), "Heat concentrated in the top-right"),
    (np.pad(np.ones((1, 1)), 3), "Heat concentrated in the centre"),
    (np.pad([[1, 1, 0.8, 0.8, 0.8, 1, 0]], ((6, 0), (0, 0))), "Heat mostly in the bottom-centre and the bottom-left"),
    (np.zeros((7, 7)), "No heat: no part of the picture raised the score of this class."),
])
def test_the_summary_names_where_the_heat_is(grid, words):
    assert summary(grid) == words


# --- The API: options in every form, errors, forwarding ----------------------------------------------------

def test_explain_in_all_three_request_forms(client, cat_png):
    encoded = base64.b64encode(cat_png).decode()
    answers = [
        client.post("/predict", data={"image": (io.BytesIO(cat_png), "cat.png"), "explain": "1"}),
        client.post("/predict", json={"image": encoded, "settings": {"explain": True}}),
        client.post("/predict", json={"image": encoded, "explain": "true"}),
        client.post("/predict?explain=1", data=cat_png, content_type="image/png"),
    ]
    first = answers[0].json["explanation"]
    for answer in answers:
        assert answer.status_code == 200, answer.json
        assert answer.json["explanation"] == first  # one model, one photo: the same map
    assert first["class_id"] == answers[0].json["predictions"][0]["class_id"]
    width, height = Image.open(io.BytesIO(cat_png)).size
    left, top, right, bottom = first["crop"]
    assert 0 <= left < right <= width and 0 <= top < bottom <= height and right - left == bottom - top
    heatmap = Image.open(io.BytesIO(base64.b64decode(first["heatmap"].removeprefix(DATA_URL))))
    assert first["heatmap"].startswith(DATA_URL) and heatmap.size == (right - left, bottom - top)
    assert first["summary"].startswith(("Heat ", "No heat"))  # random weights may raise the class nowhere
    assert "explain" in answers[0].json["timing_ms"]


def test_no_explanation_unless_asked(client, cat_png):
    for value in (None, "0", "false"):
        query = f"?explain={value}" if value else ""
        answer = client.post(f"/predict{query}", data=cat_png, content_type="image/png").json
        assert "explanation" not in answer and "explain" not in answer["timing_ms"]


def test_naming_a_class_to_explain_asks_for_an_explanation(client, cat_png):
    answer = client.post("/predict?explain_class=tabby", data=cat_png, content_type="image/png").json
    assert answer["explanation"]["label"] == "tabby" and "explain" in answer["timing_ms"]


def test_explain_class_by_class_id_and_by_label(client, cat_png):
    by_id = client.post("/predict?explain=1&explain_class=n02123159", data=cat_png, content_type="image/png").json
    by_label = client.post("/predict", json={"image": base64.b64encode(cat_png).decode(),
                                              "settings": {"explain": "1", "explain_class": "tiger_cat"}}).json
    assert by_id["explanation"] == by_label["explanation"]
    assert (by_id["explanation"]["class_id"], by_id["explanation"]["label"]) == ("n02123159", "tiger_cat")


def test_a_big_photo_gets_a_heatmap_of_at_most_512_pixels(client):
    big = io.BytesIO()
    Image.open(PHOTOS["coffee"]).convert("RGB").resize((1600, 1200)).save(big, format="JPEG")
    explanation = client.post("/predict?explain=1", data=big.getvalue(), content_type="image/jpeg").json["explanation"]
    assert explanation["crop"] == [275, 75, 1325, 1125]  # 1600x1200: the centred 1050-pixel square
    heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"].removeprefix(DATA_URL))))
    assert heatmap.size == (MAX_HEATMAP_SIDE, MAX_HEATMAP_SIDE)


@pytest.mark.parametrize("send", [
    lambda c, img: c.post("/predict?explain=1&explain_class=not_a_class", data=img, content_type="image/png"),
    lambda c, img: c.post("/predict", data={"image": (io.BytesIO(img), "a.png"), "explain": "yes"}),
    lambda c, img: c.post("/predict", json={"image": base64.b64encode(img).decode(),
                                            "settings": {"explain": 1, "explain_class": 281}}),
    lambda c, img: c.post("/predict", json={"image": base64.b64encode(img).decode(), "explain": [1]}),
    lambda c, img: c.post("/predict", json={"image": base64.b64encode(img).decode(),
                                            "explain": True, "explain_class": {"id": "n02123159"}}),
], ids=["unknown class", "explain=yes", "class as a number", "explain as a list", "class as an object"])
def test_bad_explain_options_are_400_json(client, cat_png, send):
    response = send(client, cat_png)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_request"
    assert "explain" in response.json["error"]["message"]
    assert client.post("/predict", data=cat_png, content_type="image/png").status_code == 200  # still serving


def test_models_say_which_can_explain(client):
    models = client.get("/models").json["models"]
    assert {m["name"]: m["explainable"] for m in models} == {name: True for name in REGISTRY}


FORWARDED_MODEL = "ResNet50"  # random ResNet50 weights give distinct scores in each process


@pytest.fixture
def remote_instance(other) -> str:
    """A real second instance (``python3 app.py``, random weights, its own process): the
    session's ``other`` (support/page_fixtures.py), which serves ResNet50 by default."""
    return other


def test_forwarding_relays_the_remotes_explanation(make_app, remote_instance, cat_png):
    """The remote's weights are its own (random, another process): the relayed explanation is
    the remote's own, for the class asked for, beside predictions this instance would not make."""
    here = make_app(remote_url=f"{remote_instance}/predict").test_client()
    fields = {"explain": "1", "explain_class": "tabby", "model": FORWARDED_MODEL}
    relayed = here.post("/predict", data={"image": (io.BytesIO(cat_png), "cat.png"), "server": "remote", **fields})
    assert relayed.status_code == 200, relayed.json
    direct = requests.post(f"{remote_instance}/predict", files={"image": cat_png}, data=fields, timeout=120).json()
    local = here.post("/predict", data={"image": (io.BytesIO(cat_png), "cat.png"), **fields}).json
    assert relayed.json["server"] == "remote" and relayed.json["explanation"]["label"] == "tabby"
    assert relayed.json["explanation"] == direct["explanation"]
    assert relayed.json["predictions"] != local["predictions"]  # the remote's weights, not ours


def remote_answering(stub_server, explanation: object) -> str:
    """A remote (out of our control) answering a well-formed prediction with ``explanation``."""
    body = json.dumps({"model": "MobileNetV2", "weights": "imagenet", "server": "local",
                       "predictions": [{"label": "tabby", "class_id": "n02123045", "score": 0.5}],
                       "timing_ms": {"total": 1}, **({"explanation": explanation} if explanation else {})}).encode()
    return stub_server(answering_json(body)).url + "predict"


def good_explanation() -> dict:
    grid = np.eye(7).tolist()
    heatmap = DATA_URL + base64.b64encode(heatmap_png(np.eye(7), (20, 20))).decode()
    return {"class_id": "n02123045", "label": "tabby", "crop": [0, 0, 20, 20], "grid": grid, "heatmap": heatmap,
            "summary": "Heat mostly in the centre and the top-left"}


def forward_with(make_app: Callable[..., Flask], url: str, image: bytes):
    return make_app(remote_url=url).test_client().post(
        "/predict", data={"image": (io.BytesIO(image), "cat.png"), "server": "remote", "explain": "1"})


def test_a_well_formed_remote_explanation_is_relayed_and_a_missing_one_left_out(make_app, stub_server, cat_png):
    relayed = forward_with(make_app, remote_answering(stub_server, good_explanation()), cat_png)
    assert relayed.status_code == 200 and relayed.json["explanation"] == good_explanation()
    older = forward_with(make_app, remote_answering(stub_server, None), cat_png)  # an instance before explanations
    assert older.status_code == 200 and "explanation" not in older.json


@pytest.mark.parametrize("field, value", [
    ("grid", [[0.5, 1.5]]), ("grid", [[0.5], [0.5, 0.5]]), ("grid", []), ("grid", [["0.5"]]),
    ("grid", [[0.1] * 65]), ("crop", [10, 0, 5, 20]), ("crop", [0, 0, 20]), ("crop", [0, 0, 20.5, 20]),
    ("heatmap", "data:image/png;base64,bm90IGEgcG5n"), ("heatmap", "https://example.com/map.png"),
    ("heatmap", "data:image/png;base64,%%%"), ("label", 7), ("summary", "x" * 301), ("class_id", None),
    # A heatmap not the size of its crop: the remote would choose what this server (and a browser) decodes.
    ("heatmap", DATA_URL + base64.b64encode(heatmap_png(np.eye(7), (21, 20))).decode()),
    ("heatmap", DATA_URL + base64.b64encode(heatmap_png(np.eye(7), (1, 1))).decode()),
])
def test_a_malformed_remote_explanation_is_502(make_app, stub_server, cat_png, field, value):
    explanation = {**good_explanation(), field: value}
    response = forward_with(make_app, remote_answering(stub_server, explanation), cat_png)
    assert response.status_code == 502, response.json
    assert response.json["error"]["code"] == "remote_error"
    assert "unexpected format" in response.json["error"]["message"]


def test_a_remote_explaining_another_class_than_asked_is_502(make_app, stub_server, cat_png):
    """The page asks a remote for one class's map; a map of another would be shown under the wrong name."""
    url = remote_answering(stub_server, good_explanation())  # explains n02123045, tabby
    asked = make_app(remote_url=url).test_client().post(
        "/predict", data={"image": (io.BytesIO(cat_png), "cat.png"), "server": "remote", "explain_class": "tiger_cat"})
    assert asked.status_code == 502 and asked.json["error"]["code"] == "remote_error"
    assert "another class than tiger_cat" in asked.json["error"]["message"]
    by_label = make_app(remote_url=url).test_client().post(
        "/predict", data={"image": (io.BytesIO(cat_png), "cat.png"), "server": "remote", "explain_class": "tabby"})
    assert by_label.status_code == 200 and by_label.json["explanation"]["class_id"] == "n02123045"


# --- The overlay and the command line ----------------------------------------------------------------------

def test_the_overlay_is_the_crop_with_the_heatmap_over_it(lite_client, cat_png):
    """Each pixel is the photo's crop with the heatmap's colour laid over it at the heatmap's
    alpha, times OVERLAY_OPACITY: plain "over" compositing, checked by hand."""
    explanation = lite_client.post("/predict?explain=1", data=cat_png, content_type="image/png").json["explanation"]
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(cat_png, explanation))).convert("RGB"), dtype=float)
    crop = np.asarray(Image.open(io.BytesIO(cat_png)).convert("RGB").crop(explanation["crop"]), dtype=float)
    heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"].removeprefix(DATA_URL))))
                         .convert("RGBA"), dtype=float)
    alpha = heatmap[..., 3:] / 255 * OVERLAY_OPACITY
    assert overlay.shape == crop.shape
    np.testing.assert_allclose(overlay, crop * (1 - alpha) + heatmap[..., :3] * alpha, atol=2)
    assert np.abs(overlay - crop).max() > 50  # the heat shows


def test_the_page_without_javascript_draws_the_overlay_on_the_photo_the_prediction_decoded(lite_client, cat_png):
    """The page no longer decodes the upload a second time for its picture; for a photo the
    model's framing needs whole (chelsea.png), the picture is the very one drawn from the bytes."""
    explanation = lite_client.post("/predict?explain=1", data=cat_png, content_type="image/png").json["explanation"]
    page = lite_client.post("/", data={"image": (io.BytesIO(cat_png), "chelsea.png"), "explain": "1"})
    drawn = re.search(r'class="explained-image" src="data:image/png;base64,([^"]+)"', page.text).group(1)
    assert base64.b64decode(drawn) == overlay_png(cat_png, explanation)


@pytest.fixture(scope="module")
def cli_explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One run of ``classifier predict --explain`` (random MobileNetV2) over chelsea.png and two
    folders each holding a photo.png (chelsea, then coffee), and the folder it wrote to."""
    folder = tmp_path_factory.mktemp("cli_explain")
    for name, photo in (("a", "chelsea"), ("b", "coffee")):
        (folder / name).mkdir()
        (folder / name / "photo.png").write_bytes(PHOTOS[photo].read_bytes())
    out = folder / "out"
    result = run_classifier("predict", str(PHOTOS["chelsea"]), str(folder / "a"), str(folder / "b"),
                            "--model", "MobileNetV2", "--explain", str(out), CLASSIFIER_RANDOM_WEIGHTS="1",
                            KERAS_HOME=str(folder / "keras"), CLASSIFIER_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.mark.slow  # the command line as a process
def test_cli_explain_writes_the_overlay_and_names_it(cli_explained):
    result, out = cli_explained
    written = out / "chelsea.cam.png"
    assert re.search(rf"^  where it looked for \w+: {re.escape(str(written))} \((Heat|No heat).*\)$", result.stdout,
                     re.M), result.stdout  # random weights (this process's own) may raise no class anywhere
    overlay = Image.open(written)
    assert overlay.format == "PNG" and overlay.size == (262, 262)  # chelsea.png is 451x300: crop (94, 19, 356, 281)


@pytest.mark.slow  # the command line as a process
def test_cli_explain_never_writes_one_photos_heatmap_over_anothers(cli_explained):
    """Two folders' photos of the same name get a heatmap each."""
    _, out = cli_explained
    assert sorted(path.name for path in out.iterdir()) == ["chelsea.cam.png", "photo-2.cam.png", "photo.cam.png"]
    assert Image.open(out / "photo.cam.png").size != Image.open(out / "photo-2.cam.png").size  # cat, then coffee


# --- A head that is not pooling then dense: the Keras path, with gradients ---------------------------------

@pytest.fixture
def registry_with(monkeypatch) -> Callable[..., None]:
    """Adds a registry entry for this test, as adding a model to ``REGISTRY`` would."""
    def add(spec) -> None:
        monkeypatch.setitem(REGISTRY, spec.name, spec)

    return add


def mobilenet_v1(feature_map):
    """keras.applications.MobileNet: its head is pooling, then a 1x1 convolution and a softmax
    Activation, not a dense layer, so the shortcut's structure check does not apply."""
    from classifier.models import preprocessing
    from classifier.models.registry import ModelSpec, _keras_application
    from classifier.models.weights import KerasWeights

    weights = KerasWeights("MobileNet", "mobilenet_1_0_224_tf.h5", "mobilenet/mobilenet_1_0_224_tf.h5")
    return ModelSpec("MobileNet", _keras_application("MobileNet"), preprocessing.symmetric, weights,
                     about="test only", feature_map=feature_map)


@pytest.mark.slow  # builds a model with a head of its own
def test_a_head_that_is_not_pooling_then_dense_is_explained_with_gradients(make_app, registry_with, cat_png):
    import keras

    from classifier.models.registry import FeatureMap

    spec = mobilenet_v1(FeatureMap("conv_pw_13_relu", gap_dense=False))
    registry_with(spec)
    keras.utils.set_random_seed(0)  # random weights, the same each run: whether a map is all zeros is fixed
    client = make_app(runtime="onnx").test_client()  # still served on Keras: the explanation needs it
    assert {m["name"]: m["explainable"] for m in client.get("/models").json["models"]}["MobileNet"] is True
    served = client.application.extensions["classifier"].load_model("MobileNet")
    assert served.runtime.name == "keras" and served.runtime.head is None
    twin = keras_twin(served.model, spec)
    non_trivial = [assert_same_map(client.post(f"/predict?model=MobileNet&explain_class={name}", data=cat_png,
                                               content_type="image/png").json, twin, spec, PHOTOS["chelsea"])
                   for name in ("tabby", "tiger_cat", "espresso", "tench")]
    assert any(non_trivial)  # the equality was tested on a real map, not only on zeros


def test_a_model_without_a_feature_map_says_it_cannot_explain(make_app, registry_with, cat_png):
    registry_with(mobilenet_v1(None))
    client = make_app().test_client()
    assert {m["name"]: m["explainable"] for m in client.get("/models").json["models"]}["MobileNet"] is False
    assert client.post("/predict?model=MobileNet", data=cat_png, content_type="image/png").status_code == 200
    refused = client.post("/predict?model=MobileNet&explain=1", data=cat_png, content_type="image/png")
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_request"
    assert "cannot explain" in refused.json["error"]["message"]
