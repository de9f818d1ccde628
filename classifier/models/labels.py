"""ImageNet class index to labels, from a data file that ships with the package.

Keras downloads ``imagenet_class_index.json`` on first use; shipping the same table (from
keras-hub's ImageNet utilities) means decoding never needs the network.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

NUM_CLASSES = 1000


@dataclass(frozen=True)
class Prediction:
    """One ranked answer: ``class_id`` is the WordNet id, ``label`` Keras' class name."""

    label: str
    class_id: str
    score: float

    def to_json(self) -> dict[str, str | float]:
        """``display_label`` goes with it so no client (the page's script, its template)
        has to re-derive the display form."""
        return {"label": self.label, "display_label": self.display_label, "class_id": self.class_id,
                "score": self.score}

    @property
    def display_label(self) -> str:
        """The original keras_classifier page's form: ``tiger_cat`` becomes ``Tiger cat``."""
        text = self.label.replace("_", " ")
        return text[:1].upper() + text[1:]


@functools.cache
def class_index() -> tuple[tuple[str, str], ...]:
    """``(wordnet_id, label)`` for each of the 1000 ImageNet classes, by class number."""
    text = resources.files("classifier").joinpath("data/imagenet_class_index.json").read_text()
    table = json.loads(text)
    return tuple((table[str(i)][0], table[str(i)][1]) for i in range(NUM_CLASSES))


def top_k(scores: np.ndarray, k: int) -> list[Prediction]:
    """The ``k`` best classes of one score vector, best first."""
    if scores.shape != (NUM_CLASSES,):
        raise ValueError(f"expected {NUM_CLASSES} scores, got shape {scores.shape}")
    if k < NUM_CLASSES:  # the k best found first (O(n)), then only they are sorted
        candidates = np.argpartition(scores, NUM_CLASSES - k)[NUM_CLASSES - k:]
        best = candidates[np.argsort(scores[candidates])[::-1]]
    else:
        best = np.argsort(scores)[::-1]
    index = class_index()
    return [Prediction(index[i][1], index[i][0], score) for i, score in zip(best.tolist(), scores[best].tolist())]


def class_numbers(name: str) -> tuple[int, ...]:
    """The class numbers ``name`` stands for: a WordNet id (``n02123159``) names one class,
    a label (``tabby``) one or, for ImageNet's two ``crane`` and two ``maillot``, two."""
    return _class_numbers().get(name, ())


@functools.cache
def _class_numbers() -> dict[str, tuple[int, ...]]:
    numbers: dict[str, tuple[int, ...]] = {}
    for number, (class_id, label) in enumerate(class_index()):
        numbers[class_id] = (number,)
        numbers[label] = (*numbers.get(label, ()), number)
    return numbers
