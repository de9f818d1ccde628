"""The page: ``index.html`` with the models and servers to offer and the answer to a form
post, the explained crop drawn for the no-JavaScript page, and static URLs with a hash of
their content (``asset_url``), so browsers may cache them for a year."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import current_app, render_template, url_for

from classifier import Classifier, ClassifierError
from classifier.imaging.image_checks import ImageLimits
from classifier.runtimes.explain import overlay_png
from classifier.serving.options import DEFAULT_TOP_K, MAX_TOP_K
from classifier.serving.results import Classification
from classifier.web.static_modules import content_hash

log = logging.getLogger("classifier.app")


def render_page(
    classifier: Classifier,
    result: dict[str, Any] | None = None,
    error: ClassifierError | None = None,
    form: Mapping[str, str] | None = None,
    overlay: str | None = None,
    filename: str | None = None,
) -> str:
    """``index.html``: the models and servers to offer, and the answer to a form post if any
    (of the photo ``filename``; with ``overlay``, its explained crop as an image URL)."""
    return render_template(
        "index.html",
        models=classifier.models(),
        remote_url=classifier.settings.remote_url,
        allow_custom=classifier.settings.allow_custom_remote,
        default_top_k=DEFAULT_TOP_K,
        max_top_k=MAX_TOP_K,
        max_upload_bytes=classifier.settings.max_upload_bytes,
        result=result,
        error=error.to_json()["error"] if error else None,
        form=form or {},
        overlay=overlay,
        filename=filename,
    )


def overlay_url(image: bytes, answer: Classification, limits: ImageLimits) -> str | None:
    """The explained crop as a ``data:`` URL (the CSP allows those for images): the no-JavaScript
    page cannot draw the heatmap over a preview, so the server draws it into the photo, as the
    prediction decoded it (a costly upload is decoded once), or decoded here when a remote
    classified it. A photo a remote classified but this server's ``limits`` refuse is answered
    without the picture."""
    if answer.explanation is None:
        return None
    try:
        png = overlay_png(answer.photo or image, answer.explanation, limits)
    except ClassifierError as error:
        log.info("no explained crop drawn: %s", error.message)
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- static asset URLs, content-hashed ------------------------------------------------------

def asset_url(filename: str) -> str:
    """A static file's URL with a hash of its content, so browsers may cache it for a year
    (a template global: ``create_app`` adds it)."""
    path = Path(current_app.static_folder or "static", filename)
    return url_for("static", filename=filename, v=_content_hash(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _content_hash(path: Path, mtime_ns: int) -> str:
    return content_hash(path.read_bytes())
