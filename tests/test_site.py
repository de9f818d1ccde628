"""The documentation site (mkdocs.yml, docs/) builds, strict, offline, and says what the code does.

The build is MkDocs' own, in this process: a broken link or anchor, a page missing from the
navigation or a link to a repository file that does not exist (docs/hooks.py) fails it.
The examples of the pages run in tests/test_readme.py; its error table is checked there too.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import ROOT
from mkdocs.commands.build import build
from mkdocs.config import load_config

from classifier import config
from classifier.serving import options

SETTINGS_PAGE = ROOT / "docs" / "settings.md"
API_PAGE = ROOT / "docs" / "api.md"
# Variables the table documents that config.Settings does not read: Keras' cache (read with
# a default of its own) and prometheus_client's folder (read by the library, set by uwsgi.ini).
NOT_SETTINGS_FIELDS = {"KERAS_HOME", "PROMETHEUS_MULTIPROC_DIR"}
# Anything a page would fetch from elsewhere when viewed: a script, a stylesheet, a font.
EXTERNAL_ASSET = re.compile(r"""<script[^>]+src="(?:https?:)?//|<link[^>]+href="(?:https?:)?//|url\((?:['"])?(?:https?:)?//""")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    build(load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(folder)))
    return folder


def test_the_site_builds_strict_with_every_page(site):
    pages = {path.relative_to(ROOT / "docs").with_suffix(".html").as_posix()
             for path in (ROOT / "docs").rglob("*.md")}
    assert pages and {page for page in pages if not (site / page).is_file()} == set()


def test_the_site_loads_nothing_from_elsewhere(site):
    files = [*site.rglob("*.html"), *site.rglob("*.css")]
    assert [path.relative_to(site) for path in files if EXTERNAL_ASSET.search(path.read_text())] == []


def test_the_security_page_is_security_md(site):
    page = (site / "security.html").read_text()
    first_paragraph = (ROOT / "SECURITY.md").read_text().split("\n\n")[1].split()
    assert " ".join(first_paragraph[:8]) in re.sub(r"\s+", " ", page)


def test_the_pages_show_the_repository_images(site):
    assert (site / "tests" / "screenshots" / "README-desktop.png").is_file()
    assert 'src="tests/screenshots/README-desktop.png"' in (site / "page.html").read_text()


def settings_table() -> dict[str, str]:
    """Each variable of docs/settings.md's table and the first value in its default column."""
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \|", SETTINGS_PAGE.read_text(), re.M)
    return {name: (re.findall(r"`([^`]*)`", default) or [default])[0] for name, default in rows}


def settings_read() -> dict[str, str]:
    """config.Settings' fields by the variable ``from_env`` reads each from."""
    source = (ROOT / "classifier" / "config.py").read_text()
    return dict((variable, field) for field, variable in
                re.findall(r'"(\w+)": env\.\w+\("(CLASSIFIER_\w+)"', source))


def test_the_settings_page_lists_every_setting_and_nothing_else():
    assert set(settings_table()) - NOT_SETTINGS_FIELDS == set(settings_read())


def same(shown: str, value: object) -> bool:
    if isinstance(value, bool):
        return shown == ("1" if value else "0")
    try:
        return float(shown) == float(value)
    except (TypeError, ValueError):
        return shown == str(value)


def test_the_settings_page_gives_each_default_config_has():
    fields = {field.name: field for field in dataclasses.fields(config.Settings)}
    table = settings_table()
    wrong = {}
    for variable, name in settings_read().items():
        default = fields[name].default
        if default is None or default is dataclasses.MISSING:
            continue  # unset: the table says in words what happens then
        if not same(table[variable], default):
            wrong[variable] = (table[variable], default)
    assert wrong == {}


def test_the_api_page_lists_every_option_of_a_request():
    table = API_PAGE.read_text().split("| option |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == list(options.OPTION_NAMES)
