"""``python3 app.py``: the development server for local use, quieter and in the API's error
shape. A hosted server runs the app under uWSGI (``uwsgi.ini``) instead."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import ClassVar

from flask import Flask
from werkzeug.serving import WSGIRequestHandler

from classifier import request_ids


def main(create_app: Callable[[], Flask]) -> None:
    """Parse ``--host``, ``--port`` and ``--debug`` and serve the app ``create_app`` builds."""
    parser = argparse.ArgumentParser(
        description="Serve the image classifier for local use: the page at http://HOST:PORT/, the API at "
                    "/predict. For a hosted server, run it under uWSGI (uwsgi.ini). Settings come from "
                    "CLASSIFIER_* environment variables (docs/settings.md).")
    parser.add_argument("--host", default="localhost",
                        help="the address to listen on (default: localhost, this machine only; "
                             "0.0.0.0 for every network)")
    parser.add_argument("--port", type=int, default=5000, help="the port to listen on (default: 5000)")
    parser.add_argument("--debug", action="store_true",
                        help="Flask's debug mode: tracebacks in the browser; never where others can reach it")
    args = parser.parse_args()
    # Local use: a person may point the page at any remote they run (production turns this off).
    os.environ.setdefault("CLASSIFIER_ALLOW_CUSTOM_REMOTE", "1")
    create_app().run(host=args.host, port=args.port, debug=args.debug, use_reloader=False, threaded=True,
                     request_handler=QuietRequestHandler)


class QuietRequestHandler(WSGIRequestHandler):
    """The development server without its ``Server: Werkzeug/x Python/y`` version banner, and
    without its own request lines (the app's access line, logger ``classifier.access``, says more), and
    with its own refusals (before Flask sees the request) in the API's JSON error shape."""

    server_version = "classifier"
    sys_version = ""
    error_content_type = "application/json"
    # http.server's limits (65,536 bytes per line, 100 headers), coded as NGINX codes its own.
    _REFUSALS: ClassVar[dict[int, tuple[str, str]]] = {
        414: ("uri_too_long", "The request line is longer than this server accepts (64 KiB)."),
        431: ("request_header_fields_too_large",
              "A request header is longer than this server accepts (64 KiB), or there are over 100."),
    }

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """``{"error": {"code", "message"}}`` instead of http.server's HTML page, which the
        API's description does not allow."""
        phrase = HTTPStatus(code).phrase
        error_code, text = self._REFUSALS.get(code, (phrase.lower().replace(" ", "_"), f"{phrase}."))
        self._refusal_id = request_ids.new_request_id()
        error = {"code": error_code, "message": text, "request_id": self._refusal_id}
        self.error_message_format = json.dumps({"error": error}).replace("%", "%%")
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        """A refusal's id goes in its headers too, as every answer's does."""
        if refusal_id := self.__dict__.pop("_refusal_id", None):
            self.send_header(request_ids.HEADER, refusal_id)
        super().end_headers()

    def log_request(self, *args: object) -> None:
        pass
