"""One prediction, start to finish: options → image → model → ranked labels, or a forward.

This is the library's front door; the Flask app and the CLI both call ``Classifier``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import images, labels, remote
from .config import Settings
from .engine import POOL, LoadedModel, ModelPool, Serving
from .errors import ImageTooLarge, InvalidRequest, ModelUnavailable, RemoteNotAllowed
from .models import REGISTRY, ModelSpec, get_spec
from .weights import BackgroundDownloads

DEFAULT_TOP_K = 3
MAX_TOP_K = 20
SERVERS = ("local", "remote", "custom")
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class PredictRequest:
    """A parsed request, whichever of the three HTTP forms (or the CLI) it came from."""

    image: bytes
    filename: str = "image"
    model: str | None = None
    top_k: int = DEFAULT_TOP_K
    server: str = "local"
    remote_url: str | None = None

    @classmethod
    def from_options(cls, image: bytes, options: Mapping[str, object], filename: str = "image") -> PredictRequest:
        """Validate loosely typed options (form fields, JSON values, query parameters)."""
        return cls(
            image=image,
            filename=filename or "image",
            model=_text(options, "model"),
            top_k=_top_k(options.get("top_k")),
            server=_server(options.get("server")),
            remote_url=_text(options, "remote_url"),
        )


def _text(options: Mapping[str, object], name: str) -> str | None:
    value = options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string.")
    return value.strip()


def _top_k(value: object) -> int:
    if value is None or value == "":
        return DEFAULT_TOP_K
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        top_k = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        top_k = 0
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be a whole number from 1 to {MAX_TOP_K}.")
    return top_k


def _server(value: object) -> str:
    if value is None or value == "":
        return "local"
    if value not in SERVERS:
        raise InvalidRequest(f"server must be one of: {', '.join(SERVERS)}.")
    return str(value)


@dataclass
class Classification:
    """The answer to a prediction, as the API returns it."""

    model: str
    weights: str
    predictions: list[labels.Prediction]
    timing_ms: dict[str, float]
    server: str = "local"
    server_url: str | None = None

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

    def predict(self, request: PredictRequest, forwarded: bool = False) -> Classification:
        """Answer ``request``; a ``forwarded`` request is always answered here (no loops)."""
        if forwarded or request.server == "local":
            return self.classify(request.image, request.model, request.top_k)
        self._check_size(request.image)
        url = self._remote_url(request)
        started = time.perf_counter()
        fields = {"top_k": str(request.top_k), **({"model": request.model} if request.model else {})}
        timeouts = remote.Timeouts(self.settings.remote_connect_timeout, self.settings.remote_read_timeout)
        answer = remote.forward(url, request.image, request.filename, fields, timeouts)
        timing = {**answer.timing_ms, "total": _ms_since(started)}
        return Classification(answer.model, answer.weights, answer.predictions[: request.top_k],
                              timing, server=request.server, server_url=url)

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

    def classify(self, image: bytes, model: str | None = None, top_k: int = DEFAULT_TOP_K) -> Classification:
        """Classify ``image`` with ``model`` (default: ``default_model``) in this process."""
        self._check_size(image)
        loaded = self.load_model(model or self.default_model)
        started = time.perf_counter()
        size = loaded.spec.input_size
        pixels = images.model_input(image, size, images.ImageLimits.from_settings(self.settings))[None]
        decoded = time.perf_counter()
        scores = loaded.scores(pixels)[0]
        timing = {"decode": _ms_since(started, decoded), "inference": _ms_since(decoded)}
        timing["total"] = _ms_since(started)
        return Classification(loaded.spec.name, loaded.weights, labels.top_k(scores, top_k), timing)

    def _check_size(self, image: bytes) -> None:
        if len(image) > self.settings.max_upload_bytes:
            raise ImageTooLarge.over(self.settings.max_upload_bytes)

    @property
    def default_model(self) -> str:
        """The configured default, else the first registered model whose weights are here."""
        if self.settings.default_model:
            return self.settings.default_model
        ready = (spec.name for spec in REGISTRY.values() if self._weights_status(spec)["state"] == "cached")
        return next(ready, next(iter(REGISTRY)))

    def load_model(self, name: str) -> LoadedModel:
        """The loaded model, or ``ModelUnavailable`` saying how to get its weights."""
        spec = get_spec(name)
        return self.pool.get(spec, self._weights_path(spec), Serving.from_settings(self.settings))

    def _weights_path(self, spec: ModelSpec) -> Path | None:
        if self.settings.random_weights:
            return None
        path = spec.weights.find(self.settings)
        if path is not None:
            return spec.weights.verified(path)
        if self._may_download(spec):
            self.downloads.start(spec.weights, self.settings)
        raise self._unavailable(spec, self._weights_status(spec))

    def _may_download(self, spec: ModelSpec) -> bool:
        return spec.weights.downloadable and self.downloads is not None and not self.settings.offline

    def _weights_status(self, spec: ModelSpec) -> dict[str, object]:
        """``{"state": "cached" | "download needed" | "downloading" | "unavailable", ...}``."""
        if self.settings.random_weights or spec.weights.present(self.settings):
            return {"state": "cached"}
        if not self._may_download(spec):
            offline = spec.weights.downloadable and self.settings.offline
            return {"state": "unavailable" if offline or not spec.weights.downloadable else "download needed"}
        status = self.downloads.status(spec.weights, self.settings)
        if status["state"] == "failed":
            return {"state": "unavailable", "error": status["error"]}
        return status

    def _unavailable(self, spec: ModelSpec, status: dict[str, object]) -> ModelUnavailable:
        how = spec.weights.how_to_get(spec.name)
        if status["state"] == "downloading":
            return ModelUnavailable(f"{spec.name}'s weights are being downloaded; try again shortly "
                                    "(progress at GET /models).", retry_after=RETRY_AFTER_SECONDS)
        if "error" in status:
            return ModelUnavailable(f"{spec.name}'s weights could not be downloaded ({status['error']}). {how}",
                                    retry_after=RETRY_AFTER_SECONDS)
        offline = " and downloads are off (CLASSIFIER_OFFLINE)" if self.settings.offline else ""
        return ModelUnavailable(f"{spec.name} has no weights on this machine{offline}. {how}")

    def models(self) -> list[dict[str, object]]:
        """What ``GET /models`` reports for each registered model."""
        default = self.default_model
        return [self._describe(spec, default) for spec in REGISTRY.values()]

    def _describe(self, spec: ModelSpec, default: str) -> dict[str, object]:
        status = self._weights_status(spec)
        state = status["state"]
        serving = Serving.from_settings(self.settings)
        if state == "cached" and self.pool.is_loaded(spec, self._weights_path(spec), serving):
            state = "loaded"
        description: dict[str, object] = {
            "name": spec.name,
            "input_size": [spec.input_size, spec.input_size],
            "about": spec.about,
            "weights": "random" if self.settings.random_weights else "imagenet",
            "status": state,
            "ready": state in ("loaded", "cached"),
            "status_text": status_text(state, status.get("progress")),
            "default": spec.name == default,
        }
        if not description["ready"]:
            description["hint"] = spec.weights.how_to_get(spec.name)
        return {**description, **{k: v for k, v in status.items() if k != "state"}}


def status_text(state: str, progress: object = None) -> str:
    """The one human wording of a model's state, shown verbatim by the page and its script.

    Provisional (branch f-page): b-models' state machine replaces it.
    """
    if state in ("loaded", "cached"):
        return "ready"
    if state == "downloading" and isinstance(progress, dict) and progress.get("total"):
        return f"downloading weights {round(100 * progress['done'] / progress['total'])}%"
    return {"downloading": "downloading weights", "download needed": "download needed"}.get(state, "unavailable")


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((end or time.perf_counter()) - start) * 1000, 2)
