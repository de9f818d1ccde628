"""Content-hashed URLs for the page's ES modules, written into their import statements.

The page links its files with a hash of their content (``/static/app.js?v=<hash>``), so
browsers and NGINX may cache each for a year: a new version is a new URL. ``static/app.js``
is an ES module that imports the modules in ``static/page/``, and those import each other. A
relative import drops the importer's query (``./page/dom.js`` from ``/static/app.js?v=1``
is ``/static/page/dom.js``), so each import statement names its module with that module's
hash itself: ``import { $ } from "./dom.js?v=<hash>"``. Every file's hash then covers the
hashes of everything it imports, so a change to any module changes the URL of each module
that imports it, up to ``app.js``, whose URL the page carries. ``stamp`` writes those hashes,
modules first, then their importers; tests/test_static_modules.py fails while any is stale.

Why hashes in the files rather than something the server computes:

- An import map (``<script type="importmap">``) must be inline, and the page runs no inline
  script: its Content-Security-Policy stays ``default-src 'self'`` without a nonce or hash.
- Rewriting specifiers as the files are served works only where the app serves them; NGINX
  serves ``/static/`` from disk (remote/nginx/classifier-locations.conf).
- Hashed file names would rename a file at every edit, and a hash in the path needs routes
  in the app and NGINX that map it back to the file.

Files stamped here are served as they are, by any static server, with nothing built.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

# A static import or re-export of a relative module, with or without a hash so far:
# `from "./dom.js"`, `import "./page/camera.js?v=0123456789ab"`.
SPECIFIER = re.compile(r"""(?P<lead>\b(?:from|import)\s*)(?P<quote>["'])(?P<path>\.{1,2}/[^"'?#]+\.js)"""
                       r"""(?:\?v=[0-9a-f]*)?(?P=quote)""")


def content_hash(data: bytes) -> str:
    """The hash a static file's URL carries (``?v=``): the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:12]


class ImportCycle(ValueError):
    """Modules that import each other: neither hash can include the other's."""


def stamp(folder: Path) -> list[Path]:
    """Write each relative import's content hash into the JavaScript files under ``folder``;
    return the files changed (none when every hash is current)."""
    hashes: dict[Path, str] = {}
    changed: list[Path] = []

    def visit(path: Path, importers: tuple[Path, ...]) -> str:
        if path in importers:
            raise ImportCycle(" imports ".join(str(p) for p in (*importers[importers.index(path):], path)))
        if path not in hashes:
            text = path.read_bytes().decode("utf-8")

            def stamped(match: re.Match[str]) -> str:
                target = visit((path.parent / match["path"]).resolve(), (*importers, path))
                return f'{match["lead"]}{match["quote"]}{match["path"]}?v={target}{match["quote"]}'

            new = SPECIFIER.sub(stamped, text)
            if new != text:
                path.write_bytes(new.encode("utf-8"))
                changed.append(path)
            hashes[path] = content_hash(new.encode("utf-8"))
        return hashes[path]

    for path in sorted(folder.resolve().rglob("*.js")):
        visit(path, ())
    return changed


def main(argv: list[str]) -> None:
    """``python3 -m classifier.web.static_modules [static]``: after editing a module of the page."""
    for path in stamp(Path(argv[0] if argv else "static")):
        print(f"stamped {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
