"""Every failure answered as ``{"error": {"code", "message", "request_id"}}`` with a fitting
status: the service's own errors (``classifier.errors``), Werkzeug's, and the unexpected."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)

from classifier import ClassifierError, request_ids
from classifier.errors import RequestTooLarge
from classifier.sizes import size_limit
from classifier.web.access import escaped

log = logging.getLogger("classifier.app")


# A body refused for its size is still read, and dropped, up to this far past the limit:
# NGINX passes bodies up to 65m on (remote/nginx/classifier-locations.conf), 1 MiB over the
# default limit. A worker that answers and closes with the body unread resets the connection,
# and NGINX, still sending it, answered 502 instead of the 413 (once in ~20 suite runs).
DRAINED_OVER_LIMIT = 1024 * 1024
DRAIN_CHUNK = 64 * 1024


def _discard_body(at_most: int) -> None:
    """Read and drop the request's unread body if it declares at most ``at_most`` bytes (a
    larger one is answered without reading it: nothing in front of uWSGI sends that much)."""
    remaining = request.content_length or 0
    if remaining > at_most:
        return
    stream = request.environ["wsgi.input"]
    while remaining > 0 and (chunk := stream.read(min(DRAIN_CHUNK, remaining))):
        remaining -= len(chunk)


def retry_headers(error: ClassifierError) -> dict[str, str]:
    """``Retry-After`` when the error says when to come back (a download, a busy remote)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after else {}


def json_error(document: dict[str, dict[str, str]], status: int, headers: Mapping[str, str] | None = None) -> Any:
    """An error answer ``{"error": {"code", "message", "request_id"}}``; the code goes in the access line."""
    g.access.error = document["error"]["code"]
    document["error"]["request_id"] = request_ids.current_request_id()
    return jsonify(document), status, dict(headers or {})


def install(app: Flask, max_request_bytes: int) -> None:
    @app.errorhandler(ClassifierError)
    def classifier_error(error: ClassifierError) -> Any:
        return json_error(error.to_json(), error.status, retry_headers(error))

    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(error: RequestEntityTooLarge) -> Any:
        if (request.content_length or 0) > max_request_bytes or request.content_length is None:
            _discard_body(max_request_bytes + DRAINED_OVER_LIMIT)  # refused before any of it was read
            return classifier_error(RequestTooLarge(
                f"The request body is larger than {size_limit(max_request_bytes)}, this server's limit "
                "for one request (CLASSIFIER_MAX_REQUEST_BYTES)."))
        return classifier_error(RequestTooLarge(
            f"The form has more parts than this server takes ({current_app.config['MAX_FORM_PARTS']}: "
            "CLASSIFIER_MAX_IMAGES images and the options), or a field too long."))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        allow = isinstance(error, MethodNotAllowed) and error.valid_methods
        headers = {"Allow": ", ".join(error.valid_methods)} if allow else {}
        return json_error({"error": {"code": code, "message": _http_error_message(error)}}, error.code, headers)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, escaped(request.path))
        message = "The server failed unexpectedly; the error has been logged."
        return json_error({"error": {"code": "internal_error", "message": message}}, 500)


def _http_error_message(error: HTTPException) -> str:
    """Werkzeug's wording for what a client most often gets wrong, made to say what is here."""
    if isinstance(error, NotFound):
        return (f"There is nothing at {request.path}. The API is POST /predict, GET /models and "
                "GET /healthz, described at GET /openapi.json; the page is /.")
    if isinstance(error, MethodNotAllowed):
        allowed = [method for method in error.valid_methods or () if method not in ("HEAD", "OPTIONS")]
        return f"{request.path} does not take {request.method}; it takes {' or '.join(allowed)}."
    return error.description or error.name
