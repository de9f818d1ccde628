"""The page checked by axe-core (through axe-playwright-python), an accessibility engine
nobody here wrote: no serious or critical violation in any state the page can be in, at
desktop and phone width, with JavaScript and without ("without JavaScript" is the page with
static/app.js answered empty: see ``open_checked_page``). The servers, browser and pages are
the page tests' shared fixtures (tests/support/page_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PHOTOS
from playwright.sync_api import expect
from support.page import DESKTOP, FIRST_ANSWER, PHONE, expect_bars, expect_no_serious_violations


VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])


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
