"""Every command README.md and the pages of docs/ show in a ```sh block, run as written, so an
example cannot go stale.

The curl examples go to a real ``python3 app.py`` started here on a free loopback port (in for
``localhost:5000``), set up as a fresh install after ``classifier export``: real EfficientNetLite0
weights, its exports made, offline. The CLI examples run the installed ``classifier`` script. All run in an empty
folder holding ``cat.jpg`` (the photo of Chelsea that ships in classifier/data/photos), not in
the repository. A line that cannot run here is left out by NOT_RUN_HERE, which says why; any
other line, one added later included, is run, and must exit 0 with a right answer for the cat.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import CAT_LABELS, ROOT, copy_of, free_port, stop, wait_until_healthy
from support.errors import app_errors, nginx_errors

README = ROOT / "README.md"
# The markdown whose examples run here: the README, then the site's pages (docs/, mkdocs.yml).
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
ERRORS_PAGE = ROOT / "docs" / "errors.md"
CAT = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
SCRIPTS = Path(sys.executable).parent  # where pip put the `classifier` script

# How a line starts → why it is not run here. Every other line of a ```sh block is.
NOT_RUN_HERE = {
    "apt-get ": "installs system packages, as root",
    "python3 -m venv ": "one of the two commands: installs the project (.ci/run runs the test one)",
    "classifier download": "downloads weights from the internet",
    "python3 -m bench.": "benchmarks of minutes; tests/test_bench.py runs them at their smallest settings",
    "python3 -m pytest": "the test suite itself",
    "mkdocs ": "builds the site: tests/test_site.py builds it, strict, from mkdocs.yml",
    # docs/containers.md: tests/test_containers.py runs these in order, checking each step.
    "podman ": "builds and runs the image: tests/test_containers.py runs docs/containers.md's commands",
    "podman-compose ": "runs compose.yaml: tests/test_containers.py",
    "kubernetes-validate ": "checks k8s/: tests/test_containers.py",
    "curl -fsS -F image=@classifier/data/photos/chelsea.jpg http://127.0.0.1:8080/": "a container's port: tests/test_containers.py",
    # docs/https.md: tests/test_tls.py runs these on its test site (Pebble, a namespace of its own).
    "sudo DOMAIN=": "obtains a certificate: tests/test_tls.py, against Pebble",
    "sudo certbot renew": "renews it: tests/test_tls.py",
    "curl --http2 -sSI https://classifier.example.org/": "the test site's https: tests/test_tls.py",
    "curl -sSI 'http://classifier.example.org/": "the test site's redirect: tests/test_tls.py",
    "printf 'alice:%s": "an htpasswd file: tests/test_tls.py",
}
ANSWER_KEYS = ["model", "weights", "server", "predictions", "result", "timing_ms"]
DEFAULT_TOP_K = 3


def sh_commands(markdown: str) -> list[str]:
    """The commands in the ```sh blocks: comments and blank lines dropped, and a line ending
    in a backslash joined with the next, as the shell reads them."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, re.S | re.M):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1]
            else:
                commands.append(pending + line)
                pending = ""
    return commands


def sample_after(page: Path, intro: str, language: str) -> str:
    """The fenced block that follows ``intro`` in ``page``."""
    match = re.search(re.escape(intro) + rf".*?^```{language}\n(.*?)^```", page.read_text(), re.S | re.M)
    assert match, f"{page.relative_to(ROOT)} has no ```{language} block after {intro!r}"
    return match.group(1)


def commands_of(page: Path) -> list[str]:
    return sh_commands(page.read_text())


COMMANDS = [command for page in PAGES for command in commands_of(page)]
RUN_HERE = [pytest.param(command, id=f"{page.relative_to(ROOT)}: {command}")
            for page in PAGES for command in commands_of(page) if not command.startswith(tuple(NOT_RUN_HERE))]


@pytest.fixture(scope="module")
def environment(int8_export: tuple[Path, subprocess.CompletedProcess],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh install's: no CLASSIFIER_* settings, no internet; the project's scripts first on
    PATH. Its Keras cache is a copy of what ``classifier export`` made for EfficientNetLite0
    (``int8_export``): the documented ``classifier export`` finds both forms made and checked,
    instead of converting and quantizing a second time in the run (tests/test_int8.py and
    tests/test_cli.py test the making)."""
    home = copy_of(int8_export[0], tmp_path_factory.mktemp("readme_home") / "keras")
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLASSIFIER_")}
    return {**env, "KERAS_HOME": str(home), "CLASSIFIER_OFFLINE": "1",
            "PATH": f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture(scope="module")
def server(environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python3 app.py`` as README.md starts it; its address, for ``localhost:5000``."""
    port = free_port()
    log = tmp_path_factory.mktemp("readme_server") / "server.log"
    process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


def shell(command: str, folder: Path, environment: dict[str, str], request: pytest.FixtureRequest
          ) -> subprocess.CompletedProcess:
    """Run one README line in ``folder`` as bash would, failing on any failed part of a pipe."""
    if "localhost:5000" in command:
        command = command.replace("localhost:5000", request.getfixturevalue("server"))
    if command.startswith("classifier ") and not (SCRIPTS / "classifier").is_file():
        pytest.fail(f"no `classifier` script in {SCRIPTS}: install the project (pip install -e .)")
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme_examples")
    shutil.copy(CAT, folder / "cat.jpg")
    return folder


def json_documents(output: str) -> list[dict[str, Any]] | None:
    """The answer(s) a command printed: one JSON document, or one per line; None if not JSON."""
    try:
        return [json.loads(output)]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in output.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None


def requested_top_k(command: str) -> int:
    """``top_k=5``, ``--top-k 5`` or ``"top_k": 5`` in the command, else the default."""
    match = re.search(r"top[_-]k\W+(\d+)", command)
    return int(match.group(1)) if match else DEFAULT_TOP_K


def check_answer(document: dict[str, Any], top_k: int) -> None:
    assert "error" not in document, document
    if "predictions" not in document:  # not a classification (GET /models, say)
        return
    assert ANSWER_KEYS == [key for key in document if key != "image"], document
    assert len(document["predictions"]) == len(document["result"]) == top_k, document
    assert document["predictions"][0]["label"] in CAT_LABELS, document


def printed_labels(output: str) -> list[str]:
    """The labels of ``classifier predict``'s ranked lines: ``  39.70%  Egyptian_cat  (n02124075)``."""
    return re.findall(r"^ +[\d.]+%  (\S+)  \(n\d{8}\)$", output, re.M)


@pytest.mark.parametrize("command", RUN_HERE)
def test_readme_command(command, folder, environment, request):
    result = shell(command, folder, environment, request)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    documents = json_documents(result.stdout)
    if documents is not None:
        for document in documents:
            check_answer(document, requested_top_k(command))
    elif command.startswith("classifier predict"):
        labels = printed_labels(result.stdout)
        assert len(labels) == requested_top_k(command) and labels[0] in CAT_LABELS, result.stdout


def test_the_sample_answer_is_what_the_first_example_answers(folder, environment, request):
    page = ROOT / "docs" / "api.md"
    first = next(command for command in commands_of(page) if command.startswith("curl "))
    real = json.loads(shell(first, folder, environment, request).stdout)
    sample = json.loads(sample_after(page, "The first one answers", "json"))
    assert list(sample) == list(real)
    assert {key: sample[key] for key in ("model", "weights", "server")} == \
           {key: real[key] for key in ("model", "weights", "server")}
    assert [(p["label"], p["display_label"], p["class_id"]) for p in sample["predictions"]] == \
           [(p["label"], p["display_label"], p["class_id"]) for p in real["predictions"]]
    assert [p["score"] for p in sample["predictions"]] == \
           pytest.approx([p["score"] for p in real["predictions"]], abs=1e-4)
    assert sample["result"] == real["result"]
    # "load" is there only if this request found the model not yet warmed up (the page says so).
    assert list(sample["timing_ms"]) == [key for key in real["timing_ms"] if key != "load"]


def test_the_sample_output_is_what_the_first_cli_example_prints(folder, environment, request):
    page = ROOT / "docs" / "cli.md"
    first = next(command for command in commands_of(page) if command.startswith("classifier predict"))
    real = shell(first, folder, environment, request).stdout
    sample = sample_after(page, "The first one prints", "text")
    assert sample.splitlines()[0] == real.splitlines()[0]
    assert printed_labels(sample) == printed_labels(real)


def test_the_json_example_takes_a_photo_of_half_a_megabyte(tmp_path, environment, request):
    """A photo's base64 passed as a curl argument stops at ~96 KB of image (the kernel's
    128 KiB limit on one argument); the docs' example pipes it."""
    example = next(command for command in COMMANDS if "application/json" in command)
    with Image.open(CAT) as cat:
        cat.resize((cat.width * 6, cat.height * 6)).save(tmp_path / "cat.jpg", quality=95)
    assert (tmp_path / "cat.jpg").stat().st_size > 500_000
    result = shell(example, tmp_path, environment, request)
    assert result.returncode == 0, result.stderr
    check_answer(json.loads(result.stdout), requested_top_k(example))


def test_ci_runs_the_readme_test_command():
    test_command = next(command for command in commands_of(README) if command.startswith("apt-get "))
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == test_command


def error_table() -> set[tuple[int, str]]:
    rows = re.findall(r"^\| (\d{3}) \| (.*?) \|", ERRORS_PAGE.read_text(), re.M)
    return {(int(status), code) for status, codes in rows for code in re.findall(r"`(\w+)`", codes)}


def test_the_error_table_lists_every_code_a_client_can_get():
    assert len(nginx_errors()) >= 4  # the pattern still finds them
    assert app_errors() | nginx_errors() <= error_table()


def test_the_readme_is_short_and_links_the_pages_a_newcomer_looks_for():
    """Issue 23: two minutes to read, and top-k, explanations, many images, the error codes,
    deploying and the settings one click away."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    pages = {"api.md", "explanations.md", "many-images.md", "errors.md", "deploying.md", "settings.md"}
    assert {page for page in pages if f"](docs/{page})" not in text} == set()
