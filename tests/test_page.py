"""The upload page in a real browser: Playwright's Python package drives Debian's Chromium
against two instances of ``python3 app.py`` on loopback ports.

``real`` and ``other``, the browser and ``open_page`` are the page tests' shared fixtures
(tests/support/page_fixtures.py, which says what each server runs). ``plain`` is
``python3 app.py`` as a person runs it (the README's screenshots), and ``mirrored`` fetches
Keras weights from a loopback mirror the test holds mid-download.

Every page fails its test on a console error, an uncaught exception or a dialog (open_page).
Screenshots go to tests/screenshots/.
"""

from __future__ import annotations

import base64
import html.parser
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from conftest import PHOTOS, copy_of, free_port
from PIL import Image
from playwright import sync_api
from playwright.sync_api import expect
from support.page import (
    DESKTOP,
    FIRST_ANSWER,
    MAX_UPLOAD,
    OPERATOR_WORDS,
    PHONE,
    SCREENSHOTS,
    expect_bars,
    expect_words_for_a_person,
    expected_options,
    wait_for_models,
)

from bench.servers import QuietHandler, StubServer
from classifier.models.registry import REGISTRY

CAT_LABELS = {"Tabby", "Tiger cat", "Egyptian cat"}
KERAS_MODELS = ("MobileNetV2", "ResNet50", "NASNetMobile")


@pytest.fixture(scope="module")
def plain(serve_app, prepared_keras_home, tmp_path_factory) -> str:
    """``python app.py`` with nothing configured, after its first use: a Keras cache of its own
    in which EfficientNetLite0 is prepared (tests/test_first_use.py shows the first wait)."""
    return serve_app(CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_DEFAULT_MODEL="",
                     KERAS_HOME=str(copy_of(prepared_keras_home, tmp_path_factory.mktemp("plain") / "keras")))


class HeldMirror(StubServer):
    """A loopback stand-in for Keras' weights host (the real one is out of reach here).

    MobileNetV2's file (Keras publishes no hash for it; random values in Keras' layout, which
    the server checks) is sent up to ``SENT_FIRST``, then held until ``release()``, so the
    server's "downloading" state lasts as long as a test needs it; every other file is
    missing (404), so its download fails.
    """

    HELD = REGISTRY["MobileNetV2"].weights.path
    MEGABYTE = 1 << 20  # the downloader reports progress once per megabyte
    HOLD_AT_MOST, TRICKLE_EVERY = 300, 5  # seconds

    def __init__(self, body: bytes) -> None:
        released = self.released = threading.Event()
        self.size = len(body)
        self.sent_first = len(body) // 4 // self.MEGABYTE * self.MEGABYTE

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if not self.path.endswith(HeldMirror.HELD):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = mirror.sent_first
                try:
                    self.wfile.write(body[:sent])
                    self.wfile.flush()
                    # Held, but never silent for long: a byte every few seconds keeps the
                    # downloader's read timeout from firing however slow the test runs.
                    for _ in range(HeldMirror.HOLD_AT_MOST // HeldMirror.TRICKLE_EVERY):
                        if released.wait(timeout=HeldMirror.TRICKLE_EVERY):
                            break
                        self.wfile.write(body[sent:sent + 1])
                        self.wfile.flush()
                        sent += 1
                    self.wfile.write(body[sent:])
                except ConnectionError:
                    pass  # the server under test stopped first, its download unfinished

        mirror = self
        super().__init__(Handler)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        super().close()


@pytest.fixture(scope="module")
def held_mirror(mobilenet_h5: bytes) -> Iterator[HeldMirror]:
    mirror = HeldMirror(mobilenet_h5)
    yield mirror
    mirror.close()


@pytest.fixture(scope="module")
def mirrored(serve_app, held_mirror, prepared_keras_home, tmp_path_factory) -> str:
    """Keras weights from the held mirror; EfficientNetLite0 already prepared in its cache."""
    return serve_app(
        CLASSIFIER_RANDOM_WEIGHTS="0",
        CLASSIFIER_DEFAULT_MODEL="",
        CLASSIFIER_WEIGHTS_MIRROR=held_mirror.url,
        KERAS_HOME=str(copy_of(prepared_keras_home, tmp_path_factory.mktemp("mirrored") / "keras")),
    )


def expect_error(page: sync_api.Page, title: str, *message_parts: str) -> None:
    expect(page.locator("#error .error-title")).to_have_text(title)
    for part in message_parts:
        expect(page.locator("#error .error-message")).to_contain_text(part)
    expect(page.locator("#result .prediction")).to_have_count(0)
    expect(page.locator("#status")).to_be_empty()


def expect_not_an_image_explained(page: sync_api.Page, not_an_image: Path) -> None:
    page.set_input_files("#image", not_an_image)
    expect_error(page, "That file is not an image this server can read.")


def data_transfer(page: sync_api.Page, path: Path, mime: str = "image/png") -> sync_api.JSHandle:
    """A DataTransfer holding the file, as a drop or a paste delivers it."""
    return page.evaluate_handle(
        """([data, name, type]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )


# ---- What the page is made of ----


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data.strip()


class _Options(html.parser.HTMLParser):
    """(value, disabled, text) of each <option>, and the text of each model note."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[list] = []
        self.notes: list[str] = []
        self._into: list | None = None
        self._in_notes = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "option":
            self.options.append([attrs["value"], "disabled" in attrs, ""])
            self._into = self.options[-1]
        elif tag == "details" and attrs.get("id") == "model-notes":
            self._in_notes = True
        elif tag == "li" and self._in_notes:
            self.notes.append("")

    def handle_endtag(self, tag):
        if tag == "option":
            self._into = None
        elif tag == "details":
            self._in_notes = False

    def handle_data(self, data):
        if self._into is not None:
            self._into[2] += data
        elif self._in_notes and self.notes:
            self.notes[-1] += data


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_page_and_assets_are_small_cached_and_load_nothing_from_elsewhere(real):
    page = requests.get(real, timeout=30)
    parser = _Tags()
    parser.feed(page.text)
    assert "style" not in [tag for tag, _ in parser.tags], "no <style> element"
    assert parser.script_text == "", "no inline script"
    for tag, attrs in parser.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "style"], (tag, attrs)
        for name in ("src", "href", "action"):
            if attrs.get(name):
                assert attrs[name].startswith("/") and not attrs[name].startswith("//"), (tag, attrs)
    assets = {attrs.get("src") or attrs["href"] for tag, attrs in parser.tags
              if tag in ("script", "link", "img") and (attrs.get("src") or attrs.get("href"))}
    assert len(assets) == 3  # app.js, style.css, favicon.svg
    total = len(page.content)
    for url in assets:
        assert url.startswith("/static/") and "?v=" in url, url
        response = requests.get(urljoin(real, url), timeout=30)
        assert response.status_code == 200
        assert "max-age=31536000" in response.headers["Cache-Control"]
        total += len(response.content)
    # Uncompressed, no framework: 48.4 KB with one photo; 62.6 KB with the grid of many, the
    # camera, the examples and the "Use via API" panel; 66.5 KB with the int8 forms in the
    # model list and, for those waiting for weights, in its notes; 69.1 KB with the camera's
    # three causes told apart, the queue's words, and a person's notes instead of the hints.
    assert total < 70_000, f"page and assets weigh {total} bytes"


# ---- Choosing an image, seeing the bars ----


def test_file_chooser_shows_bars_for_a_real_photo_on_desktop_and_phone(open_page, plain):
    """As ``python app.py`` shows it: these are the README's screenshots."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = open_page(plain, viewport=viewport)
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator(".segment")).to_have_text(["This server", "Custom URL"])
        with page.expect_file_chooser() as chooser:
            page.locator("#dropzone").click()
        with page.expect_response(f"{plain}/predict", timeout=FIRST_ANSWER) as response:
            chooser.value.set_files(PHOTOS["chelsea"])
        rows = expect_bars(page, 3)
        expect_heatmap_over_crop(page, response.value.json()["explanation"], rows[0][0])
        # The server words the labels; the page shows them as they are.
        assert [label for label, _, _ in rows] == [p["display_label"] for p in response.value.json()["predictions"]]
        expect(page.locator("#preview")).to_be_visible()
        assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth") == 451
        expect(page.locator(".meta-server")).to_have_text("this server")
        assert CAT_LABELS & {label for label, _, _ in rows}, rows
        expect(page.locator(".meta-model")).to_have_text("EfficientNetLite0")
        expect(page.locator(".meta-weights")).to_have_text("imagenet")
        expect(page.locator(".top-label")).to_have_text(rows[0][0])
        time_text = page.locator(".meta-time").inner_text()
        assert re.fullmatch(r"\d+ ms \((loading the model \d+ ms, )?inference \d+ ms\)", time_text), time_text
        assert ("loading the model" in time_text) == ("load" in response.value.json()["timing_ms"])
        assert page.title() == f"{rows[0][0]} · Image classifier"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scroll"
        # The model that answered is loaded: the menu no longer says it is being prepared.
        expect(page.locator("#model option:checked")).to_have_text(re.compile(r"^EfficientNetLite0 · "))
        expect(page.locator("#model-state")).to_be_hidden()
        page.mouse.move(0, 0)
        page.evaluate("document.activeElement.blur()")
        page.wait_for_timeout(300)  # transitions and the phone's scroll to the answer
        page.screenshot(path=SCREENSHOTS / f"README-{name}.png", full_page=True)
    # On the phone the answer is below the photo: a bar brings the photo back into view for its map.
    page.locator("#output").evaluate("output => output.scrollIntoView()")
    expect(page.locator("#preview")).not_to_be_in_viewport()
    bar(page, 1).click()
    expect(page.locator("#preview")).to_be_in_viewport()
    expect(page.locator("#heatmap")).to_have_attribute("alt", re.compile(f"^Where it looked for {rows[1][0]}"))


def test_drag_and_drop(open_page, real):
    page = open_page(real)
    transfer = data_transfer(page, PHOTOS["coffee"])
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class(re.compile(r"\bdragging\b"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).not_to_have_class(re.compile(r"\bdragging\b"))
    rows = expect_bars(page, 3)
    assert page.eval_on_selector("#image", "input => input.files[0].name") == "coffee.png"
    expect(page.locator("#preview")).to_be_visible()
    assert {"Espresso", "Cup", "Coffee mug"} & {label for label, _, _ in rows}, rows


def test_paste_from_the_clipboard(open_page, real):
    page = open_page(real)
    page.get_by_label("Predictions to show").fill("5")
    transfer = data_transfer(page, PHOTOS["grace_hopper"], "image/jpeg")
    page.evaluate("""transfer => document.body.dispatchEvent(
        new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }))""", transfer)
    rows = expect_bars(page, 5)
    assert page.eval_on_selector("#image", "input => input.files[0].name") == "grace_hopper.jpg"
    assert "Military uniform" in {label for label, _, _ in rows}, rows


def test_pasting_text_into_a_field_is_left_alone(open_page, other):
    page = open_page(other)
    page.get_by_role("radio", name="Custom URL").check()
    field = page.get_by_label("Server URL")
    field.focus()
    page.evaluate("""() => {
        const transfer = new DataTransfer();
        transfer.setData("text/plain", "http://example.invalid/predict");
        document.activeElement.dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }));
    }""")
    assert page.eval_on_selector("#image", "input => input.files.length") == 0
    expect(page.locator("#status")).to_be_empty()


def test_a_new_model_count_or_server_classifies_the_image_again(open_page, other):
    """No answer stays beside a choice it was not made with, and no Classify press is needed."""
    page = open_page(other)
    page.set_input_files("#image", PHOTOS["chelsea"])
    first = expect_bars(page, 3)
    expect(page.locator(".meta-model")).to_have_text("ResNet50")
    expect(page.locator(".meta-weights")).to_have_text("random")

    page.get_by_label("Model").select_option("MobileNetV2")
    expect(page.locator("#model-about")).to_have_text("fast, 14 MB, 71% top-1 · random weights")
    expect(page.locator(".meta-model")).to_have_text("MobileNetV2")
    assert expect_bars(page, 3) != first  # another model's answer, not the old bars

    page.get_by_label("Predictions to show").fill("5")
    page.get_by_label("Predictions to show").press("Tab")
    expect_bars(page, 5)

    # Another server, whose address is still missing: the old answer goes, and the page says why.
    page.get_by_role("radio", name="Custom URL").check()
    expect_error(page, "Something in the form needs fixing.", "Server URL")
    page.get_by_label("Server URL").fill(f"{other}/predict")
    page.get_by_label("Server URL").press("Tab")
    expect(page.locator(".meta-server")).to_have_text(f"{other}/predict")
    expect_bars(page, 5)
    expect(page.locator("#error")).to_be_empty()

    page.get_by_role("radio", name="This server").check()
    expect(page.locator(".meta-server")).to_have_text("this server")
    expect_bars(page, 5)


def test_a_count_out_of_range_is_clamped_and_a_new_photo_still_classifies(open_page, other, not_an_image):
    page = open_page(other, allow=(415,))
    expect_not_an_image_explained(page, not_an_image)
    count = page.get_by_label("Predictions to show")
    count.fill("50")  # beyond the server's 20; no Tab, so the field still holds 50
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 20)
    expect(page.locator("#error")).to_be_empty()  # the old error went with the old file
    expect(count).to_have_value("20")
    expect(page.locator("#top_k-note")).to_have_text("Shows 1 to 20 predictions, so 20.")

    count.fill("0")
    count.press("Tab")
    expect(count).to_have_value("1")
    expect_bars(page, 1)
    count.fill("4")
    count.press("Tab")
    expect_bars(page, 4)
    expect(page.locator("#top_k-note")).to_be_hidden()


def test_clear_removes_the_image_and_the_answer(open_page, other):
    page = open_page(other)
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#result .prediction")).to_have_count(0)
    expect(page.locator("#preview")).to_be_hidden()
    expect(page.locator("#empty")).to_be_visible()
    assert page.eval_on_selector("#image", "input => input.files.length") == 0
    assert page.evaluate("document.activeElement.id") == "image"
    assert page.title() == "Image classifier"


# ---- Models the server cannot run ----


def option_texts(page: sync_api.Page) -> list[str]:
    return [squeeze(text) for text in page.locator("#model option").all_text_contents()]


def test_models_that_cannot_run_here_say_why_and_stay_chosen(open_page, real):
    reported = requests.get(f"{real}/models", timeout=30).json()["models"]
    assert {m["status"] for m in reported if m["name"] in KERAS_MODELS} == {"unavailable"}
    for javascript in (True, False):
        page = open_page(real, javascript=javascript)
        assert option_texts(page) == expected_options(reported)
        expect(page.locator("#model option:disabled")).to_have_count(0)
        expect(page.get_by_label("Model")).to_have_value("EfficientNetLite0")
        expect(page.locator("#model-state")).to_be_hidden()
        not_ready = [m for m in reported if not m["ready"]]
        notes = page.locator("#model-notes")
        notes.locator("summary").click()
        expect(notes.locator("summary")).to_have_text(f"{len(not_ready)} of {len(reported)} models are not ready here")
        # Which models a person can use now, and for each other one short reason, no instructions.
        usable = [m["name"] for m in reported if m["status"] in ("loaded", "ready", "preparing")]
        expect(notes.locator("#models-usable")).to_have_text(f"Can run here now: {', '.join(usable)}.")
        for model in not_ready:  # an int8 form waits for its fp32 model's weights, then for `classifier export`
            item = notes.locator("li", has=page.locator("strong", has_text=re.compile(f"^{model['name']}$")))
            expect(item).to_have_text(f"{model['name']}: {model['note']}.")
            assert model["hint"] and not OPERATOR_WORDS.search(model["note"]), model  # the hint is GET /models'
        expect_words_for_a_person(page)

    # Chosen anyway, a model stays chosen: its state shows, and Classify says why it cannot run.
    page = open_page(real, allow=(503,))
    page.get_by_label("Model").select_option("NASNetMobile")
    state = page.locator("#model-state")
    expect(state).to_be_visible()
    expect(state).to_have_text("NASNetMobile: its weights are not on this server.")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_error(page, "That model is not ready yet.",
                 "NASNetMobile: its weights are not on this server. Can run here now: EfficientNetLite0.")
    expect_words_for_a_person(page)
    expect(page.get_by_label("Model")).to_have_value("NASNetMobile")
    page.get_by_label("Model").select_option("EfficientNetLite0")  # and a change of mind classifies
    expect_bars(page, 3)
    expect(state).to_be_hidden()


def test_every_weights_state_reads_the_same_from_the_server_and_from_javascript(
        open_page, mirrored, held_mirror):
    """A real server in every state: a download held at 1 MB of 4 by the loopback mirror, one
    the mirror failed (404), one not yet asked for, and a loaded model. The template and the
    script must show the same ``status_text``, and the script's poll must see the download end
    without the chosen model changing."""
    files = {"image": PHOTOS["chelsea"].read_bytes()}
    for name, status in (("MobileNetV2", 503), ("NASNetMobile", 503), ("EfficientNetLite0", 200)):
        answer = requests.post(f"{mirrored}/predict", data={"model": name}, files=files, timeout=120)
        assert answer.status_code == status, answer.text
    models = wait_for_models(mirrored, lambda ms: ms["MobileNetV2"].get("progress", {}).get("done", 0) > 0
                             and "error" in ms["NASNetMobile"])
    assert models["MobileNetV2"]["progress"] == {"done": held_mirror.sent_first, "total": held_mirror.size}
    assert [m["status"] for m in models.values()][:4] == ["downloading", "download needed", "unavailable", "loaded"]
    assert models["MobileNetV2"]["status_text"].endswith(f" {100 * held_mirror.sent_first // held_mirror.size}%")
    reported = list(models.values())

    rendered = _Options()
    rendered.feed(requests.get(mirrored, timeout=30).text)
    assert [squeeze(text) for *_, text in rendered.options] == expected_options(reported)
    failed = models["NASNetMobile"]
    assert squeeze(rendered.notes[2]) == f"NASNetMobile: {failed['note']}."

    page = open_page(mirrored)
    # Counted into an attribute that expect() can wait on: wait_for_function polls with eval,
    # which the page's CSP refuses whenever the condition is not already true.
    page.add_init_script("""let modelRenders = 0;
        new MutationObserver((changes) => {
            modelRenders += changes.filter((c) => c.target.id === "model" && c.removedNodes.length).length;
            if (modelRenders) document.documentElement.dataset.modelRenders = String(modelRenders);
        }).observe(document, { childList: true, subtree: true });""")
    page.reload()
    # The script rebuilt the list from GET /models.
    expect(page.locator("html")).to_have_attribute("data-model-renders", re.compile(r"^[1-9]"))
    assert option_texts(page) == [squeeze(text) for *_, text in rendered.options]
    notes = page.locator("#model-notes li").all_text_contents()
    assert [squeeze(n) for n in notes] == [squeeze(n) for n in rendered.notes]

    page.get_by_label("Model").select_option("MobileNetV2")
    expect(page.locator("#model-state")).to_contain_text(f"MobileNetV2: {models['MobileNetV2']['note']}.")
    held_mirror.release()
    expect(page.locator("#model option[value=MobileNetV2]")).to_have_text("MobileNetV2 · fast, 14 MB")
    # ResNet50 and NASNetMobile, their int8 forms, which wait for them, and every other int8
    # form, which waits for `classifier export` (no request makes one)
    expect(page.locator("#model-notes summary")).to_have_text(f"6 of {len(models)} models are not ready here")
    expect(page.get_by_label("Model")).to_have_value("MobileNetV2")
    expect(page.locator("#model-state")).to_be_hidden()


def test_a_model_without_weights_is_explained_with_the_download_hint(open_page, real, other):
    """``real`` answers 503 for a Keras model; asked through ``other``, the page shows why."""
    page = open_page(other, allow=(503,))
    page.get_by_role("radio", name="Custom URL").check()
    page.get_by_label("Server URL").fill(f"{real}/predict")
    page.get_by_label("Model").select_option("NASNetMobile")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_error(page, "The other server is not ready yet.",
                 "answered 503", "NASNetMobile: unavailable: nasnet_mobile.h5 is not here")
    expect(page.locator("#error code")).to_have_text("classifier download NASNetMobile")


# ---- Where the prediction runs ----


def test_remote_mode_runs_on_the_configured_remote(open_page, real, other):
    page = open_page(real, allow=(503,))
    expect(page.get_by_role("radio", name="Custom URL")).to_have_count(0)  # not allowed on real
    expect(page.locator("#remote_url")).to_have_count(0)
    expect(page.locator(".remote-note")).to_be_hidden()
    page.get_by_role("radio", name="Remote").check()
    expect(page.locator(".remote-note")).to_contain_text(f"{other}/predict")
    # Which models the remote has is the remote's business: none is disabled here now.
    expect(page.locator("#model option:disabled")).to_have_count(0)
    page.get_by_label("Model").select_option("MobileNetV2")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    expect(page.locator(".meta-server")).to_have_text(f"the remote server {other}/predict")
    expect(page.locator(".meta-model")).to_have_text("MobileNetV2")
    expect(page.locator(".meta-weights")).to_have_text("random")
    # Back to this server, which cannot run that model: it stays chosen, and the page says why.
    page.get_by_role("radio", name="This server").check()
    expect_error(page, "That model is not ready yet.", "MobileNetV2: its weights are not on this server.")
    expect(page.get_by_label("Model")).to_have_value("MobileNetV2")
    expect(page.locator("#model-state")).to_contain_text("MobileNetV2: ")


def test_custom_url_is_used_and_remembered(open_page, real, other):
    # other waits 2 s for a remote: real's model is loaded (and exported) first.
    warm = requests.post(f"{real}/predict", files={"image": PHOTOS["chelsea"].read_bytes()}, timeout=FIRST_ANSWER / 1000)
    assert warm.ok, warm.text
    page = open_page(other)
    expect(page.get_by_role("radio", name="Remote")).to_have_count(0)  # other has no remote
    field = page.get_by_label("Server URL")
    expect(field).to_be_hidden()
    page.get_by_role("radio", name="Custom URL").check()
    expect(field).to_be_visible()
    field.fill(f"{real}/predict")
    page.get_by_label("Model").select_option("EfficientNetLite0")
    explanation = explained_answer(page, other, lambda: page.set_input_files("#image", PHOTOS["chelsea"]))
    rows = expect_bars(page, 3)
    expect(page.locator(".meta-server")).to_have_text(f"{real}/predict")
    assert CAT_LABELS & {label for label, _, _ in rows}, rows
    expect_heatmap_over_crop(page, explanation, rows[0][0])  # the custom server's map, relayed
    expect(page.locator(".meta-weights")).to_have_text("imagenet")

    again = open_page(other, context=page.context)  # the same browser, later
    expect(again.get_by_role("radio", name="Custom URL")).to_be_checked()
    expect(again.get_by_label("Server URL")).to_have_value(f"{real}/predict")
    again.get_by_role("radio", name="This server").check()
    expect(open_page(other, context=page.context).get_by_role("radio", name="This server")).to_be_checked()


def test_a_custom_url_without_predict_gets_a_hint(open_page, other):
    page = open_page(other)
    page.get_by_role("radio", name="Custom URL").check()
    field = page.get_by_label("Server URL")
    check = page.locator("#remote-url-check")
    for typed, meant in ((other, f"{other}/predict"), (f"{other}/api/", f"{other}/api/predict")):
        field.fill(typed)
        field.press("Tab")
        expect(check).to_have_text(f"Did you mean {meant}?")
        expect(check.locator("code")).to_have_text(meant)
    field.fill(f"{other}/predict")
    field.press("Tab")
    expect(check).to_be_hidden()


def test_custom_url_refused_inline(open_page, other):
    page = open_page(other, allow=(400,))
    page.get_by_role("radio", name="Custom URL").check()
    page.get_by_label("Server URL").fill("http://169.254.169.254/predict")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_error(page, "That server address is not allowed.", "link-local")


def test_custom_url_must_be_given(open_page, other):
    page = open_page(other)
    page.get_by_role("radio", name="Custom URL").check()
    page.set_input_files("#image", PHOTOS["chelsea"])
    assert page.get_by_label("Server URL").evaluate("field => field.validity.valueMissing")
    expect(page.locator("#status")).to_be_empty()


# ---- Errors, inline and in plain words ----


def test_a_file_that_is_not_an_image_is_explained(open_page, other, not_an_image):
    page = open_page(other, allow=(415,))
    expect_not_an_image_explained(page, not_an_image)
    expect(page.locator("#preview")).to_be_hidden()


def test_an_image_over_the_limit_is_refused_before_it_is_sent(open_page, real, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(PHOTOS["chelsea"].read_bytes() + bytes(MAX_UPLOAD))
    page = open_page(real)
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.set_input_files("#image", big)
    limit = page.locator("#classify-form").get_attribute("data-max-upload")  # the server's wording
    expect_error(page, "That image is too large.", f"big.png is {big.stat().st_size:,} bytes", f"up to {limit}.")
    assert sent == []


def test_an_unreachable_remote_is_explained(open_page, other):
    page = open_page(other, allow=(502,))
    page.get_by_role("radio", name="Custom URL").check()
    page.get_by_label("Server URL").fill(f"http://127.0.0.1:{free_port()}/predict")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_error(page, "The other server could not classify the image.", "could not be reached")


def test_spinner_clears_the_previous_answer_then_a_timeout_is_explained(open_page, other, silent_url):
    page = open_page(other, allow=(504,))
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    page.get_by_role("radio", name="Custom URL").check()
    page.get_by_label("Server URL").fill(silent_url)
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#status")).to_have_text("Asking the other server…")
    expect(page.locator("#status")).to_have_class(re.compile(r"\bbusy\b"))
    expect(page.locator("#output")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#result .prediction")).to_have_count(0)
    expect_error(page, "The other server took too long to answer.", "did not answer in time")
    expect(page.locator("#output")).to_have_attribute("aria-busy", "false")


# The policy the page is built for: nothing inline, nothing from elsewhere (images from
# blob: are the chosen photo, from data: the answer's heatmap).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def test_the_page_works_under_a_strict_content_security_policy(open_page, other):
    page = open_page(other)

    def with_csp(route: sync_api.Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": CSP})

    page.route(f"{other}/", with_csp)
    assert page.reload().headers["content-security-policy"] == CSP
    page.evaluate("""() => { window.violations = [];
        document.addEventListener("securitypolicyviolation", (e) => window.violations.push(e.violatedDirective)); }""")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#crop-frame")).to_be_visible()
    assert page.locator("#heatmap").evaluate("img => img.complete && img.naturalWidth > 0")
    bar(page, 1).click()  # the second class's map comes by fetch and shows as the first did
    expect(page.locator("#heatmap")).to_have_attribute("alt", re.compile(f"^Where it looked for {expect_bars(page, 3)[1][0]}"))
    page.get_by_role("radio", name="Custom URL").check()
    expect(page.get_by_label("Server URL")).to_be_visible()
    assert page.evaluate("window.violations") == []


# ---- Where it looked: the heatmap over the photo ----


def explained_answer(page: sync_api.Page, url: str, act: Callable[[], None]) -> dict:
    """Do ``act`` and return the explanation of the POST /predict answer it causes."""
    with page.expect_response(f"{url}/predict", timeout=FIRST_ANSWER) as response:
        act()
    answer = response.value.json()
    assert response.value.ok, answer
    return answer["explanation"]


def expect_heatmap_over_crop(page: sync_api.Page, explanation: dict, label: str) -> None:
    """The heatmap is this explanation's, shown with its words, exactly over its crop of the
    photo as the browser shows it (oriented by EXIF, scaled to fit)."""
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_have_attribute("src", explanation["heatmap"])
    expect(heatmap).to_have_attribute("alt", f"Where it looked for {label}. {explanation['summary']}")
    expect(page.locator("#heat-caption")).to_have_text(f"Where it looked for {label}. {explanation['summary']}")
    expect(page.locator("#crop-frame")).to_be_visible()
    # Measured at one instant: the phone layout may still be scrolling to the answer.
    photo, frame, drawn, natural_width, natural_height, loaded = page.evaluate("""() => {
        const box = (id) => { const r = document.getElementById(id).getBoundingClientRect();
                              return [r.x, r.y, r.width, r.height]; };
        const [preview, heatmap] = [document.getElementById("preview"), document.getElementById("heatmap")];
        return [box("preview"), box("crop-frame"), box("heatmap"), preview.naturalWidth, preview.naturalHeight,
                heatmap.complete && heatmap.naturalWidth > 0];
    }""")
    x, y, width, height = photo
    assert abs(width / height - natural_width / natural_height) < 0.01, "the photo is shown undistorted"
    left, top, right, bottom = explanation["crop"]
    expected = [x + left * width / natural_width, y + top * height / natural_height,
                (right - left) * width / natural_width, (bottom - top) * height / natural_height]
    for box in (frame, drawn):
        assert all(abs(got - want) <= 1 for got, want in zip(box, expected)), (box, expected)
    assert loaded


def bar(page: sync_api.Page, index: int) -> sync_api.Locator:
    return page.locator("#result .prediction-row").nth(index)


def test_the_heatmap_covers_the_crop_here_and_on_the_remote_and_each_bar_shows_its_own(open_page, real, other):
    """Local (EfficientNetLite0 on ``real``) and remote (ResNet50 on ``other``, forwarded by
    ``real``): the first answer carries the top class's map; a bar asks for its class's map
    (explain_class), shown once it comes and kept for a second look; the slider sets the
    heatmap's opacity; the switch hides and shows it."""
    posts: list[str] = []
    for server, model in (("This server", "EfficientNetLite0"), ("Remote", "ResNet50")):
        page = open_page(real)
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        expect(page.get_by_role("switch", name="Show where it looked")).to_be_checked()
        page.get_by_role("radio", name=server).check()
        page.get_by_label("Model").select_option(model)
        top = explained_answer(page, real, lambda: page.set_input_files("#image", PHOTOS["chelsea"]))
        labels = [label for label, _, _ in expect_bars(page, 3)]
        expect(page.locator(".meta-model")).to_have_text(model)
        expect(page.locator(".meta-server")).to_contain_text("this server" if server == "This server" else other)
        expect_heatmap_over_crop(page, top, labels[0])
        expect(bar(page, 0)).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#result [aria-pressed=true]")).to_have_count(1)

        second = explained_answer(page, real, lambda: bar(page, 1).click())
        assert second["class_id"] == bar(page, 1).get_attribute("data-class-id") != top["class_id"]
        expect_heatmap_over_crop(page, second, labels[1])
        expect(bar(page, 1)).to_have_attribute("aria-pressed", "true")
        expect(bar(page, 0)).to_have_attribute("aria-pressed", "false")
        assert second["heatmap"] != top["heatmap"]
        # The top class's map is still at hand: by keyboard, and without another request.
        posts.clear()
        bar(page, 0).focus()
        page.keyboard.press("Enter")
        expect_heatmap_over_crop(page, top, labels[0])
        assert posts == []

    slider = page.get_by_role("slider", name="Heatmap opacity")
    slider.focus()
    for key, opacity in (("Home", "0"), ("ArrowRight", "0.05"), ("End", "1")):
        page.keyboard.press(key)
        expect(page.locator("#heatmap")).to_have_css("opacity", opacity)

    switch = page.get_by_role("switch", name="Show where it looked")
    switch.uncheck()
    expect(page.locator("#crop-frame")).to_be_hidden()
    expect(slider).to_be_hidden()
    expect(page.locator("#result [aria-pressed=true]")).to_have_count(0)
    switch.check()
    expect_heatmap_over_crop(page, top, labels[0])
    assert posts == []


def test_the_heatmap_follows_a_photo_that_exif_turns_upright(open_page, real, tmp_path):
    """A phone photo stored sideways (EXIF orientation 6): the browser shows it upright, and the
    server's crop is in the upright photo's pixels, so the frame lands on it in the portrait."""
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    Image.open(PHOTOS["chelsea"]).convert("RGB").save(sideways, exif=exif)  # stored 451 × 300
    page = open_page(real)
    explanation = explained_answer(page, real, lambda: page.set_input_files("#image", sideways))
    rows = expect_bars(page, 3)
    assert page.locator("#preview").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [300, 451]
    assert explanation["crop"][2] <= 300 and explanation["crop"][3] <= 451, explanation["crop"]
    expect_heatmap_over_crop(page, explanation, rows[0][0])


def test_without_javascript_the_form_posts_and_the_server_renders_the_answer(open_page, real, tmp_path, not_an_image):
    page = open_page(real, javascript=False, allow=(413, 415))
    expect(page.get_by_role("button", name="Clear")).to_be_hidden()
    page.set_input_files("#image", PHOTOS["chelsea"])
    page.get_by_label("Predictions to show").fill("4")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Classify").click()
    assert navigation.value.status == 200 and urlsplit(page.url).path == "/"
    rows = expect_bars(page, 4)
    assert CAT_LABELS & {label for label, _, _ in rows}, rows
    expect(page.locator(".meta-weights")).to_have_text("imagenet")
    expect(page.locator(".meta-server")).to_have_text("this server")
    expect(page.locator(".meta-image")).to_have_text("chelsea.png")  # the page cannot show the file it sent
    expect(page.get_by_label("Predictions to show")).to_have_value("4")
    assert page.title() == f"{rows[0][0]} · Image classifier"
    time_text = page.locator(".meta-time").inner_text()
    assert re.fullmatch(r"\d+ ms \((loading the model \d+ ms, )?inference \d+ ms\)", time_text), time_text

    page.set_input_files("#image", not_an_image)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Classify").click()
    assert navigation.value.status == 415
    expect_error(page, "That file is not an image this server can read.")

    for size in (MAX_UPLOAD + 1, 2 * MAX_UPLOAD):  # real's 1 MB limit: the classifier's, then Werkzeug's
        big = tmp_path / f"big{size}.png"
        big.write_bytes(bytes(size))
        page.set_input_files("#image", big)
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Classify").click()
        assert navigation.value.status == 413
        limit = page.locator("#classify-form").get_attribute("data-max-upload")
        expect_error(page, "That image is too large.", limit)  # worded as the script words it


def test_without_javascript_the_answer_shows_the_explained_crop(open_page, real):
    """The server draws the heatmap into the crop the model saw, from this server's map or the
    remote's, and says in its alt text where the heat lies."""
    page = open_page(real, javascript=False)
    switch = page.get_by_role("switch", name="Show where it looked")
    for server, model in (("local", "EfficientNetLite0"), ("remote", "ResNet50")):
        options = {"explain": "1", "server": server, "model": model}
        api = requests.post(f"{real}/predict", data=options, files={"image": PHOTOS["chelsea"].read_bytes()},
                            timeout=FIRST_ANSWER / 1000).json()
        explanation = api["explanation"]
        expect(switch).to_be_checked()
        page.locator(f"input[name=server][value={server}]").check()
        page.get_by_label("Model").select_option(model)
        page.set_input_files("#image", PHOTOS["chelsea"])
        with page.expect_navigation():
            page.get_by_role("button", name="Classify").click()
        expect_bars(page, 3)
        expect(page.locator(".meta-model")).to_have_text(model)
        image = page.get_by_role("img", name=explanation["summary"], exact=True)
        expect(image).to_be_visible()
        assert image.get_attribute("src").startswith("data:image/png;base64,")
        width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        left, top, right, bottom = explanation["crop"]
        assert abs(width / height - (right - left) / (bottom - top)) < 0.02, "the crop the model saw"
        expect(page.locator(".explained figcaption")).to_have_text(
            f"Where it looked for {api['predictions'][0]['display_label']}")

    switch.uncheck()
    page.set_input_files("#image", PHOTOS["chelsea"])
    with page.expect_navigation():
        page.get_by_role("button", name="Classify").click()
    expect_bars(page, 3)
    expect(page.locator(".explained")).to_have_count(0)
    expect(switch).not_to_be_checked()


# ---- Keyboard and screen readers ----


def test_keyboard_order_labels_and_live_regions(open_page, other):
    page = open_page(other)
    page.locator("body").focus()
    order = []
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    # SUMMARY: "4 of 8 models are not ready here" (random weights: the int8 forms are unavailable)
    assert order == ["image", "folder", "example-chelsea", "example-coffee", "camera-start",
                     "model", "SUMMARY", "server-local", "top_k", "explain", "clear", "classify"], order
    page.locator("#server-local").focus()
    page.keyboard.press("ArrowRight")  # radios move with the arrow keys
    expect(page.get_by_role("radio", name="Custom URL")).to_be_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "remote_url"

    for name in ("Model", "Predictions to show", "Server URL", "Show where it looked"):
        expect(page.get_by_label(name)).to_have_count(1)
    expect(page.get_by_label(re.compile("Drop an image here"))).to_have_attribute("type", "file")
    expect(page.get_by_role("group", name="Run on")).to_be_visible()
    expect(page.locator("#result")).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("status")).to_have_count(1)
    expect(page.get_by_role("alert")).to_have_count(1)

    page.get_by_role("radio", name="This server").check()
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect_bars(page, 3)
    expect(page.get_by_role("list", name="Predictions, best first").get_by_role("listitem")).to_have_count(3)
    # Each bar is a button named by its class and score; the one whose map is shown is pressed.
    buttons = page.get_by_role("list", name="Predictions, best first").get_by_role("button")
    expect(buttons).to_have_count(3)
    expect(buttons.first).to_have_accessible_name(re.compile(r"^\S.* (\d{1,3}\.\d|<0\.1)%$"))
    expect(page.get_by_role("button", pressed=True)).to_have_count(1)
    expect(page.get_by_role("img", name=re.compile(r"^Where it looked for "))).to_have_count(1)
    expect(page.get_by_role("slider", name="Heatmap opacity")).to_be_visible()
    expect(page.locator("#preview")).to_have_attribute("alt", re.compile(r"^chelsea\.png: "))
