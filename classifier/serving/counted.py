"""Counting predictions by model, server and outcome, with label values the registry bounds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from classifier import metrics
from classifier.errors import ClassifierError
from classifier.models.registry import REGISTRY


def model_label(name: str | None) -> str:
    """A model as a label value: registry names only, so a client's text never becomes one."""
    if name is None:
        return "default"
    return name if name in REGISTRY else "unknown"


@dataclass
class Prediction:
    """What ``counting_prediction`` labels the prediction with; the model is known at the end."""

    model: str | None


@contextmanager
def counting_prediction(server: str, model: str | None) -> Iterator[Prediction]:
    """Count the prediction run in the block: ``ok``, or the code of the ``ClassifierError``
    it raised (``internal_error`` for anything else). Set ``.model`` once it is known."""
    prediction = Prediction(model)
    outcome = "internal_error"
    try:
        yield prediction
        outcome = "ok"
    except ClassifierError as error:
        outcome = error.code
        raise
    finally:
        metrics.PREDICTIONS.labels(model_label(prediction.model), server, outcome).inc()
