"""classifier.models.preprocessing must equal each model's own input normalisation.

A wrong normalisation does not crash: the model runs and silently answers worse. So every
registered model is compared with a reference that does not come from this code, and a
model added without one fails here.
"""

import importlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from conftest import PHOTOS
from PIL import Image, ImageOps

from classifier.models.registry import REGISTRY
from classifier.models.torch_legacy import load_legacy_state_dict

# Registry name -> the keras.applications module whose preprocess_input the weights expect.
KERAS_REFERENCE = {"ResNet50": "resnet50", "MobileNetV2": "mobilenet_v2", "NASNetMobile": "nasnet"}
# Models ported from a checkpoint, which records the inputs its training saw: the running
# mean and variance of the batch norm after the first convolution. Name -> (that
# convolution's kernel, that batch norm), as named in the checkpoint.
CHECKPOINT_REFERENCE = {"EfficientNetLite0": ("_conv_stem.weight", "_bn0")}
# ImageNet's mean colour, RGB 0..255 (the figures Caffe's VGG and ResNet subtract).
IMAGENET_MEAN_RGB = np.array([123.68, 116.779, 103.939])
# Natural photos whose pooled pixel statistics stand in for ImageNet's.
STATISTICS_PHOTOS = [*PHOTOS.values()] + [
    Path(skimage.data.__file__).parent / name for name in ("astronaut.png", "rocket.jpg", "motorcycle_left.png")
]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)


def test_every_registered_model_has_a_reference():
    assert not KERAS_REFERENCE.keys() & CHECKPOINT_REFERENCE.keys()
    fp32 = {name for name, spec in REGISTRY.items() if spec.int8_of is None}
    assert fp32 == KERAS_REFERENCE.keys() | CHECKPOINT_REFERENCE.keys()
    # an int8 form is fed exactly as its fp32 model
    assert all(spec.preprocess is REGISTRY[spec.int8_of].preprocess for spec in REGISTRY.values() if spec.int8_of)


@pytest.mark.parametrize("name", sorted(KERAS_REFERENCE))
def test_matches_keras_preprocess_input(name, pixels):
    module = importlib.import_module(f"keras.applications.{KERAS_REFERENCE[name]}")
    # Keras normalises float numpy input in place, so it gets its own copy.
    expected = module.preprocess_input(pixels.astype(np.float32))
    actual = REGISTRY[name].preprocess(pixels)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def stem_responses(kernel: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """The first convolution (stride 2, no padding) of a float NHWC batch, as rows of
    channels; ``kernel`` is in PyTorch's (out, in, height, width) layout."""
    height, width = kernel.shape[2:]
    rows, columns = batch.shape[1] - height + 1, batch.shape[2] - width + 1
    responses = sum(
        batch[:, i : i + rows : 2, j : j + columns : 2, :] @ kernel[:, :, i, j].T
        for i in range(height)
        for j in range(width)
    )
    return responses.reshape(-1, kernel.shape[0])


@pytest.fixture(scope="module", params=sorted(CHECKPOINT_REFERENCE))
def stem(request) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(model name, stem kernel, batch norm running mean, running variance) in float64."""
    name = request.param
    kernel_name, norm_name = CHECKPOINT_REFERENCE[name]
    state = load_legacy_state_dict(REGISTRY[name].weights.source())
    return (name, *(state[key].astype(np.float64) for key in
                    (kernel_name, f"{norm_name}.running_mean", f"{norm_name}.running_var")))


def test_checkpoint_model_centres_inputs_where_its_training_did(stem):
    """ImageNet's mean colour, normalised, must reproduce the stem's running means.

    Photo-free: the mean colour's response is the kernel's sums times the normalised colour.
    Relative error, measured: (x - 127) / 128 0.45 (training's augmentation shifts the mean
    a little); torchvision's mean/std 1.12; channels as BGR 1.21; 0..1 6.7. (x / 127.5 - 1
    gives 0.47: the two differ by less than either test resolves, or than labels show.)
    """
    name, kernel, running_mean, _ = stem
    colour = REGISTRY[name].preprocess(np.round(IMAGENET_MEAN_RGB).astype(np.uint8).reshape(1, 1, 1, 3))
    predicted = kernel.sum(axis=(2, 3)) @ colour.reshape(3).astype(np.float64)
    assert np.linalg.norm(predicted - running_mean) / np.linalg.norm(running_mean) < 0.75


def test_checkpoint_model_scales_inputs_as_its_training_did(stem):
    """Real photos, normalised, must spread the stem's responses as its running variances say.

    The ratio is a geometric mean over the live channels (4 of EfficientNet-Lite0's 32 are
    dead: variance 0). Measured: (x - 127) / 128 0.87; torchvision's mean/std 4.3 (its
    2.2 times larger scale, squared); 0..1 0.22. Allowed: within a factor 2 of 1.
    """
    name, kernel, _, running_var = stem
    photos = np.stack([np.asarray(ImageOps.fit(Image.open(path).convert("RGB"), (224, 224)))
                       for path in STATISTICS_PHOTOS])
    variance = stem_responses(kernel, REGISTRY[name].preprocess(photos).astype(np.float64)).var(axis=0)
    live = running_var > 1e-3
    ratio = np.exp(np.mean(np.log(variance[live] / running_var[live])))
    assert 0.5 < ratio < 2, ratio


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_does_not_modify_its_input(name, dtype, pixels):
    batch = pixels.astype(dtype)
    before = batch.copy()
    REGISTRY[name].preprocess(batch)
    np.testing.assert_array_equal(batch, before)
