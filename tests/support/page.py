"""What the browser tests share: Chromium's settings, viewports, waits and checks of the page.

The fixtures that start Chromium and the servers are in ``support.page_fixtures``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import requests
from axe_playwright_python.sync_playwright import Axe
from playwright import sync_api
from playwright.sync_api import expect

from bench.polling import wait_until

CHROMIUM = "/usr/bin/chromium"  # Debian's (apt-get install chromium): Playwright cannot download one here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
MAX_UPLOAD = 1_000_000  # on ``real``; the photos are smaller

expect.set_options(timeout=60_000)  # first use of a model builds it; two CPUs are shared
FIRST_ANSWER = 180_000  # ms: a server's first request exports its model (with the feature map) while others run

AXE = Axe()
BLOCKING = ("serious", "critical")  # "moderate" and "minor" are advice, not barriers


def wait_for_models(url: str, condition: Callable[[dict[str, dict]], bool], timeout: float = 120) -> dict:
    """GET /models until ``condition`` holds for {name: model}; bounded by ``timeout``."""
    models = wait_until(lambda: {m["name"]: m for m in requests.get(f"{url}/models", timeout=30).json()["models"]},
                        timeout, condition)
    assert condition(models), f"GET /models never met the condition: {models}"
    return models


def expect_bars(page: sync_api.Page, count: int) -> list[tuple[str, float, str]]:
    """Wait for ``count`` bars; return (label, bar value, percentage) for each, best first."""
    expect(page.locator("#result .prediction")).to_have_count(count)
    rows = page.locator("#result .prediction").evaluate_all("""rows => rows.map(row => [
        row.querySelector(".prediction-label").textContent,
        row.querySelector("meter").value,
        row.querySelector(".prediction-score").textContent])""")
    values = [value for _, value, _ in rows]
    assert values == sorted(values, reverse=True), rows
    for _, value, text in rows:
        assert 0 <= value <= 1 and re.fullmatch(r"(\d{1,3}\.\d|<0\.1)%", text), rows
    return [tuple(row) for row in rows]


def expect_no_serious_violations(page: sync_api.Page, state: str) -> None:
    """Run axe-core on the page as it is now; fail with what it found and where."""
    violations = AXE.run(page).response["violations"]
    found = [(v["id"], v["impact"], v["help"], [node["target"] for node in v["nodes"]][:5])
             for v in violations if v["impact"] in BLOCKING]
    assert not found, f"{state}: {found}"


def expected_options(models: list[dict]) -> list[str]:
    """What the selector says for each model: when ready, its name, speed and size, or for an
    int8 form its measured speed-up and agreement (once measured); else its name and a word or
    two that fit a phone's menu ("unavailable", "preparing", else its ``status_text`` without
    "weights ")."""
    return [f"{m['name']} ({option_tag(m)})" if not m["ready"] else int8_option(m) if m["precision"] == "int8"
            else f"{m['name']} · {', '.join(m['about'].split(', ')[:2])}" for m in models]


def option_tag(model: dict) -> str:
    if model["status"] in ("unavailable", "preparing"):
        return model["status"]
    return model["status_text"].removeprefix("weights ")


def int8_option(model: dict) -> str:
    check = model["check"]
    figures = f"{check['speedup']}x faster, agrees {round(check['top1_agreement'] * 100)}%" if check else "int8"
    return f"{model['name']} — {figures}"


# What only an operator can act on: it belongs in GET /models, the docs and the logs, not the page.
OPERATOR_WORDS = re.compile(r"CLASSIFIER_|classifier (export|download)|ahead of traffic|\.h5\b|\.pth\b")


def expect_words_for_a_person(page: sync_api.Page) -> None:
    """No operator instructions anywhere on the page, and every sentence starts with a capital."""
    text = page.locator("body").inner_text()
    assert not OPERATOR_WORDS.search(text), OPERATOR_WORDS.search(text)
    assert not re.search(r"[a-z]\. [a-z]", text), re.search(r".{40}[a-z]\. [a-z].{20}", text)
