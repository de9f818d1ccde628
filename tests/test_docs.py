"""The docs give one spelling of each command, and the settings they suggest are safe ones."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT

# `python app.py`, `python -m classifier`: Debian and Ubuntu have no `python`, only `python3`.
BARE_PYTHON = re.compile(r"(?<![\w/.])python (?=-m |-c |\S+\.py)")
DOCS = ["README.md", "SECURITY.md", "remote/README.md", "uwsgi.ini", "remote/setup.sh", "remote/certificate.sh",
        *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md"))]
SETUP = ROOT / "remote" / "setup.sh"
NGINX_LOGROTATE = Path("/etc/logrotate.d/nginx")  # Debian's and Ubuntu's nginx package


def python_files() -> Iterator[Path]:
    for path in ROOT.rglob("*.py"):
        if not any(part.startswith(".") or part == "build" for part in path.relative_to(ROOT).parts):
            yield path


def docstrings(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if (text := ast.get_docstring(node)) is not None:
                yield text


def test_commands_are_spelled_python3():
    texts = {name: (ROOT / name).read_text() for name in DOCS}
    texts |= {f"{path.relative_to(ROOT)} (a docstring)": text for path in python_files() for text in docstrings(path)}
    bare = [f"{name}: {line.strip()}" for name, text in texts.items()
            for line in text.splitlines() if BARE_PYTHON.search(line)]
    assert not bare, "\n".join(bare)


def env_template() -> str:
    """The commented settings setup.sh writes to /etc/classifier/classifier.env on a new host."""
    match = re.search(r"""cat > "\$ENV_FILE" <<'EOF'\n(.*?)^EOF$""", SETUP.read_text(), re.S | re.M)
    assert match, "remote/setup.sh no longer writes its env template as expected"
    return match.group(1)


def test_the_env_template_suggests_no_second_uwsgi_thread():
    """uwsgi.ini explains why a second thread per worker fails requests (one harakiri timer per worker)."""
    suggested = dict(re.findall(r"^# ?(CLASSIFIER_\w+)=(\S*)$", env_template(), re.M))
    assert suggested.get("CLASSIFIER_UWSGI_THREADS", "1") == "1"


def test_the_env_template_names_only_settings_that_exist():
    read = set(re.findall(r"CLASSIFIER_\w+", (ROOT / "classifier" / "config.py").read_text()
                          + (ROOT / "uwsgi.ini").read_text()))
    named = set(re.findall(r"^# ?(CLASSIFIER_\w+)=", env_template(), re.M))
    assert named and named <= read, named - read


def test_nginx_logs_go_where_the_nginx_package_rotates_them():
    """remote/README.md ("Logs and their rotation") ships no logrotate file because the nginx
    package's already rotates /var/log/nginx/*.log: a site log anywhere else would grow forever."""
    if not NGINX_LOGROTATE.is_file():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{NGINX_LOGROTATE} missing: apt-get install nginx")
    rotated = re.findall(r"^(/\S+)", NGINX_LOGROTATE.read_text(), re.M)
    sites = "".join(path.read_text() for path in (ROOT / "remote" / "nginx").glob("*.conf"))
    logs = re.findall(r"^\s*(?:access|error)_log\s+(/[^\s;]+)", sites, re.M)
    assert logs and rotated
    assert [log for log in logs if not any(fnmatch.fnmatch(log, pattern) for pattern in rotated)] == []
