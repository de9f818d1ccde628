"""classifier.models.labels: the shipped ImageNet class table and ranking scores into predictions."""

import re

import numpy as np
import pytest

from classifier.models import labels
from classifier.models.labels import Prediction, top_k


def test_class_index_has_1000_unique_wordnet_ids():
    index = labels.class_index()
    assert len(index) == 1000
    ids = [wordnet_id for wordnet_id, _ in index]
    assert all(re.fullmatch(r"n\d{8}", wordnet_id) for wordnet_id in ids)
    assert len(set(ids)) == 1000


@pytest.mark.parametrize(
    ("number", "wordnet_id", "label"),
    [(0, "n01440764", "tench"), (281, "n02123045", "tabby"), (999, "n15075141", "toilet_tissue")],
)
def test_known_classes(number, wordnet_id, label):
    assert labels.class_index()[number] == (wordnet_id, label)


def scores_with(by_number: dict[int, float]) -> np.ndarray:
    scores = np.zeros(1000, dtype=np.float32)
    scores[list(by_number)] = list(by_number.values())
    return scores


def test_top_k_ranks_best_first():
    scores = scores_with({0: 0.1, 281: 0.5, 282: 0.3})
    predictions = top_k(scores, 3)
    assert [p.class_id for p in predictions] == ["n02123045", "n02123159", "n01440764"]
    assert [p.label for p in predictions] == ["tabby", "tiger_cat", "tench"]
    assert [p.score for p in predictions] == pytest.approx([0.5, 0.3, 0.1])
    assert all(type(p.score) is float for p in predictions)  # JSON-serialisable, not np.float32


@pytest.mark.parametrize("k", [1, 5, 1000])
def test_top_k_returns_k_in_descending_order(k):
    scores = np.random.default_rng(0).random(1000).astype(np.float32)
    predictions = top_k(scores, k)
    assert len(predictions) == k
    ranked = [p.score for p in predictions]
    assert ranked == sorted(ranked, reverse=True)
    assert ranked[0] == pytest.approx(float(scores.max()))


@pytest.mark.parametrize("shape", [(999,), (1001,), (1, 1000), (1000, 1)])
def test_top_k_rejects_wrong_shape(shape):
    with pytest.raises(ValueError):
        top_k(np.zeros(shape, dtype=np.float32), 5)


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("tiger_cat", "Tiger cat"),
        ("African_elephant", "African elephant"),
        ("Great_Dane", "Great Dane"),  # later capitals kept, unlike str.capitalize
    ],
)
def test_display_label(label, shown):
    assert Prediction(label, "n00000000", 0.5).display_label == shown
