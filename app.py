"""The entry point: ``python3 app.py`` serves the page and the API for local use; uWSGI
serves ``app:create_app()`` (uwsgi.ini). The app itself is ``classifier.web``; this file
only says where its templates, static files and ``openapi.json`` are: beside it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from classifier import web
from classifier.web.devserver import main


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The app from ``CLASSIFIER_*`` settings; ``test_config`` overrides any of them."""
    return web.create_app(test_config, root=Path(__file__).resolve().parent)


if __name__ == "__main__":
    main(create_app)
