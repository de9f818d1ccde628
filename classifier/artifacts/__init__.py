"""Files made from a model ahead of traffic, each trusted through the checked record beside it.

``checked`` is what every such file shares; ``exports`` and ``int8`` say where a model's
ONNX export and int8 form are and what their records hold (what a serving worker reads);
``convert`` and ``quantize`` make and check them (build time: TensorFlow, tf2onnx, onnx;
only ``python3 -m classifier export`` and its child processes import them).
"""
