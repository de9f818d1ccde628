"""What an explanation (``explain=1``) adds to a prediction: time beside the forward pass, and bytes.

    python3 -m bench.explain [--models EfficientNetLite0 MobileNetV2 ...] [--repeats 200] [--threads 1]

For each model, on ONNX Runtime as it is served (EfficientNetLite0 with its real weights and
checked export; the Keras models with random weights, exported in this process: the timings
do not depend on the values), and for two photos: the bundled chelsea.jpg (451x300, a
262-pixel crop, so a 262x262 heatmap) and the same photo as a 12-megapixel phone JPEG (its
crop gives the largest heatmap, 512x512). Interleaved, so that a busy machine slows them alike:

- forward: the forward pass alone at batch 1 (``LoadedModel.scores``), the goal's yardstick;
- predict: ``Classifier.classify`` without an explanation, decode to labels;
- explained: the same with ``explain=True``, and its ``timing_ms.explain`` part (Grad-CAM from
  the pass's feature map, the heatmap PNG, the summary);
- the JSON answer's size with and without the explanation, and the heatmap's share of it.

Prints medians (p50) in ms and the ratio explain ÷ forward (goal: at most 0.10).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

from PIL import Image

from classifier import Classifier, Settings
from classifier.imaging import images
from classifier.serving.pool import ModelPool

ROOT = Path(__file__).resolve().parent.parent

PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"
PHONE = (4032, 3024)


def photos() -> dict[str, bytes]:
    phone = io.BytesIO()
    Image.open(PHOTO).convert("RGB").resize(PHONE, Image.Resampling.BICUBIC).save(phone, "JPEG", quality=92)
    return {"451x300": PHOTO.read_bytes(), f"{PHONE[0]}x{PHONE[1]}": phone.getvalue()}


def classifier_for(model: str, threads: int | None) -> Classifier:
    random = model != "EfficientNetLite0"
    settings = Settings.from_env(runtime="onnx", random_weights=random, warmup=False, runtime_threads=threads)
    return Classifier(settings, pool=ModelPool(), downloads=None)


def measure(classifier: Classifier, model: str, photo: bytes, repeats: int) -> dict[str, float]:
    loaded = classifier.load_model(model)
    pixels = images.model_input(photo, loaded.spec.input_size)[None]
    times: dict[str, list[float]] = {"forward": [], "predict": [], "explained": [], "explain": []}
    for _ in range(repeats):
        started = time.perf_counter()
        loaded.scores(pixels)
        times["forward"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        plain = classifier.classify(photo, model)
        times["predict"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        explained = classifier.classify(photo, model, explain=True)
        times["explained"].append((time.perf_counter() - started) * 1000)
        times["explain"].append(explained.timing_ms["explain"])
    p50 = {name: statistics.median(values) for name, values in times.items()}
    answer = explained.to_json()
    return {**p50, "runtime": loaded.runtime.name, "plain_bytes": len(json.dumps(plain.to_json())),
            "explained_bytes": len(json.dumps(answer)), "heatmap_bytes": len(answer["explanation"]["heatmap"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["EfficientNetLite0", "MobileNetV2", "NASNetMobile",
                                                         "ResNet50"])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (uwsgi.ini: 1)")
    args = parser.parse_args()
    print(f"{'model':<18}{'photo':<11}{'runtime':<8}{'forward':>9}{'predict':>9}{'explained':>11}{'explain':>9}"
          f"{'explain/forward':>17}{'answer bytes':>22}{'heatmap':>9}")
    for model in args.models:
        classifier = classifier_for(model, args.threads)
        for name, photo in photos().items():
            m = measure(classifier, model, photo, args.repeats)
            print(f"{model:<18}{name:<11}{m['runtime']:<8}{m['forward']:>9.2f}{m['predict']:>9.2f}"
                  f"{m['explained']:>11.2f}{m['explain']:>9.2f}{m['explain'] / m['forward']:>17.2f}"
                  f"{m['plain_bytes']:>10,} → {m['explained_bytes']:>9,}{m['heatmap_bytes']:>9,}", flush=True)


if __name__ == "__main__":
    main()
