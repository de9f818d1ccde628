"""MkDocs hooks: the site shows files that live outside docs/, and no link to one goes stale.

The pages link to repository files the way GitHub shows them (``../SECURITY.md``,
``../tests/screenshots/README-desktop.png``), so each link works in the checkout too. For the
site, a page that is only ``--8<-- "PATH"`` takes PATH's text (SECURITY.md stays at the root,
where GitHub looks for it), a few files are copied into the site (PUBLISHED), a link to a
file the site shows is pointed at it, and a link to any other repository file becomes its
path in code type. A link to a file that does not exist stops the build, as MkDocs does for
a missing page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"
# Repository files copied into the site as they are, at the same path.
PUBLISHED = ("tests/screenshots/README-desktop.png", "bench/metrics-graph.png", "openapi.json")
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def on_files(files: Files, config) -> Files:
    for path in PUBLISHED:
        files.append(File(path, src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    folder = posixpath.normpath(posixpath.join(DOCS, posixpath.dirname(page.file.src_uri)))
    markdown = INCLUDE.sub(lambda match: included(match.group(1), folder), markdown)
    return outside_code(markdown, lambda text: LINK.sub(lambda match: relinked(match, folder), text))


def included(path: str, folder: str) -> str:
    """PATH's text, its relative links made relative to the including page."""
    source = ROOT / path
    if not source.is_file():
        raise PluginError(f"--8<-- {path!r}: no such file")
    home = posixpath.dirname(path)

    def rebase(match: re.Match) -> str:
        bang, text, target = match.groups()
        if is_external(target):
            return match.group(0)
        file, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(home, file)) if file else path
        return f"{bang}[{text}]({posixpath.relpath(repo_path, folder)}{'#' + anchor if anchor else ''})"

    return outside_code(source.read_text(), lambda text: LINK.sub(rebase, text))


def relinked(match: re.Match, folder: str) -> str:
    """A link from a page in ``folder`` (repository-relative), pointed where the site has it."""
    bang, text, target = match.groups()
    file, _, anchor = target.partition("#")
    if is_external(target) or not file:
        return match.group(0)
    repo_path = posixpath.normpath(posixpath.join(folder, file))
    if repo_path.startswith(DOCS + "/"):
        return match.group(0)  # a page or file of the site: MkDocs checks it
    if not (ROOT / repo_path).exists():
        raise PluginError(f"a link to {target!r} from {folder}: no such file {repo_path}")
    if repo_path in PUBLISHED:
        site_folder = posixpath.relpath(folder, DOCS)  # the page's folder in the site
        return f"{bang}[{text}]({posixpath.relpath(repo_path, site_folder)}{'#' + anchor if anchor else ''})"
    if bang:
        raise PluginError(f"an image {repo_path} the site does not publish: add it to PUBLISHED")
    shown = f"`{repo_path}`"
    return text if shown in text or text.strip("`") == repo_path else f"{text} ({shown})"


def is_external(target: str) -> bool:
    return bool(re.match(r"[a-z][a-z0-9+.-]*:", target))


def outside_code(markdown: str, change) -> str:
    """``change`` applied to the text between fenced code blocks, not inside them."""
    parts, last = [], 0
    for fence in FENCE.finditer(markdown):
        parts += [change(markdown[last:fence.start()]), fence.group(0)]
        last = fence.end()
    return "".join(parts + [change(markdown[last:])])

