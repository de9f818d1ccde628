"""One prediction, start to finish: image(s) → model → ranked labels, or a forward.

This is the library's front door; the Flask app and the CLI both call ``Classifier``.
Which models can run and loading them is ``catalog.py``; parsing options is ``options.py``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from . import image_checks, images, labels, metrics, status
from .catalog import FIRST_USE_SECONDS, Catalog
from .config import Settings
from .counted import counting_prediction
from .download import BackgroundDownloads
from .engine import POOL, LoadedModel, ModelPool
from .errors import (ClassifierError, ImageTooLarge, InvalidRequest, RemoteError, RemoteNotAllowed, RequestTooCostly,
                     TooManyImages)
from .explain import Explanation
from .forwarding.answers import RemoteAnswer, RemoteResult
from .forwarding.client import Timeouts, forward
from .forwarding.policy import check_url
from .models import ModelSpec, get_spec
from .options import DEFAULT_TOP_K, MAX_TOP_K, ManyImagesRequest, PredictRequest, Upload
from .status import ModelState
from .urls import public_url

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TOP_K", "MAX_TOP_K", "Classification", "Classifier", "ImageResult", "ManyClassifications",
           "ManyImagesRequest", "PredictRequest", "Upload"]


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
    photo: images.Decoded | None = field(default=None, repr=False, compare=False)
    """An explained photo as this process decoded it (not part of the answer): the page draws
    the heatmap over it (``explain.overlay_png``) without decoding the upload a second time."""

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"model": self.model, "weights": self.weights, "server": self.server,
                                       **_predictions_json(self.predictions, self.timing_ms)}
        if self.server_url:
            document["server_url"] = self.server_url
        if self.explanation is not None:
            document["explanation"] = self.explanation
        return document


def _predictions_json(predictions: list[labels.Prediction], timing_ms: dict[str, float]) -> dict[str, object]:
    return {
        "predictions": [p.to_json() for p in predictions],
        # The original keras_classifier page's shape, kept so its clients keep working.
        "result": [{p.display_label: round(p.score, 3)} for p in predictions],
        "timing_ms": timing_ms,
    }


@dataclass(frozen=True)
class ImageResult:
    """One image's part of the answer to several: its predictions, or the error it alone had
    (``{"code", "message"}``)."""

    filename: str
    predictions: list[labels.Prediction] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    explanation: dict[str, object] | None = None
    error: dict[str, str] | None = None

    @classmethod
    def failed(cls, filename: str, error: ClassifierError) -> ImageResult:
        return cls(filename, error=error.to_json()["error"])

    def to_json(self) -> dict[str, object]:
        if self.error is not None:
            return {"filename": self.filename, "error": self.error}
        document = {"filename": self.filename, **_predictions_json(self.predictions, self.timing_ms)}
        if self.explanation is not None:
            document["explanation"] = self.explanation
        return document


@dataclass
class ManyClassifications:
    """The answer to several images: one ``ImageResult`` each, in the request's order."""

    model: str
    weights: str
    results: list[ImageResult]
    timing_ms: dict[str, float]
    server: str = "local"
    server_url: str | None = None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"model": self.model, "weights": self.weights, "server": self.server}
        if self.server_url:
            document["server_url"] = self.server_url
        return {**document, "results": [result.to_json() for result in self.results], "timing_ms": self.timing_ms}


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
        self.limits = images.ImageLimits.from_settings(self.settings)
        """What decoding one upload may cost: the settings are fixed, so made once, not per image."""
        self._preparing = threading.Lock()  # held by the one warm-up of this classifier, once started

    def predict(self, request: PredictRequest, forwarded: bool = False) -> Classification:
        """Answer ``request``; a ``forwarded`` request is always answered here (no loops)."""
        here = functools.partial(self.classify, request.image, request.model, request.top_k,
                                 explain=request.explain, explain_class=request.explain_class)
        return _counted(request, forwarded, here, functools.partial(self._forward, request))

    def predict_many(self, request: ManyImagesRequest, forwarded: bool = False,
                     still_wanted: Callable[[], None] = lambda: None) -> ManyClassifications:
        """Answer several images with the same options: one prediction (one count in
        ``classifier_predictions_total``), each image answered or failed on its own. Too
        many images fail the request before any is decoded; ``still_wanted`` (``classify_many``)
        stops it between images."""
        options = request.options
        self.check_image_count(len(request.uploads))
        here = functools.partial(self.classify_many, request.uploads, options.model, options.top_k,
                                 explain=options.explain, explain_class=options.explain_class,
                                 still_wanted=still_wanted)
        return _counted(options, forwarded, here, functools.partial(self._forward_many, request))

    def check_image_count(self, count: int) -> None:
        """Refuse a request of more images than ``CLASSIFIER_MAX_IMAGES``, from its count alone."""
        if count > self.settings.max_images:
            raise TooManyImages(f"The request holds {count:,} images; this server takes at most "
                                f"{self.settings.max_images} in one request (CLASSIFIER_MAX_IMAGES).")

    def check_cost(self, uploads: Sequence[Upload]) -> None:
        """Refuse a request whose images together would cost more to decode than
        ``CLASSIFIER_MAX_REQUEST_COST``, reckoned from their headers: 32 crafted 762-byte
        JPEGs took 37 s of a worker's CPU (issue 21)."""
        cost = sum(images.decode_cost(upload.data, self.limits) for upload in uploads
                   if self._problem(upload) is None)
        if cost > self.settings.max_request_cost:
            raise RequestTooCostly(
                f"Decoding these images would cost {cost:,} pixel scans (pixels times JPEG scans plus "
                f"{image_checks.PIXEL_WEIGHT}); this server takes at most {self.settings.max_request_cost:,} "
                "in one request (CLASSIFIER_MAX_REQUEST_COST). Send fewer or smaller images, or "
                "baseline rather than progressive JPEGs.")

    def _forward(self, request: PredictRequest) -> Classification:
        started = time.perf_counter()
        self._check_size(request.image)
        url = self._remote_url(request)
        timeouts = Timeouts(self.settings.remote_connect_timeout, self.settings.remote_read_timeout)
        with metrics.FORWARD_SECONDS.labels(request.server).time():
            answer = forward(url, [(request.filename, request.image)], request.forwarded_options(), timeouts,
                             explanation_expected=request.explain,
                             ca_bundle=self.settings.remote_ca_bundle)
        _check_explained(answer, request.explain_class, url)
        timing, result = {**answer.timing_ms, "total": _ms_since(started)}, answer.results[0]
        return Classification(answer.model, answer.weights, result.predictions[: request.top_k], timing,
                              server=request.server, server_url=public_url(url),
                              explanation=result.explanation)

    def _forward_many(self, request: ManyImagesRequest) -> ManyClassifications:
        """All the readable images to the remote in one call; those that could not be read
        (or are over the image limit) keep their own error here, in their place."""
        started, options = time.perf_counter(), request.options
        url = self._remote_url(options)
        problems = {index: self._problem(upload) for index, upload in enumerate(request.uploads)}
        sent = [upload for index, upload in enumerate(request.uploads) if problems[index] is None]
        timeouts = Timeouts(self.settings.remote_connect_timeout, self.settings.remote_read_timeout)
        answer = RemoteAnswer(options.model or "default", "unknown", [], {})  # if nothing is sent
        if sent:
            with metrics.FORWARD_SECONDS.labels(options.server).time():
                answer = forward(url, [(upload.filename, upload.data) for upload in sent],
                                 options.forwarded_options(), timeouts, explanation_expected=options.explain,
                                 ca_bundle=self.settings.remote_ca_bundle)
            _check_explained(answer, options.explain_class, url)
        relayed = iter(answer.results)
        results = [ImageResult.failed(upload.filename, problem) if (problem := problems[index])
                   else _relayed(upload.filename, next(relayed), options.top_k)
                   for index, upload in enumerate(request.uploads)]
        return ManyClassifications(answer.model, answer.weights, results,
                                   {**answer.timing_ms, "total": _ms_since(started)},
                                   server=options.server, server_url=public_url(url))

    def _problem(self, upload: Upload) -> ClassifierError | None:
        """Why ``upload`` is not sent on or decoded: unreadable, or over the image limit."""
        if upload.problem is not None:
            return upload.problem
        if len(upload.data) > self.settings.max_upload_bytes:
            return ImageTooLarge.over(self.settings.max_upload_bytes)
        return None

    def _remote_url(self, request: PredictRequest) -> str:
        if request.server == "remote":
            if not self.settings.remote_url:
                raise InvalidRequest("No remote server is configured here (CLASSIFIER_REMOTE_URL).")
            return self.settings.remote_url
        if not self.settings.allow_custom_remote:
            raise RemoteNotAllowed("Custom remote URLs are disabled on this server.")
        if not request.remote_url:
            raise InvalidRequest("server=custom needs a remote_url.")
        check_url(request.remote_url)
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
        framed = images.framed(image, spec.input_size, self.limits, keep_photo=explain)
        decoded = time.perf_counter()
        loaded, was_loaded = self._ready(spec, explain)
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
        return Classification(loaded.spec.name, loaded.weights, predictions, timing, explanation=explanation,
                              photo=framed.photo)

    def classify_many(self, uploads: Sequence[Upload], model: str | None = None, top_k: int = DEFAULT_TOP_K, *,
                      explain: bool = False, explain_class: str | None = None,
                      still_wanted: Callable[[], None] = lambda: None) -> ManyClassifications:
        """Classify each of ``uploads`` with ``model`` in this process, a batch at a time (the
        runtime's ``batch_size``, or ``CLASSIFIER_BATCH_SIZE``): a batch is decoded (an image that
        fails gets its error), run through the model in one pass, and let go before the next is
        decoded, so a request never holds more than one batch of decoded images. The request's
        decode cost is checked first (``check_cost``), then the model is loaded: an unknown or
        unavailable model fails the whole request. ``still_wanted`` is called before each
        batch and raises to stop a request nobody waits for any more."""
        started = time.perf_counter()
        self.check_cost(uploads)
        spec = get_spec(model or self.default_model)
        loaded, was_loaded = self._ready(spec, explain)
        totals = {"decode": 0.0, "inference": 0.0, **({} if was_loaded else {"load": _ms_since(started)})}
        results: list[ImageResult] = []
        for batch in _batches(uploads, self.settings.batch_size or loaded.runtime.batch_size):
            still_wanted()
            framed = [self._framed_or_error(upload, spec, totals) for upload in batch]
            results += self._classify_batch(loaded, batch, framed, top_k, explain, explain_class, totals)
        timing = {name: round(value, 2) for name, value in totals.items()}
        return ManyClassifications(loaded.spec.name, loaded.weights, results, {**timing, "total": _ms_since(started)})

    def _framed_or_error(self, upload: Upload, spec: ModelSpec,
                         totals: dict[str, float]) -> tuple[images.Framed | ClassifierError, float]:
        """The model's input from ``upload`` (or the error it gave) and the milliseconds it took."""
        started = time.perf_counter()
        try:
            if (problem := self._problem(upload)) is not None:
                raise problem
            result: images.Framed | ClassifierError = images.framed(upload.data, spec.input_size, self.limits)
        except ClassifierError as error:
            result = error
        seconds = time.perf_counter() - started
        metrics.DECODE_SECONDS.observe(seconds)
        totals["decode"] += seconds * 1000
        return result, round(seconds * 1000, 2)

    def _ready(self, spec: ModelSpec, explain: bool) -> tuple[LoadedModel, bool]:
        """The loaded model and whether it was loaded already, refused if an explanation is
        asked of one that cannot give it."""
        loaded, was_loaded = self.catalog.ready(spec.name)
        if explain and not loaded.explainable:
            raise InvalidRequest(f"{spec.name} cannot explain its answers here; GET /models says which can.")
        return loaded, was_loaded

    def _classify_batch(self, loaded: LoadedModel, batch: Sequence[Upload],
                        framed: list[tuple[images.Framed | ClassifierError, float]], top_k: int, explain: bool,
                        explain_class: str | None, totals: dict[str, float]) -> list[ImageResult]:
        """One forward pass over the batch's decoded images; each image's share of its time
        is that image's ``inference``."""
        decoded = [item for item, _ in framed if isinstance(item, images.Framed)]
        scores, features, share = np.empty((0, 1000)), None, 0.0
        if decoded:
            started = time.perf_counter()
            scores, features = loaded.scores_and_features(np.stack([item.pixels for item in decoded]))
            seconds = time.perf_counter() - started
            metrics.INFERENCE_SECONDS.labels(loaded.spec.name, loaded.runtime.name).observe(seconds)
            metrics.IMAGES.labels(loaded.spec.name).inc(len(scores))
            totals["inference"] += seconds * 1000
            share = round(seconds * 1000 / len(decoded), 2)
        rows = iter(range(len(decoded)))
        results = []
        for upload, (item, decode_ms) in zip(batch, framed):
            if isinstance(item, ClassifierError):
                results.append(ImageResult.failed(upload.filename, item))
                continue
            row = next(rows)
            row_features = None if features is None else features[row:row + 1]
            explained = (explain_class or "") if explain else None
            results.append(_image_result(loaded, upload.filename, item, scores[row], row_features, top_k, explained,
                                         {"decode": decode_ms, "inference": share}))
        return results

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

    def prepare_default(self) -> None:
        """Start loading the default model in the background, once (the warm-up at start, or a
        readiness probe of a server started without one), so that no request waits for it."""
        if self._preparing.acquire(blocking=False):
            threading.Thread(target=self._warm_up, daemon=True, name="warm-up").start()

    def _warm_up(self) -> None:
        model = self.default_model
        if preparation := self.first_use(model):
            log.info("%s", preparation.preparing_line(model))
        try:
            self.load_model(model)
        except ClassifierError as error:
            log.warning("default model %s not warmed up: %s", model, error.message)
        else:
            log.info("default model %s loaded", model)

    def first_use(self, model: str) -> ModelState | None:
        """How ``model``'s first use here would be prepared, when it is not loaded and that
        takes long enough to say (a conversion, or building a Keras model)."""
        spec = get_spec(model)
        if self.catalog.state(spec).state != status.READY:
            return None
        preparing = self.catalog.preparing(spec)
        return preparing if preparing.once or preparing.seconds > FIRST_USE_SECONDS["open"] else None

    def check_ready(self) -> str:
        """The default model's name if it answers at once here (loaded in this process), else
        ``ModelUnavailable`` in the words of its state; a model nothing prepares yet is started."""
        model = self.default_model
        state = self.catalog.state(get_spec(model))
        if state.state == status.LOADED:
            return model
        if state.state == status.READY:
            self.prepare_default()
            state = self.catalog.preparing(get_spec(model))
        raise state.error_for(model)

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


def _check_explained(answer: RemoteAnswer, explain_class: str | None, url: str) -> None:
    """A remote's maps must be of the class the request named (by class_id or label): one of
    another class would be shown under the wrong name."""
    if explain_class is None:
        return
    wanted = {labels.class_index()[number][0] for number in labels.class_numbers(explain_class)}
    if any(result.explanation and result.explanation["class_id"] not in wanted for result in answer.results):
        raise RemoteError(f"The remote server at {public_url(url)} explained another class than "
                          f"{explain_class}.")


Answer = TypeVar("Answer", Classification, ManyClassifications)


def _counted(options: PredictRequest, forwarded: bool, here: Callable[[], Answer],
             there: Callable[[], Answer]) -> Answer:
    """The answer from this host (``here``) or the remote (``there``), as ``options`` ask
    (a ``forwarded`` request is always answered here: no loops), counted as one prediction."""
    server = "local" if forwarded else options.server
    with counting_prediction(server, options.model) as counted:
        result = here() if server == "local" else there()
        counted.model = result.model
    return result


def _image_result(loaded: LoadedModel, filename: str, framed: images.Framed, scores: np.ndarray,
                  features: np.ndarray | None, top_k: int, explained: str | None,
                  timing: dict[str, float]) -> ImageResult:
    """One image's predictions from its row of a batch's pass; with ``explained`` (a class,
    or "" for the top one), its explanation too."""
    predictions = labels.top_k(scores, top_k)
    explanation = None
    if explained is not None:
        started = time.perf_counter()
        explanation = _explanation(loaded, framed, scores, features, explained or predictions[0].class_id).to_json()
        timing["explain"] = _ms_since(started)
    return ImageResult(filename, predictions, {**timing, "total": round(sum(timing.values()), 2)}, explanation)


def _batches(uploads: Sequence[Upload], size: int) -> Iterator[Sequence[Upload]]:
    for start in range(0, len(uploads), size):
        yield uploads[start:start + size]


def _relayed(filename: str, result: RemoteResult, top_k: int) -> ImageResult:
    """A remote's answer for one image, under the name the client gave it here."""
    if result.error is not None:
        return ImageResult(filename, error=result.error)
    return ImageResult(filename, result.predictions[:top_k], result.timing_ms, result.explanation)


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((end or time.perf_counter()) - start) * 1000, 2)
