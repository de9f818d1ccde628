"""The baseline: what the original keras_classifier did, for the benchmarks to compare with.

Flask, one Keras model loaded when the module is imported (TensorFlow in every worker), and
per request: Pillow decodes the whole image, squashes it to 224x224, and ``Model.predict``
runs it. Served under the same uWSGI + NGINX as the app (bench/stack.py).

    BASELINE_MODEL=MobileNetV2 uwsgi --module bench.baseline_app:app ...

Random weights, except EfficientNetLite0's real ones when converted: the time of a forward
pass does not depend on the weights' values.
"""

from __future__ import annotations

import io
import os

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from classifier.config import Settings
from classifier.models import labels
from classifier.models.registry import REGISTRY
from classifier.models.weights import loadable

SPEC = REGISTRY[os.environ.get("BASELINE_MODEL", "MobileNetV2")]
model = SPEC.build()
if not SPEC.weights.downloadable and (weights := loadable(SPEC.weights, Settings.from_env())):
    model.load_weights(str(weights))

app = Flask(__name__)


@app.post("/predict")
def predict():
    data = request.files["image"].read() if request.files else request.get_data()
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((SPEC.input_size, SPEC.input_size))
    batch = SPEC.preprocess(np.asarray(image)[None])
    scores = model.predict(batch, verbose=0)[0]
    return jsonify({"model": SPEC.name, "predictions": [p.to_json() for p in labels.top_k(scores, 3)]})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
