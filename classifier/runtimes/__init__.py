"""Running a forward pass: Keras or ONNX Runtime, the in-flight counter that sizes its threads, Grad-CAM."""
