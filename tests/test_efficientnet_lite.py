"""Tests for the torch-free EfficientNet-Lite0 port: reader, conversion, and real photos.

The photo tests are the ones that matter: a wrong transpose, padding or
normalisation still yields a model that runs, just not one that recognises a cat.
"""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import matplotlib
import numpy as np
import pytest
import skimage.data
from conftest import ROOT
from PIL import Image

from classifier.models import efficientnet_lite
from classifier.models.efficientnet_lite import (
    INPUT_SIZE,
    build_model,
    convert_weights,
)
from classifier.models.registry import REGISTRY
from classifier.models.torch_legacy import load_legacy_state_dict

CHECKPOINT = REGISTRY["EfficientNetLite0"].weights.source()
preprocess_input = REGISTRY["EfficientNetLite0"].preprocess  # what the service feeds it

_SKIMAGE_DATA = os.path.dirname(skimage.data.__file__)
_MPL_SAMPLE_DATA = os.path.join(matplotlib.get_data_path(), "sample_data")

# (photo, how many top predictions to look at, ImageNet class ids that count as right)
PHOTOS = {
    "chelsea": (os.path.join(_SKIMAGE_DATA, "chelsea.png"), 3, {281, 282, 285}),
    "coffee": (os.path.join(_SKIMAGE_DATA, "coffee.png"), 3, {967, 968, 504}),
    "grace_hopper": (os.path.join(_MPL_SAMPLE_DATA, "grace_hopper.jpg"), 5, {652}),
}


def load_photo(path: str) -> np.ndarray:
    """Standard ImageNet eval crop: shorter side to 256, centre 224x224."""
    image = Image.open(path).convert("RGB")
    scale = round(INPUT_SIZE / 0.875) / min(image.size)
    width, height = (round(side * scale) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - INPUT_SIZE) // 2, (height - INPUT_SIZE) // 2
    image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    return np.asarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_legacy_state_dict(CHECKPOINT)


@pytest.fixture(scope="module")
def converted_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "lite0.weights.h5"
    convert_weights(CHECKPOINT, str(path))
    return str(path)


@pytest.fixture(scope="module")
def model(converted_path):
    return build_model(converted_path)


@pytest.fixture(scope="module")
def photo_probabilities(model) -> dict[str, np.ndarray]:
    batch = np.stack([load_photo(path) for path, _, _ in PHOTOS.values()])
    probabilities = model.predict(preprocess_input(batch), verbose=0)
    return dict(zip(PHOTOS, probabilities))


def test_reader_returns_documented_entries(state_dict):
    assert len(state_dict) == 296
    assert {int(name.split(".")[1]) for name in state_dict if name.startswith("_blocks.")} == set(range(16))
    expected_shapes = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_bn0.running_var": (32,),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_fc.weight": (1000, 1280),
        "_fc.bias": (1000,),
    }
    for name, shape in expected_shapes.items():
        assert state_dict[name].shape == shape, name
        assert state_dict[name].dtype == np.float32, name


def _write_zip_checkpoint(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:  # shape of a modern torch.save file
        archive.writestr("archive/data.pkl", pickle.dumps({}))


def _write_legacy_header_with_foreign_global(path) -> None:
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, file)
        pickle.dump(os.system, file)  # must be refused, never resolved


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(b"definitely not a checkpoint"),
        lambda path: path.write_bytes(pickle.dumps({"_fc.weight": [1.0]})),
        _write_zip_checkpoint,
        _write_legacy_header_with_foreign_global,
    ],
    ids=["garbage", "plain-pickle", "zip-format", "foreign-global"],
)
def test_reader_rejects_non_legacy_files(tmp_path, write):
    path = tmp_path / "bad.pth"
    write(path)
    with pytest.raises(ValueError):
        load_legacy_state_dict(str(path))


def test_conversion_writes_only_the_weights_file(converted_path):
    assert os.listdir(os.path.dirname(converted_path)) == [os.path.basename(converted_path)]


def test_converted_weights_match_checkpoint_layouts(model, state_dict):
    np.testing.assert_array_equal(model.get_layer("fc").get_weights()[0], state_dict["_fc.weight"].T)
    np.testing.assert_array_equal(
        model.get_layer("blocks_3_depthwise_conv").get_weights()[0],
        state_dict["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    np.testing.assert_array_equal(
        model.get_layer("blocks_3_bn1").get_weights()[3], state_dict["_blocks.3._bn1.running_var"]
    )


@pytest.mark.slow  # builds and converts the model twice
def test_saved_weights_reproduce_the_directly_converted_model(model, state_dict):
    direct = build_model()
    efficientnet_lite._assign_state_dict(direct, state_dict)
    batch = preprocess_input(np.random.default_rng(0).uniform(0, 255, (2, INPUT_SIZE, INPUT_SIZE, 3)))
    loaded_out = model.predict(batch, verbose=0)
    np.testing.assert_allclose(loaded_out, direct.predict(batch, verbose=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded_out.sum(axis=1), 1.0, atol=1e-5)


# Run in a fresh interpreter in which every attempt to import torch is recorded and
# refused, whether or not torch is installed: conversion and loading must neither need it
# nor try it (a ``try: import torch`` fallback counts as trying).
_CONVERT_WITHOUT_TORCH = """
import importlib.abc, json, sys

attempts = []

class RefuseTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)

sys.meta_path.insert(0, RefuseTorch())
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    sys.exit("the blocker let torch through")
attempts.clear()

from classifier.models.efficientnet_lite import build_model, convert_weights

convert_weights(sys.argv[1], sys.argv[2])
fc_kernel = build_model(sys.argv[2]).get_layer("fc").get_weights()[0]
print(json.dumps({"attempts": attempts, "torch_loaded": "torch" in sys.modules,
                  "fc_kernel_sum": float(fc_kernel.sum())}))
"""


@pytest.mark.slow  # converts in a process of its own
def test_conversion_and_loading_work_where_torch_cannot_be_imported(tmp_path, state_dict):
    target = tmp_path / "lite0.weights.h5"
    result = subprocess.run(
        [sys.executable, "-c", _CONVERT_WITHOUT_TORCH, CHECKPOINT, str(target)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["attempts"] == [] and not report["torch_loaded"]
    assert report["fc_kernel_sum"] == pytest.approx(float(state_dict["_fc.weight"].sum()), rel=1e-5)


def test_model_identity(model):
    assert model.name == "EfficientNetLite0"
    assert model.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize("photo", PHOTOS)
def test_recognises_real_photo(photo, photo_probabilities):
    _, k, accepted = PHOTOS[photo]
    top_k = np.argsort(photo_probabilities[photo])[::-1][:k]
    assert accepted & set(top_k.tolist()), f"{photo}: top-{k} {top_k.tolist()}"
