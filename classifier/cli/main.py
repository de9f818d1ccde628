"""Command line: ``classifier predict PATH…``, ``download [MODEL…]`` and ``export [MODEL…]``.

``pip install .`` installs it as the ``classifier`` script; ``python3 -m classifier`` is the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

import requests
from tqdm import tqdm

from classifier import Classifier, ClassifierError, Settings
from classifier.artifacts.convert import make_export
from classifier.artifacts.quantize import make_int8
from classifier.cli.discovery import (
    IMAGE_SUFFIXES,
    Outcome,
    Summary,
    classify_here,
    find_images,
    run,
)
from classifier.cli.remote import REQUESTS_IN_FLIGHT, RemoteClient, batches
from classifier.cli.reports import (
    json_line,
    printable,
    terminal_lines,
    write_csv,
    write_json,
)
from classifier.files import write_bytes
from classifier.forwarding.client import Timeouts, predict_url
from classifier.logs import configure_logging
from classifier.models.download import Unreachable, describe, download
from classifier.models.registry import REGISTRY, ModelSpec, get_spec
from classifier.models.weights import Found, WeightsRejected
from classifier.runtimes.explain import overlay_png
from classifier.serving.options import DEFAULT_TOP_K, MAX_TOP_K, Options
from classifier.serving.pool import Serving

# --help's words: plain text, where the module's docstring has reStructuredText's ``code``.
DESCRIPTION = ("Classify image files and folders (predict), fetch ImageNet weights (download) and make the "
               "ONNX exports the server runs (export). 'pip install .' installs it as the classifier "
               "script; 'python3 -m classifier' is the same. 'classifier COMMAND --help' says more.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="classifier", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify image files and folders of them")
    predict.add_argument("images", nargs="+", type=Path, metavar="PATH",
                         help="an image file, or a folder: every image in it and its subfolders")
    predict.add_argument("--model", choices=list(REGISTRY), help="default: the server's default model")
    predict.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, choices=range(1, MAX_TOP_K + 1),
                         metavar=f"1..{MAX_TOP_K}", help=f"how many ranked labels per image (default: {DEFAULT_TOP_K})")
    predict.add_argument("--json", nargs="?", const="-", metavar="FILE",
                         help="alone: print one JSON document per image, in the API's shape; "
                              "with FILE: write there a JSON list with one record per image")
    predict.add_argument("--csv", type=Path, metavar="FILE",
                         help="write one row per image: path, top label and score, the top-k, error")
    predict.add_argument("--remote", metavar="URL",
                         help="send the images to the server at URL (its /predict) instead of running models here")
    predict.add_argument("--explain", type=Path, metavar="FOLDER",
                         help="write IMAGE.cam.png there: the photo with the top class's heatmap over it")
    download = commands.add_parser("download", help="fetch ImageNet weights into the Keras cache")
    download.add_argument("models", nargs="*", metavar="MODEL",
                          help=f"any of {', '.join(REGISTRY)} (default: all)")
    export = commands.add_parser("export", help="make and check the ONNX exports (and their int8 forms) the server runs")
    export.add_argument("models", nargs="*", metavar="MODEL",
                        help="default: every model whose weights are here, and its int8 form")
    export.add_argument("--no-int8", action="store_true",
                        help="leave out the int8 forms (quantizing one takes 3-8 GB of memory for a minute)")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING if args.command == "predict" else logging.INFO, "%(message)s")
    if args.command == "predict":
        _refuse_overwriting_inputs(predict, args)
        return _predict(args)
    if args.command == "export":
        return _export(args.models, int8=not args.no_int8)
    downloadable = [name for name, spec in REGISTRY.items() if spec.weights.downloadable and not spec.int8_of]
    return _download(args.models or downloadable)


def _predict(args: argparse.Namespace) -> int:
    """Classify every image under ``args.images``; 1 if any failed (each named on stderr)."""
    settings = Settings.from_env()
    found = find_images(args.images)
    if not found.images:
        print(f"No image files in {', '.join(map(str, args.images))}; {found.skipped} other file(s) skipped.",
              file=sys.stderr)
        return 1
    summary = Summary(skipped=found.skipped)
    if args.remote:
        options = Options(model=args.model, top_k=args.top_k, explain=args.explain is not None)
        client = RemoteClient(predict_url(args.remote), options,
                              Timeouts(settings.remote_connect_timeout, settings.remote_read_timeout),
                              settings.max_upload_bytes, notify=lambda line: _say(line, sys.stderr))
        outcomes = run(batches(found.images), client.classify, REQUESTS_IN_FLIGHT)
    else:
        classifier = Classifier(settings, downloads=None)
        _say_first_use(classifier, args.model)
        outcomes = run([[path] for path in found.images],
                       classify_here(classifier, args.model, args.top_k, args.explain is not None), in_flight=1)
    finished: list[Outcome] = []
    heatmaps: set[Path] = set()
    for outcome in outcomes:
        finished.append(_show(outcome, args, heatmaps))
        summary.count(finished[-1])
    if args.csv:
        write_csv(args.csv, finished)
    if args.json not in (None, "-"):
        write_json(Path(args.json), finished)
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0


def _say_first_use(classifier: Classifier, model: str | None) -> None:
    """"Preparing EfficientNetLite0 for first use, about 15 s, once." before a wait that long,
    which would otherwise pass in silence (an unknown model fails per image, as before)."""
    try:
        name = model or classifier.default_model
        preparing = classifier.first_use(name)
    except ClassifierError:
        return
    if preparing:
        _say(preparing.preparing_line(name), sys.stderr)


def _show(outcome: Outcome, args: argparse.Namespace, heatmaps: set[Path]) -> Outcome:
    """Print one image's answer (or why it failed) above the progress bar; the outcome, failed
    if its heatmap could not be written. ``heatmaps`` are the files this run has written."""
    heatmap = None
    if outcome.ok and args.explain and outcome.answer.get("explanation"):
        target = _unused(args.explain, outcome.path.stem, heatmaps)
        try:
            heatmap = _write_overlay(outcome.path.read_bytes(), outcome.answer["explanation"], target)
        except (OSError, ClassifierError) as error:
            outcome = Outcome.failed(outcome.path, "heatmap_not_written", getattr(error, "message", None) or str(error))
    if not outcome.ok:
        _say(f"{outcome.path}: {outcome.error_message}", sys.stderr)
    elif args.json == "-":
        _say(json_line(outcome, heatmap), sys.stdout)
    else:
        for line in terminal_lines(outcome, heatmap):
            _say(line, sys.stdout)
    return outcome


def _unused(folder: Path, stem: str, taken: set[Path]) -> Path:
    """``folder/STEM.cam.png``, or ``STEM-2.cam.png``... when this run wrote that already (two
    folders' ``cat.jpg``): one photo's heatmap never replaces another's."""
    target, number = folder / f"{stem}.cam.png", 1
    while target in taken:
        number += 1
        target = folder / f"{stem}-{number}.cam.png"
    taken.add(target)
    return target


def _say(line: str, file: TextIO) -> None:
    """A line above the progress bar in a terminal; plainly into a pipe or file, where
    moving the bar out of the way would only repeat it. Lines carry a server's text (labels,
    messages): its control characters are shown, never sent to the terminal as such."""
    line = printable(line)
    if file.isatty():
        tqdm.write(line, file=file)
    else:
        print(line, file=file)


def _refuse_overwriting_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``predict --json a.jpg b.jpg`` reads as "write the JSON to a.jpg": refuse, rather than
    replace a photo with a report."""
    for option, target in (("--json", args.json), ("--csv", args.csv)):
        if target not in (None, "-") and (Path(target).suffix.lower() in IMAGE_SUFFIXES
                                           or Path(target) in args.images):
            parser.error(f"{option} {target} would overwrite an image; put {option} FILE after the images, "
                         f"or name a .{option[2:]} file")


def _write_overlay(image: bytes, explanation: dict[str, object], target: Path) -> Path:
    """The photo's crop with the heatmap over it, as ``target`` (its folder made if needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, overlay_png(image, explanation))
    return target


def _export(names: list[str], int8: bool = True) -> int:
    """Make and check exports ahead of time, so that no worker spends a request on it.

    A serving worker that finds no checked export runs this same command in a child
    process, so that TensorFlow is imported there and not in the worker. An int8 form is
    made only here: a worker serves none that this command has not made and checked.
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
    every = [spec for spec in REGISTRY.values() if spec.weights.find(settings) and (int8 or spec.int8_of is None)]
    for spec in specs or every:
        reason = _export_one(spec, settings)
        if reason:
            print(f"{spec.name}: {reason}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _export_one(spec: ModelSpec, settings: Settings) -> str | None:
    """Why ``spec`` has no usable export (or int8 form), or ``None`` once it has one."""
    path = spec.weights.find(settings)
    if path is None:
        return Classifier(settings, downloads=None).catalog.state(spec).error_for(spec.name).message
    found, serving = Found(path, spec.weights, settings), Serving.from_settings(settings)
    try:
        if spec.int8_of:
            return _int8_one(spec, found, serving, settings)
        record, _ = make_export(spec, found, serving.exports_dir, serving.threads)
    except WeightsRejected as error:
        return str(error)
    if not record.verified:
        return f"no usable export ({record.reason}); the server runs this model on Keras."
    print(f"{spec.name}: checked export in {settings.exports_dir}")
    return None


def _int8_one(spec: ModelSpec, found: Found, serving: Serving, settings: Settings) -> str | None:
    """Make and measure the int8 entry ``spec`` (its fp32 export first) and say whether it is
    served. One measured below the bar is not a failure of the command (its fp32 model
    answers instead); one that could not be made or run is. Either way its record says so."""
    record = make_int8(spec, found, serving.exports_dir, serving.threads)
    if not record.verified:
        return f"no int8 form: {record.reason}"
    print(f"{spec.name}: {'served' if record.passes(settings) else 'not served'}: {record.verdict(settings)}")
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

