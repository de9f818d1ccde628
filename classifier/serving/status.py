"""What state a model is in, in one wording for ``GET /models``, the page, the docs and 503s.

One state machine::

    download needed ──request──► downloading ──► ready ──first use──► preparing ──► loaded
          │                          │             │                       │
          └──────────────────────────┴─────────────┴───────────────────────┴──► unavailable (with the reason)

``preparing`` is a load under way in this process (the warm-up at start, or a first request):
requests for the model wait for it, so it is usable but not ready to answer at once.

``unavailable`` covers: downloads off or impossible, a failed download, a file that failed
its check, a model that failed to load, a package that is not installed. Each state has one
``text`` (shown verbatim in ``GET /models`` and 503s) and, when the model is not ready, one
``hint`` saying what an operator can do, and one ``note``: a few words for a person choosing a
model on the page, who can do nothing about files or settings. Nothing here touches files;
``catalog.py`` decides the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier.errors import ModelUnavailable

LOADED, READY, PREPARING, DOWNLOADING, DOWNLOAD_NEEDED, UNAVAILABLE = (
    "loaded", "ready", "preparing", "downloading", "download needed", "unavailable")


@dataclass(frozen=True)
class ModelState:
    """One model's state; ``error`` is the reason when ``unavailable``, ``seconds`` roughly how
    long a preparation takes and ``once`` whether it is a one-time conversion for this host."""

    state: str
    hint: str | None = None
    error: str | None = None
    progress: dict[str, int | None] | None = None
    retry_after: int | None = None
    person_note: str | None = None
    seconds: int | None = None
    once: bool = False

    @property
    def usable(self) -> bool:
        """Whether a request for it is served (perhaps after waiting for its preparation)."""
        return self.state in (LOADED, READY, PREPARING)

    @property
    def ready(self) -> bool:
        """Whether a request for it is served at once (``GET /models``' ``ready``)."""
        return self.state in (LOADED, READY)

    @property
    def note(self) -> str:
        """The state for a person on the page: what they can expect, never what to configure."""
        if self.person_note:
            return self.person_note
        if self.state == DOWNLOAD_NEEDED:
            return "its weights are downloaded when it is first chosen"
        if self.state == UNAVAILABLE:
            return "it cannot run on this server"
        return self.text

    @property
    def text(self) -> str:
        """The one human wording of this state."""
        if self.state == LOADED:
            return "ready (loaded)"
        if self.state == DOWNLOADING:
            return f"weights downloading{_percent(self.progress)}"
        if self.state == UNAVAILABLE:
            return f"unavailable: {self.error}"
        if self.state == PREPARING:
            return f"preparing for first use, about {self.seconds} s{', once' if self.once else ''}"
        return self.state

    def preparing_line(self, model: str) -> str:
        """"Preparing EfficientNetLite0 for first use, about 15 s, once": for logs and the CLI."""
        return f"Preparing {model}{self.text.removeprefix('preparing')}."

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"status": self.state, "status_text": self.text, "ready": self.ready}
        if self.progress is not None:
            document["progress"] = self.progress
        if self.error:
            document["error"] = self.error
        if self.hint and not self.ready:
            document["hint"] = self.hint
        if not self.ready:
            document["note"] = self.note
        return document

    def error_for(self, model: str) -> ModelUnavailable:
        """The 503 for a request that needs ``model`` in this state."""
        message = f"{model}: {self.text}."
        if self.hint:
            message += f" {self.hint[0].upper()}{self.hint[1:]}."
        return ModelUnavailable(message, retry_after=self.retry_after)


def _percent(progress: dict[str, int | None] | None) -> str:
    if not progress or not progress.get("total"):
        return ""
    return f" {100 * (progress['done'] or 0) // progress['total']}%"


def ready() -> ModelState:
    return ModelState(READY)


def loaded() -> ModelState:
    return ModelState(LOADED)


def preparing(seconds: int, once: bool) -> ModelState:
    return ModelState(PREPARING, hint="requests for it wait until it is ready; GET /readyz answers 200 then",
                      retry_after=seconds, seconds=seconds, once=once)


def downloading(progress: dict[str, int | None], retry_after: int) -> ModelState:
    return ModelState(DOWNLOADING, hint="try again shortly (progress at GET /models)",
                      progress=progress, retry_after=retry_after)


def download_needed(hint: str) -> ModelState:
    return ModelState(DOWNLOAD_NEEDED, hint=hint)


def unavailable(reason: str, hint: str | None = None, retry_after: int | None = None,
                note: str | None = None) -> ModelState:
    """``reason`` and ``hint`` for operators (files, settings, commands); ``note`` for a person."""
    return ModelState(UNAVAILABLE, hint=hint, error=reason, retry_after=retry_after, person_note=note)
