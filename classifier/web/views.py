"""The page and the API as one blueprint. The views take the classifier from the app they
serve (``current_classifier()``), so one blueprint serves every app ``create_app`` builds."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import Forbidden, RequestEntityTooLarge

from classifier import Classifier, ClassifierError, metrics
from classifier.errors import ImageTooLarge
from classifier.serving.results import Classification
from classifier.web import pages, predicting
from classifier.web.errors import retry_headers

classify = Blueprint("classify", __name__)


def current_classifier() -> Classifier:
    """The classifier of the app handling this request, which ``create_app`` built and stored."""
    return current_app.extensions["classifier"]


@classify.route("/", methods=["GET", "POST"])
def index() -> Any:
    """The upload page. Its form posts here when JavaScript is off; the answer is rendered:
    one photo with its explained crop, or a table, a row per photo."""
    classifier = current_classifier()
    if request.method == "GET":
        return pages.render_page(classifier)
    try:
        parsed = predicting.parsed(predicting.page_form(request), classifier)
        answer = predicting.answer(parsed, classifier)
    except RequestEntityTooLarge:
        too_large = ImageTooLarge.over(classifier.settings.max_upload_bytes)
        g.access.error = too_large.code
        return pages.render_page(classifier, error=too_large), too_large.status
    except ClassifierError as error:
        g.access.error = error.code
        return pages.render_page(classifier, error=error, form=request.form), error.status, retry_headers(error)
    if not parsed.single:
        return pages.render_page(classifier, result=answer.to_json(), form=request.form)
    one = Classification.of(answer)
    overlay = pages.overlay_url(parsed.uploads[0].data, one, classifier.limits)
    return pages.render_page(classifier, result=one.to_json(), form=request.form, overlay=overlay,
                             filename=parsed.uploads[0].filename)


@classify.post("/predict")
def predict() -> Any:
    """One image answers as one (``predictions``); several, or JSON ``images``, with ``results``."""
    classifier = current_classifier()
    parsed = predicting.parsed(request, classifier)
    answer = predicting.answer(parsed, classifier)
    return jsonify(Classification.of(answer).to_json() if parsed.single else answer.to_json())


@classify.get("/models")
def models() -> Any:
    classifier = current_classifier()
    return jsonify({"default": classifier.default_model, "models": classifier.models()})


@classify.get("/healthz")
def healthz() -> Any:
    """Liveness: the app answers. It loads nothing, so a model still preparing does not fail it."""
    return jsonify({"status": "ok"})


@classify.get("/readyz")
def readyz() -> Any:
    """Readiness, for load balancers and probes: 200 once the default model answers at once in
    this worker; else the 503 a prediction would explain (preparing, downloading, unavailable)."""
    return jsonify({"status": "ready", "model": current_classifier().check_ready()})


@classify.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of these routes, as checked in (``openapi.json`` beside
    ``app.py``, written by hand and held to the code by tests/test_openapi.py)."""
    return current_app.response_class(_text(Path(current_app.root_path, "openapi.json")), mimetype="application/json")


@functools.cache
def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@classify.get("/metrics")
def metrics_page() -> Any:
    """Prometheus' text format, summed over the workers; only for the addresses allowed."""
    if not metrics.client_allowed(request.remote_addr, current_app.extensions["metrics_allow"]):
        raise Forbidden("GET /metrics is served only to the addresses in CLASSIFIER_METRICS_ALLOW.")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
