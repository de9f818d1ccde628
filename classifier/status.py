"""What state a model is in, in one wording for ``GET /models``, the page, the README and 503s.

One state machine::

    download needed ──request──► downloading ──► ready ──first use──► loaded
          │                          │             │
          └──────────────────────────┴─────────────┴──► unavailable (with the reason)

``unavailable`` covers: downloads off or impossible, a failed download, a file that failed
its check, a model that failed to load, a package that is not installed. Each state has one
``text`` (shown verbatim everywhere) and, when the model is not ready, one ``hint`` saying
what to do. Nothing here touches files; ``catalog.py`` decides the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ModelUnavailable

LOADED, READY, DOWNLOADING, DOWNLOAD_NEEDED, UNAVAILABLE = (
    "loaded", "ready", "downloading", "download needed", "unavailable")


@dataclass(frozen=True)
class ModelState:
    """One model's state; ``error`` is the reason when ``unavailable``."""

    state: str
    hint: str | None = None
    error: str | None = None
    progress: dict[str, int | None] | None = None
    retry_after: int | None = None

    @property
    def usable(self) -> bool:
        return self.state in (LOADED, READY)

    @property
    def text(self) -> str:
        """The one human wording of this state."""
        if self.state == LOADED:
            return "ready (loaded)"
        if self.state == DOWNLOADING:
            return f"weights downloading{_percent(self.progress)}"
        if self.state == UNAVAILABLE:
            return f"unavailable: {self.error}"
        return self.state

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"status": self.state, "status_text": self.text, "ready": self.usable}
        if self.progress is not None:
            document["progress"] = self.progress
        if self.error:
            document["error"] = self.error
        if self.hint and not self.usable:
            document["hint"] = self.hint
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


def downloading(progress: dict[str, int | None], retry_after: int) -> ModelState:
    return ModelState(DOWNLOADING, hint="try again shortly (progress at GET /models)",
                      progress=progress, retry_after=retry_after)


def download_needed(hint: str) -> ModelState:
    return ModelState(DOWNLOAD_NEEDED, hint=hint)


def unavailable(reason: str, hint: str | None = None, retry_after: int | None = None) -> ModelState:
    return ModelState(UNAVAILABLE, hint=hint, error=reason, retry_after=retry_after)
