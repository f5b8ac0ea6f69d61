"""Class balance and confident-learning label issues: by hand, and on digits with planted flips."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from ssl_train.audit.labels import class_balance, label_issues, out_of_sample_probs


def test_class_balance():
    out = class_balance(np.array([0, 0, 0, 1, 2, 2]), ["a", "b", "c", "d"])
    assert out["counts"] == {"a": 3, "b": 1, "c": 2, "d": 0} and out["total"] == 6
    assert out["imbalance"] is None and out["empty_classes"] == ["d"]
    assert class_balance(np.array([0, 0, 1]), ["a", "b"])["imbalance"] == 2.0
    unseen = class_balance(np.array([0, 1, -2, -2]), ["a", "b"])  # data.open_set: classes nobody labeled
    assert unseen["counts"] == {"a": 1, "b": 1} and unseen["total"] == 2 and unseen["unseen"] == 2


def test_label_issues_by_hand():
    probs = np.array([[0.9, 0.1],    # labeled 0, confidently 0
                      [0.7, 0.3],    # labeled 0
                      [0.2, 0.8],    # labeled 1
                      [0.85, 0.15],  # labeled 1 but looks like 0: an issue
                      [0.4, 0.6]])   # labeled 1
    labels = np.array([0, 0, 1, 1, 1])
    # thresholds: class 0 = mean p0 over labeled-0 = 0.8; class 1 = mean p1 over labeled-1 = (0.8+0.15+0.6)/3
    positions, suggested = label_issues(probs, labels)
    assert positions.tolist() == [3] and suggested.tolist() == [0]


def test_a_clear_disagreement_counts_even_below_the_class_threshold():
    # class 0's threshold is (0.99 + 0.99 + 0.98) / 3 ≈ 0.987: sample 3 (p0 = 0.8) does not reach it,
    # but the model prefers class 0 over its given class 1 by 0.6
    probs = np.array([[0.99, 0.01], [0.99, 0.01], [0.98, 0.02], [0.8, 0.2], [0.1, 0.9], [0.05, 0.95]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    positions, suggested = label_issues(probs, labels)
    assert positions.tolist() == [3] and suggested.tolist() == [0]
    assert label_issues(probs, labels, margin=0.7)[0].tolist() == []


def test_planted_label_flips_on_digits_are_found():
    digits = load_digits()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(digits.target), 600, replace=False)
    features, labels = digits.data[pick] / 16, digits.target[pick].copy()
    flipped = rng.choice(600, 15, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, 15)) % 10
    probs = out_of_sample_probs(features, labels, 10, folds=5, seed=0)
    positions, _ = label_issues(probs, labels)
    found = set(positions.tolist()) & set(flipped.tolist())
    # measured: 14 of the 15 flips among 21 flagged (a flip to a look-alike digit can pass as right)
    assert len(found) >= 13 and len(found) >= 0.6 * len(positions)
