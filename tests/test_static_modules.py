"""The page's ES modules keep content-hashed URLs (classifier/web/static_modules.py): the hashes in
the import statements are current, a change to a module reaches every URL above it, and the
page in Chromium loads no module whose URL does not carry its content's hash."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from classifier.web.static_modules import ImportCycle, content_hash, stamp

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
MODULES = sorted(path.relative_to(STATIC).as_posix() for path in STATIC.rglob("*.js"))


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A copy of the page's scripts, to stamp without touching the checkout."""
    copy = tmp_path / "static"
    for name in MODULES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STATIC / name, copy / name)
    return copy


def test_every_import_carries_the_current_hash_of_its_module(scripts):
    """Else a browser keeps the old module under the old URL for a year: after editing a module,
    run ``python3 -m classifier.web.static_modules``."""
    assert stamp(scripts) == [], "stale hashes: run python3 -m classifier.web.static_modules"


def test_a_change_to_a_module_changes_the_url_of_every_module_above_it(scripts):
    before = {name: content_hash((scripts / name).read_bytes()) for name in MODULES}
    with (scripts / "page" / "format.js").open("a") as module:
        module.write("// changed\n")
    changed = {path.relative_to(scripts).as_posix() for path in stamp(scripts)}
    after = {name: content_hash((scripts / name).read_bytes()) for name in MODULES}
    assert {"page/answer.js", "page/errors.js", "page/queue.js", "app.js"} <= changed
    assert "page/dom.js" not in changed  # imports nothing that changed
    assert {name for name in MODULES if before[name] != after[name]} == changed | {"page/format.js"}
    assert f'from "./format.js?v={after["page/format.js"]}"' in (scripts / "page" / "errors.js").read_text()


def test_modules_that_import_each_other_are_refused(tmp_path):
    """Neither's hash could include the other's."""
    (tmp_path / "a.js").write_text('import { b } from "./b.js";\nexport const a = 1;\n')
    (tmp_path / "b.js").write_text('import { a } from "./a.js";\nexport const b = 2;\n')
    with pytest.raises(ImportCycle, match=r"a\.js imports .*b\.js imports .*a\.js"):
        stamp(tmp_path)


def test_every_module_the_page_loads_has_a_hashed_url_cached_for_a_year(open_page, other):
    """Every script Chromium fetched for the page (app.js and each module it imports, however
    deep; its own resource timing lists them) has a URL with the hash of the bytes served
    there, which are cached for a year; every module in static/ is one of them, so none is
    left out or loaded some other way. The page with everything it loads stays small."""
    page = open_page(other)
    loaded = page.evaluate("performance.getEntriesByType('resource').map((entry) => entry.name)")
    scripts = [(urlsplit(url).path, url) for url in loaded if urlsplit(url).path.endswith(".js")]
    # Each once: a module imported by two URLs would run twice, as two modules.
    assert sorted(path for path, _ in scripts) == [f"/static/{name}" for name in MODULES]
    for path, url in scripts:
        response = requests.get(url, timeout=10)
        assert response.status_code == 200 and response.content == (ROOT / path.lstrip("/")).read_bytes(), url
        assert parse_qs(urlsplit(url).query) == {"v": [content_hash(response.content)]}, url
        assert "max-age=31536000" in response.headers["Cache-Control"], url
    statics = {url for url in loaded if urlsplit(url).path.startswith("/static/")}
    total = len(requests.get(other, timeout=10).content) + sum(len(requests.get(url, timeout=10).content) for url in statics)
    # Uncompressed, no framework: 69.1 KB as one script (tests/test_page.py's figures); 75.2 KB
    # as modules, their import lines added; 76.2 KB with the camera's link to an https:// page.
    assert total < 77_000, f"page and assets weigh {total} bytes"


@pytest.mark.browser
def test_the_page_load_benchmark_times_a_first_visit_and_its_modules(other):
    """bench/page_load.py for one first visit: every module fetched, in two rounds (app.js, then
    all it names), and DOMContentLoaded timed. At its default 100 ms latency: at 0 ms the
    rounds blur, as a module can answer before its siblings are sent (on a loaded machine they
    went out over 20 ms, and one answered within 10 ms: 3 "rounds")."""
    result = subprocess.run([sys.executable, "-m", "bench.page_load", other, "--runs", "1"],
                            check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"DOMContentLoaded: median \d+ ms", result.stdout), result.stdout
    assert f"scripts: {len(MODULES)} files" in result.stdout and "2 rounds" in result.stdout, result.stdout
