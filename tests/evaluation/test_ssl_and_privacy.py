"""Training curves from the CSV log, the pseudo-label distribution check, and the membership-inference estimate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_train.evaluation.privacy import membership_inference
from ssl_train.evaluation.ssl_signals import pseudo_label_distribution, summarize_curve, training_curves


def test_training_curves_read_the_lightning_csv(tmp_path):
    log = tmp_path / "metrics.csv"
    log.write_text("step,train/loss,train/mask_ratio,train/pseudo_acc,val/acc\n"
                   "0,1.0,0.1,,\n1,0.9,0.3,0.8,\n1,,,,0.5\n2,0.8,0.5,0.9,\n")
    curves = training_curves(log)
    assert curves["mask_ratio"] == {"step": [0, 1, 2], "value": [0.1, 0.3, 0.5]}
    assert curves["pseudo_acc"] == {"step": [1, 2], "value": [0.8, 0.9]}
    assert summarize_curve(curves["mask_ratio"]) == {"first": 0.1, "last": 0.5, "final_mean": 0.5, "points": 3}
    (tmp_path / "sup.csv").write_text("step,train/loss\n0,1.0\n")
    assert training_curves(tmp_path / "sup.csv") is None and training_curves(tmp_path / "none.csv") is None


def probs_for(labels: np.ndarray, confidence: float, k: int) -> np.ndarray:
    probs = np.full((len(labels), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def test_pseudo_label_distribution_counts_by_hand():
    preds = np.array([0, 0, 1, 2, 2, 2])
    probs = probs_for(preds, 0.97, 3)
    probs[3] = [0.05, 0.05, 0.9]  # below the threshold: not a pseudo-label
    out = pseudo_label_distribution(probs, np.array([0, 1, 2]), ["a", "b", "c"], 0.95, unlabeled_truth=preds)
    assert out["confident"] == 5 and out["pseudo_counts"] == [2, 1, 2]
    assert out["pseudo_share"] == pytest.approx([0.4, 0.2, 0.4]) and out["labeled_share"] == pytest.approx([1 / 3] * 3)
    assert out["pseudo_imbalance"] == 2.0 and out["labeled_imbalance"] == 1.0 and out["pseudo_acc"] == 1.0


def test_amplified_imbalance_is_flagged_and_a_faithful_one_is_not():
    labeled = np.repeat([0, 1, 2], 10)
    skewed = np.r_[np.zeros(600, int), np.ones(300, int), np.full(100, 2)]
    out = pseudo_label_distribution(probs_for(skewed, 0.99, 3), labeled, ["a", "b", "c"], 0.95)
    assert out["amplified"] and "class a gets 1.80×" in out["verdict"]
    even = np.r_[np.zeros(330, int), np.ones(340, int), np.full(330, 2)]
    assert not pseudo_label_distribution(probs_for(even, 0.99, 3), labeled, ["a", "b", "c"], 0.95)["amplified"]
    starved = pseudo_label_distribution(probs_for(np.r_[np.zeros(50, int), np.ones(50, int)], 0.99, 3), labeled,
                                        ["a", "b", "c"], 0.95)
    assert starved["amplified"] and starved["pseudo_imbalance"] == float("inf")


def test_membership_auc_matches_sklearn_and_reads_plainly():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.exponential(0.05, 200), rng.exponential(0.5, 400)
    out = membership_inference(members, nonmembers)
    expected = roc_auc_score(np.r_[np.ones(200), np.zeros(400)], -np.r_[members, nonmembers])
    assert out["auc"] == pytest.approx(expected) and out["risk"] == "high" and out["p_value"] < 1e-6
    assert out["verdict"].startswith("High risk")
    same = membership_inference(rng.exponential(0.3, 200), rng.exponential(0.3, 400))
    assert abs(same["auc"] - 0.5) < 0.06 and same["risk"] == "low" and same["verdict"].startswith("Low risk")
