"""The access log: one line per request, from what the request was and how it was answered.

It replaces uWSGI's and the development server's own request lines, and says more: the
model and server that answered, the images, and where the time went. It never holds what a
client sent beyond the method, the path (without its query string) and the body's size: no
image bytes, no data: URL, no option text and nothing a remote answers except a registered
model's name, and the URL of a remote forwarded to, that only as scheme, host, port and path
(no credentials, no query), cut to 200 characters.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from classifier.models.registry import REGISTRY
from classifier.urls import public_url

if TYPE_CHECKING:
    from classifier.serving.options import PredictRequest
    from classifier.serving.results import Answer

log = logging.getLogger("classifier.access")

# The times a prediction reports (its ``timing_ms``) that the line carries, as ``<name>_ms``.
TIMINGS = ("load", "decode", "inference")
MAX_URL_CHARS = 200  # of a remote's URL in the line: its host and the start of its path


@dataclass
class AccessRecord:
    """What one request's access line will say; the app notes facts as it learns them."""

    method: str
    path: str
    bytes_in: int
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    server: str | None = None
    remote: str | None = None
    images: int = 0
    timing_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def note_request(self, request: PredictRequest, configured_remote: str | None) -> None:
        """A parsed prediction request: how many images, and the model and server it asks for."""
        options = request.options
        self.images = len(request.uploads)
        self.model = _registered(options.model)
        self.server = options.server
        url = options.remote_url if options.server == "custom" else configured_remote
        self.remote = _shortened(public_url(url)) if options.server != "local" and url else None

    def note_answer(self, answer: Answer) -> None:
        self.model, self.server, self.timing_ms = _registered(answer.model), answer.server, answer.timing_ms
        self.remote = _shortened(answer.server_url)  # already without credentials or query

    def fields(self, status: int) -> dict[str, object]:
        """The line's fields, in a fixed order; ``None`` where this request had nothing to say."""
        timings = {f"{name}_ms": self.timing_ms.get(name) for name in TIMINGS}
        return {
            "method": self.method, "path": self.path, "status": status, "error": self.error,
            "model": self.model, "server": self.server, "remote": self.remote, "images": self.images,
            **timings, "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
            "bytes_in": self.bytes_in,
        }

    def log(self, status: int) -> None:
        """Write the line: in JSON its fields are the object's keys, in plain text its message."""
        fields = self.fields(status)
        log.info("%s", plain_text(fields), extra={"fields": fields})


def _registered(model: str | None) -> str | None:
    """``model`` if it is a registered model's name, else ``None``: a client's option and a
    remote's answer are text of any length and content, which the line never holds."""
    return model if model in REGISTRY else None


def _shortened(url: str | None) -> str | None:
    """A URL cut to ``MAX_URL_CHARS``: a custom remote's URL is a client's text, of any length."""
    return url if url is None or len(url) <= MAX_URL_CHARS else url[:MAX_URL_CHARS] + "..."


def plain_text(fields: dict[str, object]) -> str:
    """``POST /predict 200 model=... total_ms=...``: method, path and status, then the
    fields that have a value; text is escaped, so a path cannot start a new log line."""
    method, path, status, *rest = fields.items()
    words = [escaped(method[1]), escaped(path[1]), str(status[1])]
    words += [f"{name}={escaped(value)}" for name, value in rest if value is not None]
    return " ".join(words)


def escaped(value: object) -> str:
    """For a plain log line: printable ASCII: control characters, quotes, backslashes and non-ASCII as JSON escapes."""
    if not isinstance(value, str):
        return str(value)
    # Most values (a method, a path, a model's name) have nothing to escape: kept as they are,
    # which is what json.dumps would give, at a tenth of its cost (a line has up to 9 values).
    return json.dumps(value)[1:-1] if _NEEDS_ESCAPE.search(value) else value


_NEEDS_ESCAPE = re.compile(r'[^ !#-\[\]-~]')  # what json.dumps escapes: all but printable ASCII other than " and \
