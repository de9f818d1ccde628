"""How long a first visit to the page waits for its script, at a given network latency.

    python3 -m bench.page_load URL [--latency 100] [--runs 7]

Opens URL (a running page: ``python3 app.py``, or the deployed site) in Chromium with an empty
cache each time, every request delayed by ``--latency`` ms (Chromium's network emulation), and
prints the median time from navigation to DOMContentLoaded, which module scripts run before;
the script files fetched and their bytes; and how many rounds of requests the scripts took
(a module's imports are found only once it has arrived, so each level of imports not named
earlier is one more round trip). A repeat visit fetches none of them: each URL is cached for
a year.
"""

from __future__ import annotations

import argparse
import statistics
from urllib.parse import urlsplit

from playwright import sync_api

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def visit(browser: sync_api.Browser, url: str, latency: float) -> tuple[float, list[dict]]:
    """One first visit: ms to DOMContentLoaded, and the scripts' resource timing entries."""
    context = browser.new_context()
    page = context.new_page()
    session = context.new_cdp_session(page)
    session.send("Network.enable")
    session.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": latency, "downloadThroughput": -1, "uploadThroughput": -1})
    page.goto(url)
    loaded = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    scripts = page.evaluate("""performance.getEntriesByType('resource')
        .filter((entry) => new URL(entry.name).pathname.endsWith('.js'))
        .map((entry) => ({name: entry.name, start: entry.startTime, end: entry.responseEnd, bytes: entry.encodedBodySize}))""")
    context.close()
    return loaded, scripts


def rounds(scripts: list[dict]) -> int:
    """Requests that start after another script's response has ended are a later round."""
    count, done = 0, -1.0
    for entry in sorted(scripts, key=lambda entry: entry["start"]):
        if entry["start"] >= done:
            count += 1
            done = max(e["end"] for e in scripts if e["start"] <= entry["start"])
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--latency", type=float, default=100, help="ms added to every request (default: 100)")
    parser.add_argument("--runs", type=int, default=7, help="first visits to take the median of (default: 7)")
    args = parser.parse_args()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        visits = [visit(browser, args.url, args.latency) for _ in range(args.runs)]
        browser.close()
    scripts = visits[-1][1]
    print(f"{args.url} at {args.latency:.0f} ms latency, {args.runs} first visits")
    print(f"  DOMContentLoaded: median {statistics.median(ms for ms, _ in visits):.0f} ms")
    print(f"  scripts: {len(scripts)} files, {sum(e['bytes'] for e in scripts):,} bytes, {rounds(scripts)} rounds")
    for entry in sorted(scripts, key=lambda entry: entry["start"]):
        print(f"    {entry['start']:7.0f} {entry['end']:7.0f} ms  {urlsplit(entry['name']).path}")


if __name__ == "__main__":
    main()
