"""Whether several images of one request should share a forward pass, per runtime: the
figures behind ``CLASSIFIER_BATCH_SIZE`` (classifier/config.py).

    python3 -m bench.batching [--models EfficientNetLite0 MobileNetV2] [--seconds 1.5] [--repeats 3]
                              [--threads 1] [--keras-home DIR]

For each model and runtime (ONNX Runtime on the checked export, and Keras):

- raw: milliseconds per image of the forward pass alone at batch 1, 2, 4, 8 and 16;
- request: milliseconds per image of ``Classifier.classify_request`` on 16 real photos (decode,
  forward pass, top-k), with ``batch_size`` 1 against 2, 4, 8 and 16: what a request with
  several images costs end to end. Each figure is measured for ``--seconds`` and at least
  ``--repeats`` times.

One runtime thread by default, as a uWSGI worker runs (uwsgi.ini). EfficientNetLite0 has its
real weights; MobileNetV2 random ones (this machine cannot download Keras' weights; timings
do not depend on the values). Results are printed and written to batching.json in ``--results``
(default bench/results/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import raw, stack
from bench.photos import PHOTOS
from classifier import Classifier, Settings
from classifier.serving.options import Options, PredictRequest, Upload

ROOT = Path(__file__).resolve().parent.parent

BATCHES = (1, 2, 4, 8, 16)
RUNTIMES = ("onnx", "keras")


def photos(count: int) -> list[Upload]:
    """``count`` uploads cycling through the real photos the tests use."""
    data = [path.read_bytes() for path in PHOTOS.values()]
    return [Upload(f"photo-{index}", data[index % len(data)]) for index in range(count)]


def request_ms_per_image(classifier: Classifier, model: str, uploads: list[Upload], seconds: float,
                         repeats: int) -> float:
    """Median ms per image of ``classify_request`` over ``uploads``, after one warm-up call."""
    request = PredictRequest.many(uploads, Options(model=model))
    classifier.classify_request(request)
    times: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < repeats:
        begin = time.perf_counter()
        classifier.classify_request(request)
        times.append((time.perf_counter() - begin) * 1000 / len(uploads))
    return statistics.median(times)


def measure(model: str, runtime: str, args: argparse.Namespace, keras_home: Path) -> dict[str, dict[int, float]]:
    settings = Settings(runtime=runtime, runtime_threads=args.threads, warmup=False, keras_home=keras_home,
                        random_weights=model != "EfficientNetLite0")
    loaded = Classifier(settings, downloads=None).load_model(model)
    forward = {batch: ms / batch for batch, ms in
               raw.per_batch(loaded.runtime, loaded.spec.input_size, args.seconds, BATCHES).items()}
    uploads = photos(16)
    request = {}
    for batch in BATCHES:
        classifier = Classifier(dataclasses.replace(settings, batch_size=batch), downloads=None)
        request[batch] = request_ms_per_image(classifier, model, uploads, args.seconds, args.repeats)
    return {"runtime": loaded.runtime.name, "forward_ms_per_image": forward, "request_ms_per_image": request}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["EfficientNetLite0", "MobileNetV2"])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed requests at least, per figure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="folder for batching.json")
    parser.add_argument("--keras-home", type=Path, help=stack.KERAS_HOME_HELP)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        keras_home = stack.keras_home(Path(folder), args.keras_home)
        for model in args.models:
            for runtime in RUNTIMES:
                figures = measure(model, runtime, args, keras_home)
                results[f"{model} {runtime}"] = figures
                for kind in ("forward_ms_per_image", "request_ms_per_image"):
                    row = "  ".join(f"b{batch} {ms:6.2f}" for batch, ms in figures[kind].items())
                    print(f"{model:18} {figures['runtime']:6} {kind:21} {row}", flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "batching.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
