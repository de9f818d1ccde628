"""The state of a model whose weights are not here: a download needed, under way, or why not.

Read from what every process of the host shares (the download's progress file and the note
a failed or refused download left), so every worker tells a client the same. Only
``Catalog.ready`` starts a download, when ``should_download`` says so.
"""

from __future__ import annotations

from classifier.config import Settings
from classifier.models import download
from classifier.models.download import BackgroundDownloads, may_retry
from classifier.models.registry import ModelSpec
from classifier.models.weights import KerasWeights, Note
from classifier.serving import status
from classifier.serving.status import ModelState

RETRY_AFTER_SECONDS = 30  # what a 503 for a model whose weights are downloading suggests


def state(spec: ModelSpec, settings: Settings, downloads: BackgroundDownloads | None) -> ModelState:
    """Where ``spec``, whose weights are not here, stands; ``downloads`` is ``None`` where
    nothing downloads (the CLI), which only explains."""
    weights = spec.weights
    if not isinstance(weights, KerasWeights):
        return status.unavailable(f"the {weights.package} package is not installed", weights.how_to_get(),
                                  note="it is not installed on this server")
    progress = download.progress(weights, settings)  # exists once the host has answered
    if progress is not None:
        return status.downloading(progress, RETRY_AFTER_SECONDS)
    copy = (f"{weights.how_to_copy()}, or run `classifier download {spec.name}` "
            "on a machine with internet and copy it from there")
    note = Note.read(settings, weights.file_name)
    if settings.offline and (note is None or note.kind != "rejected"):
        return status.unavailable(f"{weights.file_name} is not here and downloads are off "
                                  "(CLASSIFIER_OFFLINE=1)", copy, note="its weights are not on this server")
    if note is not None:  # what went wrong last stays the state while a retry connects
        return _after(note, copy, downloads is not None and not settings.offline)
    if downloads is not None and downloads.running(weights):
        return status.downloading({"done": 0, "total": None}, RETRY_AFTER_SECONDS)  # first try, connecting
    if downloads is None:
        return status.download_needed(f"run `classifier download {spec.name}`, or {copy}")
    return status.download_needed(f"the first request for {spec.name} starts the download; "
                                  f"or run `classifier download {spec.name}`")


def should_download(spec: ModelSpec, current: ModelState, settings: Settings,
                    downloads: BackgroundDownloads | None) -> bool:
    """Whether a request for ``spec`` in state ``current`` starts (or retries) its download."""
    weights = spec.weights
    return (isinstance(weights, KerasWeights) and downloads is not None and not settings.offline
            and current.state in (status.DOWNLOAD_NEEDED, status.UNAVAILABLE)
            and weights.find(settings) is None
            and may_retry(Note.read(settings, weights.file_name)))


def _after(note: Note, copy: str, downloads_again: bool) -> ModelState:
    """The state after a download or a file went wrong, as every process noted it."""
    failed = "its weights could not be downloaded"
    if note.kind == "unreachable":
        return status.unavailable(note.reason, f"{copy}; or set CLASSIFIER_OFFLINE=1 to stop trying", note=failed)
    if note.kind == "failed":
        wait = max(1, round(download.RETRY_FAILED_AFTER - note.age()))
        return status.unavailable(f"the download failed: {note.reason}", copy, retry_after=wait, note=failed)
    again = "the next request downloads it again" if downloads_again else copy
    return status.unavailable(note.reason, again, note="its weights on this server are damaged")
