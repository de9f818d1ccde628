"""ONNX Runtime serving: exports made and checked against Keras, cached, and refused when wrong;
and its threads following the load (a lone pass on every core, overlapping passes on one).

The pretrained EfficientNetLite0 that ships via pip is the model under test: real weights on
real photos are what show that an export computes the same function, and its export is the
quickest to make (a few seconds). Nothing here is mocked: a bad export is a real file on disk.
No test depends on which runtime a timing favoured: those that need ONNX Runtime ask for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
import requests
from conftest import CAT_LABELS, PHOTOS, ROOT, free_port, stop, wait_until_healthy
from onnx import numpy_helper
from PIL import Image

from bench import stack
from classifier import Classifier, Settings
from classifier.artifacts.convert import verify
from classifier.artifacts.exports import TOLERANCE, Export
from classifier.models.registry import REGISTRY
from classifier.models.weights import loadable
from classifier.runtimes.forward import ChangedFile, OnnxRuntime, keras_runtime
from classifier.runtimes.in_flight import InFlight, instance_file
from classifier.serving.pool import ModelPool, Serving

MODEL = "EfficientNetLite0"
SPEC = REGISTRY[MODEL]


@pytest.fixture(scope="module")
def weights(keras_home) -> Path:
    """The checkpoint converted to a Keras weights file, as the service does on first use."""
    return loadable(SPEC.weights, Settings(keras_home=keras_home))


@pytest.fixture(scope="module")
def onnx_classifier(keras_home, weights) -> Classifier:
    """Serves with ONNX Runtime; its first use makes and checks the export."""
    return Classifier(Settings(keras_home=keras_home, warmup=False, runtime="onnx"), pool=ModelPool())


@pytest.fixture(scope="module")
def export(onnx_classifier, keras_home) -> Export:
    """The export the service made: keyed by the checkpoint it ships as."""
    onnx_classifier.load_model(MODEL)
    settings = Settings(keras_home=keras_home)
    return Export(SPEC, SPEC.weights.find(settings), settings.exports_dir)


def test_the_export_is_checked_on_real_photos_and_recorded(onnx_classifier, export):
    assert onnx_classifier.load_model(MODEL).runtime.name == "onnx"
    record = json.loads(export.record_path.read_text())
    assert record["verified"] is True, record["reason"]
    assert record["max_abs_diff"] <= TOLERANCE
    assert record["photos"] == ["chelsea.jpg", "coffee.jpg"]
    assert record["keras_ms"] > 0 and record["onnx_ms"] > 0
    assert export.record() is not None  # the record describes the file now on disk


def test_onnx_runtime_and_keras_give_the_same_answers(onnx_classifier, keras_home):
    """Including a photo the export was not checked on (Grace Hopper)."""
    assert onnx_classifier.load_model(MODEL).runtime.name == "onnx"
    keras = Classifier(Settings(keras_home=keras_home, warmup=False, runtime="keras"), pool=ModelPool())
    assert keras.load_model(MODEL).runtime.name == "keras"
    for name, path in PHOTOS.items():
        expected = keras.classify(path.read_bytes(), MODEL, 5).predictions
        got = onnx_classifier.classify(path.read_bytes(), MODEL, 5).predictions
        assert [p.label for p in got] == [p.label for p in expected], name
        np.testing.assert_allclose([p.score for p in got], [p.score for p in expected], atol=TOLERANCE)


def test_a_worker_serves_a_checked_export_without_importing_tensorflow(export, keras_home):
    """What a uWSGI worker does: create the app (which warms the default model up in the
    background), answer /predict; TensorFlow must not be loaded at any point."""
    script = """
import json, sys, time
from app import create_app
client = create_app().test_client()
for _ in range(600):
    if any(m["status"] == "loaded" for m in client.get("/models").json["models"]):
        break
    time.sleep(0.05)
answer = client.post("/predict", data=open(sys.argv[1], "rb").read(), content_type="image/png").json
print(json.dumps({"answer": answer, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "CLASSIFIER_RUNTIME": "onnx",
           "CLASSIFIER_DEFAULT_MODEL": MODEL, "CLASSIFIER_RANDOM_WEIGHTS": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(PHOTOS["chelsea"])], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["answer"]["model"] == MODEL and outcome["answer"]["weights"] == "imagenet"
    assert outcome["answer"]["predictions"][0]["label"] in CAT_LABELS
    assert not outcome["tensorflow"] and not outcome["keras"]


@pytest.mark.slow  # makes an export in a process of its own
def test_a_worker_whose_export_child_fails_twice_runs_keras(tmp_path, caplog):
    """The child is given no time at all (``CLASSIFIER_EXPORT_TIMEOUT``): after two attempts
    the worker serves the model on Keras rather than failing it."""
    settings = Settings(keras_home=tmp_path, runtime="onnx", export_timeout=0.01)
    classifier = Classifier(settings, pool=ModelPool(), downloads=None)
    with caplog.at_level(logging.INFO, logger="classifier"):
        assert classifier.load_model(MODEL).runtime.name == "keras"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("making its ONNX export in a child process" in m for m in messages) == 2
    assert sum("export child ran over 0.01 s" in m for m in messages) == 2
    assert f"{MODEL}: running on Keras: no export after 2 attempts (see above)" in messages


def tampered(model_file: Path, target: Path) -> None:
    """A copy of the export with its largest weight tensor scaled: it loads and runs, wrongly."""
    model = onnx.load(str(model_file))
    largest = max(model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 1.5, largest.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


@pytest.mark.slow  # makes an export in a process of its own
def test_a_worker_that_needs_an_export_has_a_child_make_it_and_never_loads_tensorflow(tmp_path):
    """Issue 11.9: a worker that made the export itself kept TensorFlow (1.7 GB RSS against
    ~140 MB). A running ``python app.py`` with nothing converted or exported yet answers,
    and TensorFlow's libraries are never mapped into it (under uWSGI: tests/test_first_use.py)."""
    port = free_port()
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "CLASSIFIER_RUNTIME": "onnx",
           "CLASSIFIER_DEFAULT_MODEL": MODEL, "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_WARMUP": "0",
           "CLASSIFIER_OFFLINE": "1"}
    log = tmp_path / "server.log"
    process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        answer = requests.post(f"http://127.0.0.1:{port}/predict", files={"image": PHOTOS["chelsea"].read_bytes()},
                               timeout=600)
        maps = Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        stop(process)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in CAT_LABELS
    assert "onnxruntime" in maps and "tensorflow" not in maps
    assert answer.json()["timing_ms"]["load"] > 0
    output = log.read_text()
    assert "making its ONNX export in a child process (attempt 1)" in output
    assert "running on ONNX Runtime" in output
    settings = Settings(keras_home=tmp_path / "keras")
    assert Export(SPEC, SPEC.weights.find(settings), settings.exports_dir).record().verified


@pytest.mark.parametrize("damage", ["tampered", "cut short"])
def test_a_damaged_export_without_a_verdict_is_made_again_once(export, weights, tmp_path, caplog, damage):
    """A file cut short or changed since its check is exported again, not recorded as failed."""
    serving = Serving("onnx", tmp_path / "exports")
    bad = Export(SPEC, weights, serving.exports_dir)
    if damage == "tampered":
        tampered(export.onnx_path, bad.onnx_path)
    else:
        bad.onnx_path.parent.mkdir(parents=True)
        bad.onnx_path.write_bytes(export.onnx_path.read_bytes()[:100_000])
    with caplog.at_level(logging.INFO, logger="classifier"):
        loaded = ModelPool().get(SPEC, weights, serving)
    assert loaded.runtime.name == "onnx"
    warning = next(r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING and r.name.startswith("classifier"))
    assert f"the export {bad.onnx_path.name} failed its check" in warning and "making it again" in warning
    assert ("differs from Keras" if damage == "tampered" else "cannot run the export") in warning
    assert bad.record() is not None and bad.record().verified


def test_an_export_found_to_differ_runs_on_keras_and_is_not_checked_again(export, weights, tmp_path, caplog):
    serving = Serving("onnx", tmp_path / "exports")
    bad = Export(SPEC, weights, serving.exports_dir)
    tampered(export.onnx_path, bad.onnx_path)
    bad.store(verify(SPEC, keras_runtime(SPEC, weights), bad.onnx_path))
    with caplog.at_level(logging.INFO, logger="classifier.serving.pool"):
        loaded = ModelPool().get(SPEC, weights, serving)
    assert loaded.runtime.name == "keras"
    warning = next(r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING and r.name.startswith("classifier"))
    assert "running on Keras" in warning and bad.onnx_path.name in warning and "differs from Keras" in warning
    assert not any("checked" in r.getMessage() for r in caplog.records)  # the verdict is read, not redone


def test_exports_are_keyed_by_the_weights_content(weights, tmp_path):
    """Copied weights keep their export; weights changed in place get a new one, even with
    the file's size and time stamps kept as they were."""
    copy = tmp_path / "copy" / weights.name
    copy.parent.mkdir()
    shutil.copy2(weights, copy)
    before = Export(SPEC, copy, tmp_path).onnx_path
    assert before == Export(SPEC, weights, tmp_path).onnx_path

    stat = copy.stat()
    with h5py.File(copy, "r+") as file:
        arrays: list[str] = []
        file.visititems(lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None)
        file[arrays[0]][...] = file[arrays[0]][...] * 1.01 + 0.01
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert copy.stat().st_size == stat.st_size and copy.stat().st_mtime_ns == stat.st_mtime_ns
    assert Export(SPEC, copy, tmp_path).onnx_path != before


@pytest.mark.slow  # makes an export in a process of its own
def test_random_weights_run_on_onnx_runtime_when_asked(tmp_path):
    """Each process's random weights differ, so their exports stay in a folder of its own."""
    settings = Settings(keras_home=tmp_path, random_weights=True, runtime="onnx")
    serving = Serving.from_settings(settings)
    assert not serving.exports_dir.is_relative_to(tmp_path)
    assert str(os.getpid()) in serving.exports_dir.name
    loaded = ModelPool().get(REGISTRY["MobileNetV2"], None, serving)
    assert loaded.runtime.name == "onnx" and loaded.weights == "random"
    assert list(serving.exports_dir.glob("MobileNetV2-*.onnx"))


def test_auto_means_keras_for_random_weights_and_runtime_is_validated(tmp_path):
    assert Serving.from_settings(Settings(random_weights=True)).runtime == "keras"
    assert Serving.from_settings(Settings(random_weights=True, runtime="onnx")).runtime == "onnx"
    real = Serving.from_settings(Settings(keras_home=tmp_path, runtime_threads=1))
    assert (real.runtime, real.exports_dir, real.threads) == ("auto", tmp_path / "models" / "exports", 1)
    assert Settings.from_env({"CLASSIFIER_RUNTIME": "ONNX"}).runtime == "onnx"
    with pytest.raises(ValueError, match="CLASSIFIER_RUNTIME"):
        Settings.from_env({"CLASSIFIER_RUNTIME": "tflite"})


# Another process with a runtime sharing the slot file: on "pass" it runs one real forward
# pass and prints what its runtime ran on; "hold" enters a pass's count (what its runtime
# does around each pass) and stays in it, printing how many passes it was told were running.
RUNTIME_PROCESS = """
import json, sys
from contextlib import ExitStack
from pathlib import Path
import numpy as np
from classifier.runtimes.in_flight import InFlight
from classifier.runtimes.forward import OnnxRuntime
in_flight = InFlight(Path(sys.argv[1]))
runtime = OnnxRuntime(Path(sys.argv[2]), in_flight=in_flight)
held = ExitStack()
for command in sys.stdin:
    if command == "hold\\n":
        print(held.enter_context(in_flight.running()), flush=True)
    elif command == "release\\n":
        held.close()
        print("released", flush=True)
    else:
        runtime.scores(np.zeros((1, 224, 224, 3), np.float32))
        print(json.dumps({int(threads): count for threads, count in runtime.ran.items()}), flush=True)
"""


class RuntimeProcess:
    """A second process with its own ONNX Runtime on the export, counting its passes in ``slots``."""

    def __init__(self, slots: Path, model: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", RUNTIME_PROCESS, str(slots), str(model)], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str) -> object:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the runtime process exited with {self.process.wait(timeout=60)}"
        return json.loads(answer) if command == "pass" else answer.strip()

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or uWSGI's harakiri does, and reaped."""
        self.process.kill()
        self.process.wait(timeout=60)


@pytest.fixture
def cores() -> int:
    count = len(os.sched_getaffinity(0))
    assert count > 1, "following the load needs a machine with more than one core"
    return count


def test_a_lone_pass_takes_every_core_and_passes_in_two_processes_take_one_each(export, tmp_path, cores):
    """Each process's real runtime decides from the other's pass in flight, both ways round."""
    slots = tmp_path / "passes"
    in_flight = InFlight(slots)
    here = OnnxRuntime(export.onnx_path, in_flight=in_flight)
    batch = np.zeros((1, 224, 224, 3), np.float32)
    other = RuntimeProcess(slots, export.onnx_path)
    try:
        assert other.ask("pass") == {str(cores): 1}  # alone: every core
        here.scores(batch)
        assert here.ran == {cores: 1}
        assert other.ask("hold") == "1"  # the other process's pass is the only one running
        here.scores(batch)
        assert here.ran == {cores: 1, 1: 1}  # so this one, overlapping it, takes one thread
        assert other.ask("release") == "released"
        with in_flight.running() as passes:  # and the other way round
            assert passes == 1
            assert other.ask("pass") == {str(cores): 1, "1": 1}
        here.scores(batch)
        assert here.ran == {cores: 2, 1: 1}  # alone again
    finally:
        other.kill()


def test_a_process_killed_mid_pass_is_not_counted_and_its_slot_is_taken_again(export, tmp_path, cores):
    slots = tmp_path / "passes"
    here = OnnxRuntime(export.onnx_path, in_flight=InFlight(slots))
    killed = RuntimeProcess(slots, export.onnx_path)
    assert killed.ask("hold") == "1"
    killed_pid = killed.process.pid
    killed.kill()
    assert (killed_pid, 1) in slot_file(slots)  # its slot still says it has a pass running
    here.scores(np.zeros((1, 224, 224, 3), np.float32))
    assert here.ran == {cores: 1}  # but a dead process's pass is not counted
    after = RuntimeProcess(slots, export.onnx_path)
    try:
        assert after.ask("pass") == {str(cores): 1}
        pids = [pid for pid, _ in slot_file(slots) if pid]
        assert sorted(pids) == sorted([os.getpid(), after.process.pid])  # it took the dead one's slot
    finally:
        after.kill()


def test_a_slot_left_by_an_earlier_life_of_this_process_id_is_freed(export, tmp_path, cores):
    """Process ids come back (a restarted container, a busy host): a slot that holds this
    process's id with a pass from that earlier life is freed when the process claims one, as
    is a dead process's, so that no stale pass keeps every later pass off the other cores."""
    slots = tmp_path / "passes"
    stale = [(os.getpid(), 1), (0, 0), (dead_pid(), 1)]
    np.array(stale + [(0, 0)] * (64 - len(stale)), dtype=np.int32).tofile(slots)
    slots.chmod(0o600)  # as runtimes/in_flight.py makes it: a file others may open is never used
    here = OnnxRuntime(export.onnx_path, in_flight=InFlight(slots))
    here.scores(np.zeros((1, 224, 224, 3), np.float32))
    assert here.ran == {cores: 1}
    assert [slot for slot in slot_file(slots) if slot != (0, 0)] == [(os.getpid(), 0)]


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                             check=True)
    return int(process.stdout)


def test_a_fixed_thread_count_runs_every_pass_on_it(export, tmp_path):
    runtime = OnnxRuntime(export.onnx_path, 1, in_flight=InFlight(tmp_path / "passes"))
    runtime.scores(np.zeros((1, 224, 224, 3), np.float32))
    assert runtime.ran == {1: 1} and not runtime.following_load
    assert all(passes == 0 for _, passes in slot_file(tmp_path / "passes"))  # never counted


def test_sessions_are_made_only_from_the_checked_bytes(export, tmp_path, cores, caplog):
    """Every session is made from bytes that hash to the check's digest. A file changed after
    the load (readiness reports it) leaves the first overlapping pass, which would have made
    the one-thread session from the changed file, on the session made from the checked
    bytes, with a warning; a load from the changed file fails."""
    served = tmp_path / export.onnx_path.name
    shutil.copyfile(export.onnx_path, served)
    digest = export.record().onnx_sha256
    in_flight = InFlight(tmp_path / "passes")
    runtime = OnnxRuntime(served, in_flight=in_flight, sha256=digest)
    photo = SPEC.preprocess(np.asarray(Image.open(PHOTOS["chelsea"]).convert("RGB").resize((224, 224)))[None])
    checked = runtime.scores(photo)
    tampered(export.onnx_path, served)
    with caplog.at_level(logging.WARNING, logger="classifier"), in_flight.running():
        overlapping = runtime.scores(photo)  # a second pass in flight: the one-thread session's turn
    assert runtime.ran == {cores: 2}
    np.testing.assert_allclose(overlapping, checked, atol=1e-6)
    assert f"{served.name} changed since it was checked; passes stay on the {cores}-thread session" in caplog.text
    assert not np.allclose(OnnxRuntime(served).scores(photo), checked, atol=1e-3)  # the change shows in scores
    with pytest.raises(ChangedFile):
        OnnxRuntime(served, sha256=digest)


def slot_file(path: Path) -> list[tuple[int, int]]:
    """The slots as written: (process id, passes running) pairs of int32 (classifier/runtimes/in_flight.py)."""
    return [tuple(map(int, slot)) for slot in np.fromfile(path, dtype=np.int32).reshape(-1, 2)]


def test_uwsgi_workers_count_their_passes_in_one_file_of_their_master(export, keras_home, tmp_path):
    """Both workers of one uWSGI instance claim a slot in the file named after their master
    (each claims it when it opens the model, and answers)."""
    http = f"127.0.0.1:{free_port()}"
    env = {"KERAS_HOME": str(keras_home), "CLASSIFIER_RUNTIME": "onnx", "CLASSIFIER_DEFAULT_MODEL": MODEL,
           "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_OFFLINE": "1", "CLASSIFIER_UWSGI_HTTP": http}
    server = stack.start_uwsgi(tmp_path, "app", f"127.0.0.1:{free_port()}", env, processes=2, threads=1)
    slots = instance_file().with_name(f"classifier-passes-{os.getuid()}-{server.process.pid}")
    try:
        wait_until_healthy(f"http://{http}", server.process)
        workers = set(server.worker_pids())
        deadline = time.monotonic() + 120
        while not workers <= counted_pids(slots) and time.monotonic() < deadline:
            answer = requests.post(f"http://{http}/predict", files={"image": PHOTOS["chelsea"].read_bytes()},
                                   timeout=60)
            assert answer.status_code == 200
    finally:
        stop(server.process)
    assert len(workers) == 2 and workers <= counted_pids(slots), server.log.read_text(errors="replace")[-3000:]


def counted_pids(slots: Path) -> set[int]:
    return {pid for pid, _ in slot_file(slots)} - {0} if slots.exists() else set()


def test_without_a_shared_file_a_process_still_counts_its_own_passes(tmp_path, caplog):
    """A folder that cannot hold the file (a read-only /dev/shm, say): the dev server's
    threads still see each other's passes, and the log says why the workers cannot."""
    with caplog.at_level(logging.WARNING, logger="classifier.runtimes.in_flight"):
        in_flight = InFlight(tmp_path / "missing" / "passes")
    assert "cannot share a pass count" in caplog.text
    with in_flight.running() as first:
        with in_flight.running() as second:
            assert (first, second) == (1, 2)
    with in_flight.running() as alone:
        assert alone == 1


@pytest.mark.parametrize("planted", ["symlink", "another user's file"])
def test_a_pass_file_planted_by_someone_else_is_neither_used_nor_written(tmp_path, caplog, planted):
    """/dev/shm is shared by every user: a link at the instance's file name (to a file the
    service may write, say) or a file another user made there is refused, left as it was,
    and the process counts only its own passes."""
    target, path = tmp_path / "precious", tmp_path / "passes"
    target.write_bytes(b"keep")
    if planted == "symlink":
        path.symlink_to(target)
    else:
        path.write_bytes(b"\0" * 8)
        os.chown(path, 65534, 65534)  # nobody; the tests run as root, who may hand a file over
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="classifier.runtimes.in_flight"):
        in_flight = InFlight(path)
    assert "cannot share a pass count" in caplog.text
    assert target.read_bytes() == b"keep" and path.read_bytes() == before
    with in_flight.running() as alone:
        assert alone == 1


# Run as another user (nobody): plants the instance's pass file, open to all (umask 0),
# and holds a shared lock on it until killed, as someone else on a shared /dev/shm could.
LOCK_HOLDER = 'umask 0 && exec flock --shared "$0" sh -c "echo locked && exec sleep 600"'


def test_a_pass_file_another_user_planted_and_locks_does_not_hold_predictions(export, keras_home, tmp_path):
    """Another local user who guesses a uWSGI master's id plants its pass file (mode 0666)
    and keeps a shared lock on it: the workers see the file is not theirs before waiting for
    any lock, count their own passes and answer (they used to wait on the lock until
    harakiri while /healthz stayed 200)."""
    http = f"127.0.0.1:{free_port()}"
    env = {"KERAS_HOME": str(keras_home), "CLASSIFIER_RUNTIME": "onnx", "CLASSIFIER_DEFAULT_MODEL": MODEL,
           "CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_OFFLINE": "1", "CLASSIFIER_UWSGI_HTTP": http,
           "CLASSIFIER_WARMUP": "0"}  # no worker opens the file before it is planted
    server = stack.start_uwsgi(tmp_path, "app", f"127.0.0.1:{free_port()}", env, processes=2, threads=1)
    planted = instance_file().with_name(f"classifier-passes-{os.getuid()}-{server.process.pid}")
    holder = subprocess.Popen(["sh", "-c", LOCK_HOLDER, str(planted)], user=65534, group=65534,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        wait_until_healthy(f"http://{http}", server.process)
        for _ in range(2):  # both workers, in turn or not
            answer = requests.post(f"http://{http}/predict", files={"image": PHOTOS["chelsea"].read_bytes()},
                                   timeout=45)  # under harakiri (60 s): a worker waiting on the lock never answers
            assert answer.status_code == 200, answer.text
    finally:
        holder.kill()
        holder.wait()
        stop(server.process)
        planted.unlink(missing_ok=True)
    assert "belongs to another user" in server.log.read_text(errors="replace")
