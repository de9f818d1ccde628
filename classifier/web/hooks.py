"""What happens around every request: its id (bound for the log, sent back, passed on), its
one access line, its count and time in the metrics, and the security headers of every answer."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from classifier import metrics, request_ids
from classifier.models import download
from classifier.web.access import AccessRecord

# Sent with every answer. The page runs only its own script and style from /static/ (no
# inline code), shows the chosen picture from a blob: URL, and may not be framed.
# remote/nginx/classifier-locations.conf sends the same for what NGINX answers itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def install_request_ids(app: Flask) -> None:
    """Give every request an id (``request_ids``): bound while it is handled, so every log
    line about it carries the id; sent back as ``X-Request-ID`` and in JSON errors; passed on
    to a remote. The request's one access line is written once its answer is ready."""

    @app.before_request
    def start() -> None:
        request_id = request_ids.request_id_for(request.headers.get(request_ids.HEADER))
        g.request_id_token = request_ids.bind(request_id)
        g.access = AccessRecord(request.method, request.path, request.content_length or 0)

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers[request_ids.HEADER] = request_ids.current_request_id()
        g.access.log(response.status_code)
        return response

    @app.teardown_request
    def forget(error: BaseException | None) -> None:
        if token := g.pop("request_id_token", None):  # none in a bare test_request_context
            request_ids.unbind(token)


def install_metrics(app: Flask, allow: str) -> None:
    """Count and time every request by its route's rule (a path nothing matches is
    ``unmatched``: a client cannot create series), and keep who may read ``/metrics``. The
    download-failure series start at 0, so the first failure is an increase Prometheus sees."""
    app.extensions["metrics_allow"] = metrics.parse_networks(allow)
    metrics.zero_download_failures(download.DOWNLOADABLE)

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("metrics_started", time.perf_counter())  # unset if an earlier hook answered
        metrics.observe_request(endpoint, response.status_code, time.perf_counter() - started)
        return response


def install_security_headers(app: Flask) -> None:
    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
