"""The one client of another instance's ``POST /predict``: forwarding and the CLI's ``--remote``.

Images go as multipart, one ``image`` part each; redirects are refused; the whole exchange
(connecting, sending, the status line, the headers, the answer) happens within one deadline,
the connect and read timeouts together, however slowly the remote trickles; at most
``MAX_RESPONSE_BYTES`` per image are read. What comes back is an ``Exchange``: its status,
its ``Retry-After`` in seconds and its JSON document. A remote that does not answer is a
``RemoteTimeout`` or ``RemoteError``; ``refusal`` turns a non-200 into this service's error
of the same meaning, and ``forward`` is forwarding's whole round trip.

Forwarding's requests carry ``HOP_HEADER``; an instance that receives it always answers
itself, so two instances pointed at each other cannot loop. They also carry the id of the
request being forwarded (``X-Request-ID``), so the remote logs the prediction under the same id.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
import urllib3.exceptions

from classifier.errors import (
    RemoteBusy,
    RemoteError,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
)
from classifier.forwarding.answers import (
    RemoteAnswer,
    checked_answer,
    json_or_none,
    service_error_message,
)
from classifier.forwarding.deadline import Deadline, WatchedConnection
from classifier.forwarding.policy import GuardedConnection
from classifier.request_ids import HEADER as REQUEST_ID_HEADER
from classifier.request_ids import current_request_id
from classifier.urls import public_url

HOP_HEADER = "X-Classifier-Hop"
MAX_RESPONSE_BYTES = 1 << 20  # per image sent
MAX_RETRY_AFTER_SECONDS = 600  # a remote may not tell our callers to stay away for longer
# This system's certificate authorities (Debian's ca-certificates), rather than the copy
# requests ships: an operator who adds a CA to the system expects forwarding to trust it.
SYSTEM_CAS = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().capath or True


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float

    @property
    def total(self) -> float:
        """The whole exchange's deadline."""
        return self.connect + self.read


@dataclass(frozen=True)
class Exchange:
    """A remote's answer: its status, ``Retry-After`` (whole seconds, capped; ``None`` if it gave
    none or an HTTP date) and JSON document (``None`` if the body is not JSON)."""

    status: int
    retry_after: int | None
    document: object


def _pool_classes(*mixins: type) -> dict[str, type]:
    """urllib3 pool classes whose connections have ``mixins``, by scheme."""
    return {scheme: type(f"{name}Pool", (pool,), {"ConnectionCls": type(name, (*mixins, connection), {})})
            for scheme, name, pool, connection in (
                ("http", "HTTPConnection", urllib3.HTTPConnectionPool, urllib3.connection.HTTPConnection),
                ("https", "HTTPSConnection", urllib3.HTTPSConnectionPool, urllib3.connection.HTTPSConnection))}


_GUARDED_POOLS = _pool_classes(GuardedConnection, WatchedConnection)  # forwarding: the SSRF policy holds
_WATCHED_POOLS = _pool_classes(WatchedConnection)  # the CLI: the user's own choice of server


class _Adapter(requests.adapters.HTTPAdapter):
    def __init__(self, pools: dict[str, type], pool_size: int) -> None:
        self._pools = pools  # read by init_poolmanager, which the base class's __init__ calls
        super().__init__(pool_maxsize=pool_size)

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools


class PredictClient:
    """Exchanges with the ``/predict`` at ``url``; thread-safe, one connection per thread in
    flight (up to ``pool_size`` kept). ``subject`` is how messages name the server.

    ``guarded`` holds every connection to the SSRF policy (``policy``) and ignores proxies
    from the environment, which would connect on our behalf, unchecked.
    """

    def __init__(self, url: str, timeouts: Timeouts, *, subject: str, guarded: bool = True,
                 headers: Mapping[str, str] | None = None, pool_size: int = 1,
                 ca_bundle: Path | None = None) -> None:
        self.url, self.timeouts, self.subject, self.ca_bundle = url, timeouts, subject, ca_bundle
        self.session = requests.Session()
        self.session.trust_env = not guarded
        # https remotes: their certificate must chain to ``ca_bundle``'s CAs, else the system's.
        self.session.verify = str(ca_bundle) if ca_bundle else SYSTEM_CAS
        self.session.headers.update(headers or {})
        adapter = _Adapter(_GUARDED_POOLS if guarded else _WATCHED_POOLS, pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __enter__(self) -> PredictClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def exchange(self, uploads: Sequence[tuple[str, bytes]], fields: Mapping[str, str]) -> Exchange:
        """POST ``uploads`` (file name, bytes) as ``image`` parts with ``fields``, all of it
        within ``timeouts.total``. ``RemoteTimeout`` if the time ran out, ``RemoteError`` if
        the remote could not be reached or answered more than ``MAX_RESPONSE_BYTES`` per image."""
        timed_out = RemoteTimeout(f"{self.subject} did not answer in time.")
        with Deadline(self.timeouts.total) as deadline:
            try:
                with self.session.post(self.url, files=[("image", upload) for upload in uploads], data=dict(fields),
                                       timeout=(self.timeouts.connect, self.timeouts.read), allow_redirects=False,
                                       stream=True) as response:
                    body = self._read_capped(response, MAX_RESPONSE_BYTES * len(uploads))
                if deadline.expired:  # cut short: what was read up to then may look like an answer
                    raise timed_out
            except (requests.Timeout, urllib3.exceptions.TimeoutError):
                raise timed_out from None
            except requests.exceptions.SSLError as error:
                raise self._unverified(error) from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                if deadline.expired:  # cut at the deadline
                    raise timed_out from None
                raise RemoteError(f"{self.subject} could not be reached ({type(error).__name__}).") from None
        return Exchange(response.status_code, retry_after_seconds(response.headers.get("Retry-After")),
                        json_or_none(body))

    def _unverified(self, error: requests.exceptions.SSLError) -> RemoteError:
        """The error for an https remote whose certificate could not be verified, saying
        whom it was checked against and OpenSSL's reason."""
        reason = re.search(r"certificate verify failed: ([^(]+?)\s*\(", str(error))
        trusted = (f"the CAs in CLASSIFIER_REMOTE_CA_BUNDLE ({self.ca_bundle})" if self.ca_bundle else
                   "this system's certificate authorities (a private CA goes in CLASSIFIER_REMOTE_CA_BUNDLE)")
        why = f": {reason.group(1)}" if reason else f" ({type(error).__name__})"
        return RemoteError(f"{self.subject} has a certificate that could not be verified against {trusted}{why}.")

    def _read_capped(self, response: requests.Response, max_bytes: int) -> bytes:
        """The body, up to ``max_bytes``; it ends early if the deadline cuts the connection."""
        body = bytearray()
        while chunk := response.raw.read1(64 * 1024, decode_content=True):
            body += chunk
            if len(body) > max_bytes:
                raise RemoteError(f"{self.subject} sent an answer that exceeded {max_bytes} bytes.")
        return bytes(body)

    def refusal(self, exchange: Exchange) -> RemoteError:
        """The error for a non-200 answer, keeping its status where it means the same to our
        caller: a fault in the request (400, 413, 415) or "come back later" (429, 503)."""
        status = exchange.status
        message = f"{self.subject} answered {status}"
        relayed = service_error_message(exchange.document)
        message += f": {relayed}" if relayed else "."
        if status in (404, 405):
            message += predict_hint(self.url)
        if status in (400, 413, 415):
            return RemoteRejected(message, status=status)
        if status == 429:
            return RemoteBusy(message, retry_after=exchange.retry_after)
        if status == 503:
            return RemoteUnavailable(message, retry_after=exchange.retry_after)
        return RemoteError(message)

    def unexpected(self) -> RemoteError:
        """The error for an answer that is not this service's."""
        return RemoteError(f"{self.subject} answered in an unexpected format." + predict_hint(self.url))


def forward(url: str, uploads: Sequence[tuple[str, bytes]], fields: Mapping[str, str], timeouts: Timeouts,
            explanation_expected: bool = False, ca_bundle: Path | None = None) -> RemoteAnswer:
    """Send images (file name, bytes) to ``url`` in one request and return the remote's checked
    answer, one result per image in order (``answers.checked_answer``); with
    ``explanation_expected``, explanations too (one that is missing, from an instance older
    than explanations, is left out rather than failing the prediction). The URL is held to the
    SSRF policy at connection time, an https one's certificate to ``ca_bundle`` (else the
    system's CAs); the request being handled, if any, lends its id."""
    request_id = current_request_id()
    headers = {HOP_HEADER: "1", "Accept": "application/json", **({REQUEST_ID_HEADER: request_id} if request_id else {})}
    with PredictClient(url, timeouts, subject=f"The remote server at {public_url(url)}", headers=headers,
                       ca_bundle=ca_bundle) as client:
        exchange = client.exchange(uploads, fields)
        if exchange.status != 200:
            raise client.refusal(exchange)
        try:
            return checked_answer(exchange.document, len(uploads), explanation_expected)
        except ValueError:
            raise client.unexpected() from None


def retry_after_seconds(header: str | None) -> int | None:
    """``Retry-After`` in seconds, capped; an HTTP date or nonsense gives no hint at all."""
    if header is None or not header.strip().isdigit():
        return None
    return min(int(header), MAX_RETRY_AFTER_SECONDS)


def predict_url(url: str) -> str:
    """``url``, with ``/predict`` added when it names only the server (``http://host:5000``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/predict")) if parts.path in ("", "/") else url


def predict_hint(url: str) -> str:
    """Help for the common slip of giving the remote's home page instead of its API."""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/predict"):
        return ""
    suggestion = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/predict"))
    return f" Did you mean {suggestion}?"
