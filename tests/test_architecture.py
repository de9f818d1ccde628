"""The architecture as docs/architecture.md draws it, held against the code.

The layers and the build-time boundary are import-linter's contracts (``pyproject.toml``);
the code map must name every module, and only modules that exist; importing a module does
nothing but define it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def test_imports_keep_the_layers_and_the_build_time_boundary():
    """import-linter: no package imports one above it (so no circle between packages), and
    nothing a serving worker imports reaches the converter or the quantizer."""
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_code_map_names_every_module_and_no_other():
    mapped = set(re.findall(r"^\| `([\w/.]+\.py)` ", ARCHITECTURE.read_text(), flags=re.M))
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "classifier").rglob("*.py")} | {"app.py"}
    assert sorted(modules - mapped) == [], "modules the code map leaves out"
    assert sorted(mapped - modules) == [], "files the code map names that do not exist"


def test_every_module_is_short_enough_to_read_whole():
    """About 300 lines at most: a module longer than that holds more than one job."""
    lengths = {str(path.relative_to(ROOT)): path.read_text().count("\n") for path in (ROOT / "classifier").rglob("*.py")}
    assert {path: lines for path, lines in lengths.items() if lines > 320} == {}


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, classifier
for module in pkgutil.walk_packages(classifier.__path__, "classifier."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
"""
# What the libraries themselves write when imported: Keras its keras.json, matplotlib (the
# explanation's colour map) its font cache.
THEIR_OWN_FILES = re.compile(r"keras(/keras\.json)?|home/\.(cache|config)/matplotlib(/.*)?|home(/\.(cache|config))?")


@pytest.mark.slow  # imports TensorFlow with the build-time modules
def test_importing_every_module_writes_nothing(tmp_path):
    """No module prepares a folder, writes a file or sets up state when imported: with every
    place the service writes to pointed at paths that do not exist yet (the metrics folder of
    uWSGI's workers, the Keras cache, temp), importing them all leaves those paths as they were."""
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home"),
                   "KERAS_HOME": str(tmp_path / "keras"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
                   "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")}
    assert sorted(path for path in written if not THEIR_OWN_FILES.fullmatch(path)) == []
