"""Every speed figure of the service in one run, with ratios: raw forward pass, /predict through
uWSGI + NGINX at one and N clients, worker start-up and memory, and the original way as a
baseline.

    python3 -m bench.serving [--models MobileNetV2 ...] [--clients 2xcores] [--seconds 10]
                            [--processes 2] [--threads 1] [--runtime-threads 0] [--keras-home DIR]
    python3 -m bench.serving --sweep [--rounds 3]   # choose workers, threads, runtime threads

For each model:

- limits: ``F1``, ONNX Runtime's forward pass at batch 1 on one thread; ``Fbest``, the same
  on the best thread count for this machine (1 to cores); ``D``, decoding and cropping the
  test photo by the app's own call. The goals are ratios to them: ``1c/(Fbest+D)``, /predict
  p50 at one client over the least a request can take (goal <= 1.2), and ``Nc/(cores/(F1+D))``,
  req/s at N clients over what the cores can do one request per core (goal >= 0.9).

- raw: the forward pass in this process, Keras' ``Model.predict`` (what the original did),
  compiled Keras, and ONNX Runtime on the export, at batch 1 and the best batch; and the
  throughput of the forward pass alone on all cores, over ways of splitting them.
- serving: the app under uwsgi.ini behind the project's NGINX site, once per runtime, and the
  baseline (bench/baseline_app.py) under the same uWSGI and NGINX: seconds from launch until
  /healthz answers and until the first prediction, worker memory, /predict p50/p95/p99 for
  one client, then for N clients with their throughput.
- worker: a fresh process importing the app and loading the model as a worker does, until
  its first prediction: seconds, memory, and whether TensorFlow was imported.

Weights: EfficientNetLite0's are the real ones; the Keras models get random values saved in
Keras' file layout (this machine cannot download theirs; timings do not depend on values).
The app takes the MobileNetV2 stand-in like a downloaded file, so its ONNX server is the
production path: a checked export, no TensorFlow in the workers. It refuses the ResNet50 and
NASNetMobile stand-ins (their MD5 is not Keras'), so their ONNX servers run in random-weights
mode, where each worker makes its own export at start (TensorFlow loaded, more memory; the
request figures are the same runtime). Input: classifier/data/photos/chelsea.jpg (451x300).
Results are also written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from bench import int8, load, raw, stack
from classifier.artifacts import convert, quantize
from classifier.artifacts.exports import Export
from classifier.artifacts.int8 import Int8Form
from classifier.config import Settings
from classifier.models.registry import REGISTRY, ModelSpec
from classifier.models.weights import loadable
from classifier.runtimes.forward import (
    OnnxRuntime,
    keras_runtime,
    use_tensorflow_threads,
)

ROOT = Path(__file__).resolve().parent.parent

IMAGE = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
SPLITS = [(2, 1, 1), (1, 2, 1), (1, 2, 4)]  # all-core throughput: processes x threads, batch
CORES = os.cpu_count() or 1
# Worker layouts: processes, threads, runtime threads (0: follow the load, runtimes.OnnxRuntime).
FP32 = [name for name, spec in REGISTRY.items() if spec.int8_of is None]  # each int8 form goes with its model
SWEEP = [(2, 1, 1), (2, 1, CORES), (1, 2, CORES), (2, 1, 0), (1, 2, 0)]

WORKER = """
import json, sys, time
from pathlib import Path
import app  # everything a uWSGI worker imports: Flask, the app, the classifier package
import psutil
from classifier.imaging import images
from classifier.serving.pool import POOL, Serving
from classifier.models.registry import REGISTRY
runtime, threads, photo = sys.argv[2], int(sys.argv[3]) or None, Path(sys.argv[4]).read_bytes()
runtimes = []
for name, weights, exports in json.loads(sys.argv[1]):  # one model, or several in turn
    spec = REGISTRY[name]
    loaded = POOL.get(spec, Path(weights), Serving(runtime, Path(exports), threads))
    loaded.scores(images.model_input(photo, spec.input_size)[None])
    runtimes.append(loaded.runtime.name)
print(json.dumps({"rss_mb": psutil.Process().memory_info().rss / 2**20, "runtime": "/".join(sorted(set(runtimes))),
                  "tensorflow": "tensorflow" in sys.modules}), flush=True)
"""


@dataclass
class Model:
    """One model's files for the run: its weights, and its checked export."""

    spec: ModelSpec
    weights: Path
    export: Export
    app_takes_weights: bool
    raw: dict[str, dict] = field(default_factory=dict)
    serving: dict[str, dict] = field(default_factory=dict)
    worker: dict[str, dict] = field(default_factory=dict)
    int8: dict[str, object] = field(default_factory=dict)


def prepare(spec: ModelSpec, keras_home: Path, threads: int | None) -> tuple[Model, object]:
    """Weights where the app looks for them, and the export made and checked as the app does."""
    models_dir = keras_home / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    real = None if spec.weights.downloadable else loadable(spec.weights, Settings.from_env())
    if real:
        weights = models_dir / real.name
        shutil.copy(real, weights)
    else:
        weights = models_dir / spec.weights.file_name
        _save_standin(spec, weights)
    keras = keras_runtime(spec, weights, threads)
    export = Export(spec, weights, Settings(keras_home=keras_home).exports_dir)
    with export.lock():
        record = export.record() or convert.make(export, keras, threads)
    print(f"  {spec.name}: export {export.onnx_path.name}: {record.reason}", flush=True)
    takes = real is not None or getattr(spec.weights, "md5", None) is None
    return Model(spec, weights, export, takes), keras


def _save_standin(spec: ModelSpec, path: Path) -> None:
    """Random values in the legacy .h5 layout Keras publishes its weights in."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, spec.build())


def measure_limits(model: Model, seconds: float) -> None:
    """F1, Fbest (and the thread count it took) and D, into ``model.raw["limits"]``."""
    size = model.spec.input_size
    by_threads = raw.per_threads(model.export.onnx_path, size, seconds)
    best = min(by_threads, key=by_threads.get)
    model.raw["limits"] = {"F1_ms": by_threads[1], "Fbest_ms": by_threads[best], "best_threads": best,
                           "per_threads_ms": by_threads, "D_ms": raw.decode_ms(IMAGE.read_bytes(), size, seconds / 3)}


def goals(limits: dict, served: dict, cores: int = CORES) -> dict:
    """The two goals' ratios for one ONNX Runtime server on ``cores`` (bench docstring)."""
    lone_limit = limits["Fbest_ms"] + limits["D_ms"]
    cores_limit = 1000 * cores / (limits["F1_ms"] + limits["D_ms"])
    return {"lone": served["one"]["p50"] / lone_limit, "lone_limit_ms": lone_limit,
            "load": served["many"]["throughput"] / cores_limit, "load_limit_per_s": cores_limit}


def measure_int8(model: Model, keras_home: Path) -> None:
    """The int8 form made and checked, then its forward pass and agreement against fp32 on
    one thread (bench/int8.py). For a model whose weights the app takes, by `classifier export`
    itself, so that the server finds the very files; the stand-ins it refuses, here."""
    if model.app_takes_weights:
        fp32_path, int8_path, record = int8.files(model.spec, Settings(keras_home=keras_home))
    else:
        form = Int8Form(REGISTRY[f"{model.spec.name}-int8"], model.export)
        with form.lock():
            record = form.record() or quantize.make(form)
        fp32_path, int8_path = model.export.onnx_path, form.onnx_path
    check = record.check()
    print(f"  {model.spec.name}-int8: top-1 agreement {check['top1_agreement']}, top-5 overlap "
          f"{check['top5_overlap']}", flush=True)
    model.int8 = {"check": check, "passes": record.passes(Settings()),
                  "raw": int8.compare(model.spec, fp32_path, int8_path, threads=1)}


def measure_raw(model: Model, keras: object, threads: int | None, seconds: float) -> None:
    spec, size = model.spec, model.spec.input_size
    measure_limits(model, seconds)
    one = raw.batch_of(size, 1)
    predict = raw.latency_ms(_PredictRuntime(keras.model), one, seconds=seconds / 2, at_most=40)
    runtimes = {"keras": keras, "onnx": OnnxRuntime(model.export.onnx_path, threads)}
    for name, runtime in runtimes.items():
        batches = raw.per_batch(runtime, size, seconds=seconds / 3)
        target = str(model.export.onnx_path) if name == "onnx" else spec.name
        model.raw[name] = raw_figures(batches, raw.all_cores(name, target, SPLITS, seconds))
    model.raw["predict"] = {"b1_ms": predict}


def raw_figures(batches: dict[int, float], cores: dict[str, float]) -> dict:
    """One runtime's raw figures from its ms per call at each batch size and its images per
    second on all cores for each split: batch 1, the batch with the least ms per image, the
    best split."""
    best = min(batches, key=lambda b: batches[b] / b)
    return {"b1_ms": batches[1], "best_batch": best, "best_ms_per_image": batches[best] / best,
            "per_batch_ms": batches, "all_cores": cores, "all_cores_best": max(cores.values())}


class _PredictRuntime:
    """``Model.predict`` per call, as the original app ran every request."""

    name = "predict"

    def __init__(self, model: object) -> None:
        self.model = model

    def scores(self, batch):
        return self.model.predict(batch, verbose=0)


def measure_worker(models: list[Model], runtime: str, threads: int | None) -> dict:
    """A fresh worker-like process loading ``models`` in turn: start until its last first
    prediction, and its memory then (a worker keeps every model it has served)."""
    started = time.monotonic()
    files = [(m.spec.name, str(m.weights), str(m.export.onnx_path.parent)) for m in models]
    result = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(files), runtime, str(threads or 0), str(IMAGE)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    seconds = time.monotonic() - started
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return {"seconds": seconds, **json.loads(result.stdout.splitlines()[-1])}


def serve(model: Model, kind: str, work: Path, args: argparse.Namespace, processes: int, threads: int,
          runtime_threads: int | None) -> dict:
    """One server (``onnx``, ``int8``, ``keras`` or ``baseline``) behind NGINX, measured, then stopped.

    ``int8`` serves the model's int8 form (ONNX Runtime) whatever its agreement check found: the
    bar is set to 0 here, and the check's figures are printed beside the speed."""
    name = f"{model.spec.name}-{kind}-{processes}x{threads}x{runtime_threads or 0}"
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    address = f"127.0.0.1:{stack.free_port()}"
    env = {"CLASSIFIER_DEFAULT_MODEL": model.spec.name, "CLASSIFIER_OFFLINE": "1",
           "KERAS_HOME": str(work / "keras"), "TMPDIR": str(work / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "3",
           **({"CLASSIFIER_RUNTIME_THREADS": str(runtime_threads)} if runtime_threads else {})}
    nginx = stack.start_nginx(folder / "nginx", {"127.0.0.1:8001": address}, rate_limit=False)
    server = None
    try:
        if kind == "baseline":
            server = stack.start_baseline(folder, name, address, {**env, "BASELINE_MODEL": model.spec.name},
                                          processes, threads)
            weights = "random" if model.spec.weights.downloadable else "imagenet"
        else:
            random_weights = kind == "keras" or not model.app_takes_weights
            exports_per_worker = kind == "onnx" and random_weights
            env.update(CLASSIFIER_RUNTIME="onnx" if kind == "int8" else kind,
                       CLASSIFIER_RANDOM_WEIGHTS="1" if random_weights else "0",
                       CLASSIFIER_INT8_MIN_TOP1="0", CLASSIFIER_INT8_MIN_TOP5="0")
            # Random weights under ONNX: each worker exports at start, longer than harakiri.
            extra = ["--harakiri", "300"] if exports_per_worker else []
            server = stack.start_uwsgi(folder, name, address, env, processes, threads, extra)
            weights = "random, export per worker" if exports_per_worker else \
                "random" if random_weights else "file, checked export"
        healthz = stack.wait_for(nginx.url + "/healthz", server)
        image, served = IMAGE.read_bytes(), model.spec.name + ("-int8" if kind == "int8" else "")
        first = load.sequential(nginx.url, image, served, 1, 600)
        first_seconds = time.monotonic() - server.started
        load.warm(nginx.url, image, served, processes * threads + 1)
        one = load.sequential(nginx.url, image, served, args.requests, args.seconds)
        # The same upload naming no model: the app refuses it at once (400). What that costs
        # is the HTTP path alone: client, NGINX, uWSGI, Flask, reading the body. (The
        # baseline takes no model name.)
        floor = None if kind == "baseline" else \
            load.sequential(nginx.url, image, "-", args.requests, args.seconds, expect=400).percentile(50)
        before = (server.cpu_seconds(), nginx.cpu_seconds(), time.process_time(), time.monotonic())
        many = load.concurrent(nginx.url, image, served, args.clients, args.seconds)
        after = (server.cpu_seconds(), nginx.cpu_seconds(), time.process_time(), time.monotonic())
        cpu, per_request = cpu_figures(before, after, len(many.latencies))
        return {"weights": weights, "healthz_s": healthz,
                "first_prediction_s": first_seconds if first.latencies else None,
                "worker_rss_mb": server.worker_rss_mb(), "one": _summary(one), "many": _summary(many),
                "http_floor_ms": floor, "cpu_share": cpu, "cpu_ms_per_request": per_request}
    finally:
        if server:
            server.stop()
        nginx.stop()


def cpu_figures(before: tuple[float, float, float, float], after: tuple[float, float, float, float],
                requests: int, cores: int = CORES) -> tuple[dict[str, float], dict[str, float]]:
    """Each part's share of all ``cores`` and its CPU ms per request over a load run, from the
    CPU seconds of the workers, NGINX and the load client and the clock, before and after."""
    parts = ("workers", "nginx", "client")
    capacity = (after[3] - before[3]) * cores
    share = {part: (after[i] - before[i]) / capacity for i, part in enumerate(parts)}
    per_request = {part: 1000 * (after[i] - before[i]) / max(requests, 1) for i, part in enumerate(parts)}
    return share, per_request


def _summary(run: load.Run) -> dict:
    return {"p50": run.percentile(50), "p95": run.percentile(95), "p99": run.percentile(99),
            "throughput": run.throughput, "requests": len(run.latencies), "errors": run.errors,
            "app_timing_ms": run.timing_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=FP32,
                        help="default: all; with --sweep, MobileNetV2 and EfficientNetLite0")
    parser.add_argument("--clients", type=int, default=2 * CORES, help="concurrent clients for throughput")
    parser.add_argument("--seconds", type=float, default=10, help="length of each load run")
    parser.add_argument("--requests", type=int, default=300, help="at most this many one-client requests")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime-threads", type=int, default=0,
                        help="0: uwsgi.ini's (ONNX Runtime's threads follow the load)")
    parser.add_argument("--sweep", action="store_true", help="only /predict, over several worker layouts")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the sweep")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                        help="folder for the JSON record of the run")
    parser.add_argument("--keras-home", type=Path, help=stack.KERAS_HOME_HELP)
    args = parser.parse_args()
    args.models = args.models or (["MobileNetV2", "EfficientNetLite0"] if args.sweep else FP32)
    runtime_threads = args.runtime_threads or None
    use_tensorflow_threads(runtime_threads)  # before the first model is built
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    (work / "tmp").mkdir()
    stack.keras_home(work, args.keras_home)
    started = time.time()
    try:
        print(f"machine: {_machine()}; load average at start {os.getloadavg()[0]:.2f}", flush=True)
        models = []
        for name in args.models:
            model, keras = prepare(REGISTRY[name], work / "keras", runtime_threads)
            if not args.sweep:
                measure_raw(model, keras, runtime_threads, args.seconds)
                for runtime in ("onnx", "keras"):
                    model.worker[runtime] = measure_worker([model], runtime, runtime_threads)
                measure_int8(model, work / "keras")
            models.append(model)
            del keras
        if args.sweep:
            sweep(models, work, args)
            return
        every_model = measure_worker(models, "onnx", runtime_threads)
        for model in models:
            for kind in ("onnx", "keras", "baseline"):
                print(f"  serving {model.spec.name} on {kind}", flush=True)
                model.serving[kind] = serve(model, kind, work, args, args.processes, args.threads,
                                            runtime_threads)
            if model.app_takes_weights:  # the others' workers run random weights, which int8 forms refuse
                print(f"  serving {model.spec.name}-int8", flush=True)
                model.int8["serving"] = serve(model, "int8", work, args, args.processes, args.threads,
                                              runtime_threads)
        report(models, every_model, args, time.time() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep(models: list[Model], work: Path, args: argparse.Namespace) -> None:
    """Each layout in turn, round after round, so that a busy spell on a shared machine
    weighs on all of them alike; the figures are the medians over the rounds. Each round
    measures the limits (F1, Fbest, D) again, and each layout's goals are against them."""
    runs: dict[tuple[str, tuple[int, int, int]], list[dict]] = {}
    for round_ in range(args.rounds):
        for model in models:
            measure_limits(model, args.seconds)
            for layout in SWEEP:
                result = serve(model, "onnx", work, args, *layout)
                result["goals"] = goals(model.raw["limits"], result)
                runs.setdefault((model.spec.name, layout), []).append(result)
                print(f"  round {round_ + 1} {model.spec.name} {_layout(layout)}: 1 client p50 "
                      f"{result['one']['p50']:.1f} ms; {args.clients} clients {result['many']['throughput']:.0f}/s",
                      flush=True)
    print(f"\nmedians of {args.rounds} rounds; {args.clients} clients for the throughput; runtime threads "
          "'load': follow the load (runtimes.OnnxRuntime)")
    print(f"{'model':<18}{'layout':>12}{'1c p50':>8}{'Nc p99':>8}{'req/s':>7}{'RSS MB':>9}"
          f"{'1c/(Fbest+D)':>14}{'Nc/(cores/(F1+D))':>19}")
    for (name, layout), results in runs.items():
        def median(*keys: str) -> float:
            return statistics.median(_dig(r, keys) for r in results)

        rss = statistics.median(max(r["worker_rss_mb"]) for r in results)
        print(f"{name:<18}{_layout(layout):>12}{median('one', 'p50'):>8.1f}{median('many', 'p99'):>8.1f}"
              f"{median('many', 'throughput'):>7.0f}{rss:>9.0f}{median('goals', 'lone'):>14.2f}"
              f"{median('goals', 'load'):>19.2f}")
    _save(args.results, "sweep", [{"model": name, "layout": layout, "runs": results}
                                  for (name, layout), results in runs.items()])


def _layout(layout: tuple[int, int, int]) -> str:
    """processes x threads, runtime threads ('load': they follow it)."""
    processes, threads, runtime_threads = layout
    return f"{processes}x{threads},{runtime_threads or 'load'}"


def _dig(document: dict, keys: tuple[str, ...]) -> float:
    for key in keys:
        document = document[key]
    return document


def report(models: list[Model], every_model: dict, args: argparse.Namespace, seconds: float) -> None:
    print(f"\nraw forward pass (ms; all-core: images/s, best of {', '.join(f'{p}x{t} b{b}' for p, t, b in SPLITS)})")
    print(f"{'model':<18}{'runtime':<9}{'b1 ms':>8}{'best b':>8}{'ms/img':>8}{'all-core/s':>12}  per split")
    for model in models:
        print(f"{model.spec.name:<18}{'predict':<9}{model.raw['predict']['b1_ms']:>8.1f}")
        for name in ("keras", "onnx"):
            r = model.raw[name]
            splits = " ".join(f"{k}:{v:.0f}" for k, v in r["all_cores"].items())
            print(f"{'':<18}{name:<9}{r['b1_ms']:>8.1f}{r['best_batch']:>8}{r['best_ms_per_image']:>8.1f}"
                  f"{r['all_cores_best']:>12.0f}  {splits}")
    print(f"\n/predict through uWSGI + NGINX ({args.processes} processes x {args.threads} threads, runtime threads "
          f"{args.runtime_threads or 'default'}; {args.clients} clients for {args.seconds:.0f} s)")
    print(f"{'model':<18}{'server':<9}{'healthz s':>10}{'1st pred s':>11}{'RSS MB':>12}"
          f"{'1c p50':>8}{'p95':>7}{'p99':>7}{'p50/raw':>8}{'dec':>5}{'inf':>6}"
          f"{'Nc p50':>8}{'p95':>7}{'p99':>7}{'req/s':>7}{'/raw':>6}{'CPU w/n/c %':>13}  weights")
    for model in models:
        for kind, s in model.serving.items():
            raw_of = model.raw["predict" if kind == "baseline" else kind]
            all_core = model.raw["keras" if kind == "baseline" else kind]["all_cores_best"]
            one, many = s["one"], s["many"]
            print(f"{model.spec.name:<18}{kind:<9}{s['healthz_s']:>10.2f}{_num(s['first_prediction_s']):>11}"
                  f"{'/'.join(map(str, s['worker_rss_mb'])):>12}"
                  f"{one['p50']:>8.1f}{one['p95']:>7.1f}{one['p99']:>7.1f}{one['p50'] / raw_of['b1_ms']:>8.2f}"
                  f"{_num(one['app_timing_ms'].get('decode'), 1):>5}{_num(one['app_timing_ms'].get('inference'), 1):>6}"
                  f"{many['p50']:>8.1f}{many['p95']:>7.1f}{many['p99']:>7.1f}{many['throughput']:>7.0f}"
                  f"{many['throughput'] / all_core:>6.2f}{_shares(s['cpu_share']):>13}  {s['weights']}")
    _breakdown(models)
    _goals(models, args.clients)
    _int8_table(models)
    print("\nworker: start (python, the app's imports, loading the model) until its first prediction; "
          "'all, in turn': one ONNX Runtime worker loading every model, its memory at the end")
    print(f"{'model':<18}{'runtime':<9}{'seconds':>9}{'RSS MB':>8}  tensorflow imported")
    rows = [(model.spec.name, w) for model in models for w in model.worker.values()]
    for label, w in rows + ([(f"all {len(models)}, in turn", every_model)] if len(models) > 1 else []):
        print(f"{label:<18}{w['runtime']:<9}{w['seconds']:>9.2f}{w['rss_mb']:>8.0f}  "
              f"{'yes' if w['tensorflow'] else 'no'}")
    print(f"\n1c: one client, Nc: {args.clients} clients; dec, inf: the app's own median decode and inference ms "
          f"at one client; CPU w/n/c: share of all cores used by the uWSGI workers, NGINX and the load client "
          f"during the {args.clients}-client run (below 100%: other processes had the rest). The baseline's "
          f"p50/raw is against Model.predict at batch 1, its req/s against compiled Keras on all cores. {seconds / 60:.0f} min; load average now {os.getloadavg()[0]:.2f}")
    _save(args.results, "serving", {
        "models": [{"model": m.spec.name, "raw": m.raw, "serving": m.serving, "worker": m.worker, "int8": m.int8,
                    "goals": goals(m.raw["limits"], m.serving["onnx"])} for m in models],
        "worker_with_every_model": every_model,
    })


def _int8_table(models: list[Model]) -> None:
    """Each int8 form against its fp32 export: forward pass on one thread, agreement on the
    held-out photos, and /predict served (for the models whose weights the app takes)."""
    print("\nint8 against fp32 (forward b1 on one thread; agreement on the held-out photos and their augmentations; "
          "/predict as above, int8 served whatever its check found)")
    print(f"{'model':<18}{'fp32 ms':>8}{'int8 ms':>8}{'x':>6}{'top-1':>7}{'top-5':>6}{'passes':>8}"
          f"{'1c p50 fp32/int8':>18}{'req/s fp32/int8':>17}{'RSS MB':>12}")
    for model in models:
        got, served = model.int8["raw"], model.int8.get("serving")
        fp32 = model.serving["onnx"]
        latency = f"{fp32['one']['p50']:.1f}/{served['one']['p50']:.1f}" if served else "-"
        rate = f"{fp32['many']['throughput']:.0f}/{served['many']['throughput']:.0f}" if served else "-"
        rss = "/".join(map(str, served["worker_rss_mb"])) if served else "-"
        print(f"{model.spec.name:<18}{got['fp32_ms']:>8.2f}{got['int8_ms']:>8.2f}{got['speedup']:>6.2f}"
              f"{got['top1_agreement']:>7.1%}{got['top5_overlap']:>6.2f}{'yes' if model.int8['passes'] else 'no':>8}"
              f"{latency:>18}{rate:>17}{rss:>12}")


def _breakdown(models: list[Model]) -> None:
    """Where one request's time goes beyond the forward pass, and the CPU each request costs.

    The cost that is not the forward pass is nearly the same for every model, so the ratio
    to the forward pass depends on the model: ``1.3x needs raw >=`` is the forward pass at
    which this run's fixed cost would be 30% of it. Likewise all-core throughput can reach
    at most cores / (CPU per request), and ``beyond fwd`` is the CPU a request costs (uWSGI
    workers, NGINX and the load client) beyond what the forward pass alone costs on all cores.
    """
    print("\none request, beyond the forward pass (ms, medians at one client; HTTP floor: the same upload "
          "refused at once)")
    print(f"{'model':<18}{'server':<9}{'raw b1':>8}{'1c p50':>8}{'fixed':>7}{'HTTP floor':>11}"
          f"{'outside app':>12}{'decode':>8}{'inf-raw':>8}{'1.3x needs raw >=':>19}"
          f"{'CPU ms/req w/n/c':>18}{'beyond fwd':>11}{'req/s ceiling':>14}")
    for model in models:
        for kind, s in model.serving.items():
            if kind == "baseline":
                continue
            raw_ms, one = model.raw[kind]["b1_ms"], s["one"]
            timing, fixed = one["app_timing_ms"], one["p50"] - raw_ms
            cpu = s["cpu_ms_per_request"]
            ceiling = 1000 * os.cpu_count() / sum(cpu.values())
            forward_cpu = 1000 * os.cpu_count() / model.raw[kind]["all_cores_best"]
            print(f"{model.spec.name:<18}{kind:<9}{raw_ms:>8.1f}{one['p50']:>8.1f}{fixed:>7.1f}"
                  f"{s['http_floor_ms']:>11.2f}{one['p50'] - timing.get('total', 0):>12.2f}"
                  f"{_num(timing.get('decode')):>8}{_num(timing.get('inference', raw_ms) - raw_ms):>8}"
                  f"{_num(fixed / 0.3 if fixed > 0 else None, 1):>19}{'/'.join(f'{cpu[p]:.1f}' for p in cpu):>18}"
                  f"{sum(cpu.values()) - forward_cpu:>11.1f}{ceiling:>14.0f}")


def _goals(models: list[Model], clients: int) -> None:
    """The issue's two goals for the ONNX Runtime server, against this run's own limits."""
    print(f"\ngoals, ONNX Runtime server (ms; F1: forward b1 on 1 thread, Fbest: on the best of 1-{CORES}, "
          f"D: decode + crop of the photo)")
    print(f"{'model':<18}{'F1':>7}{'Fbest':>7}{'threads':>8}{'D':>6}{'1c p50':>8}{'1c/(Fbest+D) <=1.2':>20}"
          f"{'req/s':>7}{f'{clients}c/(cores/(F1+D)) >=0.9':>26}")
    for model in models:
        limits, ratios = model.raw["limits"], goals(model.raw["limits"], model.serving["onnx"])
        print(f"{model.spec.name:<18}{limits['F1_ms']:>7.2f}{limits['Fbest_ms']:>7.2f}{limits['best_threads']:>8}"
              f"{limits['D_ms']:>6.2f}{model.serving['onnx']['one']['p50']:>8.1f}{ratios['lone']:>20.2f}"
              f"{model.serving['onnx']['many']['throughput']:>7.0f}{ratios['load']:>26.2f}")


def _shares(cpu: dict[str, float]) -> str:
    return "/".join(f"{100 * cpu[part]:.0f}" for part in ("workers", "nginx", "client"))


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


def _save(folder: Path, kind: str, document: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": _machine(), "argv": sys.argv[1:], "results": document}, indent=1,
                               default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
