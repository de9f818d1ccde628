"""Logging for every entry point: ``python app.py``, uWSGI (``create_app``) and the CLI.

uWSGI imports the app without running ``main``, so configuring logging only there left an
operator reading ``journalctl`` without a single model-load or failed-download line.

Every record made while a request is handled carries that request's id (``request_id``),
whichever module logs it, so all the lines about one request can be found by its id. Lines
are plain text, or one JSON object each (``CLASSIFIER_LOG_FORMAT=json``) for a log shipper.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from classifier.request_ids import current_request_id

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, fmt: str = FORMAT, *, log_format: str = "plain") -> None:
    """Log to stderr at ``level`` unless the host (pytest, an embedding app) set logging up;
    either way, records made during a request carry its id."""
    _add_request_ids_to_records()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter(fmt))
        root.addHandler(handler)
        root.setLevel(level)


def _add_request_ids_to_records() -> None:
    """Wrap the record factory once, so that every record, from any logger and seen by any
    handler (pytest's too), gets ``request_id`` from the thread that made it."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "adds_request_id", False):
        return

    def make_record_with_id(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    make_record_with_id.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record_with_id)


class PlainFormatter(logging.Formatter):
    """``fmt``, with ``[request id]`` after the logger's name in lines about a request."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._about_request = logging.Formatter(fmt.replace("%(name)s", "%(name)s [%(request_id)s]"))

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None):
            return self._about_request.format(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``, the
    ``request_id`` when there is one, a traceback as ``exception``, and the fields a record
    was given with ``extra={"fields": {...}}`` (the access line's)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            document["request_id"] = record.request_id
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)
