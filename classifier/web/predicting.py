"""A prediction request at the HTTP edge: the body handed to ``bodies.parse`` (which knows
the forms), the cross-origin rule for ``server=custom``, and the answer, noted for the access
line and stopped when nobody waits for it any more."""

from __future__ import annotations

import io
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from flask import Request, g, request

from classifier import Classifier
from classifier.errors import ClientGone, CrossOriginForbidden, UnsupportedImageType
from classifier.forwarding.client import HOP_HEADER
from classifier.serving import bodies
from classifier.serving.options import PredictRequest
from classifier.serving.results import Answer


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug spools large ones to disk, and image bytes
    must never be written there. The body size is capped first, so memory stays bounded."""

    def _get_file_stream(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO()


def page_form(req: Request) -> Request:
    """``req`` if it is what the page's form sends (multipart/form-data, or a form without
    files, which gets its own 400); JSON or a raw image are for ``POST /predict``, and are
    refused before any prediction is made, since the page could not show their answer."""
    if req.mimetype not in bodies.FORM_TYPES:
        raise UnsupportedImageType("POST / takes the page's form (multipart/form-data); programs send JSON or "
                                   "a raw image to POST /predict.")
    return req


def parsed(req: Request, classifier: Classifier) -> PredictRequest:
    """The parsed request, refusing ``server=custom`` from another origin's page.

    CORS lets any page call ``/predict`` (reading the answer needs no credentials), which is
    fine for ``local`` and ``remote``; but a page choosing the URL would turn the user's own
    ``python3 app.py`` into a proxy into the user's network. Programs send no ``Origin``.
    A page whose host name was rebound to this machine's address looks same-origin, so the
    host must also be an address or ``localhost``, names no attacker's DNS answers for.
    """
    form = req.mimetype in bodies.FORM_TYPES
    files = [(file.filename or "", file.read()) for file in req.files.getlist("image")] if form else []
    body = bodies.Body(req.mimetype, req.args, req.form if form else {}, files, req.get_data)
    parsed_request = bodies.parse(body, classifier.settings.max_images)
    if parsed_request.options.server == "custom" and (is_cross_origin(req) or not _address_or_localhost(req.host)):
        raise CrossOriginForbidden("server=custom is only available from this server's own page, "
                                   "opened at localhost or an IP address, not from another origin.")
    return parsed_request


def _address_or_localhost(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost"
    return True


def is_cross_origin(req: Request) -> bool:
    """Whether a browser sent ``req`` from a page on another origin (``Origin: null`` included:
    ``file://`` pages and sandboxed frames send it). ``Sec-Fetch-Site`` covers a missing ``Origin``."""
    origin = req.headers.get("Origin")
    if origin is not None:
        return origin != f"{req.scheme}://{req.host}"
    return req.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def answer(parsed_request: PredictRequest, classifier: Classifier) -> Answer:
    """The answer to a parsed prediction request (the page's form or the API), noted for the
    access line; a request forwarded by another instance is answered here (no loops)."""
    record = g.access
    still_wanted()  # a request that waited in uWSGI's queue until NGINX gave up on it
    record.note_request(parsed_request, classifier.settings.remote_url)
    result = classifier.predict(parsed_request, forwarded=HOP_HEADER in request.headers, still_wanted=still_wanted)
    record.note_answer(result)
    return result


def still_wanted() -> None:
    """Stop (``ClientGone``) a request whose connection NGINX or the client has closed.

    NGINX closes it when its client goes, or at its uwsgi_read_timeout, which counts the time
    the request waited in uWSGI's queue: requests NGINX had answered 504 were still computed
    35 s later (issue 21). Under uWSGI the connection is peeked at, without blocking: end of
    file means it is closed. Elsewhere (``python3 app.py``) nothing is checked."""
    try:
        import uwsgi
    except ImportError:
        return
    with socket.fromfd(uwsgi.connection_fd(), socket.AF_INET, socket.SOCK_STREAM) as connection:  # a copy of it
        try:
            closed = connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return
        except OSError:
            closed = True
    if closed:
        raise ClientGone("The connection was closed before the answer was ready; the rest of the "
                         "request was not computed.")
