"""Every error code a client can get, read from where each is defined: the app's error classes
and the JSON bodies NGINX answers itself. docs/errors.md's table and openapi.json are held to it."""

from __future__ import annotations

import re
from pathlib import Path

NGINX_DIR = Path(__file__).resolve().parents[2] / "remote" / "nginx"


def nginx_errors() -> set[tuple[int, str]]:
    """The JSON errors NGINX answers itself: ``return 429 '{"error": {"code": "rate_limited", ...``."""
    pattern = r"""return (\d{3}) '\{"error": \{"code": "(\w+)\""""
    return {(int(status), code) for conf in NGINX_DIR.glob("*.conf")
            for status, code in re.findall(pattern, conf.read_text())}


def app_errors() -> set[tuple[int, str]]:
    """Every ClassifierError's status and code, and Werkzeug's routing errors as app.py words them."""
    from app import create_app  # noqa: F401  (imports every module that defines errors)
    from classifier.errors import ClassifierError

    classes, found = [ClassifierError], set()
    while classes:
        cls = classes.pop()
        found.add((cls.status, cls.code))
        classes.extend(cls.__subclasses__())
    return found | {(404, "not_found"), (405, "method_not_allowed")}
