"""``python3 -m classifier``: what a person sees in a terminal, and its exit codes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    PHOTOS,
    ROOT,
    classifier_command,
    copy_of,
    free_port,
    run_classifier,
    start_uwsgi,
)
from support.nginx import access_log_entries, first_answer, hold_upload

from bench.polling import wait_until
from bench.servers import ESCAPES, HOSTILE_ANSWERS, hostile_handler
from bench.stack import Nginx, start_nginx
from classifier import Settings
from classifier.artifacts.exports import Export
from classifier.cli.remote import USER_AGENT
from classifier.cli.reports import CSV_COLUMNS
from classifier.models.registry import REGISTRY

pytestmark = pytest.mark.slow  # most tests run `python -m classifier` as a process


def run(*args: str, home: Path, random_weights: bool = True, **env: str) -> subprocess.CompletedProcess:
    """``python3 -m classifier`` offline with the Keras cache ``home``: a test's empty one with
    random weights, or the module's copy of the prepared EfficientNetLite0 (``keras_home``),
    which runs on its ONNX export without TensorFlow, about 1 s a run instead of 8."""
    return run_classifier(*args, CLASSIFIER_RANDOM_WEIGHTS="1" if random_weights else "0", KERAS_HOME=str(home),
                          CLASSIFIER_OFFLINE="1", **env)


def test_predict_prints_ranked_labels(tmp_path):
    result = run("predict", str(PHOTOS["chelsea"]), "--model", "ResNet50", "--top-k", "4", home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{PHOTOS['chelsea']} (ResNet50, random weights)"
    assert len(lines) == 5
    percentages = [float(line.split("%")[0]) for line in lines[1:]]
    assert percentages == sorted(percentages, reverse=True)


def test_predict_json_matches_the_api_shape(keras_home):
    result = run("predict", str(PHOTOS["coffee"]), str(PHOTOS["grace_hopper"]), "--json", home=keras_home,
                 random_weights=False)
    assert result.returncode == 0, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["image"] for d in documents] == [str(PHOTOS["coffee"]), str(PHOTOS["grace_hopper"])]
    for document in documents:
        assert {"model", "weights", "server", "predictions", "result", "timing_ms"} <= set(document)
        assert len(document["predictions"]) == 3


def test_bad_files_are_reported_and_the_rest_still_classified(tmp_path, keras_home):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list")
    missing = tmp_path / "missing.png"
    result = run("predict", str(not_an_image), str(missing), str(PHOTOS["chelsea"]), home=keras_home,
                 random_weights=False)
    assert result.returncode == 1
    assert f"{not_an_image}: The data is not an image" in result.stderr
    assert f"{missing}:" in result.stderr and "No such file" in result.stderr
    assert str(PHOTOS["chelsea"]) in result.stdout and "Traceback" not in result.stderr


def test_invalid_options_exit_2(tmp_path):
    assert run("predict", str(PHOTOS["chelsea"]), "--top-k", "0", home=tmp_path).returncode == 2
    assert run("predict", str(PHOTOS["chelsea"]), "--model", "AlexNet", home=tmp_path).returncode == 2


def test_export_prepares_what_a_worker_serves(prepared_export, tmp_path):
    """``export`` makes and checks the export that a server would otherwise make in a request
    (``--no-int8``: not the int8 forms, which tests/test_int8.py makes); run again, it finds it
    checked (the engine serves a checked export without TensorFlow: tests/test_runtimes.py).
    The first run, from an empty cache, is the session's ``prepared_export``; the second runs
    on a copy of its cache."""
    home, result = prepared_export
    assert "EfficientNetLite0: checked export in" in result.stdout
    assert "int8" not in result.stdout and not list(home.rglob("*int8*"))  # left out, as asked
    assert "same top-5" in result.stderr  # what the check found, from the engine's log
    settings = Settings(keras_home=home)
    spec = REGISTRY["EfficientNetLite0"]
    export = Export(spec, spec.weights.find(settings), settings.exports_dir)
    assert export.record() is not None and export.record().verified
    assert f"checked {export.onnx_path.name}" in result.stderr
    assert "ResNet50" not in result.stdout + result.stderr  # no weights here: not attempted by default

    again = run("export", "EfficientNetLite0", home=copy_of(home, tmp_path / "keras"), random_weights=False)
    assert again.returncode == 0 and "EfficientNetLite0: checked export in" in again.stdout
    assert f"checked {export.onnx_path.name}" not in again.stderr  # found checked, not checked again


def test_export_reports_models_it_cannot_export(tmp_path):
    missing = run("export", "ResNet50", home=tmp_path, random_weights=False)
    assert missing.returncode == 1
    assert "ResNet50: unavailable: resnet50_weights_tf_dim_ordering_tf_kernels.h5 is not here" in missing.stderr
    assert run("export", "AlexNet", home=tmp_path, random_weights=False).returncode == 2
    assert run("export", home=tmp_path).returncode == 2  # random weights: nothing to keep


# --- many images: folders, report files, a server ---------------------------------------------

def photo_tree(root: Path) -> tuple[Path, list[Path]]:
    """A folder as a person has one: photos in subfolders, one without a name ending, a text
    file, a corrupt JPEG, a hidden folder and a link back to the top. Returns the folder and
    the images ``predict`` should find, in its order (each folder's files sorted, then its
    subfolders)."""
    folder = root / "trip"
    (folder / "cats").mkdir(parents=True)
    (folder / ".thumbnails").mkdir()
    shutil.copy(PHOTOS["chelsea"], folder / "cats" / "chelsea.png")
    shutil.copy(PHOTOS["chelsea"], folder / ".thumbnails" / "chelsea.png")
    shutil.copy(PHOTOS["coffee"], folder / "coffee.png")
    shutil.copy(PHOTOS["grace_hopper"], folder / "grace_hopper.jpg")
    shutil.copy(PHOTOS["coffee"], folder / "IMG_0001")  # an image by its content only
    (folder / "broken.jpg").write_bytes(PHOTOS["grace_hopper"].read_bytes()[:4000])
    (folder / "notes.txt").write_text("the hotel's address\n")
    (folder / "cats" / "back to the trip").symlink_to(folder)
    images = ["IMG_0001", "broken.jpg", "coffee.png", "grace_hopper.jpg", "cats/chelsea.png"]
    return folder, [folder / name for name in images]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        return list(csv.DictReader(file))


def assert_photo_rows(rows: list[dict[str, str]], images: list[Path], model: str) -> None:
    """One row per image in order; the corrupt JPEG failed with its reason, the rest labelled."""
    assert [row["path"] for row in rows] == [str(path) for path in images]
    for row in rows:
        if row["path"].endswith("broken.jpg"):
            assert (row["state"], row["error_code"], row["label"]) == ("failed", "invalid_image", ""), row
            assert "truncated or corrupt" in row["error_message"]
            continue
        assert row["state"] == "done" and row["model"] == model and row["error_code"] == "" and row["label"], row
        ranked = [item.rsplit(":", 1) for item in row["top_k"].split(";")]
        assert len(ranked) == 3 and ranked[0][0] == row["label"]
        assert abs(float(ranked[0][1]) - float(row["score"])) < 1e-4


def test_a_folder_tree_gives_one_row_per_image(tmp_path, keras_home):
    folder, images = photo_tree(tmp_path)
    report, records = tmp_path / "answers.csv", tmp_path / "answers.json"
    result = run("predict", str(folder), str(PHOTOS["grace_hopper"]), "--csv", str(report), "--json", str(records),
                 home=keras_home, random_weights=False)
    assert result.returncode == 1  # the corrupt JPEG
    images.append(PHOTOS["grace_hopper"])
    rows = csv_rows(report)
    assert list(rows[0]) == CSV_COLUMNS
    assert_photo_rows(rows, images, "EfficientNetLite0")
    documents = json.loads(records.read_text())
    assert [(d["path"], d["label"], d["error"] and d["error"]["code"]) for d in documents] == \
           [(row["path"], row["label"] or None, row["error_code"] or None) for row in rows]
    assert all(len(d["predictions"]) == 3 for d in documents if not d["error"])
    assert f"{folder / 'broken.jpg'}: The JPEG image is truncated or corrupt." in result.stderr
    assert "6/6" in result.stderr  # the progress bar reached the end
    assert "5 done, 1 failed, 1 skipped (not images)" in result.stderr
    assert result.stdout.count("(EfficientNetLite0, imagenet weights)") == 5 and "Traceback" not in result.stderr


def test_a_folder_without_images_is_a_failure(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("buy film\n")
    result = run("predict", str(tmp_path / "notes"), home=tmp_path)
    assert result.returncode == 1
    assert f"No image files in {tmp_path / 'notes'}; 1 other file(s) skipped." in result.stderr


def test_a_report_file_never_replaces_an_image(tmp_path):
    """``--json cat.png b.png`` would write the report over cat.png: refused, nothing run."""
    photo = tmp_path / "cat.png"
    shutil.copy(PHOTOS["chelsea"], photo)
    result = run("predict", "--json", str(photo), str(PHOTOS["coffee"]), home=tmp_path)
    assert result.returncode == 2 and "would overwrite an image" in result.stderr
    assert photo.read_bytes() == PHOTOS["chelsea"].read_bytes()


def test_remote_classifies_a_folder_on_a_running_server(tmp_path, serve_app):
    """The answers come from the server (its random-weights MobileNetV2; here the default
    would be the real EfficientNetLite0), several images per request: this server takes two
    at most, so the request of three gets 413 and goes again as one and two. A file over the
    size limit fails here, unsent."""
    log = tmp_path / "server.log"
    url = serve_app(log=log, CLASSIFIER_MAX_IMAGES="2")
    folder, images = photo_tree(tmp_path)
    report = tmp_path / "answers.csv"
    limit = PHOTOS["coffee"].stat().st_size - 1  # the two copies of coffee.png are too large
    result = run("predict", str(folder), "--remote", url, "--csv", str(report), home=tmp_path,
                 random_weights=False, CLASSIFIER_MAX_UPLOAD_BYTES=str(limit))
    assert result.returncode == 1, result.stderr
    rows = csv_rows(report)
    too_large = [row for row in rows if "coffee" in row["path"] or "IMG_0001" in row["path"]]
    assert [row["error_code"] for row in too_large] == ["image_too_large"] * 2
    assert all(f"{limit:,} bytes" in row["error_message"] for row in too_large)
    assert_photo_rows([row for row in rows if row not in too_large],
                      [path for path in images if path.name not in ("coffee.png", "IMG_0001")], "MobileNetV2")
    requests = re.findall(r"POST /predict (\d+) .*?images=(\d+).* bytes_in=(\d+)", log.read_text())
    # broken.jpg, alone, is the API's single-image request, refused as a whole (400)
    assert [(status, images) for status, images, _ in requests] == [("413", "3"), ("400", "1"), ("200", "2")]
    assert max(int(size) for *_, size in requests) < limit  # the large copies were never sent


def test_remote_that_is_not_there_fails_every_image_with_the_reason(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = run("predict", str(PHOTOS["chelsea"]), str(PHOTOS["coffee"]), "--remote", url,
                 "--json", str(tmp_path / "answers.json"), home=tmp_path)
    assert result.returncode == 1
    documents = json.loads((tmp_path / "answers.json").read_text())
    assert [d["error"]["code"] for d in documents] == ["remote_error"] * 2
    for path in (PHOTOS["chelsea"], PHOTOS["coffee"]):
        assert f"{path}: {url}/predict could not be reached (ConnectionError)." in result.stderr


@pytest.fixture(scope="module")
def nginx_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """uWSGI with uwsgi.ini behind NGINX with remote/nginx/ and its rate and upload limits
    (tests/test_deployment.py runs the same), serving a random-weights MobileNetV2."""
    folder = tmp_path_factory.mktemp("site")
    app = start_uwsgi(folder, "uwsgi", CLASSIFIER_RANDOM_WEIGHTS="1", CLASSIFIER_DEFAULT_MODEL="MobileNetV2",
                      KERAS_HOME=str(folder / "keras"))
    try:
        nginx = start_nginx(folder / "nginx", {"127.0.0.1:8001": app.address})
        try:
            yield nginx
        finally:
            nginx.stop()
    finally:
        app.stop()


def test_remote_waits_out_nginx_rate_limit_and_finishes(tmp_path, nginx_site):
    """NGINX lets one address have 1 upload at once; with it held open, the CLI's request is
    refused with NGINX's own 429 (Retry-After: 1). Once that 429 is in NGINX's log the held
    upload ends; the CLI, having waited the second, sends the request again and finishes."""
    port = int(nginx_site.url.rsplit(":", 1)[1])
    log_start = nginx_site.access_log.stat().st_size if nginx_site.access_log.exists() else 0
    report = tmp_path / "answers.csv"
    photos = [PHOTOS["chelsea"], PHOTOS["coffee"], PHOTOS["grace_hopper"]]
    held = [hold_upload(port, "127.0.0.1", 1024)]
    try:
        cli = subprocess.Popen(classifier_command("predict", *map(str, photos), "--remote", nginx_site.url,
                                                  "--csv", str(report)),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CLASSIFIER_REMOTE_READ_TIMEOUT": "120"})
        wait_until(lambda: cli_answers(nginx_site, log_start) or cli.poll() is not None, 60, interval=0.05)
    finally:
        for sock in held:
            first_answer(sock)
    stdout, stderr = cli.communicate(timeout=300)
    assert cli.returncode == 0, stderr
    assert stdout.count("(MobileNetV2, random weights)") == 3
    assert f"{nginx_site.url}/predict answered 429 (rate_limited) to 3 image(s); trying again in 1 s" in stderr
    assert cli_answers(nginx_site, log_start)[:1] == ["429"] and cli_answers(nginx_site, log_start)[-1] == "200"
    rows = csv_rows(report)
    assert [row["path"] for row in rows] == list(map(str, photos))
    assert all(row["model"] == "MobileNetV2" and row["label"] for row in rows), rows


def cli_answers(nginx: Nginx, since: int) -> list[str]:
    """The statuses NGINX answered the CLI's requests with (it logs the User-Agent)."""
    return [entry["line"].split('" ')[1].split()[0] for entry in access_log_entries(nginx, since)
            if USER_AGENT in entry["line"]]


def test_remote_refusal_for_every_image_is_not_retried_in_vain(tmp_path, serve_app):
    """A model whose weights are not on the server: its 503 says no time to come back, so the
    CLI does not wait; both images fail with the server's own reason."""
    url = serve_app(CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_OFFLINE="1", KERAS_HOME=str(tmp_path / "empty"))
    result = run("predict", str(PHOTOS["chelsea"]), str(PHOTOS["coffee"]), "--remote", url + "/predict",
                 "--model", "ResNet50", "--csv", str(tmp_path / "answers.csv"), home=tmp_path)
    assert result.returncode == 1
    assert "trying again" not in result.stderr
    rows = csv_rows(tmp_path / "answers.csv")
    assert [row["error_code"] for row in rows] == ["model_unavailable"] * 2
    for row in rows:
        assert "ResNet50" in row["error_message"]
        assert f"{row['path']}: {row['error_message']}" in result.stderr


# --- a server that is not to be trusted -------------------------------------------------------

def run_measured(*args: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, int]:
    """``run``, and the CLI's peak resident memory in KiB (GNU time's, from the kernel); killed
    with GNU time after 60 s (the hangs this guards against had no end)."""
    peak = tmp_path / "peak-kib"
    process = subprocess.Popen(["/usr/bin/time", "-o", str(peak), "-f", "%M", *classifier_command(*args)], cwd=ROOT,
                               env={**os.environ, "CLASSIFIER_RANDOM_WEIGHTS": "1", "KERAS_HOME": str(tmp_path),
                                    "CLASSIFIER_OFFLINE": "1", **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), int(peak.read_text().split()[-1])


@pytest.mark.parametrize("kind", list(HOSTILE_ANSWERS))
def test_a_hostile_server_fails_its_images_and_the_reports_are_still_written(tmp_path, stub_server, kind):
    """An answer that never ends, one that trickles for ever, and answers that break the
    contract (a crop "abc", a heatmap that is not a PNG, no ``weights``): each image fails
    with a reason, as forwarding would refuse the same answer; the run ends, in bounded
    memory (the endless answer used to take the CLI to 2.65 GB in 13 s), and writes its
    reports. Figures: bench/hostile_cli.py."""
    server = stub_server(hostile_handler(kind))
    reports = tmp_path / "answers.csv", tmp_path / "answers.json"
    result, peak_kib = run_measured("predict", str(PHOTOS["chelsea"]), str(PHOTOS["coffee"]), "--remote", server.url,
                                    "--explain", str(tmp_path / "heatmaps"), "--csv", str(reports[0]),
                                    "--json", str(reports[1]), tmp_path=tmp_path,
                                    CLASSIFIER_REMOTE_READ_TIMEOUT="2")  # the whole answer within 3 + 2 s
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    expected = "remote_timeout" if kind.startswith("slow") else "remote_error"
    assert [row["error_code"] for row in csv_rows(reports[0])] == [expected] * 2
    assert [d["error"]["code"] for d in json.loads(reports[1].read_text())] == [expected] * 2
    assert "0 done, 2 failed" in result.stderr
    assert peak_kib < 600 * 1024, peak_kib


def test_a_servers_text_neither_drives_the_terminal_nor_runs_in_a_spreadsheet(tmp_path, stub_server):
    """Labels, model, weights and messages that carry escape sequences (a window title, the
    clipboard through OSC 52, a cleared screen) are printed with their control characters
    shown; CSV cells that a spreadsheet would run as formulas start with ``'`` (OWASP)."""
    server = stub_server(hostile_handler("text that runs"))
    report = tmp_path / "answers.csv"
    result = run("predict", str(PHOTOS["chelsea"]), str(PHOTOS["coffee"]), "--remote", server.url,
                 "--csv", str(report), home=tmp_path)
    assert result.returncode == 1, result.stderr
    for output in (result.stdout, result.stderr):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", output), output
    shown = ascii(ESCAPES)[1:-1]  # \x1b]0;owned\x07...
    assert f"(MobileNetV2{shown}, imagenet{shown} weights)" in result.stdout
    assert f"{PHOTOS['coffee']}: @SUM(1){shown}" in result.stderr
    done, failed = csv_rows(report)
    assert done["label"].startswith("'=HYPERLINK(") and done["top_k"].startswith("'=HYPERLINK(")
    assert failed["error_message"].startswith("'@SUM(1)") and failed["state"] == "failed"


def test_help_is_plain_text_and_describes_every_option(tmp_path):
    """``--help`` of the CLI, its commands and ``app.py``: no reStructuredText backticks, and
    a description beside every option (argparse prints an option without one alone)."""
    pages = [run(*command, "--help", home=tmp_path) for command in ([], ["predict"], ["download"], ["export"])]
    pages.append(subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True))
    for page in pages:
        assert page.returncode == 0 and "``" not in page.stdout, page.stdout
        lines = page.stdout.split("options:\n", 1)[1].splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  -") and not re.search(r"\S {2,}\S", line.strip()):  # no words beside it
                assert i + 1 < len(lines) and lines[i + 1].startswith(" " * 8), page.stdout  # nor under it


def test_a_run_where_nothing_was_classified_states_no_rate(tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list")
    result = run("predict", str(not_an_image), home=tmp_path)
    assert result.returncode == 1
    summary = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"0 done, 1 failed in \d+\.\d s", summary), summary
