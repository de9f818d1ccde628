"""Shared fixtures: a fresh, configured app per test, real photos, and running servers.

Models live in the process-wide pool, so each architecture is built once per test session
however many apps the tests create.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from filelock import FileLock
from flask import Flask
from flask.testing import FlaskClient
from support.scheduling import ModulesAndGroups, order_and_group

from bench.hostile import encode  # noqa: F401  (tests import it from here)
from bench.photos import PHOTOS
from bench.servers import QuietHandler, StubServer, silent_listener
from bench.stack import (  # noqa: F401  (tests import free_port and stop from here)
    Nginx,
    environment,
    free_port,
    start_nginx,
    stop,
    uwsgi_command,
    wait_until_ok,
)

# The browser tests' fixtures (Chromium, the servers it opens) live in a module of their own.
pytest_plugins = ["support.page_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
KERAS_MODELS = ("MobileNetV2", "ResNet50", "NASNetMobile")
CAT_LABELS = {"tabby", "tiger_cat", "Egyptian_cat"}  # a right answer for chelsea (ImageNet's cats)
# photo: (how many of a pretrained model's top predictions to look in, labels of which one must be there)
RIGHT_LABELS = {
    "chelsea": (3, CAT_LABELS),
    "coffee": (3, {"espresso", "cup", "coffee_mug"}),
    "grace_hopper": (5, {"military_uniform"}),
}


# What a test's fixtures say about its kind (pyproject.toml's markers); modules whose tests
# start such things themselves say so with ``pytestmark``.
KIND_OF_FIXTURE = {
    "browser": "browser",  # Chromium
    "site": "stack",  # uWSGI behind NGINX
    "serve_app": "slow",  # python3 app.py processes
    "prepared_export": "slow",  # the pretrained EfficientNetLite0, converted and exported
    "int8_export": "slow",  # and quantized
}


@pytest.hookimpl(tryfirst=True)  # before -m reads the kinds and xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the kinds its fixtures bring (directly or through other fixtures),
    then order and group the modules for xdist's workers."""
    for item in items:
        for kind in {KIND_OF_FIXTURE[name] for name in item.fixturenames if name in KIND_OF_FIXTURE}:
            item.add_marker(kind)
    order_and_group(items)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """One worker more than there are cores (``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides
    when set): much of a test is waiting for a server, a browser or a child process, and on 2
    cores three workers keep 1.6 to 1.7 of them busy (docs/contributing.md has the figures)."""
    return None if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") else (os.cpu_count() or 1) + 1


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> ModulesAndGroups:
    """Whole modules per worker, Chromium's and podman's modules one after another."""
    return ModulesAndGroups(config, log)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    """Apps with random weights, no warm-up thread and an empty Keras cache, unless overridden."""
    from app import create_app

    def make(**overrides: object) -> Flask:
        config = {"random_weights": True, "warmup": False, "keras_home": tmp_path / "keras", **overrides}
        app = create_app(config)
        app.testing = True
        return app

    return make


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


@pytest.fixture(scope="session")
def built_model() -> Callable[[str], object]:
    """``built_model(name)``: the registry's Keras model of that name with random weights,
    built once per session (seconds each; NASNetMobile the most), for tests that read its
    architecture or weights and change neither."""
    from classifier.models.registry import REGISTRY

    return functools.cache(lambda name: REGISTRY[name].build())


@pytest.fixture(scope="session")
def mobilenet_h5(tmp_path_factory: pytest.TempPathFactory, built_model: Callable[[str], object]) -> bytes:
    """A MobileNetV2 weights file in the legacy .h5 layout Keras publishes (random values)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from classifier.models.registry import REGISTRY

    spec = REGISTRY["MobileNetV2"]
    path = tmp_path_factory.mktemp("h5") / spec.weights.file_name
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, built_model("MobileNetV2"))
    return path.read_bytes()


@pytest.fixture(scope="session")
def cat_png() -> bytes:
    return PHOTOS["chelsea"].read_bytes()


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str,
              make: Callable[[Path], subprocess.CompletedProcess]) -> tuple[Path, subprocess.CompletedProcess]:
    """The Keras cache ``make(home)`` filled, once per run, and how its command ran. xdist's
    workers share it: the first makes it in the run's shared temporary folder, under a lock,
    and the others wait for it and read it."""
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else \
        tmp_path_factory.getbasetemp()
    home, ran = shared / name, shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not ran.is_file():
            result = make(home)
            assert result.returncode == 0, result.stderr
            ran.write_text(json.dumps({"args": result.args, "stdout": result.stdout, "stderr": result.stderr}))
    return home, subprocess.CompletedProcess(returncode=0, **json.loads(ran.read_text()))


@pytest.fixture(scope="session")
def prepared_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A Keras cache in which ``classifier export --no-int8`` (every model whose weights are
    here; offline, the bundled EfficientNetLite0 alone) converted the weights and made and
    checked the export, once per run (about 15 s), and how the command ran
    (tests/test_cli.py reads it)."""
    def export(home: Path) -> subprocess.CompletedProcess:
        return run_classifier("export", "--no-int8", KERAS_HOME=str(home), CLASSIFIER_OFFLINE="1",
                              CLASSIFIER_RANDOM_WEIGHTS="0")

    return made_once(tmp_path_factory, "prepared_keras_home", export)


@pytest.fixture(scope="session")
def prepared_keras_home(prepared_export: tuple[Path, subprocess.CompletedProcess]) -> Path:
    """A Keras cache holding what first use of the bundled EfficientNetLite0 makes (its
    converted weights and its checked ONNX export, feature map and head included): the one
    ``prepared_export`` made. Never used directly: ``keras_home`` and the stack fixtures take
    copies, so a test may add to its cache without touching another's."""
    return prepared_export[0]


@pytest.fixture(scope="session")
def int8_export(prepared_keras_home: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, subprocess.CompletedProcess]:
    """A Keras cache in which ``classifier export`` made both forms of EfficientNetLite0, and
    how the command ran (tests/test_int8.py reads what it printed): run on a copy of
    ``prepared_keras_home``, it finds the fp32 export checked and quantizes, once per run
    (about 25 s). A worker's export child makes one form: ``export EfficientNetLite0`` makes
    no int8 form. Tests that change its files take copies."""
    def quantize(home: Path) -> subprocess.CompletedProcess:
        copy_of(prepared_keras_home, home)
        return run_classifier("export", "EfficientNetLite0", "EfficientNetLite0-int8", KERAS_HOME=str(home))

    return made_once(tmp_path_factory, "int8_keras_home", quantize)


def copy_of(prepared_keras_home: Path, to: Path) -> Path:
    """``to``, a Keras cache of its own holding what ``prepared_keras_home`` holds."""
    shutil.copytree(prepared_keras_home, to)
    return to


@pytest.fixture(scope="module")
def keras_home(prepared_keras_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Keras cache per test module, EfficientNetLite0 already prepared in it (a copy of
    ``prepared_keras_home``), so its other downloads and conversions happen once per module."""
    return copy_of(prepared_keras_home, tmp_path_factory.mktemp("keras_home") / "keras")


@pytest.fixture
def stub_server() -> Iterator[Callable[[type], StubServer]]:
    """Starts a ``StubServer`` for a handler class; all are closed when the test ends."""
    servers: list[StubServer] = []

    def start(handler: type) -> StubServer:
        servers.append(StubServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def fake_remote(stub_server) -> Callable[..., str]:
    """A remote answering fixed status, headers and body, to test what we accept from it.

    With ``pause``, the body goes out one byte at a time, ``pause`` seconds apart. The paths
    of the requests that reached any of them are in ``fake_remote.received``.
    """

    def start(status: int, body: bytes, headers: dict[str, str] | None = None, pause: float = 0) -> str:
        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                start.received.append(self.path)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 1 if pause else max(len(body), 1)
                try:
                    for offset in range(0, len(body), step):
                        self.wfile.write(body[offset:offset + step])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:
                    pass  # we hung up on it: the point of the test

        return stub_server(Handler).url + "predict"

    start.received = []  # the paths of the requests that reached any of them
    return start


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A ``/predict`` URL on a port that takes connections and never answers."""
    with silent_listener() as url:
        yield url + "predict"


def classifier_command(*args: str) -> list[str]:
    """The command line of ``python -m classifier`` with ``args``, run by this interpreter."""
    return [sys.executable, "-m", "classifier", *args]


def run_classifier(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m classifier`` from the project root with ``env`` over ours; text output."""
    return subprocess.run(classifier_command(*args), cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the app at base ``url`` answers ``/healthz``."""
    wait_until_ok(url + "/healthz", process, timeout)


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Start ``python3 app.py`` on a loopback port with extra env; returns its base URL. Its
    output goes to ``log`` if given (a test reading its log lines), else to a file of its own."""
    processes: list[subprocess.Popen] = []

    def serve(port: int | None = None, log: Path | None = None, **env: str) -> str:
        port = port or free_port()
        log = log or tmp_path_factory.mktemp("server") / "server.log"
        environment = {**os.environ, "CLASSIFIER_RANDOM_WEIGHTS": "1",
                       "CLASSIFIER_DEFAULT_MODEL": "MobileNetV2", **env}
        process = subprocess.Popen(
            [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process)
        return url

    yield serve
    for process in processes:
        stop(process)


@pytest.fixture(scope="session")
def random_app(serve_app) -> str:
    """``python3 app.py`` as ``serve_app`` starts it with nothing more (random weights,
    MobileNetV2 the default), shared by the tests that only send it requests: none changes
    it, so a module needs no server of its own for them."""
    return serve_app()


# --- the production stack: uWSGI with uwsgi.ini behind NGINX with remote/nginx/ ------------------

@dataclass
class Uwsgi:
    """``uwsgi --ini uwsgi.ini`` with its own sockets; ``http`` answers plain HTTP for checks."""

    process: subprocess.Popen
    port: int
    http_port: int
    settings: dict[str, str]
    log: Path
    known_workers: set[int] = field(default_factory=set)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        try:
            pids = {child.pid for child in psutil.Process(self.process.pid).children()}
        except psutil.NoSuchProcess:
            return set()
        self.known_workers |= pids
        return pids

    def kill(self) -> None:
        """A host dying: the master and its workers get SIGKILL at once."""
        pids = [self.process.pid, *self.workers()]
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        self._wait_for_workers()

    def stop(self) -> None:
        self.workers()
        stop(self.process)
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        procs = []
        for pid in self.known_workers:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for proc in alive:
            _signal(proc.pid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def start_uwsgi(folder: Path, name: str, port: int | None = None, http_port: int | None = None,
                **settings: str) -> Uwsgi:
    port, http_port = port or free_port(), http_port or free_port()
    env = environment({"CLASSIFIER_UWSGI_SOCKET": f"127.0.0.1:{port}",
                       "CLASSIFIER_UWSGI_HTTP": f"127.0.0.1:{http_port}",
                       "PROMETHEUS_MULTIPROC_DIR": str(folder / f"{name}.metrics"), **settings})
    log = folder / f"{name}.log"
    process = subprocess.Popen(uwsgi_command("--ini", str(ROOT / "uwsgi.ini")), cwd=folder, env=env,
                               stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    instance = Uwsgi(process, port, http_port, settings, log)
    try:
        wait_until_healthy(instance.http, process, timeout=120)
    except BaseException:
        instance.stop()
        raise
    instance.workers()
    return instance


@dataclass
class Site:
    nginx: Nginx
    uwsgi: Uwsgi
    fifo: Path

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, prepared_keras_home: Path) -> Iterator[Site]:
    """classifier.conf + uwsgi.ini with production settings (its default 2 workers of one
    thread): the bundled pretrained EfficientNetLite0 (no download: offline; prepared already,
    in a copy of the session's cache), custom remotes asked for but forced off by uwsgi.ini.
    One per session: no test stops it, a test that reloads its workers waits until the new
    ones answer, held uploads are let go when their test ends, and NGINX's per-address limits
    refill within seconds (a test that needs them full uses an address of its own)."""
    folder = tmp_path_factory.mktemp("site")
    fifo = folder / "uwsgi.fifo"
    keras = copy_of(prepared_keras_home, folder / "keras")
    app = start_uwsgi(folder, "uwsgi", CLASSIFIER_UWSGI_FIFO=str(fifo), CLASSIFIER_OFFLINE="1",
                      CLASSIFIER_ALLOW_CUSTOM_REMOTE="1", KERAS_HOME=str(keras))
    try:
        nginx = start_nginx(folder / "nginx", {"127.0.0.1:8001": app.address})
    except BaseException:
        app.stop()
        raise
    try:
        yield Site(nginx, app, fifo)
    finally:
        nginx.stop()
        app.stop()
