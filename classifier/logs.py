"""Logging for every entry point: ``python app.py``, uWSGI (``create_app``) and the CLI.

uWSGI imports the app without running ``main``, so configuring logging only there left an
operator reading ``journalctl`` without a single model-load or failed-download line.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, fmt: str = FORMAT) -> None:
    """Log to stderr at ``level`` unless the host (pytest, an embedding app) set logging up."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=fmt)
