"""Many images from the command line: which files to classify, and running them with progress.

A person points the CLI at a folder from a trip or a catalogue; this module turns the paths
they typed into a stable, sorted list of image files, runs a classify function over batches
of them (here, or several requests in flight to a server: ``client.py``), and hands back one
``Outcome`` per image in that same order, whatever order the work finished in.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from classifier.errors import ClassifierError, ImageTooLarge
from classifier.imaging.images import FORMATS
from classifier.serving.service import Classifier

# File name endings Pillow reads as one of the formats the service accepts (.jpg, .jpeg, .png, ...).
IMAGE_SUFFIXES = frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in FORMATS)
PROGRESS_FROM_IMAGES = 5  # fewer images than this finish before a bar would say anything


@dataclass(frozen=True)
class Outcome:
    """One image's result: the API's answer for it (``predictions``, ``model``, ...) or why it failed."""

    path: Path
    answer: dict[str, object] | None = None
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def failed(cls, path: Path, code: str, message: str) -> Outcome:
        return cls(path, error_code=code, error_message=message)

    @property
    def ok(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class Found:
    """The image files to classify, and how many files in the folders were not images."""

    images: list[Path]
    skipped: int


def find_images(paths: Iterable[Path]) -> Found:
    """Every image under ``paths``, in the order given and sorted within each folder.

    A file named on the command line is always taken (if it is missing or not an image,
    the person should hear so); inside folders, only image files count (by name ending,
    else by what Pillow finds in its header), hidden files and folders are skipped, and a
    folder reached twice through symbolic links is walked once, so a link loop ends.
    """
    images: list[Path] = []
    skipped = 0
    for path in paths:
        if not path.is_dir():
            images.append(path)
            continue
        seen: set[tuple[int, int]] = set()
        for folder, folders, files in os.walk(path, followlinks=True):
            status = os.stat(folder)
            if (status.st_dev, status.st_ino) in seen:
                folders.clear()
                continue
            seen.add((status.st_dev, status.st_ino))
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(name for name in files if not name.startswith(".")):
                file = Path(folder, name)
                if looks_like_image(file):
                    images.append(file)
                else:
                    skipped += 1
    return Found(images, skipped)


def looks_like_image(path: Path) -> bool:
    """By its name, else by its first bytes (a camera's ``IMG_0001`` without an ending)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS):
                return True
    except Image.DecompressionBombError:
        return True  # an image all the same; the classifier says why it refuses it
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def read_image(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing one over ``max_bytes`` before reading it (the server would
    refuse it too, after the upload)."""
    if path.stat().st_size > max_bytes:
        raise ImageTooLarge.over(max_bytes)
    return path.read_bytes()


def classify_here(classifier: Classifier, model: str | None, top_k: int, explain: bool
                  ) -> Callable[[list[Path]], list[Outcome]]:
    """A classify function for ``run``: the models in this process, one image at a time."""

    def classify(paths: list[Path]) -> list[Outcome]:
        return [_classify_one(classifier, path, model, top_k, explain) for path in paths]

    return classify


def _classify_one(classifier: Classifier, path: Path, model: str | None, top_k: int, explain: bool) -> Outcome:
    try:
        image = read_image(path, classifier.settings.max_upload_bytes)
        return Outcome(path, classifier.classify(image, model, top_k, explain=explain).to_json())
    except ClassifierError as error:
        return Outcome.failed(path, error.code, error.message)
    except OSError as error:
        return Outcome.failed(path, "unreadable_file", error.strerror or str(error))


def run(batches: list[list[Path]], classify: Callable[[list[Path]], list[Outcome]], in_flight: int
        ) -> Iterator[Outcome]:
    """``classify`` over ``batches``, ``in_flight`` at a time, with a progress bar on stderr
    when there are enough images to wait for; outcomes come in the order of the batches, so
    output files and terminal lines do not depend on which request finished first."""
    total = sum(len(batch) for batch in batches)
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="classify")
    try:
        with tqdm(total=total, unit="image", file=sys.stderr, disable=total < PROGRESS_FROM_IMAGES) as bar:
            futures = [pool.submit(classify, batch) for batch in batches]
            for future in futures:
                future.add_done_callback(lambda done: bar.update(len(done.result())))
            for future in futures:
                yield from future.result()
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C: the requests under way end, no new ones start


@dataclass
class Summary:
    """What a person wants to know at the end: how many worked, failed, and how fast."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)

    def count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.done += 1
        else:
            self.failed += 1

    def line(self) -> str:
        """``41 done, 2 failed, 3 skipped (not images) in 6.1 s (6.7 images/s)``: the rate is of
        images classified, and is left out when none was (a failure is fast, not a speed)."""
        seconds = time.perf_counter() - self.started
        skipped = f", {self.skipped} skipped (not images)" if self.skipped else ""
        rate = f" ({self.done / seconds:.1f} images/s)" if self.done and seconds > 0 else ""
        return f"{self.done} done, {self.failed} failed{skipped} in {seconds:.1f} s{rate}"
