"""Forwarding a prediction to another instance of this service.

The remote answers the same ``/predict`` API; we send the image as multipart, refuse
redirects, cap what we read, and accept the answer only if it has the promised shape.
Requests carry ``HOP_HEADER``; an instance that receives it always answers itself,
so two instances pointed at each other cannot loop. They also carry the id of the request
being forwarded (``X-Request-ID``), so the remote logs the prediction under the same id.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
import urllib3.exceptions
from urllib3.exceptions import NameResolutionError

from .errors import RemoteBusy, RemoteError, RemoteNotAllowed, RemoteRejected, RemoteTimeout, RemoteUnavailable
from .explain import heatmap_image
from .labels import Prediction
from .request_ids import HEADER as REQUEST_ID_HEADER
from .request_ids import current_request_id

HOP_HEADER = "X-Classifier-Hop"
MAX_RESPONSE_BYTES = 1 << 20
MAX_RELAYED_MESSAGE_CHARS = 300  # a remote's error message, as much as a person reads in one go
MAX_RETRY_AFTER_SECONDS = 600  # a remote may not tell our callers to stay away for longer
# The keys of this service's error object; a remote too old to send request_id has the first two.
_ERROR_KEYS = {"code", "message", "request_id"}
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")  # what this service's codes look like; nothing else is relayed
MAX_GRID_SIDE = 64  # rows or columns of a relayed explanation grid (this service's models give 7)
MAX_CROP_COORDINATE = 1 << 20  # pixels: more than any image the limits let through
MAX_SUMMARY_CHARS = 300
# A model's name, its weights, a class's id or label: this service's are at most 30 characters.
# Longer text is not this service's answer (a label is repeated three times in ours).
MAX_NAME_CHARS = 100
MAX_TIMINGS = 16  # entries of a relayed timing_ms

# Never connected to, however the address is written. Loopback and private ranges stay
# allowed: a remote instance on the same host or network is the normal case.
_FORBIDDEN_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8",            # "this host": 0.0.0.0 reaches loopback
    "::/128",               # the same for IPv6 ([::])
    "169.254.0.0/16",       # link-local: AWS, GCP, Azure, Oracle, OpenStack... metadata at 169.254.169.254
    "fe80::/10",            # IPv6 link-local
    "fd00:ec2::254/128",    # AWS metadata over IPv6
    "fd20:ce::254/128",     # Google Cloud metadata over IPv6
    "100.100.100.200/32",   # Alibaba Cloud metadata
    "168.63.129.16/32",     # Azure WireServer
    "192.0.0.192/32",       # Oracle Cloud metadata
))
# IPv6 prefixes whose last 32 bits are an IPv4 address the packet is really meant for.
_IPV4_IN_LAST_32_BITS = tuple(ipaddress.ip_network(net) for net in (
    "::/96",                # IPv4-compatible (::a.b.c.d, deprecated but still parsed)
    "::ffff:0:0/96",        # IPv4-mapped
    "::ffff:0:0:0/96",      # IPv4-translated (SIIT)
    "64:ff9b::/96",         # NAT64, well-known prefix
))
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # NAT64 local use: prefix /48 to /96


Checked = TypeVar("Checked")


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float


@dataclass(frozen=True)
class RemoteResult:
    """One image's part of a remote's answer to several: predictions, or its error."""

    predictions: list[Prediction]
    timing_ms: dict[str, float]
    explanation: dict[str, object] | None = None
    error: dict[str, str] | None = None


@dataclass(frozen=True)
class RemoteAnswer:
    """A remote's checked answer: one result per image sent, in order."""

    model: str
    weights: str
    results: list[RemoteResult]
    timing_ms: dict[str, float]


def public_url(url: str) -> str:
    """``url`` as this service shows it, in messages, answers and logs: scheme, host, port
    and path, without credentials, query or fragment (an operator's CLASSIFIER_REMOTE_URL
    may carry a password or a key that no client and no log should see)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is not a number: leave it out
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str) -> None:
    """Refuse URLs that could make this server a proxy into its own network.

    This gives the requester a clear 400 up front; the connection itself is checked again
    (``_GuardedConnection``), so a name that resolves differently a moment later
    (DNS rebinding) still cannot reach a forbidden address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RemoteNotAllowed("Remote URLs must use http or https.")
    if parts.username is not None or parts.password is not None:
        raise RemoteNotAllowed("Remote URLs must not carry credentials.")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        if not host:
            raise RemoteNotAllowed("The remote URL has no host.")
        allowed_address(host, port)
    except (socket.gaierror, UnicodeError, ValueError):
        raise RemoteNotAllowed(f"The remote URL {url!r} has no host that can be resolved.") from None


def allowed_address(host: str, port: int) -> str:
    """Resolve ``host`` and return the address to connect to, refusing forbidden ones.

    If any address the name resolves to is forbidden, the name is refused as a whole:
    picking a "good" one would let an attacker's DNS decide where we connect.
    """
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    for address in addresses:
        if _is_forbidden(ipaddress.ip_address(address.split("%", 1)[0])):
            raise RemoteNotAllowed(
                f"The remote host {host!r} resolves to {address}, an address this server never "
                "forwards to (unspecified, link-local or a cloud metadata service)."
            )
    return addresses[0]


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address``, or an IPv4 address it carries inside (IPv6 transition forms), is forbidden."""
    return any(candidate in net for candidate in _meant_addresses(address) for net in _FORBIDDEN_NETWORKS)


def _meant_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """``address`` and every IPv4 address a tunnel or translator would deliver it to."""
    if address.version == 4 or address.is_loopback:  # ::1 is not "IPv4-compatible 0.0.0.1"
        return [address]
    embedded = []
    if any(address in net for net in _IPV4_IN_LAST_32_BITS):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:
        embedded += [_rfc6052_ipv4(int(address), prefix) for prefix in (48, 56, 64, 96)]
    if address.sixtofour:
        embedded.append(address.sixtofour)
    if address.teredo:
        embedded.extend(address.teredo)  # (server, client): the client is where packets go
    return [address, *embedded]


def _rfc6052_ipv4(value: int, prefix: int) -> ipaddress.IPv4Address:
    """The IPv4 address after a NAT64 ``prefix`` (RFC 6052 §2.2: bits 64-71 are skipped)."""
    bits = f"{value:0128b}"
    if prefix == 96:
        return ipaddress.IPv4Address(int(bits[96:], 2))
    without_u_octet = bits[:64] + bits[72:]
    return ipaddress.IPv4Address(int(without_u_octet[prefix:prefix + 32], 2))


class _GuardedConnection:
    """Connects only to the address it has just resolved and checked (no second lookup)."""

    def _new_conn(self) -> socket.socket:
        try:
            self._dns_host = allowed_address(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        return super()._new_conn()


class _GuardedHTTPConnection(_GuardedConnection, urllib3.connection.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, urllib3.connection.HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # an environment proxy would connect on our behalf, unchecked
    adapter = _GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def forward(
    url: str,
    image: bytes,
    filename: str,
    fields: Mapping[str, str],
    timeouts: Timeouts,
    explanation_expected: bool = False,
) -> RemoteAnswer:
    """Send one prediction request to ``url`` and return its validated answer; with
    ``explanation_expected``, its explanation too (checked; one that is missing, from an
    instance older than explanations, is left out rather than failing the prediction).

    The whole answer must arrive within the connect and read timeouts together: a remote
    that trickles bytes forever is cut off, and at most ``MAX_RESPONSE_BYTES`` are read.
    The request being handled, if any, lends the forward its id.
    """
    return forward_many(url, [(filename, image)], fields, timeouts, explanation_expected)


def forward_many(
    url: str,
    uploads: Sequence[tuple[str, bytes]],
    fields: Mapping[str, str],
    timeouts: Timeouts,
    explanation_expected: bool = False,
) -> RemoteAnswer:
    """Send images (file name, bytes) to ``url`` in one request, as that many ``image`` parts,
    and return the remote's answer, checked as ``forward`` checks one: several images are
    answered with ``results``, one per image in order, each predictions or an error; up to
    ``MAX_RESPONSE_BYTES`` per image are read."""
    shown = public_url(url)
    document = _post(url, uploads, fields, timeouts, MAX_RESPONSE_BYTES * len(uploads))
    try:
        return checked_answer(document, len(uploads), explanation_expected)
    except ValueError:
        message = f"The remote server at {shown} answered in an unexpected format."
        raise RemoteError(message + _predict_hint(shown)) from None


def _malformed_is_value_error(check: Callable[..., Checked]) -> Callable[..., Checked]:
    """``check`` raising ``ValueError`` for anything malformed, a missing key or a wrong type
    included, so that its callers catch one exception."""

    @functools.wraps(check)
    def checked(*args: Any, **kwargs: Any) -> Checked:
        try:
            return check(*args, **kwargs)
        except (KeyError, TypeError) as error:
            raise ValueError(f"not this service's answer ({type(error).__name__} {error})") from None

    return checked


@_malformed_is_value_error
def checked_answer(document: object, images: int, explanation_expected: bool = False) -> RemoteAnswer:
    """A 200 answer's JSON ``document`` to ``images`` images, checked as this service's
    answer: one image is answered at the top level, several with ``results``, one each in
    order. With ``explanation_expected``, explanations are checked and kept (a missing one,
    from an instance older than explanations, is left out). ``ValueError`` if anything in
    it is not this service's shape, or larger than this service ever sends."""
    answer = _expect(document, dict)
    if images == 1:  # one part: the remote answers as to one image
        results = [_predictions(answer, explanation_expected)]
    else:
        results = [checked_result(item, explanation_expected) for item in _expect(answer["results"], list)]
    if len(results) != images:
        raise ValueError("results")
    return RemoteAnswer(_name(answer["model"]), _name(answer["weights"]), results, _timing(answer))


def _post(url: str, uploads: Sequence[tuple[str, bytes]], fields: Mapping[str, str], timeouts: Timeouts,
          max_bytes: int) -> object:
    """POST ``uploads`` as ``image`` parts with ``fields``; the JSON document of a 200, else the error."""
    deadline = time.monotonic() + timeouts.connect + timeouts.read
    request_id, shown = current_request_id(), public_url(url)
    try:
        with _session() as session, session.post(
            url,
            files=[("image", upload) for upload in uploads],
            data=dict(fields),
            headers={HOP_HEADER: "1", "Accept": "application/json",
                     **({REQUEST_ID_HEADER: request_id} if request_id else {})},
            timeout=(timeouts.connect, timeouts.read),
            allow_redirects=False,
            stream=True,
        ) as response:
            body = _read_capped(response, deadline, max_bytes)
            status, retry_after = response.status_code, response.headers.get("Retry-After")
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise RemoteTimeout(f"The remote server at {shown} did not answer in time.") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        reason = type(error).__name__
        raise RemoteError(f"The remote server at {shown} could not be reached ({reason}).") from None
    if status != 200:
        raise _refusal(shown, status, _json_or_none(body), retry_after)
    return _json_or_none(body)


def _read_capped(response: requests.Response, deadline: float, max_bytes: int) -> bytes:
    body = bytearray()
    while chunk := response.raw.read1(64 * 1024, decode_content=True):
        body += chunk
        if len(body) > max_bytes:
            raise RemoteError(f"The remote server's answer exceeded {max_bytes} bytes.")
        if time.monotonic() > deadline:
            raise RemoteTimeout("The remote server did not finish its answer in time.")
    return bytes(body)


def _json_or_none(body: bytes) -> object:
    """The JSON document, or ``None``; ``NaN`` and ``Infinity`` are not JSON and are refused."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError:
        return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _refusal(url: str, status: int, document: object, retry_after: str | None) -> RemoteError:
    """The error for a remote's non-200 answer, keeping its status where it means the same
    to our caller: a fault in the request (400, 413, 415) or "come back later" (429, 503)."""
    message = f"The remote server at {url} answered {status}"
    relayed = _service_error_message(document)
    message += f": {relayed}" if relayed else "."
    if status in (404, 405):
        message += _predict_hint(url)
    if status in (400, 413, 415):
        return RemoteRejected(message, status=status)
    if status == 429:
        return RemoteBusy(message, retry_after=_retry_after_seconds(retry_after))
    if status == 503:
        return RemoteUnavailable(message, retry_after=_retry_after_seconds(retry_after))
    return RemoteError(message)


def _service_error_message(document: object) -> str | None:
    """The remote's own message, only if it answered in this service's error shape, shortened.

    Any other body may come from a service that is not an instance of this one (an internal
    API a URL was pointed at); relaying it would let a request read that service's answers.
    """
    if not (isinstance(document, dict) and document.keys() == {"error"}):
        return None
    error = document["error"]
    if not (isinstance(error, dict) and {"code", "message"} <= error.keys() <= _ERROR_KEYS
            and all(isinstance(value, str) for value in error.values())):
        return None
    message = error["message"]
    return message if len(message) <= MAX_RELAYED_MESSAGE_CHARS else message[:MAX_RELAYED_MESSAGE_CHARS] + "…"


def _retry_after_seconds(header: str | None) -> int | None:
    """``Retry-After`` in seconds, capped; an HTTP date or nonsense gives no hint at all."""
    if header is None or not header.strip().isdigit():
        return None
    return min(int(header), MAX_RETRY_AFTER_SECONDS)


def _predict_hint(url: str) -> str:
    """Help for the common slip of giving the remote's home page instead of its API."""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/predict"):
        return ""
    suggestion = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/predict"))
    return f" Did you mean {suggestion}?"


def _timing(answer: dict) -> dict[str, float]:
    """``timing_ms``: a few named times (this service sends up to five)."""
    timing = _expect(answer.get("timing_ms", {}), dict)
    if len(timing) > MAX_TIMINGS:
        raise ValueError("timing_ms")
    return {_name(name): _finite(value, 0, math.inf) for name, value in timing.items()}


@_malformed_is_value_error
def checked_result(value: object, explanation_expected: bool = False) -> RemoteResult:
    """One of several images' answers (an entry of ``results``): its predictions, or an error
    in this service's shape, its message shortened as a relayed refusal's is. ``ValueError`` if it is
    neither."""
    item = _expect(value, dict)
    if "error" not in item:
        return _predictions(item, explanation_expected)
    message = _service_error_message({"error": item["error"]})
    if message is None or not _ERROR_CODE.fullmatch(item["error"]["code"]):
        raise ValueError("error")
    return RemoteResult([], {}, error={"code": item["error"]["code"], "message": message})


def _predictions(item: dict, explanation_expected: bool) -> RemoteResult:
    """An image's predictions and times, and its explanation if asked for and given."""
    explanation = item.get("explanation") if explanation_expected else None
    return RemoteResult([_prediction(entry) for entry in _expect(item["predictions"], list)], _timing(item),
                        None if explanation is None else checked_explanation(explanation))


def _prediction(item: dict) -> Prediction:
    return Prediction(_name(item["label"]), _name(item["class_id"]), _finite(item["score"], 0, 1))


@_malformed_is_value_error
def checked_explanation(value: object) -> dict[str, object]:
    """The remote's explanation with the contract's fields only, each checked: a crop of four
    ordered pixel coordinates, a rectangular grid of numbers in [0, 1], a PNG data URL whose
    image is the crop's size, of few chunks and decodes (``explain.heatmap_image``), so
    neither this server nor a client decoding it spends more than a small PNG's work.
    ``ValueError`` otherwise."""
    item = _expect(value, dict)
    crop = [_expect(number, int) for number in _expect(item["crop"], list)]
    if len(crop) != 4 or not (0 <= crop[0] < crop[2] <= MAX_CROP_COORDINATE
                              and 0 <= crop[1] < crop[3] <= MAX_CROP_COORDINATE):
        raise ValueError(crop)
    rows = _expect(item["grid"], list)
    grid = [[_finite(number, 0, 1) for number in _expect(row, list)] for row in rows]
    if not (0 < len(grid) <= MAX_GRID_SIDE and 0 < len(grid[0]) <= MAX_GRID_SIDE
            and all(len(row) == len(grid[0]) for row in grid)):
        raise ValueError("grid")
    heatmap = _expect(item["heatmap"], str)
    heatmap_image({"heatmap": heatmap, "crop": crop})  # a small PNG that decodes, or ValueError
    return {"class_id": _name(item["class_id"]), "label": _name(item["label"]), "crop": crop,
            "grid": grid, "heatmap": heatmap, "summary": _text(item["summary"], MAX_SUMMARY_CHARS)}


def _name(value: object) -> str:
    return _text(value, MAX_NAME_CHARS)


def _text(value: object, most: int) -> str:
    """A JSON string of at most ``most`` characters."""
    text = _expect(value, str)
    if len(text) > most:
        raise ValueError(f"a text of {len(text)} characters")
    return text


def _finite(value: object, low: float, high: float) -> float:
    """A JSON number between ``low`` and ``high``; a string such as ``"inf"`` is not a number."""
    number = float(_expect(value, (int, float)))
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(value)
    return number


def _expect(value: object, kind: type | tuple[type, ...]) -> object:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(value)
    return value
