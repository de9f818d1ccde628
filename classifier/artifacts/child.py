"""A serving worker's way to an export it lacks: ``python3 -m classifier export MODEL`` in a
child process, so that TensorFlow and the converter never enter the worker.

The child imports TensorFlow, converts, checks and exits, returning its memory. Never for an
int8 form: those are made ahead of traffic only (``quantize.py``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from classifier.artifacts.exports import Export, Record
from classifier.config import Settings
from classifier.models.registry import ModelSpec

log = logging.getLogger(__name__)

CHILD_ATTEMPTS = 2  # child processes tried before a worker serves Keras itself
EXPORT_TOOLS = ("tensorflow", "tf2onnx")  # what the child imports to make an export
_PROJECT = Path(__file__).resolve().parents[2]


@functools.cache
def exports_made_here() -> bool:
    """Whether this environment can make exports: the child runs this interpreter, which
    lacks TensorFlow or tf2onnx in the container image (requirements-runtime.txt). Looked up
    once per process, without importing either (the export child would fail to start anyway)."""
    return all(importlib.util.find_spec(name) is not None for name in EXPORT_TOOLS)


def made_in_child(made: Export, settings: Settings) -> Record | None:
    """Run the export command (one process at a time) and read its record; ``None`` if it
    failed ``CHILD_ATTEMPTS`` times (its output is in the log)."""
    with FileLock(str(made.record_path) + ".child.lock"):
        for attempt in range(1, CHILD_ATTEMPTS + 1):
            record = made.record()
            if record is not None:
                return record
            _run_export_child(made.spec, settings, attempt)
        return made.record()


def _run_export_child(spec: ModelSpec, settings: Settings, attempt: int) -> None:
    command = [_python(), "-m", "classifier", "export", spec.name]
    log.info("%s: making its ONNX export in a child process (attempt %d)", spec.name, attempt)
    try:
        done = subprocess.run(command, env=child_environment(settings), capture_output=True, text=True,
                              timeout=settings.export_timeout, cwd=_PROJECT)
    except subprocess.TimeoutExpired:
        log.warning("%s: the export child ran over %s s and was stopped", spec.name, settings.export_timeout)
        return
    level = logging.INFO if done.returncode == 0 else logging.WARNING
    log.log(level, "%s: export child exited with %d: %s", spec.name, done.returncode,
            (done.stdout + done.stderr).strip()[-2000:])


def _python() -> str:
    """This interpreter. Under uWSGI ``sys.executable`` is the uwsgi binary; the interpreter
    is then the one in ``sys.prefix`` (the virtualenv uWSGI was given, or the system's)."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    names = (f"python{sys.version_info.major}.{sys.version_info.minor}", f"python{sys.version_info.major}")
    found = (Path(sys.prefix) / "bin" / name for name in names)
    return str(next((path for path in found if path.is_file()), sys.executable))


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's settings as the child reads them (they may differ from the environment)."""
    env = {**os.environ, "KERAS_HOME": str(settings.keras_home), "CLASSIFIER_OFFLINE": "1",
           "CLASSIFIER_RANDOM_WEIGHTS": "0"}
    env.pop("CLASSIFIER_WEIGHTS_DIR", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the workers' metrics are not the child's to write
    if settings.weights_dir:
        env["CLASSIFIER_WEIGHTS_DIR"] = str(settings.weights_dir)
    if settings.runtime_threads:
        env["CLASSIFIER_RUNTIME_THREADS"] = str(settings.runtime_threads)
    return env
