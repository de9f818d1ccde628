"""The CLI's ``--remote``: a folder of images sent to a running server's ``POST /predict``.

A person with a hosted server and a laptop classifies a folder without loading any model
locally. Images go several to a request (multipart, one ``image`` part each: the API's
multi-image form), a few requests at a time, each within the server's limits; the server's
"come back later" (429 from NGINX's rate limit, a 503 saying when a model will be there) is
obeyed with its ``Retry-After``, a bounded number of times. Every image ends with an answer
or a reason.
A server too old to take several images answers only the first of them; the client notices
and sends one image per request from then on.

The server is not trusted any more than forwarding trusts a remote: an answer is read up to
``remote.MAX_RESPONSE_BYTES`` per image and within one deadline for the whole request (connect
and read timeouts together, however slowly it trickles: ``_Deadline`` cuts the connection),
and checked by forwarding's own checks (``remote``); an answer that fails them fails its
images, and the run goes on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
import urllib3.exceptions

from . import remote
from .batch import Outcome, read_image
from .errors import ClassifierError
from .options import SERVERS
from .remote import MAX_RETRY_AFTER_SECONDS, public_url
from .service import Classification

IMAGES_PER_REQUEST = 8  # well under the server's CLASSIFIER_MAX_IMAGES (32); progress moves often enough
BYTES_PER_REQUEST = 12 * 2**20  # of images: under the 16 MiB body limit of servers older than several images
REQUESTS_IN_FLIGHT = 4  # half of NGINX's 8 uploads at once per address (remote/nginx)
MAX_ATTEMPTS = 5  # one request, the first try and four after a 429 or 503
MAX_WAIT_SECONDS = 60.0  # all the waits of one request together; past that its images fail
DEFAULT_RETRY_AFTER_SECONDS = 1.0  # a 429 that does not say how long to wait
RETRIED_STATUSES = (429, 503)
USER_AGENT = "keras-image-classifier-cli/1.0"

Notify = Callable[[str], None]


def predict_url(url: str) -> str:
    """``url``, with ``/predict`` added when it names only the server (``http://host:5000``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/predict")) if parts.path in ("", "/") else url


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


class _Deadline:
    """Cuts a request's connection once its time is up, whatever it is waiting for: the
    server reading the body, the status line, a header, the answer. A timeout per read
    never fires on a server that sends a byte now and then."""

    _this_thread = threading.local()  # the deadline of the request this thread is making

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._connection: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _Deadline._this_thread.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _Deadline._this_thread.current = None

    @classmethod
    def watch(cls, connection: socket.socket | None) -> None:
        """The socket this thread's request goes over, to be cut at its deadline."""
        deadline = getattr(cls._this_thread, "current", None)
        if deadline is not None and connection is not None:
            with deadline._lock:
                deadline._connection = connection
            if deadline.expired:
                deadline._cut()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            if self._connection is not None:
                try:
                    self._connection.shutdown(socket.SHUT_RDWR)  # a blocked send or recv returns at once
                except OSError:  # closed already
                    pass


class _Watched:
    """A connection that hands its socket to this thread's ``_Deadline``: a new one once
    connected, a kept-alive one when a request starts on it."""

    def connect(self) -> None:
        super().connect()
        _Deadline.watch(self.sock)

    def request(self, *args: object, **kwargs: object) -> None:
        _Deadline.watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = type("WatchedHTTPConnection", (_Watched, urllib3.connection.HTTPConnection), {})


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = type("WatchedHTTPSConnection", (_Watched, urllib3.connection.HTTPSConnection), {})


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Failure(Exception):
    """A request that got no usable answer: every image in it fails with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class RemoteClient:
    """Sends batches of image files to one server; ``classify`` is thread-safe."""

    url: str
    fields: Mapping[str, str]
    timeouts: tuple[float, float]
    max_image_bytes: int
    notify: Notify
    session: requests.Session = field(default_factory=requests.Session)
    one_per_request: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.mount(self.url, _WatchedAdapter(pool_maxsize=REQUESTS_IN_FLIGHT))
        self.shown = public_url(self.url)

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
            status, document = self._post(images)
        except _Failure as failure:
            return [Outcome.failed(path, failure.code, failure.message) for path, _ in images]
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

    def _post(self, images: list[tuple[Path, bytes]]) -> tuple[int, object]:
        """The server's status and JSON answer; waits and tries again on 429 and 503 as long
        as the attempts and the total wait allow, then returns the last refusal."""
        waited = 0.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            status, retry_after, document = self._exchange(images)
            delay = _retry_delay(status, retry_after)
            if delay is None or attempt == MAX_ATTEMPTS or waited + delay > MAX_WAIT_SECONDS:
                return status, document
            code, _ = self._refusal(status, document)
            self.notify(f"{self.shown} answered {status} ({code}) to {len(images)} image(s); "
                        f"trying again in {delay:g} s")
            time.sleep(delay)  # the server asked for this pause (Retry-After)
            waited += delay
        raise AssertionError("unreachable: the last attempt returns")

    def _exchange(self, images: list[tuple[Path, bytes]]) -> tuple[int, str | None, object]:
        """One request: the status, ``Retry-After`` and JSON answer, read as forwarding reads
        a remote's (capped), all of it within one deadline; a request with no answer is a ``_Failure``."""
        seconds = sum(self.timeouts)
        timed_out = _Failure("remote_timeout", f"{self.shown} did not answer within {seconds:g} s.")
        ends = time.monotonic() + seconds
        with _Deadline(seconds) as deadline:
            try:
                with self.session.post(self.url, files=[("image", (path.name, data)) for path, data in images],
                                       data=dict(self.fields), timeout=self.timeouts, allow_redirects=False,
                                       stream=True) as response:
                    body = remote._read_capped(response, ends, remote.MAX_RESPONSE_BYTES * len(images))
                if deadline.expired:  # cut short: what was read up to then may look like an answer
                    raise timed_out
                return response.status_code, response.headers.get("Retry-After"), remote._json_or_none(body)
            except ClassifierError as error:  # too long an answer
                raise _Failure(error.code, f"{self.shown}: {error.message}") from None
            except (requests.Timeout, urllib3.exceptions.TimeoutError):
                raise timed_out from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                if deadline.expired:  # cut at the deadline
                    raise timed_out from None
                raise _Failure("remote_error", f"{self.shown} could not be reached ({type(error).__name__}).") from None

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
        if isinstance(document, dict) and "error" in document:
            return Outcome.failed(path, *self._refusal(status, document))
        if status != 200:
            return Outcome.failed(path, *self._refusal(status, document))
        try:
            checked = remote._predictions(remote._expect(document, dict), "explain" in self.fields)
            answer = Classification(remote._expect(document["model"], str), remote._expect(document["weights"], str),
                                    checked.predictions, checked.timing_ms,
                                    server=document.get("server") if document.get("server") in SERVERS else "remote",
                                    explanation=checked.explanation)
        except (KeyError, TypeError, ValueError):
            return Outcome.failed(path, *self._unexpected())
        return Outcome(path, answer.to_json())

    def _refusal(self, status: int, document: object) -> tuple[str, str]:
        """The server's own code and message when it answered in the service's error shape."""
        error = document.get("error") if isinstance(document, dict) else None
        message = remote._service_error_message({"error": error})  # checked and shortened as forwarding does
        if message is not None and remote._ERROR_CODE.fullmatch(error["code"]):
            return error["code"], message
        return f"http_{status}", f"{self.shown} answered {status}."

    def _unexpected(self) -> tuple[str, str]:
        return "remote_error", f"{self.shown} answered in an unexpected format (is it this service's /predict?)."


def _retry_delay(status: int, header: str | None) -> float | None:
    """Seconds to wait before trying again, or ``None``: don't. A 429 is always worth a
    retry (a rate limit refills); a 503 only when it says when (the app's do when waiting
    helps, as while a model downloads; one for weights that are not there never will)."""
    if status not in RETRIED_STATUSES:
        return None
    if (header or "").strip().isdigit():
        return float(min(int(header), MAX_RETRY_AFTER_SECONDS))
    return DEFAULT_RETRY_AFTER_SECONDS if status == 429 else None
