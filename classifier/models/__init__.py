"""The model registry and everything a model is made of: weights, their layouts and downloads, labels, preprocessing, the EfficientNet-Lite port."""
