"""What a prediction answers: one ``ImageResult`` per image, in an ``Answer`` for the request.

The classifier always answers a list of images. The single-image shape (``predictions`` at
the top level, the original keras_classifier page's ``result``) is a view of an answer to one
image, ``Classification.of``, chosen by the HTTP edge (and the CLI's reports) for a request
that sent one image in the single form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from classifier.errors import ClassifierError
from classifier.imaging import images
from classifier.models import labels


def predictions_json(predictions: list[labels.Prediction], timing_ms: dict[str, float]) -> dict[str, object]:
    return {
        "predictions": [p.to_json() for p in predictions],
        # The original keras_classifier page's shape, kept so its clients keep working.
        "result": [{p.display_label: round(p.score, 3)} for p in predictions],
        "timing_ms": timing_ms,
    }


@dataclass(frozen=True)
class ImageResult:
    """One image's part of an answer: its predictions, or the error it alone had
    (``{"code", "message"}``)."""

    filename: str
    predictions: list[labels.Prediction] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    explanation: dict[str, object] | None = None
    """The ``explanation`` object (``explain.Explanation.to_json``, or a remote's, checked)."""
    error: dict[str, str] | None = None
    photo: images.Decoded | None = field(default=None, repr=False, compare=False)
    """An explained photo of a single-image request as this process decoded it (not part of
    the answer): the page draws the heatmap over it without decoding the upload again."""

    @classmethod
    def failed(cls, filename: str, error: ClassifierError) -> ImageResult:
        return cls(filename, error=error.to_json()["error"])

    def to_json(self) -> dict[str, object]:
        if self.error is not None:
            return {"filename": self.filename, "error": self.error}
        document = {"filename": self.filename, **predictions_json(self.predictions, self.timing_ms)}
        if self.explanation is not None:
            document["explanation"] = self.explanation
        return document


@dataclass
class Answer:
    """The answer to a request: one ``ImageResult`` each, in the request's order, and the
    model, weights and server that gave them."""

    model: str
    weights: str
    results: list[ImageResult]
    timing_ms: dict[str, float]
    server: str = "local"
    server_url: str | None = None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"model": self.model, "weights": self.weights, "server": self.server}
        if self.server_url:
            document["server_url"] = self.server_url
        return {**document, "results": [result.to_json() for result in self.results], "timing_ms": self.timing_ms}


@dataclass
class Classification:
    """The single-image view of an answer, as ``POST /predict`` answers one image."""

    model: str
    weights: str
    predictions: list[labels.Prediction]
    timing_ms: dict[str, float]
    server: str = "local"
    server_url: str | None = None
    explanation: dict[str, object] | None = None
    photo: images.Decoded | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, answer: Answer) -> Classification:
        """``answer``'s one image, with the request's times around the image's own (the
        model's ``load``, the whole wait as ``total``)."""
        (result,) = answer.results  # its error, if it had one, was the request's (``PredictRequest.single``)
        timing = {name: ms for name, ms in result.timing_ms.items() if name != "total"}
        timing.update((name, ms) for name, ms in answer.timing_ms.items() if name not in timing)
        return cls(answer.model, answer.weights, result.predictions, timing, answer.server, answer.server_url,
                   result.explanation, result.photo)

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"model": self.model, "weights": self.weights, "server": self.server,
                                       **predictions_json(self.predictions, self.timing_ms)}
        if self.server_url:
            document["server_url"] = self.server_url
        if self.explanation is not None:
            document["explanation"] = self.explanation
        return document
