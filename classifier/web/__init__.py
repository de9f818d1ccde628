"""The Flask app, flaskr-style: ``create_app`` builds it from ``CLASSIFIER_*`` settings.

``views`` are the routes (one blueprint), ``predicting`` reads a prediction request and
answers it, ``hooks`` give every request its id, access line, metrics and headers,
``errors`` answer failures as JSON, ``pages`` render the page, ``devserver`` is
``python3 app.py``. Nothing about models lives here: that is ``classifier.Classifier``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask_cors import CORS

from classifier import Classifier, Settings, request_ids
from classifier.logs import configure_logging
from classifier.serving.options import OPTION_NAMES
from classifier.sizes import size_limit
from classifier.web import errors, hooks, pages, views
from classifier.web.predicting import InMemoryRequest

# The repository, where templates/ and static/ are (app.py passes its own folder).
ROOT = Path(__file__).resolve().parents[2]


def create_app(test_config: Mapping[str, Any] | None = None, root: Path = ROOT) -> Flask:
    """Build the app from ``CLASSIFIER_*`` settings; ``test_config`` overrides any of them.
    ``root`` holds ``templates/`` and ``static/``."""
    settings = Settings.from_env(**(test_config or {}))
    # uWSGI calls only this: its workers must log model loads and failures too.
    configure_logging(log_format=settings.log_format)
    classifier = Classifier(settings)
    app = Flask("app", root_path=str(root))
    hooks.install_request_ids(app)  # first: every other hook and handler sees the request's id
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # Every image of the largest request, its options, and room for a client's extra fields;
    # more parts are refused (413) before any is read.
    app.config["MAX_FORM_PARTS"] = settings.max_images + len(OPTION_NAMES) + 16
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 365 * 24 * 3600  # static URLs carry a content hash
    app.json.sort_keys = False
    app.extensions["classifier"] = classifier
    origins = settings.cors_origins.split(",") if settings.cors_origins != "*" else "*"
    CORS(app, resources={r"/predict": {"origins": origins}, r"/models": {"origins": origins}},
         expose_headers=[request_ids.HEADER])
    app.register_blueprint(views.classify)
    # The image limit as the page states it, worded as the API's 413 words it: "10 MiB (10,485,760 bytes)".
    app.add_template_global(size_limit(settings.max_upload_bytes), "upload_limit")
    app.add_template_global(pages.asset_url)
    errors.install(app, settings.max_request_bytes)
    hooks.install_security_headers(app)
    hooks.install_metrics(app, settings.metrics_allow)
    if settings.warmup:  # at start (uWSGI's workers call this too), not at the first request
        classifier.prepare_default()
    return app
