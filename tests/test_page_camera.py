"""The camera on the page, in Chromium with its fake camera: a Motion-JPEG file of a real photo
(made here with Pillow) stands in for a device, which this machine has none of (the one fake in
these tests, for hardware outside our control). Servers and pages are the page tests' shared
fixtures (tests/support/page_fixtures.py); ``site``
(conftest) is the production stack, uWSGI with uwsgi.ini behind NGINX with remote/nginx/."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from playwright import sync_api
from playwright.sync_api import expect
from support.page import CHROMIUM, CHROMIUM_ARGS, DESKTOP, FIRST_ANSWER, PHONE, SCREENSHOTS, expect_no_serious_violations

CAT_LABELS = ("Tabby", "Tiger cat", "Egyptian cat")
# A name for loopback that is not "localhost" or an address: Chromium treats a page there as any
# plain http:// site on the internet, which is offered no camera (not a secure context).
INSECURE_HOST = "classifier.test"


@pytest.fixture(scope="module")
def camera_browser(browser, fake_video) -> Iterator[sync_api.Browser]:
    """Chromium with a fake camera (launched by the page tests' Playwright: one per process);
    whether the page may use it is each context's permission."""
    with_camera = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake_video}",
        f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"])
    yield with_camera
    with_camera.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_camera_labels_frames_live_captures_a_card_and_stops(open_page, camera_browser, real, viewport):
    context = camera_browser.new_context(viewport=viewport, permissions=["camera"])
    try:
        page = open_page(real, context=context)
        page.get_by_role("button", name="Use camera").click()
        labels = page.get_by_role("list", name="What the camera shows, best first").get_by_role("listitem")
        expect(labels).to_have_count(3, timeout=FIRST_ANSWER)
        expect(labels.first).to_have_text(re.compile(rf"^({'|'.join(CAT_LABELS)}) \d+\.\d%$"))
        expect(page.locator("#camera-fps")).to_have_text(re.compile(r"^\d+\.\d fps$"))
        # Live: the frames keep coming, each answered before the next goes out.
        with page.expect_response(f"{real}/predict") as first:
            pass
        with page.expect_response(f"{real}/predict") as second:
            pass
        assert first.value.ok and second.value.ok
        facing = page.locator("#camera-video").evaluate("v => v.srcObject.getVideoTracks()[0].getConstraints()")
        assert facing == {"facingMode": "environment"}, facing  # Chromium gives a bare value as the ideal
        expect_no_serious_violations(page, "camera on")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"camera-{'phone' if viewport is PHONE else 'desktop'}.png", full_page=True)

        page.get_by_role("button", name="Capture").click()
        tile = page.locator("#grid .tile")
        expect(tile).to_have_count(1)
        expect(tile.locator(".tile-name")).to_have_text("camera-1.jpg")
        expect(tile).to_have_attribute("data-state", "done")
        expect(tile.locator(".tile-label")).to_have_text(re.compile(rf"^({'|'.join(CAT_LABELS)}) "))

        stream = page.locator("#camera-video").evaluate_handle("v => v.srcObject")
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#camera")).to_be_hidden()
        assert stream.evaluate("s => s.getTracks().map(t => t.readyState)") == ["ended"]
        expect(page.get_by_role("button", name="Use camera")).to_be_focused()
    finally:
        context.close()


def test_a_refused_camera_is_explained(open_page, camera_browser, real):
    context = camera_browser.new_context()  # no camera permission, and no prompt to grant it
    try:
        page = open_page(real, context=context)
        page.get_by_role("button", name="Use camera").click()
        expect(page.get_by_role("alert").filter(has_text="The camera was refused")).to_be_visible()
        expect(page.locator("#camera")).to_be_hidden()
        expect_no_serious_violations(page, "camera refused")
    finally:
        context.close()


def test_the_camera_labels_frames_live_through_nginx(open_page, camera_browser, site):
    """The deployed site (its Permissions-Policy header allows the page's own camera use)."""
    assert "camera=(self)" in requests.get(site.url + "/", timeout=30).headers["Permissions-Policy"]
    context = camera_browser.new_context(viewport=DESKTOP, permissions=["camera"])
    try:
        page = open_page(site.url, context=context)
        page.get_by_role("button", name="Use camera").click()
        labels = page.get_by_role("list", name="What the camera shows, best first").get_by_role("listitem")
        expect(labels).to_have_count(3, timeout=FIRST_ANSWER)
        expect(labels.first).to_have_text(re.compile(rf"^({'|'.join(CAT_LABELS)}) \d+\.\d%$"))
        expect(page.locator("#camera-problem")).to_be_hidden()
        with page.expect_response(f"{site.url}/predict") as next_frame:
            pass
        assert next_frame.value.ok, next_frame.value.status
    finally:
        context.close()


def test_a_camera_the_sites_policy_forbids_is_explained_as_such(open_page, camera_browser, site):
    """A site whose Permissions-Policy forbids the camera (as ours did: camera=()): the person
    could allow nothing, so the page says it is the site's rule, not a refusal."""
    context = camera_browser.new_context(permissions=["camera"])  # the person would allow it

    def forbid_camera(route: sync_api.Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "permissions-policy": "camera=()"})

    try:
        context.route(f"{site.url}/", forbid_camera)
        page = open_page(site.url, context=context)
        page.get_by_role("button", name="Use camera").click()
        problem = page.get_by_role("alert").filter(has_text="does not allow its pages to use the camera")
        expect(problem).to_be_visible()
        expect(problem).to_contain_text("Permissions-Policy")
        expect(page.locator("#camera-problem")).not_to_contain_text("refused")
        expect(page.locator("#camera")).to_be_hidden()
    finally:
        context.close()


def test_a_camera_on_a_plain_http_page_is_explained_as_such(open_page, camera_browser, real):
    """Not localhost, not https://: browsers offer no camera, and the page says what would."""
    context = camera_browser.new_context(permissions=["camera"])
    try:
        page = open_page(real.replace("127.0.0.1", INSECURE_HOST), context=context)
        assert page.evaluate("window.isSecureContext") is False
        page.get_by_role("button", name="Use camera").click()
        problem = page.get_by_role("alert").filter(has_text="only to https:// pages")
        expect(problem).to_be_visible()
        expect(page.locator("#camera")).to_be_hidden()
    finally:
        context.close()
