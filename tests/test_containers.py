"""The Containerfile, compose.yaml and the Kubernetes manifests (k8s/), run for real with podman
(docs/containers.md): the image is built once per session (bench/containers.py; the layer
cache makes a rebuild after a code change take the export step only), then run read-only as
its non-root user, behind NGINX with podman-compose, and as a Deployment with podman kube play.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import expect
from support.page import expect_bars

from bench import containers
from bench.containers import IMAGE, NGINX_IMAGE, free_port, podman, run, wait_ready
from tests.conftest import CAT_LABELS, PHOTOS, copy_of

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "containers.md"
EXPORT_TOOLS = {"tensorflow-cpu", "tf2onnx", "onnx"}


def container(test):
    """Runs podman: ``container``, and ``slow`` so that the fast loop leaves it out."""
    return pytest.mark.slow(pytest.mark.container(test))


def _names(path: Path) -> dict[str, str]:
    """Requirement name -> the line's pin (or bare name), comments and options left out."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[=<>~!\[ ]", line)[0].lower(): line for line in lines if line and not line.startswith("-")}


def test_the_runtime_set_is_the_full_one_without_the_export_tools():
    """One list of versions: requirements-runtime.txt names packages, the pins stay in
    requirements.txt (and remote/requirements.txt for uWSGI), which it takes as constraints."""
    runtime = _names(ROOT / "requirements-runtime.txt")
    full = _names(ROOT / "requirements.txt") | _names(ROOT / "remote" / "requirements.txt")
    assert all(line == name for name, line in runtime.items()), "versions belong in requirements.txt"
    assert set(full) - set(runtime) == EXPORT_TOOLS | {"keras"}
    assert set(runtime) <= set(full)
    # Keras, for its version (it keys the exports), without the packages it would import.
    assert "pip install --no-deps --no-compile -c requirements.txt keras" in (ROOT / "Containerfile").read_text()


K8S = ROOT / "k8s"


def _manifests() -> dict[str, dict]:
    """k8s/'s resources by file name: every file but kustomization.yaml holds one."""
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(K8S.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


def test_kustomize_assembles_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(_manifests())
    kinds = {manifest["kind"] for manifest in _manifests().values()}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                     "Ingress"}


def test_the_grace_period_covers_uwsgis_graceful_stop():
    """Kubernetes kills what is still running after the grace period: it must cover the
    preStop pause and uWSGI's worker-reload-mercy, so a running prediction completes."""
    mercy = int(re.search(r"^worker-reload-mercy = (\d+)$", (ROOT / "uwsgi.ini").read_text(), re.MULTILINE)[1])
    pod = _manifests()["deployment.yaml"]["spec"]["template"]["spec"]
    pause = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pause + mercy


def test_the_ingress_allows_the_bodies_and_time_nginx_does():
    """The Ingress's body size and timeouts are the host NGINX's (classifier-locations.conf)."""
    nginx = (ROOT / "remote" / "nginx" / "classifier-locations.conf").read_text()
    annotations = _manifests()["ingress.yaml"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert f"client_max_body_size {annotations[prefix + 'proxy-body-size']};" in nginx
    assert f"uwsgi_read_timeout {annotations[prefix + 'proxy-read-timeout']}s;" in nginx
    assert f"uwsgi_send_timeout {annotations[prefix + 'proxy-send-timeout']}s;" in nginx


# A fake, for what cannot run in this test's own environment: an image without TensorFlow.
# Every process started with this folder first on PYTHONPATH finds neither TensorFlow nor the
# converter, as in the runtime image (importlib.util.find_spec gives None, import fails).
WITHOUT_TENSORFLOW = """
import sys
from importlib.machinery import PathFinder


class WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in {"tensorflow", "tf2onnx", "onnx"}:
            return None
        return super().find_spec(name, path, target)


sys.meta_path = [WithoutTensorFlow if finder is PathFinder else finder for finder in sys.meta_path]
"""


def test_without_tensorflow_a_missing_export_is_reported_with_what_to_do(serve_app, tmp_path):
    """Where TensorFlow is not installed (the image; here a fake, above), a model whose ONNX
    export is missing (an empty Keras folder) tries no export child: /models, /predict and
    /readyz say it is not made and which command makes it; /healthz stays 200."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(WITHOUT_TENSORFLOW)
    log = tmp_path / "server.log"
    url = serve_app(log=log, PYTHONPATH=str(tmp_path / "site"), KERAS_HOME=str(tmp_path / "keras"),
                    CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_RUNTIME="onnx", CLASSIFIER_OFFLINE="1",
                    CLASSIFIER_DEFAULT_MODEL="EfficientNetLite0")
    models = {model["name"]: model for model in requests.get(f"{url}/models", timeout=30).json()["models"]}
    lite = models["EfficientNetLite0"]
    assert lite["status"] == "unavailable" and "TensorFlow" in lite["error"], lite
    assert "`python3 -m classifier export EfficientNetLite0`" in lite["hint"], lite
    answer = requests.post(f"{url}/predict", files={"image": PHOTOS["chelsea"].read_bytes()}, timeout=30)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable", answer.text
    assert "classifier export EfficientNetLite0" in answer.json()["error"]["message"]
    ready = requests.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 503 and "not made here" in ready.json()["error"]["message"], ready.text
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    assert "export child" not in log.read_text() and "failed to load" not in log.read_text()


@pytest.mark.parametrize(("settings", "why", "instead"), [
    ({"CLASSIFIER_RUNTIME": "keras"}, "CLASSIFIER_RUNTIME=keras runs it on Keras", "CLASSIFIER_RUNTIME=auto"),
    ({"CLASSIFIER_RANDOM_WEIGHTS": "1"}, "random weights (CLASSIFIER_RANDOM_WEIGHTS=1) are built by Keras",
     "CLASSIFIER_RANDOM_WEIGHTS=0"),
], ids=["keras runtime", "random weights"])
def test_without_tensorflow_a_model_that_would_run_on_keras_says_so(serve_app, prepared_keras_home, tmp_path,
                                                                    settings, why, instead):
    """Where TensorFlow is not installed (the image; here the fake above), settings that run a
    model on Keras make it unavailable with the reason and the setting that avoids it, in
    /models, /readyz and /predict, before any load is tried: a failed load said only "No module
    named 'keras'" and advised replacing the weights file."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(WITHOUT_TENSORFLOW)
    log, home = tmp_path / "server.log", copy_of(prepared_keras_home, tmp_path / "keras")
    url = serve_app(log=log, PYTHONPATH=str(tmp_path / "site"), KERAS_HOME=str(home), **{
        "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_OFFLINE": "1", "CLASSIFIER_DEFAULT_MODEL": "EfficientNetLite0",
        **settings})
    lite = next(model for model in requests.get(f"{url}/models", timeout=30).json()["models"]
                if model["name"] == "EfficientNetLite0")
    assert lite["status"] == "unavailable", lite
    assert lite["error"] == f"{why}, and TensorFlow, which Keras needs, is not installed" and instead in lite["hint"], lite
    for answer in (requests.get(f"{url}/readyz", timeout=30),
                   requests.post(f"{url}/predict", files={"image": PHOTOS["chelsea"].read_bytes()}, timeout=30)):
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable", answer.text
        assert why in answer.json()["error"]["message"] and instead in answer.json()["error"]["message"], answer.text
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    assert "failed to load" not in log.read_text() and "loading EfficientNetLite0" not in log.read_text()


def test_readiness_fails_when_the_loaded_export_no_longer_matches_its_check(serve_app, prepared_keras_home,
                                                                            tmp_path):
    """/readyz is 200 only while the ONNX file the default model was loaded from matches the
    record of its check: after the file changes, 503 (a probe takes the pod out of the
    Service) while /healthz stays 200 (no restart in a loop)."""
    home = copy_of(prepared_keras_home, tmp_path / "keras")
    url = serve_app(KERAS_HOME=str(home), CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_RUNTIME="onnx",
                    CLASSIFIER_OFFLINE="1", CLASSIFIER_DEFAULT_MODEL="EfficientNetLite0")
    wait_ready(url)
    export = next(path for path in home.rglob("EfficientNetLite0-*.onnx") if "int8" not in path.name)
    with export.open("ab") as tampered:
        tampered.write(b"\0")
    ready = requests.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_unavailable", ready.text
    assert "no longer matches the record of its check" in ready.json()["error"]["message"], ready.text
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200


@pytest.fixture(scope="session")
def image() -> str:
    """The project's image, built from the Containerfile as it is (cached layers reused)."""
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed: apt-get install podman buildah runc mmdebstrap uidmap slirp4netns")
    containers.build(IMAGE)
    return IMAGE


@pytest.fixture(scope="module")
def served(image):
    """One container of the image, read-only, as its own non-root user, on a free port."""
    name = "classifier-test"
    url = run(name, free_port(), "--user", "10001", image=image)
    try:
        wait_ready(url)
        yield name, url
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def _predict(url: str, photo: bytes, **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/predict", files={"image": ("chelsea.png", photo, "image/png")}, timeout=60,
                         **kwargs)


@container
def test_the_runtime_image_has_no_tensorflow_tf2onnx_or_onnx(image):
    for module in ("tensorflow", "tf2onnx", "onnx"):
        done = podman("run", "--rm", image, "python3", "-c", f"import {module}", check=False)
        assert "ModuleNotFoundError" in done.stderr, (module, done.stderr)


@container
def test_the_container_classifies_a_real_photo(served):
    answer = _predict(served[1], PHOTOS["chelsea"].read_bytes())
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in CAT_LABELS
    assert answer.json()["model"] == "EfficientNetLite0"


@container
@pytest.mark.browser
def test_the_page_classifies_in_chromium(served, open_page):
    page = open_page(served[1])
    page.set_input_files("#image", PHOTOS["chelsea"])
    assert expect_bars(page, 3)[0][0] in {"Tabby", "Tiger cat", "Egyptian cat"}
    expect(page.locator(".meta-model")).to_have_text("EfficientNetLite0")


@container
def test_models_probes_and_metrics_answer(served):
    name, url = served
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=10).json() == {"status": "ready", "model": "EfficientNetLite0"}
    models = {model["name"]: model for model in requests.get(f"{url}/models", timeout=10).json()["models"]}
    assert models["EfficientNetLite0"]["ready"]
    inside = podman("exec", name, "python3", "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/metrics').read().decode())")
    assert "classifier_predictions_total" in inside.stdout
    assert podman("healthcheck", "run", name, check=False).returncode == 0


@container
def test_the_container_runs_as_a_user_and_writes_nothing_but_tmp(served):
    name = served[0]
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    for place in ("/app/x", "/opt/keras/x", "/x"):
        denied = podman("exec", name, "touch", place, check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    podman("exec", name, "touch", "/tmp/x")


@container
def test_without_its_export_the_pod_is_alive_but_not_ready(image):
    """An image whose exports are missing (here: an empty Keras folder) cannot serve the
    default model without TensorFlow: /models says which command makes the export, /readyz
    answers 503 (the Service leaves the pod out), /healthz stays 200 (no restarts in a loop)."""
    name = "classifier-test-unready"
    url = run(name, free_port(), "--tmpfs", "/keras", "--env", "KERAS_HOME=/keras", image=image)
    try:
        ready = _first_answer(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_unavailable", ready.text
        models = {model["name"]: model for model in requests.get(f"{url}/models", timeout=10).json()["models"]}
        lite = models["EfficientNetLite0"]
        assert lite["status"] == "unavailable" and "TensorFlow" in lite["error"], lite
        assert "`python3 -m classifier export EfficientNetLite0`" in lite["hint"], lite
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


@container
def test_the_image_refuses_to_run_models_on_keras_and_says_why(image):
    """CLASSIFIER_RUNTIME=keras in the image, which has no TensorFlow: the pod stays alive and
    unready, and /models says why its model cannot run and which setting serves it."""
    name = "classifier-test-keras"
    url = run(name, free_port(), "--env", "CLASSIFIER_RUNTIME=keras", image=image)
    try:
        ready = _first_answer(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_unavailable", ready.text
        models = {model["name"]: model for model in requests.get(f"{url}/models", timeout=10).json()["models"]}
        lite = models["EfficientNetLite0"]
        assert lite["status"] == "unavailable", lite
        assert "TensorFlow, which Keras needs, is not installed" in lite["error"], lite
        assert "CLASSIFIER_RUNTIME=auto" in lite["hint"], lite
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def _first_answer(url: str, timeout: float = 120) -> requests.Response:
    """GET ``url`` once the container's server accepts connections, whatever it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=60)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the container never answered"
            time.sleep(0.2)


def _held_upload(url: str, photo: bytes) -> tuple[socket.socket, bytes]:
    """A /predict upload of ``photo`` sent but for its last byte: a worker has accepted it and
    is reading its body (the app reads bodies itself), so it is a request in flight."""
    prepared = requests.Request("POST", f"{url}/predict", files={"image": ("chelsea.png", photo)}).prepare()
    host, port = prepared.url.split("/")[2].split(":")
    head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in prepared.headers.items()) + "\r\n"
    sock = socket.create_connection((host, int(port)), timeout=90)
    sock.sendall(head.encode() + prepared.body[:-1])
    return sock, prepared.body[-1:]


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer on ``sock`` (the server closes it after)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@container
def test_sigterm_lets_the_requests_in_flight_finish(image):
    """``podman stop`` (SIGTERM) while both workers hold a request: both are answered in full,
    then the container exits with 0, well within the grace period. (uWSGI's own SIGTERM would
    kill the workers at once: both connections reset.)"""
    name = "classifier-test-stop"
    url = run(name, free_port(), image=image)
    try:
        wait_ready(url)
        held = [_held_upload(url, PHOTOS["chelsea"].read_bytes()) for _ in range(2)]
        time.sleep(2)  # both workers have accepted theirs and wait for the last byte
        podman("kill", "--signal", "TERM", name)
        time.sleep(1)
        for sock, last in held:
            sock.sendall(last)
        answers = [_answer(sock) for sock, _ in held]
        exit_code = podman("wait", name, timeout=70).stdout.strip()
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
    assert [status for status, _ in answers] == [200, 200], answers
    assert all(body["predictions"][0]["label"] in CAT_LABELS for _, body in answers)
    assert exit_code == "0"


@pytest.fixture
def cluster(image):
    """Two app containers behind the nginx image with the project's cluster configuration
    (remote/nginx/classifier-cluster.conf: app1 and app2.classifier.internal), on a network
    of their own; NGINX's port published."""
    network, names = "classifier-test-cluster", ["classifier-test-app1", "classifier-test-app2", "classifier-test-nginx"]
    containers.build(NGINX_IMAGE, "--target", "nginx")
    podman("network", "create", network, check=False)
    try:
        for number in (1, 2):
            run(names[number - 1], free_port(), "--network", network, "--network-alias",
                f"app{number}.classifier.internal", image=image)
        site = ROOT / "remote" / "nginx" / "classifier-cluster.conf"
        podman("rm", "--force", "--time", "0", names[2], check=False)
        port = free_port()
        podman("run", "--detach", "--name", names[2], "--network", network, "--publish", f"127.0.0.1:{port}:80",
               "--volume", f"{site}:/etc/nginx/sites-enabled/classifier.conf:ro", NGINX_IMAGE)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, names
    finally:
        for name in names:
            podman("rm", "--force", "--time", "0", name, check=False)
        podman("network", "rm", network, check=False)


@container
def test_a_container_stopped_behind_nginx_loses_no_request(cluster):
    """One client posts photos through NGINX, one at a time (its per-address limits), while
    app1 is stopped: its requests in flight finish, NGINX sends the rest to app2; all 200."""
    url, names = cluster
    photo = PHOTOS["chelsea"].read_bytes()
    for _ in range(4):  # both app containers have answered once
        assert _predict(url, photo).status_code == 200
        time.sleep(0.2)  # paced as below: back to back, NGINX's per-address limit may answer 429
    stopper = threading.Thread(target=podman, args=("stop", "--time", "70", names[0]))
    statuses = []
    for number in range(60):
        if number == 10:
            stopper.start()
        statuses.append(_predict(url, photo).status_code)
        time.sleep(0.2)  # under NGINX's 10 predictions a second per address
    stopper.join(90)
    assert statuses == [200] * 60, statuses
    assert podman("inspect", "--format", "{{.State.ExitCode}}", names[0]).stdout.strip() == "0"
    # NGINX's log names the hosts each request was tried on ("app1, app2": retried): the
    # last one answered. Both served before the stop, app2 alone after it.
    tried = re.findall(r"upstream=([^\s,]+(?:, [^\s,]+)*)", podman("logs", names[2]).stdout)
    served = [hosts.split(", ")[-1] for hosts in tried]
    assert len(set(served[:14])) == 2 and len(set(served[-20:])) == 1, served


def _doc_commands() -> list[str]:
    """The shell commands of docs/containers.md, one per line of its ```sh blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def _shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def doc_shell(image, tmp_path):
    """Runs docs/containers.md's commands as written, from a copy of the checkout's files they
    name, with podman set up as this machine needs (a wrapper adds the runtime)."""
    wrapper = tmp_path / "bin" / "podman"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("podman")} --runtime {containers.RUNTIME} "$@"\n')
    wrapper.chmod(0o755)
    env = {**containers.environment(), "PATH": f"{wrapper.parent}:{Path(sys.executable).parent}:/usr/bin:/bin:/usr/sbin"}
    return lambda command, **kwargs: _shell(command, ROOT, env, **kwargs)


@container
def test_every_command_of_the_containers_doc_runs(doc_shell):
    """Each command of docs/containers.md, in order (the docs name them "build", "run",
    "compose", "kube"); the checks between them are this test's."""
    commands = _doc_commands()
    assert commands, "docs/containers.md has no ```sh blocks"
    try:
        for command in commands:
            doc_shell(command)
            _check_after(command)
    finally:
        cleanup = "podman-compose down -t 0; podman rm -f -t 0 classifier; podman kube down k8s/deployment.yaml"
        subprocess.run(["bash", "-c", cleanup], cwd=ROOT, env=containers.environment(), capture_output=True,
                       timeout=300, check=False)


def _check_after(command: str) -> None:
    """What a reader of the doc would see after ``command``: the service answering."""
    starts = ("podman run", "podman-compose up", "podman kube play")
    if not command.startswith(starts):
        return
    url, photo = "http://127.0.0.1:8080", PHOTOS["chelsea"].read_bytes()
    wait_ready(url)
    answer = _predict(url, photo)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in CAT_LABELS, answer.text
    if command.startswith("podman kube play"):  # the Deployment's securityContext holds
        container = "classifier-pod-0-classifier"
        assert podman("exec", container, "id", "-u").stdout.strip() == "10001"
        assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container).stdout.strip() == "true"
    if command.startswith("podman-compose"):
        assert "text/html" in requests.get(f"{url}/", timeout=10).headers["Content-Type"]
        refused = requests.post(f"{url}/predict", data=b"x" * (66 * 2**20), timeout=60,
                                headers={"Content-Type": "application/octet-stream"})
        assert refused.status_code == 413 and refused.json()["error"]["code"], refused.text
