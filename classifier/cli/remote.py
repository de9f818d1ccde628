"""The CLI's ``--remote``: a folder of images sent to a running server's ``POST /predict``.

A person with a hosted server and a laptop classifies a folder without loading any model
locally. Images go several to a request (multipart, one ``image`` part each: the API's
multi-image form), a few requests at a time, each within the server's limits; the server's
"come back later" (429 from NGINX's rate limit, a 503 saying when a model will be there) is
obeyed with its ``Retry-After``, a bounded number of times. Every image ends with an answer
or a reason.
A server too old to take several images answers only the first of them; the client notices
and sends one image per request from then on.

The server is not trusted any more than forwarding trusts a remote: the requests go through
forwarding's own client (``forwarding.client``: one deadline for the whole request, a capped
read) and the answers through its checks (``forwarding.answers``); an answer that fails them
fails its images, and the run goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from classifier.cli.discovery import Outcome, read_image
from classifier.errors import ClassifierError
from classifier.forwarding.answers import checked_name, checked_result, service_error
from classifier.forwarding.client import Exchange, PredictClient, Timeouts
from classifier.serving.options import SERVERS, Options
from classifier.serving.results import Classification
from classifier.urls import public_url

IMAGES_PER_REQUEST = 8  # well under the server's CLASSIFIER_MAX_IMAGES (32); progress moves often enough
BYTES_PER_REQUEST = 12 * 2**20  # of images: under the 16 MiB body limit of servers older than several images
REQUESTS_IN_FLIGHT = 4  # half of NGINX's 8 uploads at once per address (remote/nginx)
MAX_ATTEMPTS = 5  # one request, the first try and four after a 429 or 503
MAX_WAIT_SECONDS = 60.0  # all the waits of one request together; past that its images fail
DEFAULT_RETRY_AFTER_SECONDS = 1.0  # a 429 that does not say how long to wait
RETRIED_STATUSES = (429, 503)
USER_AGENT = "keras-image-classifier-cli/1.0"

Notify = Callable[[str], None]


def batches(paths: list[Path]) -> list[list[Path]]:
    """``paths`` in order, cut into requests of at most ``IMAGES_PER_REQUEST`` images and
    ``BYTES_PER_REQUEST`` bytes (a larger image goes alone; the size check fails it)."""
    groups: list[list[Path]] = []
    size = 0
    for path in paths:
        try:
            length = path.stat().st_size
        except OSError:
            length = 0  # reading it fails it, with the reason
        if not groups or len(groups[-1]) >= IMAGES_PER_REQUEST or size + length > BYTES_PER_REQUEST:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += length
    return groups


@dataclass
class RemoteClient:
    """Sends batches of image files to one server; ``classify`` is thread-safe."""

    url: str
    options: Options  # what the server is asked
    timeouts: Timeouts
    max_image_bytes: int
    notify: Notify
    one_per_request: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.shown = public_url(self.url)
        self.client = PredictClient(self.url, self.timeouts, subject=self.shown, guarded=False,
                                    headers={"User-Agent": USER_AGENT}, pool_size=REQUESTS_IN_FLIGHT)

    def classify(self, paths: list[Path]) -> list[Outcome]:
        """One outcome per path, in order: read here, sent in one request where possible."""
        outcomes: dict[Path, Outcome] = {}
        images: list[tuple[Path, bytes]] = []
        for path in paths:
            try:
                images.append((path, read_image(path, self.max_image_bytes)))
            except ClassifierError as error:
                outcomes[path] = Outcome.failed(path, error.code, error.message)
            except OSError as error:
                outcomes[path] = Outcome.failed(path, "unreadable_file", error.strerror or str(error))
        outcomes.update((outcome.path, outcome) for outcome in self._send(images))
        return [outcomes[path] for path in paths]

    def _send(self, images: list[tuple[Path, bytes]]) -> list[Outcome]:
        """Outcomes for ``images`` from as few requests as the server allows: a 413 to several
        splits them in two, and a refusal of several that may be one image's fault (a server
        that reads one image per request refuses the request for it) asks for each alone."""
        if not images:
            return []
        if len(images) > 1 and self.one_per_request.is_set():
            return [outcome for image in images for outcome in self._send([image])]
        try:
            answer = self._post(images)
        except ClassifierError as error:  # no answer: every image in the request fails with the reason
            return [Outcome.failed(path, error.code, error.message) for path, _ in images]
        status, document = answer.status, answer.document
        if status == 200 and isinstance(document, dict):
            if "results" in document:
                return self._results(images, document)
            if len(images) > 1:  # an older server: it answered for the first image only
                self.one_per_request.set()
                return self._send(images)
        if status == 413 and len(images) > 1:  # too many images or bytes for this server
            half = len(images) // 2
            return self._send(images[:half]) + self._send(images[half:])
        if status != 200 and status not in RETRIED_STATUSES and len(images) > 1:
            # One image's fault (on a server that takes one) or the request's: each image says.
            return [outcome for image in images for outcome in self._send([image])]
        return [self._single(path, status, document) for path, _ in images]

    def _post(self, images: list[tuple[Path, bytes]]) -> Exchange:
        """The server's answer; waits and tries again on 429 and 503 as long as the attempts
        and the total wait allow, then returns the last refusal."""
        waited = 0.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            answer = self.client.exchange([(path.name, data) for path, data in images],
                                          self.options.forwarded_options())
            delay = _retry_delay(answer)
            if delay is None or attempt == MAX_ATTEMPTS or waited + delay > MAX_WAIT_SECONDS:
                return answer
            code, _ = self._refusal(answer.status, answer.document)
            self.notify(f"{self.shown} answered {answer.status} ({code}) to {len(images)} image(s); "
                        f"trying again in {delay:g} s")
            time.sleep(delay)  # the server asked for this pause (Retry-After)
            waited += delay
        raise AssertionError("unreachable: the last attempt returns")

    def _results(self, images: list[tuple[Path, bytes]], document: dict) -> list[Outcome]:
        results = document["results"]
        if not isinstance(results, list) or len(results) != len(images):
            return [Outcome.failed(path, *self._unexpected()) for path, _ in images]
        shared = {key: document.get(key) for key in ("model", "weights", "server")}
        return [self._single(path, 200, {**shared, **item} if isinstance(item, dict) else None)
                for (path, _), item in zip(images, results)]

    def _single(self, path: Path, status: int, document: object) -> Outcome:
        """One image's outcome from its answer: the API's single answer, or one of ``results``,
        checked as forwarding checks a remote's and rebuilt from what passed."""
        if (isinstance(document, dict) and "error" in document) or status != 200:
            return Outcome.failed(path, *self._refusal(status, document))
        try:
            checked = checked_result(document, self.options.explain)
            answer = Classification(checked_name(document["model"]), checked_name(document["weights"]),
                                    checked.predictions, checked.timing_ms,
                                    server=document.get("server") if document.get("server") in SERVERS else "remote",
                                    explanation=checked.explanation)
        except (KeyError, TypeError, ValueError):
            return Outcome.failed(path, *self._unexpected())
        return Outcome(path, answer.to_json())

    def _refusal(self, status: int, document: object) -> tuple[str, str]:
        """The server's own code and message when it answered in the service's error shape,
        checked and shortened as forwarding does."""
        error = service_error({"error": document.get("error")}) if isinstance(document, dict) else None
        return error or (f"http_{status}", f"{self.shown} answered {status}.")

    def _unexpected(self) -> tuple[str, str]:
        error = self.client.unexpected()
        return error.code, error.message


def _retry_delay(answer: Exchange) -> float | None:
    """Seconds to wait before trying again, or ``None``: don't. A 429 is always worth a
    retry (a rate limit refills); a 503 only when it says when (the app's do when waiting
    helps, as while a model downloads; one for weights that are not there never will)."""
    if answer.status not in RETRIED_STATUSES:
        return None
    if answer.retry_after is not None:
        return float(answer.retry_after)
    return DEFAULT_RETRY_AFTER_SECONDS if answer.status == 429 else None
