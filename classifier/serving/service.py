"""One prediction, start to finish: images → model → ranked labels, or a forward.

This is the library's front door; the Flask app and the CLI both call ``Classifier``. Every
request is a list of images (one is a list of one) answered with one result per image
(``results.py``). Which models can run and loading them is ``catalog.py``; parsing options is
``options.py``; sending a request on is ``relay.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from classifier import metrics
from classifier.config import Settings
from classifier.errors import ClassifierError, InvalidRequest, RequestTooCostly
from classifier.imaging import image_checks, images
from classifier.models import labels
from classifier.models.download import BackgroundDownloads
from classifier.models.registry import ModelSpec, get_spec
from classifier.runtimes.explain import Explanation
from classifier.serving import status
from classifier.serving.bodies import check_image_count
from classifier.serving.catalog import FIRST_USE_SECONDS, Catalog
from classifier.serving.counted import counting_prediction
from classifier.serving.options import DEFAULT_TOP_K, Options, PredictRequest, Upload
from classifier.serving.pool import POOL, LoadedModel, ModelPool
from classifier.serving.relay import relay, upload_problem
from classifier.serving.results import Answer, Classification, ImageResult
from classifier.serving.status import ModelState

log = logging.getLogger(__name__)

Decoded = tuple[Upload, "images.Framed | ClassifierError", float]
"""An upload, the model's input from it (or the error it gave), and the milliseconds that took."""


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

    def predict(self, request: PredictRequest, forwarded: bool = False,
                still_wanted: Callable[[], None] = lambda: None) -> Answer:
        """Answer ``request`` here or on the remote its options name (a ``forwarded`` request is
        always answered here: no loops), counted as one prediction in
        ``classifier_predictions_total``. Too many images fail it before any is decoded;
        ``still_wanted`` (``classify_request``) stops it between batches."""
        check_image_count(len(request.uploads), self.settings.max_images)
        server = "local" if forwarded else request.options.server
        with counting_prediction(server, request.options.model) as counted:
            answer = self.classify_request(request, still_wanted) if server == "local" \
                else relay(request, self.settings)
            counted.model = answer.model
        return answer

    def classify(self, image: bytes, model: str | None = None, top_k: int = DEFAULT_TOP_K, *,
                 explain: bool = False, explain_class: str | None = None) -> Classification:
        """Classify ``image`` with ``model`` (default: the default model) in this process; with
        ``explain``, also say where it looked for ``explain_class`` (default: the top class).
        ``timing_ms.total`` is the whole wait, with ``load`` on its own when this call had to
        load the model. For library callers and the CLI; not counted as a prediction."""
        options = Options(model=model, top_k=top_k, explain=explain or explain_class is not None,
                          explain_class=explain_class)
        return Classification.of(self.classify_request(PredictRequest.one(image, options)))

    def classify_request(self, request: PredictRequest, still_wanted: Callable[[], None] = lambda: None) -> Answer:
        """Classify each image of ``request`` in this process, a batch at a time (the runtime's
        ``batch_size``, or ``CLASSIFIER_BATCH_SIZE``): a batch is decoded (an image that fails
        gets its error, or fails a ``single`` request), run through the model in one pass, and
        let go before the next is decoded, so a request never holds more than one batch of
        decoded images. The decode cost of several is checked first (``check_cost``; one image
        in the single form is held to the per-image limits as it decodes), and the first image
        decoded before the model is touched: an undecodable upload is refused without waiting
        for a model to load. An unknown or unavailable model fails the whole request.
        ``still_wanted`` is called before each batch (but a first one the caller has just
        asked about) and raises to stop a request nobody waits for any more."""
        started, options = time.perf_counter(), request.options
        if not request.single:
            self.check_cost(request.uploads)
        spec = get_spec(options.model) if options.model else self.catalog.default()
        totals = {"decode": 0.0, "inference": 0.0}
        decoded = (self._decoded(upload, spec, request, totals) for upload in request.uploads)
        first = next(decoded)
        loading = time.perf_counter()
        loaded, was_loaded = self._ready(spec, options.explain)
        if not was_loaded:
            totals["load"] = (time.perf_counter() - loading) * 1000
        results: list[ImageResult] = []
        batch_size = self.settings.batch_size or loaded.runtime.batch_size
        for number, batch in enumerate(_batches(itertools.chain([first], decoded), batch_size)):
            if number or not was_loaded:  # the caller asked just before a first batch with a loaded model
                still_wanted()
            results += self._classify_batch(loaded, batch, options, totals)
        timing = {name: round(value, 2) for name, value in totals.items()}
        return Answer(loaded.spec.name, loaded.weights, results, {**timing, "total": _ms_since(started)})

    def check_cost(self, uploads: Sequence[Upload]) -> None:
        """Refuse a request whose images together would cost more to decode than
        ``CLASSIFIER_MAX_REQUEST_COST``, reckoned from their headers: 32 crafted 762-byte
        JPEGs took 37 s of a worker's CPU (issue 21)."""
        cost = sum(images.decode_cost(upload.data, self.limits) for upload in uploads
                   if upload_problem(upload, self.settings) is None)
        if cost > self.settings.max_request_cost:
            raise RequestTooCostly(
                f"Decoding these images would cost {cost:,} pixel scans (pixels times JPEG scans plus "
                f"{image_checks.PIXEL_WEIGHT}); this server takes at most {self.settings.max_request_cost:,} "
                "in one request (CLASSIFIER_MAX_REQUEST_COST). Send fewer or smaller images, or "
                "baseline rather than progressive JPEGs.")

    def _decoded(self, upload: Upload, spec: ModelSpec, request: PredictRequest, totals: dict[str, float]) -> Decoded:
        """The model's input from ``upload``, or the error it gave (raised for a ``single``
        request, whose photo is kept when it is to be explained)."""
        started = time.perf_counter()
        try:
            if (problem := upload_problem(upload, self.settings)) is not None:
                raise problem
            keep_photo = request.single and request.options.explain
            result: images.Framed | ClassifierError = images.framed(upload.data, spec.input_size, self.limits,
                                                                    keep_photo=keep_photo)
        except ClassifierError as error:
            if request.single:
                raise
            result = error
        seconds = time.perf_counter() - started
        metrics.DECODE_SECONDS.observe(seconds)
        totals["decode"] += seconds * 1000
        return upload, result, round(seconds * 1000, 2)

    def _ready(self, spec: ModelSpec, explain: bool) -> tuple[LoadedModel, bool]:
        """The loaded model and whether it was loaded already, refused if an explanation is
        asked of one that cannot give it."""
        loaded, was_loaded = self.catalog.ready(spec)
        if explain and not loaded.explainable:
            raise InvalidRequest(f"{spec.name} cannot explain its answers here; GET /models says which can.")
        return loaded, was_loaded

    def _classify_batch(self, loaded: LoadedModel, batch: Sequence[Decoded], options: Options,
                        totals: dict[str, float]) -> list[ImageResult]:
        """One forward pass over the batch's decoded images; each image's share of its time
        is that image's ``inference``."""
        framed = [item for _, item, _ in batch if isinstance(item, images.Framed)]
        scores, features, share = np.empty((0, 1000)), None, 0.0
        if framed:
            started = time.perf_counter()
            scores, features = loaded.scores_and_features(np.array([item.pixels for item in framed]))
            seconds = time.perf_counter() - started
            metrics.INFERENCE_SECONDS.labels(loaded.spec.name, loaded.runtime.name).observe(seconds)
            metrics.IMAGES.labels(loaded.spec.name).inc(len(scores))
            totals["inference"] += seconds * 1000
            share = round(seconds * 1000 / len(framed), 2)
        rows = iter(range(len(framed)))
        results = []
        for upload, item, decode_ms in batch:
            if isinstance(item, ClassifierError):
                results.append(ImageResult.failed(upload.filename, item))
                continue
            row = next(rows)
            row_features = None if features is None else features[row:row + 1]
            results.append(_image_result(loaded, upload.filename, item, scores[row], row_features, options,
                                         {"decode": decode_ms, "inference": share}))
        return results

    @property
    def default_model(self) -> str:
        """The configured default, else the first registered model that is usable here."""
        return self.catalog.default().name

    def load_model(self, name: str) -> LoadedModel:
        """The loaded model, or ``ModelUnavailable`` saying why and what to do."""
        return self.catalog.load(get_spec(name))

    def prepare_default(self) -> None:
        """Start loading the default model in the background, once (the warm-up at start, or a
        readiness probe of a server started without one), so that no request waits for it.
        It counts as preparing from this call on: the thread checks files before its load
        begins, and meanwhile ``GET /models`` must not call it "ready" (not started) while
        ``/readyz`` refuses."""
        if not self._preparing.acquire(blocking=False):
            return
        spec = self.catalog.default()
        if preparation := self.first_use(spec.name):
            log.info("%s", preparation.preparing_line(spec.name))
        counted = contextlib.ExitStack()
        counted.enter_context(self.pool.loading(spec, self.catalog.serving))
        threading.Thread(target=self._warm_up, args=(spec.name, counted), daemon=True, name="warm-up").start()

    def _warm_up(self, model: str, counted: contextlib.ExitStack) -> None:
        with counted:
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
        """The default model's name if it answers at once here (loaded in this process) from an
        ONNX file that still matches its checked record (or on Keras), else ``ModelUnavailable``
        in the words of its state; a model nothing prepares yet is started."""
        spec = self.catalog.default()
        state = self.catalog.state(spec)
        if state.state == status.LOADED:
            state = self.catalog.unverified(spec) or state
        if state.state == status.LOADED:
            return spec.name
        if state.state == status.READY:
            self.prepare_default()
            state = self.catalog.preparing(spec)
        raise state.error_for(spec.name)

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


def _image_result(loaded: LoadedModel, filename: str, framed: images.Framed, scores: np.ndarray,
                  features: np.ndarray | None, options: Options, timing: dict[str, float]) -> ImageResult:
    """One image's predictions from its row of a batch's pass; with ``options.explain``, its
    explanation too (of ``explain_class``, or of the top prediction)."""
    predictions = labels.top_k(scores, options.top_k)
    explanation = None
    if options.explain:
        started = time.perf_counter()
        explained = options.explain_class or predictions[0].class_id
        explanation = _explanation(loaded, framed, scores, features, explained).to_json()
        timing["explain"] = _ms_since(started)
    return ImageResult(filename, predictions, {**timing, "total": round(sum(timing.values()), 2)}, explanation,
                       photo=framed.photo)


def _batches(decoded: Iterable[Decoded], size: int) -> Iterator[list[Decoded]]:
    """``decoded`` a batch at a time, each decoded only when its batch is taken."""
    iterator = iter(decoded)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((end or time.perf_counter()) - start) * 1000, 2)
