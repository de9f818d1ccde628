"""The page as a person meets it, in Chromium: menu entries that fit, several files that visibly
become a queue (and leave with Clear), a folder's skipped files counted, and on a phone the
photo and its heatmap kept in view. Servers, browser and pages are the page tests' shared
fixtures (tests/support/page_fixtures.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PHOTOS
from playwright import sync_api
from playwright.sync_api import expect
from support.page import DESKTOP, FIRST_ANSWER, PHONE, expect_bars, expect_words_for_a_person

SMALL_DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture
def five_photos(tmp_path) -> list[Path]:
    return [Path(shutil.copy(PHOTOS["chelsea" if i % 2 else "coffee"], tmp_path / f"photo-{i}.png")) for i in range(5)]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_menu_entry_fits_its_menu(open_page, real, viewport):
    """A closed menu shows its entry whole, "(not available here)" included: no entry is cut off."""
    page = open_page(real, viewport=viewport)
    expect(page.locator("#model option")).not_to_have_count(0)
    overflows = page.locator("#model").evaluate("""select => {
        const style = getComputedStyle(select);
        const context = document.createElement("canvas").getContext("2d");
        context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return Array.from(select.options).map((o) => [o.text, Math.ceil(context.measureText(o.text).width), room])
            .filter(([, width, room]) => width > room);
    }""")
    assert not overflows, overflows
    expect_words_for_a_person(page)


def expect_queued(page: sync_api.Page, count: int, said: str) -> None:
    """``count`` cards, said in the drop zone (``said`` below the count), the grid in view, all classified."""
    expect(page.locator("#grid .tile")).to_have_count(count)
    expect(page.locator("#dropzone-title")).to_have_text(f"{count} photos queued")
    expect(page.locator("#dropzone-sub")).to_have_text(said)
    expect(page.locator("#queue")).to_be_in_viewport()
    expect(page.locator("#queue-count")).to_have_text(f"{count} of {count}", timeout=FIRST_ANSWER)


def test_several_files_become_a_queue_in_view_that_clear_removes(open_page, real, five_photos):
    page = open_page(real, viewport=SMALL_DESKTOP)
    page.set_input_files("#image", five_photos)
    expect_queued(page, 5, "Their cards are below; choose or drop more to add them.")

    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#grid .tile")).to_have_count(0)
    expect(page.locator("#queue")).to_be_hidden()
    expect(page.locator("#dropzone-title")).to_have_text("Drop an image here")
    page.set_input_files("#image", five_photos[:2])  # a new queue starts from nothing
    expect(page.locator("#grid .tile")).to_have_count(2)
    expect(page.locator("#queue-count")).to_have_text("2 of 2", timeout=FIRST_ANSWER)


def test_a_folder_pick_says_how_many_files_it_skipped(open_page, real, five_photos, tmp_path):
    folder = tmp_path / "holiday"
    folder.mkdir()
    for photo in five_photos[:3]:
        shutil.copy(photo, folder)
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "list.csv").write_text("a,b\n")
    page = open_page(real, viewport=SMALL_DESKTOP)
    page.set_input_files("#folder", folder)
    expect_queued(page, 3, "2 files that are not images were skipped. "
                           "Their cards are below; choose or drop more to add them.")


def test_on_a_phone_the_photo_and_its_heatmap_stay_in_view(open_page, real):
    page = open_page(real, viewport=PHONE)
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    expect(page.locator("#heatmap")).to_be_visible()
    page.wait_for_timeout(1000)  # any smooth scroll the answer started has ended by now
    expect(page.locator("#preview")).to_be_in_viewport(ratio=0.9, timeout=1000)
    expect(page.locator("#heatmap")).to_be_in_viewport(ratio=0.9, timeout=1000)
    expect(page.locator("#heat-caption")).to_be_in_viewport(timeout=1000)  # it names the top label


def test_without_javascript_a_model_that_cannot_run_is_explained_for_a_person(open_page, real):
    """The form posted with a model this server cannot run: the 503 page says why in a person's
    words and which models can run, not what an operator would do (that is in GET /models)."""
    page = open_page(real, javascript=False, allow=(503,))
    page.get_by_label("Model").select_option("NASNetMobile")
    page.set_input_files("#image", PHOTOS["chelsea"])
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#error .error-title")).to_have_text("That model is not ready yet.")
    expect(page.locator("#error .error-message")).to_have_text(
        "NASNetMobile: its weights are not on this server. Can run here now: EfficientNetLite0.")
    expect(page.locator("#model-state")).to_have_text("NASNetMobile: its weights are not on this server.")
    expect_words_for_a_person(page)
