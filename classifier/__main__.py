"""Command line: ``classifier predict IMAGE…``, ``download [MODEL…]`` and ``export [MODEL…]``.

``pip install .`` installs it as the ``classifier`` script; ``python3 -m classifier`` is the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import requests
from tqdm import tqdm

from . import Classifier, ClassifierError, Settings
from .download import Unreachable, describe, download
from .engine import Serving, make_export
from .explain import overlay_png
from .files import write_bytes
from .logs import configure_logging
from .models import REGISTRY, ModelSpec, get_spec
from .options import DEFAULT_TOP_K, MAX_TOP_K
from .weights import Found, WeightsRejected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="classifier", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--model", choices=list(REGISTRY), help="default: the server's default model")
    predict.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, choices=range(1, MAX_TOP_K + 1),
                         metavar=f"1..{MAX_TOP_K}")
    predict.add_argument("--json", action="store_true", help="print one JSON document per image")
    predict.add_argument("--explain", type=Path, metavar="FOLDER",
                         help="write IMAGE.cam.png there: the photo with the top class's heatmap over it")
    download = commands.add_parser("download", help="fetch ImageNet weights into the Keras cache")
    download.add_argument("models", nargs="*", metavar="MODEL",
                          help=f"any of {', '.join(REGISTRY)} (default: all)")
    export = commands.add_parser("export", help="make and check the ONNX exports the server runs")
    export.add_argument("models", nargs="*", metavar="MODEL",
                        help="default: every model whose weights are here")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING if args.command == "predict" else logging.INFO, "%(message)s")
    if args.command == "predict":
        return _predict(args)
    if args.command == "export":
        return _export(args.models)
    return _download(args.models or [name for name, spec in REGISTRY.items() if spec.weights.downloadable])


def _predict(args: argparse.Namespace) -> int:
    classifier = Classifier(Settings.from_env(), downloads=None)
    failures = 0
    for path in args.images:
        try:
            image = path.read_bytes()
            result = classifier.classify(image, args.model, args.top_k, explain=args.explain is not None)
            heatmap = _write_overlay(image, result.explanation, args.explain / f"{path.stem}.cam.png") \
                if result.explanation else None
        except (OSError, ClassifierError) as error:
            print(f"{path}: {getattr(error, 'message', None) or error}", file=sys.stderr)
            failures += 1
            continue
        if args.json:
            print(json.dumps({"image": str(path), **({"heatmap_file": str(heatmap)} if heatmap else {}),
                              **result.to_json()}))
        else:
            print(f"{path} ({result.model}, {result.weights} weights)")
            for p in result.predictions:
                print(f"  {p.score:7.2%}  {p.label}  ({p.class_id})")
            if heatmap:
                print(f"  where it looked for {result.explanation['label']}: {heatmap} "
                      f"({result.explanation['summary']})")
    return 1 if failures else 0


def _write_overlay(image: bytes, explanation: dict[str, object], target: Path) -> Path:
    """The photo's crop with the heatmap over it, as ``target`` (its folder made if needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, overlay_png(image, explanation))
    return target


def _export(names: list[str]) -> int:
    """Make and check exports ahead of time, so that no worker spends a request on it.

    A serving worker that finds no checked export runs this same command in a child
    process, so that TensorFlow is imported there and not in the worker.
    """
    settings = Settings.from_env(runtime="onnx")
    if settings.random_weights:
        print("Random weights differ in every process: there is nothing to export ahead of time.",
              file=sys.stderr)
        return 2
    try:
        specs = [get_spec(name) for name in names]
    except ClassifierError as error:
        print(error.message, file=sys.stderr)
        return 2
    failures = 0
    for spec in specs or [spec for spec in REGISTRY.values() if spec.weights.find(settings)]:
        reason = _export_one(spec, settings)
        if reason:
            print(f"{spec.name}: {reason}", file=sys.stderr)
            failures += 1
        else:
            print(f"{spec.name}: checked export in {settings.exports_dir}")
    return 1 if failures else 0


def _export_one(spec: ModelSpec, settings: Settings) -> str | None:
    """Why ``spec`` has no usable export, or ``None`` once it has one."""
    path = spec.weights.find(settings)
    if path is None:
        return Classifier(settings, downloads=None).catalog.state(spec).error_for(spec.name).message
    try:
        record, _ = make_export(spec, Found(path, spec.weights, settings), Serving.from_settings(settings))
    except WeightsRejected as error:
        return str(error)
    if not record.verified:
        return f"no usable export ({record.reason}); the server runs this model on Keras."
    return None


def _download(names: list[str]) -> int:
    settings = Settings.from_env()
    try:
        specs = [get_spec(name) for name in names]
    except ClassifierError as error:
        print(error.message, file=sys.stderr)
        return 2
    failures = [spec.name for spec in specs if not _download_one(spec, settings)]
    return 1 if failures else 0


def _download_one(spec: ModelSpec, settings: Settings) -> bool:
    """Fetch one model's weights with a progress bar; False (and a message) if that failed."""
    weights = spec.weights
    if not weights.downloadable:
        print(f"{spec.name}: its weights ship with the {weights.package} package; nothing to download.")
        return True
    if existing := weights.find(settings):
        print(f"{spec.name}: already here ({existing})")
        return True
    with tqdm(desc=spec.name, unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            path = download(weights, settings, progress)
        except (OSError, requests.RequestException, Unreachable, WeightsRejected) as error:
            reason = f"cannot download {weights.url(settings)}: {describe(error)}"
        else:
            reason = None
    if reason:
        print(f"{spec.name}: {reason}", file=sys.stderr)
        return False
    print(f"{spec.name}: saved {path}")
    return True


if __name__ == "__main__":
    sys.exit(main())
