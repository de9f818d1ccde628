"""Right labels on real photographs with the pretrained EfficientNetLite0 that ships via pip.

Shapes can be right while a port, a preprocessing or a label table is wrong; real photos
are what prove the pipeline. The direct call, the CLI and the HTTP API must agree.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from classifier import Classifier, Settings
from conftest import PHOTOS, RIGHT_LABELS, encode, run_classifier

MODEL = "EfficientNetLite0"


@pytest.fixture(scope="module")
def classifier(keras_home) -> Classifier:
    return Classifier(Settings(keras_home=keras_home, warmup=False))


def top5(predictions) -> list[tuple[str, float]]:
    return [(p["label"], p["score"]) if isinstance(p, dict) else (p.label, p.score) for p in predictions][:5]


@pytest.fixture(scope="module")
def direct(classifier) -> dict[str, list[tuple[str, float]]]:
    return {name: top5(classifier.classify(path.read_bytes(), MODEL, 5).predictions)
            for name, path in PHOTOS.items()}


@pytest.mark.parametrize("photo", RIGHT_LABELS)
def test_direct_call_gets_the_right_labels(direct, photo):
    depth, acceptable = RIGHT_LABELS[photo]
    labels = [label for label, _ in direct[photo][:depth]]
    assert acceptable & set(labels), f"{photo}: {direct[photo]}"


def test_cli_agrees(direct, keras_home):
    result = run_classifier("predict", *map(str, PHOTOS.values()), "--model", MODEL, "--top-k", "5", "--json",
                            KERAS_HOME=str(keras_home))
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    for name, answer in zip(PHOTOS, answers):
        assert answer["model"] == MODEL and answer["weights"] == "imagenet"
        assert [label for label, _ in top5(answer["predictions"])] == [label for label, _ in direct[name]]
        assert top5(answer["predictions"]) == pytest.approx(direct[name], abs=1e-5)


def test_http_api_agrees(direct, make_app, keras_home):
    client = make_app(random_weights=False, keras_home=keras_home).test_client()
    for name, path in PHOTOS.items():
        response = client.post("/predict", data=path.read_bytes(), content_type="image/png",
                               query_string={"model": MODEL, "top_k": 5})
        assert response.status_code == 200, response.json
        assert response.json["weights"] == "imagenet"
        assert [label for label, _ in top5(response.json["predictions"])] == [label for label, _ in direct[name]]


def upright_variants(image: Image.Image) -> dict[str, bytes]:
    """The same picture in other encodings, stored rotated with EXIF orientation, or with alpha."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° anticlockwise; viewers turn it clockwise
    rgba = image.convert("RGBA")
    rgba.putalpha(255)
    return {
        "jpeg": encode(image, "JPEG", quality=92),
        "png": encode(image, "PNG"),
        "webp": encode(image, "WEBP", quality=92),
        "exif-rotated": encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif),
        "alpha": encode(rgba, "PNG"),
    }


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_encodings_orientation_and_alpha_keep_the_top_label(classifier, direct, photo):
    image = Image.open(PHOTOS[photo]).convert("RGB")
    for variant, data in upright_variants(image).items():
        top = classifier.classify(data, MODEL, 1).predictions[0].label
        assert top == direct[photo][0][0], variant
