"""Many photos on the page, in Chromium: a card per photo, a few requests at a time, the
progress, a card's full answer, the filter, CSV and JSON downloads; checked by axe-core
mid-queue and done. Servers, browser and pages are the page tests' shared fixtures
(tests/support/page_fixtures.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PHOTOS
from playwright.sync_api import expect
from support.page import (
    DESKTOP,
    FIRST_ANSWER,
    PHONE,
    SCREENSHOTS,
    expect_bars,
    expect_no_serious_violations,
)

from classifier.cli.reports import CSV_COLUMNS

CAT_LABELS = {"Tabby", "Tiger cat", "Egyptian cat"}


@pytest.fixture
def forty_files(tmp_path) -> list[Path]:
    """36 real photos (cats and coffee, in turn) and 4 broken files among them, one named as
    a spreadsheet formula would start."""
    files = []
    for i in range(40):
        if i % 10 == 7:
            broken = tmp_path / f"{'=' if i == 27 else ''}broken-{i:02}.jpg"
            broken.write_bytes(b"not a picture\n" if i < 20 else b"\xff\xd8\xff\xe0 cut short")
            files.append(broken)
        else:
            photo = PHOTOS["chelsea" if i % 2 else "coffee"]
            files.append(Path(shutil.copy(photo, tmp_path / f"photo-{i:02}{photo.suffix}")))
    return files


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_forty_files_become_cards_that_all_end_done_or_failed(open_page, real, forty_files, viewport):
    posts = []
    page = open_page(real, viewport=viewport, allow=(400, 415))
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    page.set_input_files("#image", forty_files)
    tiles = page.locator("#grid .tile")
    expect(tiles).to_have_count(40)
    expect_no_serious_violations(page, "grid mid-queue")
    expect(page.locator("#queue-count")).to_have_text("40 of 40", timeout=FIRST_ANSWER)
    expect(page.locator("#queue-said")).to_have_text("40 of 40 photos classified")
    expect(page.locator("#queue-bar")).to_have_js_property("value", 40)
    assert 5 <= len(posts) < 40, "several photos per request (up to 8)"
    states = tiles.evaluate_all("tiles => tiles.map(t => t.dataset.state)")
    broken = {i for i, path in enumerate(forty_files) if "broken" in path.name}
    assert [i for i, state in enumerate(states) if state == "failed"] == sorted(broken), states
    assert states.count("done") == 36, states
    for i in (1, 3):  # cats
        expect(tiles.nth(i).locator(".tile-label")).to_have_text(
            [re.compile(rf"^({'|'.join(CAT_LABELS)}) \d+\.\d%$")])
    # Thumbnails are drawn small in the browser, not the full photo.
    assert tiles.first.locator("canvas").evaluate("c => [c.width, c.height]") == [96, 72]
    expect(page.locator(".tile-state").first).to_have_text("Done")
    expect_no_serious_violations(page, "grid done")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"grid-{'phone' if viewport is PHONE else 'desktop'}.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_bytes().decode()
    assert text.startswith("\ufeffpath,state,model,label,class_id,score,top_k,error_code,error_message\r\n")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert list(rows[0]) == CSV_COLUMNS  # the CLI's format (classifier/cli/reports.py)
    # A name a spreadsheet would run as a formula is neutralised, as OWASP advises.
    assert [row["path"] for row in rows] == [("'" if path.name.startswith("=") else "") + path.name
                                             for path in forty_files]
    assert [row["state"] for row in rows] == states
    for i, row in enumerate(rows):
        if i in broken:
            assert row["error_code"] in ("unsupported_image_type", "invalid_image") and row["error_message"], row
            assert not row["label"] and not row["model"], row
        else:
            assert row["label"] and 0 < float(row["score"]) <= 1 and not row["error_code"], row
            assert row["model"] == "EfficientNetLite0" and row["top_k"].startswith(f"{row['label']}:{row['score']}")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download JSON").click()
    answers = json.loads(Path(download.value.path()).read_text())
    assert [a["predictions"][0]["class_id"] if a["predictions"] else "" for a in answers] == [
        row["class_id"] for row in rows]
    top_labels = [a["predictions"][0]["label"] if a["predictions"] else None for a in answers]
    assert {top_labels[1], top_labels[3]} <= CAT_LABELS, answers[:4]

    # A card opens its full answer, heatmap included, as one chosen photo shows it.
    tiles.nth(1).click()
    labels = expect_bars(page, 3)
    assert labels[0][0] == top_labels[1]
    expect(page.locator("#crop-frame")).to_be_visible()
    expect(page.locator(".meta-model")).to_have_text("EfficientNetLite0")
    expect(page.locator(".meta-time")).to_have_text(re.compile(r"^\d+ ms"))
    tiles.nth(7).click()
    expect(page.locator("#error .error-title")).to_have_text("That file is not an image this server can read.")

    page.get_by_label("Filter by label").fill(top_labels[1])
    visible = tiles.evaluate_all("tiles => tiles.filter(t => !t.hidden).length")
    assert visible == top_labels.count(top_labels[1])


def test_the_queue_can_be_cancelled(open_page, real, forty_files):
    page = open_page(real, allow=(400, 415))
    page.set_input_files("#image", forty_files * 3)
    expect(page.locator("#grid .tile")).to_have_count(120)
    expect(page.locator('#grid .tile[data-state="done"]').first).to_be_visible(timeout=FIRST_ANSWER)
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#queue-count")).to_have_text("120 of 120")
    expect(page.locator('#grid .tile[data-state="cancelled"]').first).to_be_visible()
    expect(page.locator('#grid .tile[data-state="waiting"], #grid .tile[data-state="working"]')).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_hidden()


def test_an_example_photo_classifies_in_one_click(open_page, real):
    page = open_page(real)
    page.get_by_role("button", name="a cat").click()
    labels = {label for label, _, _ in expect_bars(page, 3)}
    assert labels & CAT_LABELS, labels
    expect(page.locator("#preview")).to_have_attribute("alt", re.compile(r"^chelsea\.jpg: "))


def test_use_via_api_gives_commands_that_work_and_copies_them(open_page, browser, real, tmp_path):
    """The curl and Python commands, for the settings chosen, run here against the server and
    give the answer the page shows; the copy button puts them on the clipboard."""
    context = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = open_page(real, context=context)
        page.get_by_label("Predictions to show").fill("4")
        page.get_by_label("Predictions to show").dispatch_event("change")
        page.get_by_role("switch", name="Show where it looked").uncheck()
        page.get_by_text("Use via API").click()
        curl = page.locator("#api-curl").inner_text()
        python = page.locator("#api-python").inner_text()
        assert "top_k=4" in curl and "explain" not in curl and f"{real}/predict" in curl, curl
        shutil.copy(PHOTOS["chelsea"], tmp_path / "photo.jpg")
        by_curl = json.loads(subprocess.run(curl, shell=True, cwd=tmp_path, capture_output=True, check=True,
                                            timeout=120).stdout)
        by_python = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, check=True,
                                   text=True, timeout=120).stdout
        assert len(by_curl["predictions"]) == 4 and "explanation" not in by_curl
        assert repr(by_curl["predictions"]) == by_python.strip()
        page.get_by_role("button", name="Copy curl").click()
        expect(page.locator("#api-copied")).to_have_text("curl command copied.")
        assert page.evaluate("navigator.clipboard.readText()") == curl
        expect_no_serious_violations(page, "API panel open")
    finally:
        context.close()


@pytest.mark.parametrize("checked", [False, True], ids=["nojs", "axe-on-app-js-empty"])
def test_without_javascript_several_files_answer_with_a_table(open_page, open_checked_page, real, tmp_path, checked):
    """The form posts the files as one request (several ``image`` parts); the server answers
    with a row per photo, in order, a broken file as its own row. ``checked``: the page axe-core
    can run in (static/app.js empty, see tests/test_page_axe.py), checked by it."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture\n")
    files = [PHOTOS["chelsea"], broken, PHOTOS["coffee"]]
    page = open_checked_page(real, DESKTOP, False) if checked else open_page(real, javascript=False)
    page.set_input_files("#image", files)
    with page.expect_navigation(timeout=FIRST_ANSWER) as navigation:
        page.get_by_role("button", name="Classify").click()
    assert navigation.value.status == 200
    rows = page.locator(".results-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("th")).to_have_text([path.name for path in files])
    expect(rows.nth(0).locator("td").first).to_have_text(re.compile(rf"^({'|'.join(CAT_LABELS)}) \d+\.\d%$"))
    expect(rows.nth(1).locator("td").first).to_have_text("That file is not an image this server can read.")
    expect(rows.nth(2).locator("td").first).to_have_text(re.compile(r"\d+\.\d%$"))
    expect(page.locator(".results-table caption")).to_contain_text("3 photos · EfficientNetLite0")
    if checked:
        expect_no_serious_violations(page, "results table")


def test_the_grid_runs_on_the_remote_server_too(open_page, real, other, forty_files):
    """``real`` forwards each request of several photos to ``other`` (random ResNet50) in one call."""
    page = open_page(real, allow=(400, 415))
    page.get_by_role("radio", name="Remote").check()
    page.get_by_label("Model").select_option("ResNet50")
    page.set_input_files("#image", forty_files[:10])
    expect(page.locator("#queue-count")).to_have_text("10 of 10", timeout=FIRST_ANSWER)
    states = page.locator("#grid .tile").evaluate_all("tiles => tiles.map(t => t.dataset.state)")
    assert states == ["failed" if path.name.startswith("broken") else "done" for path in forty_files[:10]], states
    page.locator("#grid .tile-button").first.click()
    expect(page.locator(".meta-model")).to_have_text("ResNet50")
    expect(page.locator(".meta-server")).to_contain_text(other)
