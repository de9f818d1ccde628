"""classifier.preprocessing must equal each model's own input normalisation.

A wrong normalisation does not crash: the model runs and silently answers worse. So every
registered model is compared with a reference, and a model added without one fails here.
"""

import importlib

import numpy as np
import pytest

from classifier.models import REGISTRY

# Registry name -> the keras.applications module whose preprocess_input the weights expect.
KERAS_REFERENCE = {"ResNet50": "resnet50", "MobileNetV2": "mobilenet_v2", "NASNetMobile": "nasnet"}
# Models not from keras.applications, with their normalisation written out.
EXPLICIT_REFERENCE = {"EfficientNetLite0": lambda x: (x - 127.0) / 128.0}


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)


def test_every_registered_model_has_a_reference():
    assert not KERAS_REFERENCE.keys() & EXPLICIT_REFERENCE.keys()
    assert set(REGISTRY) == KERAS_REFERENCE.keys() | EXPLICIT_REFERENCE.keys()


@pytest.mark.parametrize("name", sorted(KERAS_REFERENCE))
def test_matches_keras_preprocess_input(name, pixels):
    module = importlib.import_module(f"keras.applications.{KERAS_REFERENCE[name]}")
    # Keras normalises float numpy input in place, so it gets its own copy.
    expected = module.preprocess_input(pixels.astype(np.float32))
    actual = REGISTRY[name].preprocess(pixels)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(EXPLICIT_REFERENCE))
def test_matches_explicit_reference(name, pixels):
    expected = EXPLICIT_REFERENCE[name](pixels.astype(np.float64))
    actual = REGISTRY[name].preprocess(pixels)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_does_not_modify_its_input(name, dtype, pixels):
    batch = pixels.astype(dtype)
    before = batch.copy()
    REGISTRY[name].preprocess(batch)
    np.testing.assert_array_equal(batch, before)
