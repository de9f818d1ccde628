"""Forwarding a prediction to another instance of this service.

The remote answers the same ``/predict`` API; we send the image as multipart, refuse
redirects, cap what we read, and accept the answer only if it has the promised shape.
Requests carry ``HOP_HEADER``; an instance that receives it always answers itself,
so two instances pointed at each other cannot loop.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from .errors import RemoteError, RemoteNotAllowed, RemoteTimeout
from .labels import Prediction

HOP_HEADER = "X-Classifier-Hop"
MAX_RESPONSE_BYTES = 1 << 20

# Link-local covers the cloud metadata service at 169.254.169.254; fd00:ec2::254 is EC2's
# IPv6 metadata address. Loopback and private ranges stay allowed: a remote instance on
# the same host or network is the normal case.
_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
)


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float


@dataclass(frozen=True)
class RemoteAnswer:
    model: str
    weights: str
    predictions: list[Prediction]
    timing_ms: dict[str, float]


def check_url(url: str) -> None:
    """Refuse URLs that could make this server a proxy into its own network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RemoteNotAllowed("Remote URLs must use http or https.")
    if parts.username is not None or parts.password is not None:
        raise RemoteNotAllowed("Remote URLs must not carry credentials.")
    if not parts.hostname:
        raise RemoteNotAllowed("The remote URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port)}
    except (socket.gaierror, UnicodeError, ValueError):
        raise RemoteNotAllowed(f"The remote host {parts.hostname!r} cannot be resolved.") from None
    for address in addresses:
        if _is_forbidden(ipaddress.ip_address(address.split("%", 1)[0])):
            raise RemoteNotAllowed(
                f"The remote host {parts.hostname!r} resolves to {address}, a link-local or "
                "cloud-metadata address."
            )


def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    candidates = [address]
    if address.version == 6 and address.ipv4_mapped:
        candidates.append(address.ipv4_mapped)
    return any(candidate in net for candidate in candidates for net in _FORBIDDEN_NETWORKS)


def forward(
    url: str,
    image: bytes,
    filename: str,
    fields: Mapping[str, str],
    timeouts: Timeouts,
) -> RemoteAnswer:
    """Send one prediction request to ``url`` and return its validated answer."""
    try:
        with requests.post(
            url,
            files={"image": (filename, image)},
            data=dict(fields),
            headers={HOP_HEADER: "1", "Accept": "application/json"},
            timeout=(timeouts.connect, timeouts.read),
            allow_redirects=False,
            stream=True,
        ) as response:
            body = _read_capped(response)
            status = response.status_code
    except requests.Timeout:
        raise RemoteTimeout(f"The remote server at {url} did not answer in time.") from None
    except requests.RequestException as error:
        reason = type(error).__name__
        raise RemoteError(f"The remote server at {url} could not be reached ({reason}).") from None
    return _parse(url, status, body)


def _read_capped(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise RemoteError(f"The remote server's answer exceeded {MAX_RESPONSE_BYTES} bytes.")
    return bytes(body)


def _parse(url: str, status: int, body: bytes) -> RemoteAnswer:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status != 200:
        raise RemoteError(f"The remote server at {url} answered {status}: {_error_message(document)}")
    try:
        return RemoteAnswer(
            model=_expect(document["model"], str),
            weights=_expect(document["weights"], str),
            predictions=[
                _prediction(item) for item in _expect(document["predictions"], list)
            ],
            timing_ms={k: float(v) for k, v in _expect(document.get("timing_ms", {}), dict).items()},
        )
    except (KeyError, TypeError, ValueError):
        raise RemoteError(f"The remote server at {url} answered in an unexpected format.") from None


def _prediction(item: dict) -> Prediction:
    score = float(_expect(item["score"], (int, float)))
    return Prediction(_expect(item["label"], str), _expect(item["class_id"], str), score)


def _expect(value: object, kind: type | tuple[type, ...]) -> object:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(value)
    return value


def _error_message(document: object) -> str:
    try:
        return str(document["error"]["message"])  # type: ignore[index]
    except (KeyError, TypeError):
        return "no error message"
