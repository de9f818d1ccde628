"""Prometheus metrics: what the service counts and times, and the text ``GET /metrics`` serves.

The metrics are ``prometheus_client`` objects read as this module's attributes
(``metrics.IMAGES``), declared when first read, and recorded where the work happens
(``serving/service.py``, ``serving/pool.py``, ``models/download.py``; per request in
``web/hooks.py``). Label values are bounded: a model label is a registry name (or
``default`` / ``unknown``), a server label one of ``options.SERVERS``, an outcome an error
``code``, an endpoint a route's rule, never a client's raw text, so no request can make a new
series out of what it sends.

Under uWSGI each worker is a process of its own, and a scrape reaches one of them. With
``PROMETHEUS_MULTIPROC_DIR`` set (uwsgi.ini sets it) the library's multiprocess mode keeps
every worker's values in memory-mapped files in that folder, and whichever worker answers
sums them all: counters and histograms of workers that died still count, so no total goes
backwards when a worker is killed and respawned, and none doubles (a new worker has a new
process id, so files of its own). Gauges count live workers only: the files of a worker
that is gone are dropped at the next scrape or worker start (``_drop_gauges``), as the
library's ``mark_process_dead`` would be called from a process manager's hook, which uWSGI
has not. The folder is emptied when a new uWSGI master starts (``_prepare_folder``, when a
process first reads a metric), not when a worker is respawned or the workers are reloaded.
Without the variable (``python3 app.py``, one process) the metrics live in the process, and
the folder is not needed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from classifier.files import write_text

FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def _drop_gauges(folder: Path, gone: Callable[[int], bool]) -> None:
    """Remove the live-gauge files of the processes ``gone`` names: what the library's
    ``mark_process_dead`` removes, but safe when two processes sweep at once. A gauge
    describes the workers serving now; counters and histograms keep every worker's files."""
    for path in folder.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and gone(int(match.group(1))):
            path.unlink(missing_ok=True)


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process, alive
    return False


def _master_identity() -> str:
    """The parent process (the uWSGI master) as process id and start time: a master started
    again is another one, even with the same id (a container's pid 1)."""
    parent = os.getppid()
    try:
        started = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "?"
    return f"{parent} {started}"


def _under_uwsgi() -> bool:
    """Whether this process is a uWSGI worker (uWSGI's embedded ``uwsgi`` module exists)."""
    try:
        import uwsgi  # noqa: F401
    except ImportError:
        return False
    return True


def _private_folder(folder: Path) -> None:
    """Create ``folder`` for this user alone (0700), or refuse one that is not this user's
    alone. Its name may be predictable in a shared /tmp (uwsgi.ini's default): another user
    could have made it first, or made it a symbolic link to a folder of ours, whose ``*.db``
    files the first worker would then delete. ``mkdir`` never follows a link, and the folder
    is checked as it is (``lstat``), not where a link points."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    found = folder.lstat()
    problem = ("is a symbolic link" if stat.S_ISLNK(found.st_mode) else
               "is not a folder" if not stat.S_ISDIR(found.st_mode) else
               "belongs to another user" if found.st_uid != os.geteuid() else
               f"is open to other users (mode {stat.S_IMODE(found.st_mode):o}, not 700)" if found.st_mode & 0o077 else
               None)
    if problem:
        raise RuntimeError(f"{FOLDER_VARIABLE} {folder} {problem}; set it to a folder of this user's only "
                           "(one that does not exist yet is made so).")


def _prepare_folder(folder: Path) -> None:
    """Create ``folder``; in a uWSGI worker whose master is new, empty it of an earlier run's files.

    Runs before this process creates any metric (each opens its file at once): the first
    worker of a new master empties the folder, its siblings (under the lock) and respawned
    workers find the master's mark and keep the totals. Only a uWSGI worker may empty it: a
    process a worker starts (the ONNX export child) has the worker as its parent, not the
    master. The gauge files of dead workers are dropped, so a respawned worker never counts
    beside the one it replaces; so are any left by a dead process that had this process id,
    whose values this one would inherit.
    """
    _private_folder(folder)
    with FileLock(str(folder / ".lock")):
        mark = folder / "master"
        owner = _master_identity()
        if _under_uwsgi() and (not mark.is_file() or mark.read_text() != owner):
            for stale in folder.glob("*.db"):
                stale.unlink(missing_ok=True)
            write_text(mark, owner)
        # Any file with this process id is a dead process's: this one has no metric yet.
        _drop_gauges(folder, lambda pid: pid == os.getpid() or _dead(pid))


MULTIPROCESS_FOLDER = Path(os.environ[FOLDER_VARIABLE]) if os.environ.get(FOLDER_VARIABLE) else None

# Seconds. A forward pass here takes 4-40 ms, a whole request 7-50 ms, a forward to a remote
# up to its 30 s read timeout: fine steps around the milliseconds, coarse ones up to a minute.
LATENCY_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Loading a model: 0.4 s (an ONNX export) to minutes (making the export: at most
# CLASSIFIER_EXPORT_TIMEOUT, 900 s).
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
DOWNLOAD_FAILURE_KINDS = ("unreachable", "failed")  # download.py's Note kinds that count as failures


_DECLARING = threading.Lock()
_metrics: dict[str, Any] | None = None


def _declared() -> dict[str, Any]:
    """The metrics, by the names the other modules read (``metrics.IMAGES``), declared on first
    use instead of at import: in multiprocess mode a metric opens its file in the folder when
    it is declared, so the folder is prepared first (``_prepare_folder``), and a process that
    only imports this module (the command line, the export child) changes nothing. The first
    use declares them under a lock (two threads would declare each twice, which the registry
    refuses); every later read takes no lock."""
    global _metrics
    if _metrics is None:
        with _DECLARING:
            if _metrics is None:
                _metrics = _declare()
    return _metrics


def _declare() -> dict[str, Any]:
    disable_created_metrics()  # the multiprocess mode has no *_created series; one process leaves them out too
    if MULTIPROCESS_FOLDER is not None:
        _prepare_folder(MULTIPROCESS_FOLDER)
    declared = {
        "REQUESTS": Counter("classifier_requests", "HTTP requests answered, by route and status code.",
                            ["endpoint", "status"]),
        "REQUEST_SECONDS": Histogram("classifier_request_seconds", "Time to answer an HTTP request, by route.",
                                     ["endpoint"], buckets=LATENCY_BUCKETS),
        "PREDICTIONS": Counter("classifier_predictions", "Predictions asked for, one per request however many "
                               "images, by model, server and outcome (ok, or the error code answered).",
                               ["model", "server", "outcome"]),
        "IMAGES": Counter("classifier_images", "Images classified by this host's models, each image counted.",
                          ["model"]),
        "DECODE_SECONDS": Histogram("classifier_decode_seconds", "Time to check, decode and crop an upload.",
                                    buckets=LATENCY_BUCKETS),
        "INFERENCE_SECONDS": Histogram("classifier_inference_seconds", "Time of a model's forward pass.",
                                       ["model", "runtime"], buckets=LATENCY_BUCKETS),
        "FORWARD_SECONDS": Histogram("classifier_forward_seconds", "Time a forwarded prediction waited for the "
                                     "remote, failures included.", ["server"], buckets=LATENCY_BUCKETS),
        "MODEL_LOAD_SECONDS": Histogram("classifier_model_load_seconds", "Time to load and warm a model in a worker.",
                                        ["model", "runtime"], buckets=LOAD_BUCKETS),
        "MODELS_LOADED": Gauge("classifier_models_loaded", "Worker processes that have the model loaded.",
                               ["model", "runtime"], multiprocess_mode="livesum"),
        "DOWNLOAD_BYTES": Counter("classifier_weights_download_bytes", "Bytes of weights files downloaded.",
                                  ["model"]),
        "DOWNLOAD_FAILURES": Counter("classifier_weights_download_failures", "Weights downloads that failed, by "
                                     "kind (unreachable: the host could not be reached; failed: any other reason).",
                                     ["model", "kind"]),
        "BUILD_INFO": Gauge("classifier_build_info", "The running version and its runtimes' versions (always 1).",
                            ["version", "python", "keras", "onnxruntime", "tensorflow"], multiprocess_mode="livemax"),
    }
    declared["BUILD_INFO"].labels(
        version=_version("keras-image-classifier"), python=".".join(map(str, sys.version_info[:3])),
        keras=_version("keras"), onnxruntime=_version("onnxruntime"),
        tensorflow=_version("tensorflow-cpu") if _version("tensorflow-cpu") != "none" else _version("tensorflow"),
    ).set(1)
    return declared


def __getattr__(name: str) -> Any:
    """``metrics.REQUESTS`` and the other metrics, declared (once) when first read."""
    try:
        return _declared()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def zero_download_failures(models: Iterable[str]) -> None:
    """Every kind of failure of these models' downloads at 0 from the start. Prometheus'
    ``increase()`` counts from a series' first sample, so a series that first appears at 1
    shows no increase: ClassifierWeightsDownloadFailing (remote/prometheus/classifier-alerts.yml)
    missed every model's first failed download."""
    for model in models:
        for kind in DOWNLOAD_FAILURE_KINDS:
            _declared()["DOWNLOAD_FAILURES"].labels(model, kind)


def model_loaded(model: str, runtime: str, seconds: float) -> None:
    """A model loaded in this process (they are never unloaded)."""
    _declared()["MODEL_LOAD_SECONDS"].labels(model, runtime).observe(seconds)
    _declared()["MODELS_LOADED"].labels(model, runtime).inc()


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    """One HTTP request answered; ``endpoint`` is its route's rule, never the raw path."""
    _declared()["REQUESTS"].labels(endpoint, str(status)).inc()
    _declared()["REQUEST_SECONDS"].labels(endpoint).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, summed over every worker; and its content type."""
    _declared()  # every metric is shown from the first scrape, at 0 until it counts
    if MULTIPROCESS_FOLDER is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _drop_gauges(MULTIPROCESS_FOLDER, _dead)  # a worker killed since the last scrape
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(MULTIPROCESS_FOLDER))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``CLASSIFIER_METRICS_ALLOW``: comma-separated addresses or networks (``10.0.0.0/8``)."""
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ValueError(f"CLASSIFIER_METRICS_ALLOW={text!r}: {error}") from None


def client_allowed(address: str | None, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether a client at ``address`` may read ``/metrics`` (an IPv4-mapped IPv6 address
    counts as its IPv4 address)."""
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped
    return any(client in network for network in networks)
