"""One prediction, start to finish: image → model → ranked labels, or a forward.

This is the library's front door; the Flask app and the CLI both call ``Classifier``.
Which models can run and loading them is ``catalog.py``; parsing options is ``options.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import images, labels, metrics, remote, status
from .catalog import Catalog
from .config import Settings
from .download import BackgroundDownloads
from .engine import POOL, LoadedModel, ModelPool
from .errors import ImageTooLarge, InvalidRequest, RemoteError, RemoteNotAllowed
from .explain import Explanation
from .models import get_spec
from .options import DEFAULT_TOP_K, MAX_TOP_K, PredictRequest

__all__ = ["DEFAULT_TOP_K", "MAX_TOP_K", "Classification", "Classifier", "PredictRequest"]


@dataclass
class Classification:
    """The answer to a prediction, as the API returns it."""

    model: str
    weights: str
    predictions: list[labels.Prediction]
    timing_ms: dict[str, float]
    server: str = "local"
    server_url: str | None = None
    explanation: dict[str, object] | None = None
    """The ``explanation`` object (``explain.Explanation.to_json``, or a remote's, checked)."""

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {
            "model": self.model,
            "weights": self.weights,
            "server": self.server,
            "predictions": [p.to_json() for p in self.predictions],
            # The original keras_classifier page's shape, kept so its clients keep working.
            "result": [{p.display_label: round(p.score, 3)} for p in self.predictions],
            "timing_ms": self.timing_ms,
        }
        if self.server_url:
            document["server_url"] = self.server_url
        if self.explanation is not None:
            document["explanation"] = self.explanation
        return document


@dataclass
class Classifier:
    """Classifies images here or forwards them, according to ``settings``."""

    settings: Settings
    pool: ModelPool = POOL
    downloads: BackgroundDownloads | None = field(default_factory=BackgroundDownloads)
    """Fetches missing weights for a long-running server; ``None`` (the CLI) only explains."""

    def __post_init__(self) -> None:
        if self.settings.default_model:
            get_spec(self.settings.default_model)  # an unknown name stops start-up here
        self.catalog = Catalog(self.settings, self.pool, self.downloads)

    def predict(self, request: PredictRequest, forwarded: bool = False) -> Classification:
        """Answer ``request``; a ``forwarded`` request is always answered here (no loops)."""
        server = "local" if forwarded else request.server
        with metrics.counting_prediction(server, request.model) as counted:
            if server == "local":
                result = self.classify(request.image, request.model, request.top_k,
                                       explain=request.explain, explain_class=request.explain_class)
            else:
                result = self._forward(request)
            counted.model = result.model
        return result

    def _forward(self, request: PredictRequest) -> Classification:
        started = time.perf_counter()
        self._check_size(request.image)
        url = self._remote_url(request)
        timeouts = remote.Timeouts(self.settings.remote_connect_timeout, self.settings.remote_read_timeout)
        with metrics.FORWARD_SECONDS.labels(request.server).time():
            answer = remote.forward(url, request.image, request.filename, request.forwarded_options(), timeouts,
                                    explanation_expected=request.explain)
        if request.explain_class and answer.explanation and not _explains(answer.explanation, request.explain_class):
            raise RemoteError(f"The remote server at {remote.public_url(url)} explained another class than "
                              f"{request.explain_class}.")
        timing = {**answer.timing_ms, "total": _ms_since(started)}
        return Classification(answer.model, answer.weights, answer.predictions[: request.top_k], timing,
                              server=request.server, server_url=remote.public_url(url),
                              explanation=answer.explanation)

    def _remote_url(self, request: PredictRequest) -> str:
        if request.server == "remote":
            if not self.settings.remote_url:
                raise InvalidRequest("No remote server is configured here (CLASSIFIER_REMOTE_URL).")
            return self.settings.remote_url
        if not self.settings.allow_custom_remote:
            raise RemoteNotAllowed("Custom remote URLs are disabled on this server.")
        if not request.remote_url:
            raise InvalidRequest("server=custom needs a remote_url.")
        remote.check_url(request.remote_url)
        return request.remote_url

    def classify(self, image: bytes, model: str | None = None, top_k: int = DEFAULT_TOP_K, *,
                 explain: bool = False, explain_class: str | None = None) -> Classification:
        """Classify ``image`` with ``model`` (default: the default model) in this process;
        with ``explain``, also say where it looked for ``explain_class`` (default: the top class).

        The image is decoded before the model is touched: an undecodable upload is refused
        without waiting for a model to load. ``timing_ms.total`` is the whole wait, with
        ``load`` on its own when this request had to load the model, and ``explain`` when
        the request asked for an explanation.
        """
        started = time.perf_counter()
        self._check_size(image)
        spec = get_spec(model or self.default_model)
        framed = images.framed(image, spec.input_size, images.ImageLimits.from_settings(self.settings))
        decoded = time.perf_counter()
        was_loaded = self.catalog.state(spec).state == status.LOADED
        loaded = self.load_model(spec.name)
        if explain and not loaded.explainable:
            raise InvalidRequest(f"{spec.name} cannot explain its answers here; GET /models says which can.")
        ready = time.perf_counter()
        scores, features = loaded.scores_and_features(framed.pixels[None])
        inferred = time.perf_counter()
        timing = {"decode": _ms_since(started, decoded), "inference": _ms_since(ready, inferred)}
        metrics.DECODE_SECONDS.observe(decoded - started)
        metrics.INFERENCE_SECONDS.labels(spec.name, loaded.runtime.name).observe(inferred - ready)
        metrics.IMAGES.labels(spec.name).inc(len(scores))
        predictions = labels.top_k(scores[0], top_k)
        explanation = None
        if explain:
            explained = explain_class or predictions[0].class_id
            explanation = _explanation(loaded, framed, scores[0], features, explained).to_json()
            timing["explain"] = _ms_since(inferred)
        if not was_loaded:
            timing["load"] = _ms_since(decoded, ready)
        timing["total"] = _ms_since(started)
        return Classification(loaded.spec.name, loaded.weights, predictions, timing, explanation=explanation)

    def _check_size(self, image: bytes) -> None:
        if len(image) > self.settings.max_upload_bytes:
            raise ImageTooLarge.over(self.settings.max_upload_bytes)

    @property
    def default_model(self) -> str:
        """The configured default, else the first registered model that is usable here."""
        return self.catalog.default()

    def load_model(self, name: str) -> LoadedModel:
        """The loaded model, or ``ModelUnavailable`` saying why and what to do."""
        return self.catalog.load(name)

    def models(self) -> list[dict[str, object]]:
        """What ``GET /models`` reports for each registered model (cheap, no side effects)."""
        return self.catalog.describe()


def _explanation(loaded: LoadedModel, framed: images.Framed, scores: np.ndarray, features: np.ndarray | None,
                 explain_class: str) -> Explanation:
    """Grad-CAM of ``explain_class`` (of a label two classes share, the likelier one), from
    this pass's feature map where the model's head allows."""
    number = max(labels.class_numbers(explain_class), key=lambda candidate: scores[candidate])
    class_id, label = labels.class_index()[number]
    return Explanation(class_id, label, framed.crop, loaded.class_map(framed.pixels[None], features, number))


def _explains(explanation: dict[str, object], explain_class: str) -> bool:
    """Whether ``explanation`` is of the class a request named (by class_id or label)."""
    return explanation["class_id"] in {labels.class_index()[n][0] for n in labels.class_numbers(explain_class)}


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((end or time.perf_counter()) - start) * 1000, 2)
