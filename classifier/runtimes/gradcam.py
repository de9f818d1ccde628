"""Grad-CAM the general way, with a GradientTape, for a model whose head is not global average
pooling then one dense layer (so the shortcut in ``explain.py`` does not apply).

It is keras.io's "Grad-CAM class activation visualization": the gradient of the class logit
(before the softmax) with respect to the last feature map, averaged over positions per
channel, weighs the channels. It needs TensorFlow and a second pass with gradients, so such a
model is served on Keras (``serving/pool.py``) and an explanation costs about one more forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


class GradientCam:
    """Raw Grad-CAM maps (N, h, w), before ReLU and scaling, of one class for a batch."""

    def __init__(self, model: keras.Model, feature_layer: keras.layers.Layer, input_size: int) -> None:
        import keras
        import tensorflow as tf

        maps_and_logits = keras.Model(model.inputs, [feature_layer.output, logits(model)])

        def class_maps(batch: tf.Tensor, class_number: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                features, class_logits = maps_and_logits(batch, training=False)
                target = class_logits[:, class_number]
            pooled = tf.reduce_mean(tape.gradient(target, features), axis=(1, 2))
            return tf.einsum("nhwk,nk->nhw", features, pooled)

        signature = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32), tf.TensorSpec([], tf.int32)]
        self._class_maps = tf.function(class_maps, input_signature=signature)

    def __call__(self, batch: np.ndarray, class_number: int) -> np.ndarray:
        return np.asarray(self._class_maps(batch, np.int32(class_number)))


def logits(model: keras.Model) -> keras.KerasTensor:
    """The model's class logits: the input of a final softmax ``Activation`` layer, or a final
    softmax ``Dense`` layer's output without its softmax (a linear twin with its weights)."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Activation):
        return last.input
    if isinstance(last, keras.layers.Dense):
        linear = keras.layers.Dense(last.units, name=f"{last.name}_logits")
        output = linear(last.input)
        linear.set_weights(last.get_weights())  # weights are loaded before a runtime is made
        return output
    raise ValueError(f"{model.name} ends in {type(last).__name__}, not a softmax Activation or Dense layer")
