"""The architecture as docs/architecture.md draws it, held against the code.

The layers and the build-time boundary are import-linter's contracts (``pyproject.toml``);
the code map must name every module, and only modules that exist.
"""

import re
import subprocess
import sys
from pathlib import Path

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
