"""A request answered by another instance: the readable images sent on in one call, those
that could not be read (or are over the image limit) keeping their own error here, in their
place; the remote's checked answer relayed under the names the client gave."""

from __future__ import annotations

import time

from classifier import metrics
from classifier.config import Settings
from classifier.errors import (
    ClassifierError,
    ImageTooLarge,
    InvalidRequest,
    RemoteError,
    RemoteNotAllowed,
)
from classifier.forwarding.answers import RemoteAnswer, RemoteResult
from classifier.forwarding.client import Timeouts, forward
from classifier.forwarding.policy import check_url
from classifier.models import labels
from classifier.serving.options import Options, PredictRequest, Upload
from classifier.serving.results import Answer, ImageResult
from classifier.urls import public_url


def relay(request: PredictRequest, settings: Settings) -> Answer:
    """``request`` answered by the remote its options name; the image of a ``single`` request
    that cannot be sent fails the request, before the remote is chosen."""
    started, options = time.perf_counter(), request.options
    problems = [upload_problem(upload, settings) for upload in request.uploads]
    if request.single and problems[0] is not None:
        raise problems[0]
    url = remote_url(options, settings)
    sent = [upload for upload, problem in zip(request.uploads, problems) if problem is None]
    timeouts = Timeouts(settings.remote_connect_timeout, settings.remote_read_timeout)
    answer = RemoteAnswer(options.model or "default", "unknown", [], {})  # if nothing is sent
    if sent:
        with metrics.FORWARD_SECONDS.labels(options.server).time():
            answer = forward(url, [(upload.filename, upload.data) for upload in sent],
                             options.forwarded_options(), timeouts, explanation_expected=options.explain,
                             ca_bundle=settings.remote_ca_bundle)
        _check_explained(answer, options.explain_class, url)
    relayed = iter(answer.results)
    results = [ImageResult.failed(upload.filename, problem) if problem
               else _relayed(upload.filename, next(relayed), options.top_k)
               for upload, problem in zip(request.uploads, problems)]
    total = round((time.perf_counter() - started) * 1000, 2)
    return Answer(answer.model, answer.weights, results, {**answer.timing_ms, "total": total},
                  server=options.server, server_url=public_url(url))


def upload_problem(upload: Upload, settings: Settings) -> ClassifierError | None:
    """Why ``upload`` is not sent on or decoded: unreadable, or over the image limit."""
    if upload.problem is not None:
        return upload.problem
    if len(upload.data) > settings.max_upload_bytes:
        return ImageTooLarge.over(settings.max_upload_bytes)
    return None


def remote_url(options: Options, settings: Settings) -> str:
    """The configured remote, or a custom one where allowed and held to the SSRF policy."""
    if options.server == "remote":
        if not settings.remote_url:
            raise InvalidRequest("No remote server is configured here (CLASSIFIER_REMOTE_URL).")
        return settings.remote_url
    if not settings.allow_custom_remote:
        raise RemoteNotAllowed("Custom remote URLs are disabled on this server.")
    if not options.remote_url:
        raise InvalidRequest("server=custom needs a remote_url.")
    check_url(options.remote_url)
    return options.remote_url


def _check_explained(answer: RemoteAnswer, explain_class: str | None, url: str) -> None:
    """A remote's maps must be of the class the request named (by class_id or label): one of
    another class would be shown under the wrong name."""
    if explain_class is None:
        return
    wanted = {labels.class_index()[number][0] for number in labels.class_numbers(explain_class)}
    if any(result.explanation and result.explanation["class_id"] not in wanted for result in answer.results):
        raise RemoteError(f"The remote server at {public_url(url)} explained another class than "
                          f"{explain_class}.")


def _relayed(filename: str, result: RemoteResult, top_k: int) -> ImageResult:
    """A remote's answer for one image, under the name the client gave it here."""
    if result.error is not None:
        return ImageResult(filename, error=result.error)
    return ImageResult(filename, result.predictions[:top_k], result.timing_ms, result.explanation)
