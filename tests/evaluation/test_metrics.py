"""Classification metrics and bootstrap intervals against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ssl_train.evaluation.metrics import bootstrap_ci, classification_metrics, resample_scores

CLASSES = ["a", "b", "c", "d"]


def predictions(n=300, seed=0):
    """Noisy predictions in which class "d" is never predicted (zero-division edge case)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 3, n))
    preds[preds == 3] = 2
    probs = np.full((n, 4), 0.1)
    probs[np.arange(n), preds] = 0.7
    return torch.tensor(probs, dtype=torch.float32), torch.tensor(labels), labels, preds


def test_classification_metrics_match_sklearn():
    probs, labels, y, p = predictions()
    m = classification_metrics(probs, labels, CLASSES)
    assert m["acc"] == pytest.approx(accuracy_score(y, p))
    assert m["f1_macro"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    for i, row in enumerate(m["per_class"]):
        assert row["class"] == CLASSES[i] and row["support"] == support[i]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]), abs=1e-6)
    assert m["confusion_matrix"] == confusion_matrix(y, p, labels=range(4)).tolist()


def test_resample_scores_match_sklearn_on_each_resample():
    _, _, y, p = predictions(120, seed=1)
    index = np.random.default_rng(3).integers(0, len(y), size=(25, len(y)))
    acc, f1 = resample_scores(y, p, 4, index)
    for row, a, f in zip(index, acc, f1):
        assert a == pytest.approx(accuracy_score(y[row], p[row]))
        assert f == pytest.approx(f1_score(y[row], p[row], average="macro", zero_division=0))


def test_resample_of_the_identity_is_the_point_estimate_of_torchmetrics():
    probs, labels, y, p = predictions()
    acc, f1 = resample_scores(y, p, 4, np.arange(len(y))[None])
    m = classification_metrics(probs, labels, CLASSES)
    assert acc[0] == pytest.approx(m["acc"]) and f1[0] == pytest.approx(m["f1_macro"], abs=1e-6)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    _, _, y, p = predictions()
    first, again, other = (bootstrap_ci(y, p, 4, 500, seed=s) for s in (0, 0, 1))
    assert first == again and first["acc"] != other["acc"]
    assert first["acc"][0] < accuracy_score(y, p) < first["acc"][1]
    assert first["f1_macro"][0] < f1_score(y, p, average="macro", zero_division=0) < first["f1_macro"][1]
    # a binomial proportion's 95% interval is about ±1.96·sqrt(p(1-p)/n)
    half = 1.96 * np.sqrt(accuracy_score(y, p) * (1 - accuracy_score(y, p)) / len(y))
    assert first["acc"][1] - first["acc"][0] == pytest.approx(2 * half, rel=0.2)
