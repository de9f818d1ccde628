"""Input normalisations of the Keras ImageNet models, written on numpy.

They equal ``keras.applications.<model>.preprocess_input`` (the tests check this on the same
pixels), but do not import Keras, so preparing a batch never waits on TensorFlow.
"""

from __future__ import annotations

import numpy as np

# ImageNet channel means in BGR order, as used by the original Caffe ResNet weights.
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def caffe(pixels: np.ndarray) -> np.ndarray:
    """RGB 0..255 to BGR with the ImageNet mean removed, unscaled (ResNet50)."""
    return pixels[..., ::-1].astype(np.float32) - _CAFFE_BGR_MEAN


def symmetric(pixels: np.ndarray) -> np.ndarray:
    """RGB 0..255 to -1..1 (MobileNetV2, NASNetMobile: Keras' "tf" mode)."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def centered_128(pixels: np.ndarray) -> np.ndarray:
    """RGB 0..255 to (x - 127) / 128 (EfficientNet-Lite0, TensorFlow's Lite convention).

    Chosen over torchvision's mean/std on evidence: on real photos only this
    reproduces the stem batch-norm's running statistics of the ported checkpoint,
    and it gives the more confident, more often correct labels.
    """
    return (pixels.astype(np.float32) - 127.0) / 128.0
