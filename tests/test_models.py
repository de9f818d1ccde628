"""The registry and the per-process model pool, on the real architectures (random weights)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from classifier.models.registry import REGISTRY
from classifier.serving.pool import POOL, ModelPool

FP32 = [name for name, spec in REGISTRY.items() if spec.int8_of is None]  # int8 forms: tests/test_int8.py


@pytest.mark.slow  # builds every architecture
@pytest.mark.parametrize("name", FP32)
def test_each_model_gives_1000_probabilities(name):
    model = POOL.get(REGISTRY[name], None)
    size = REGISTRY[name].input_size
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    scores = model.scores(pixels)
    assert scores.shape == (2, 1000)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert model.weights == "random"


# What each registry entry must build: the name Keras gives the model and its parameter
# count. The Keras figures are those keras.applications publishes (its documentation's
# table and model.summary()); EfficientNetLite0's is every tensor in the ported checkpoint
# but its 49 batch-norm step counters (4,652,008 of them trainable: the 4.652M of the
# reference PyTorch port). A near relative (MobileNet for MobileNetV2, ResNet50V2 or
# ResNet101 for ResNet50, NASNetLarge) has another name and another count.
ARCHITECTURES = {
    "MobileNetV2": ("mobilenetv2_1.00_224", 3_538_984),
    "ResNet50": ("resnet50", 25_636_712),
    "NASNetMobile": ("nasnet_mobile", 5_326_716),
    "EfficientNetLite0": ("EfficientNetLite0", 4_694_024),
}


def test_every_registered_model_has_its_architecture_written_down():
    assert list(ARCHITECTURES) == FP32


@pytest.mark.slow  # builds every architecture
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_registry_builds_the_architecture_of_that_name(name, built_model):
    keras_model = built_model(name)
    size = REGISTRY[name].input_size
    assert (keras_model.name, keras_model.count_params()) == ARCHITECTURES[name]
    assert keras_model.input_shape == (None, size, size, 3)
    assert keras_model.output_shape == (None, 1000)


@pytest.mark.slow  # builds every architecture
def test_compiled_forward_pass_equals_model_predict():
    """The fast path computes exactly what Keras' own predict does."""
    spec = REGISTRY["MobileNetV2"]
    pool = ModelPool()
    loaded = pool.get(spec, None)
    pixels = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    expected = loaded.model.predict(spec.preprocess(pixels), verbose=0)
    np.testing.assert_allclose(loaded.scores(pixels), expected, atol=1e-5)


def test_concurrent_first_requests_build_the_model_once():
    builds = []
    base = REGISTRY["MobileNetV2"]

    def counting_build():
        builds.append(threading.get_ident())
        return base.build()

    spec = replace(base, name="CountedMobileNetV2", build=counting_build)
    pool = ModelPool()
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.get(spec, None))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(builds) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert pool.is_loaded(spec, None)
