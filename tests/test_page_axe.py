"""The page checked by axe-core (through axe-playwright-python), an accessibility engine
nobody here wrote: no serious or critical violation in any state the page can be in, at
desktop and phone width, with JavaScript and without. The servers, browser and pages are
tests/test_page.py's fixtures.

axe-core is JavaScript, and Playwright cannot evaluate any in a context with JavaScript off, so
"without JavaScript" here is the page with static/app.js answered empty: the markup, styles and
form posts are exactly what a browser without JavaScript gets from the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import PHOTOS
from playwright import sync_api
from playwright.sync_api import expect
from test_page import (DESKTOP, FIRST_ANSWER, PHONE, browser, expect_bars, not_an_image,  # noqa: F401 (fixtures)
                       open_page, other, real)

AXE = Axe()
BLOCKING = ("serious", "critical")  # "moderate" and "minor" are advice, not barriers


def expect_no_serious_violations(page: sync_api.Page, state: str) -> None:
    """Run axe-core on the page as it is now; fail with what it found and where."""
    violations = AXE.run(page).response["violations"]
    found = [(v["id"], v["impact"], v["help"], [node["target"] for node in v["nodes"]][:5])
             for v in violations if v["impact"] in BLOCKING]
    assert not found, f"{state}: {found}"


VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])


@pytest.fixture
def open_checked_page(browser, open_page) -> Iterator[Callable[..., sync_api.Page]]:
    """``open_checked_page(url, viewport, javascript)``: open_page's page, or, without
    JavaScript, one whose static/app.js is empty (see above)."""
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


@VIEWPORTS
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_empty_one_result_and_an_error_pass_axe(open_checked_page, real, not_an_image, viewport, javascript):
    page = open_checked_page(real, viewport, javascript, allow=(415,))
    expect(page.locator("#empty")).to_be_visible()
    expect_no_serious_violations(page, "empty")

    def send(path: Path) -> None:
        page.set_input_files("#image", path)
        if not javascript:
            with page.expect_navigation(timeout=FIRST_ANSWER):
                page.get_by_role("button", name="Classify").click()

    send(PHOTOS["chelsea"])
    expect_bars(page, 3)
    expect(page.locator("#status")).to_be_empty()
    expect_no_serious_violations(page, "one result")

    send(not_an_image)
    expect(page.locator("#error .error-title")).to_have_text("That file is not an image this server can read.")
    expect_no_serious_violations(page, "an error")
