"""The project installs as a package (``pip install .``): its wheel carries the library, its
data files, the ``classifier`` script and requirements.txt's pins; the script reports failure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and runs the installed script

SCRIPT = Path(sys.executable).with_name("classifier")  # where pip installed it (the two commands' -e .)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Built from a copy of what the build reads, so no build/ or *.egg-info lands in the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "classifier", source / "classifier", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    [path] = out.glob("keras_image_classifier-*.whl")
    return zipfile.ZipFile(path)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    [path] = [path for path in wheel.namelist() if path.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_carries_the_library_and_its_data(wheel):
    names = set(wheel.namelist())
    shipped = {path.relative_to(ROOT).as_posix() for path in (ROOT / "classifier").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert shipped <= names
    assert {"classifier/data/imagenet_class_index.json", "classifier/data/photos/chelsea.jpg",
            "classifier/data/photos/calibration/rocket.jpg",  # the int8 forms' photos (quantize.py)
            "classifier/data/photos/held_out/astronaut.jpg"} <= names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "app.py"))]


def test_the_wheel_installs_the_classifier_script(wheel):
    assert "classifier = classifier.cli.main:main" in dist_info(wheel, "entry_points.txt")


def test_the_wheel_requires_exactly_the_pins_of_requirements_txt(wheel):
    metadata = Parser().parsestr(dist_info(wheel, "METADATA"))
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert metadata.get_all("Requires-Dist") == [pin for pin in pins if pin]
    assert metadata["Requires-Python"] == ">=3.11"


def test_the_installed_script_exits_with_the_commands_status(tmp_path):
    assert SCRIPT.is_file(), f"no `classifier` script in {SCRIPT.parent}: install the project (pip install -e .)"
    missing = subprocess.run([str(SCRIPT), "predict", "missing.jpg"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 1 and "missing.jpg:" in missing.stderr
    wrong = subprocess.run([str(SCRIPT), "predict"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: classifier predict")
