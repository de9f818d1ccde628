"""The browser tests' fixtures (a plugin named by tests/conftest.py): one Chromium and one pair
of servers, ``real`` and ``other``, for the whole session, and a fresh browser context per page.

``real`` runs the pretrained EfficientNetLite0, offline with a Keras cache holding only that
model, prepared (a copy of the session's ``prepared_keras_home``), so the Keras models cannot
run there; it forwards to ``other`` as its configured remote, allows no
custom URLs and takes images up to 1 MB. ``other`` runs random weights, has no remote and
allows custom URLs (as ``python3 app.py`` does by default), with short remote timeouts. A
page's own state lives in its browser context; the servers only load models as pages ask for
them, which no test needs undone, so every page module shares them instead of starting its own.

Every page records console errors, uncaught exceptions and dialogs (an ``alert()``); a test
fails on any of them except the "Failed to load resource" line Chromium logs for the error
status a test provokes on purpose.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import PHOTOS, copy_of
from PIL import Image
from playwright import sync_api

from support.page import CHROMIUM, CHROMIUM_ARGS, DESKTOP, FIRST_ANSWER, MAX_UPLOAD, PHONE, wait_for_models

FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d{3}) .*")


@pytest.fixture(scope="session")
def real(serve_app, other, prepared_keras_home, tmp_path_factory) -> str:
    """Once its default model is loaded (the warm-up loads it at start): the page then shows
    no "Preparing..." line, which tests/test_first_use.py checks on a cache of its own."""
    keras_home = copy_of(prepared_keras_home, tmp_path_factory.mktemp("page") / "keras")
    url = serve_app(
        CLASSIFIER_RANDOM_WEIGHTS="0",
        CLASSIFIER_OFFLINE="1",
        KERAS_HOME=str(keras_home),
        CLASSIFIER_WEIGHTS_DIR="",
        CLASSIFIER_DEFAULT_MODEL="",
        CLASSIFIER_REMOTE_URL=f"{other}/predict",
        CLASSIFIER_ALLOW_CUSTOM_REMOTE="0",
        CLASSIFIER_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
    )
    wait_for_models(url, lambda models: models["EfficientNetLite0"]["status"] == "loaded", FIRST_ANSWER / 1000)
    return url


@pytest.fixture(scope="session")
def other(serve_app) -> str:
    return serve_app(
        CLASSIFIER_DEFAULT_MODEL="ResNet50",  # random ResNet50 weights give distinct scores
        CLASSIFIER_REMOTE_CONNECT_TIMEOUT="2",
        CLASSIFIER_REMOTE_READ_TIMEOUT="2",
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[sync_api.Browser]:
    """One Chromium for the session: each page gets a fresh context, which shares nothing."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable[..., sync_api.Page]]:
    """``open_page(url, allow=(415,), javascript=True, viewport=DESKTOP, context=None)``: a
    page, in a fresh context unless one is given. When the test ends, no page may have logged
    a console error (but "Failed to load resource" with an allowed status), thrown an
    uncaught exception or opened a dialog."""
    contexts: list[sync_api.BrowserContext] = []
    problems: list[str] = []

    def open_(url: str, *, allow: tuple[int, ...] = (), javascript: bool = True,
              viewport: dict[str, int] = DESKTOP, context: sync_api.BrowserContext | None = None,
              ) -> sync_api.Page:
        if context is None:
            phone = viewport is PHONE
            context = browser.new_context(viewport=viewport, java_script_enabled=javascript,
                                          is_mobile=phone, has_touch=phone, device_scale_factor=2 if phone else 1)
            contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)

        def on_console(message: sync_api.ConsoleMessage) -> None:
            if message.type != "error":
                return
            failed = FAILED_LOAD.fullmatch(message.text)
            path = urlsplit(message.location.get("url", "")).path
            if failed and int(failed[1]) in allow and path in ("/", "/predict"):
                return
            problems.append(f"console error: {message.text} ({message.location})")

        def on_dialog(dialog: sync_api.Dialog) -> None:
            problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
        page.on("dialog", on_dialog)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems


@pytest.fixture
def open_checked_page(browser, open_page) -> Iterator[Callable[..., sync_api.Page]]:
    """``open_checked_page(url, viewport, javascript)``: open_page's page, or, without
    JavaScript, one whose static/app.js is empty: axe-core is JavaScript, and Playwright cannot
    evaluate any in a context with JavaScript off, while the markup, styles and form posts are
    exactly what a browser without JavaScript gets from the server."""
    contexts: list[sync_api.BrowserContext] = []

    def open_(url: str, viewport: dict[str, int], javascript: bool, **kwargs) -> sync_api.Page:
        if javascript:
            return open_page(url, viewport=viewport, **kwargs)
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        context.route("**/static/app.js*", lambda route: route.fulfill(body="", content_type="text/javascript"))
        return open_page(url, context=context, **kwargs)

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def not_an_image(tmp_path) -> Path:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    return notes


@pytest.fixture(scope="session")
def fake_video(tmp_path_factory) -> Path:
    """chelsea.png as 640 × 480 Motion-JPEG frames (JPEGs one after another), as Chromium reads them
    for a fake camera (the camera tests, and the HTTPS page in tests/test_tls.py)."""
    frame = io.BytesIO()
    Image.open(PHOTOS["chelsea"]).convert("RGB").resize((640, 480)).save(frame, "JPEG", quality=90)
    path = tmp_path_factory.mktemp("camera") / "chelsea.mjpeg"
    path.write_bytes(frame.getvalue() * 30)
    return path
