"""SSL-specific signals: how pseudo-labeling went during training, and whether it skews the classes.

`training_curves` reads the run's CSV log (csv/metrics.csv, written by the
training module): the mask ratio (share of unlabeled samples whose pseudo-label
passed the threshold) and the pseudo-label accuracy (on unlabeled samples whose
truth is known, e.g. digits) at each logged step.

`pseudo_label_distribution` asks the evaluated model for the pseudo-labels it
would assign to the unlabeled pool at the run's threshold and compares their
class shares with the labeled prior. Confirmation bias in SSL feeds on itself:
a class that wins more pseudo-labels is learned better and wins still more. It
warns when the pseudo-labels are markedly more imbalanced than the labeled set
(largest/smallest class share ratio ≥ `factor` × the labeled ratio) and the
difference is not chance (χ² goodness of fit, p < 0.01).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

CURVES = {"mask_ratio": "train/mask_ratio", "pseudo_acc": "train/pseudo_acc"}


def training_curves(csv_path: str | Path) -> dict | None:
    """{name: {"step": [...], "value": [...]}} for the mask ratio and pseudo-label accuracy; None without either."""
    path = Path(csv_path)
    if not path.is_file():
        return None
    curves: dict[str, dict[str, list]] = {name: {"step": [], "value": []} for name in CURVES}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for name, column in CURVES.items():
                value = row.get(column)
                if value not in (None, "") and row.get("step") not in (None, ""):
                    curves[name]["step"].append(int(float(row["step"])))
                    curves[name]["value"].append(float(value))
    curves = {name: c for name, c in curves.items() if c["step"]}
    return curves or None


def summarize_curve(curve: dict, tail: float = 0.1) -> dict:
    """First, last and mean-over-the-last-`tail`-of-training values of a logged curve."""
    values = np.asarray(curve["value"])
    last = values[-max(1, int(len(values) * tail)):]
    return {"first": float(values[0]), "last": float(values[-1]), "final_mean": float(last.mean()),
            "points": len(values)}


def imbalance_ratio(counts: np.ndarray) -> float:
    """Largest over smallest class count (infinite when a class has none)."""
    counts = np.asarray(counts, dtype=float)
    return float(counts.max() / counts.min()) if counts.min() > 0 else math.inf


def pseudo_label_distribution(unlabeled_probs: np.ndarray, labeled: np.ndarray, classes: list[str],
                              threshold: float, unlabeled_truth: np.ndarray | None = None,
                              factor: float = 1.5) -> dict:
    """Class shares of confident pseudo-labels on the unlabeled pool against the labeled prior, with a verdict."""
    k = len(classes)
    probs = np.asarray(unlabeled_probs)
    confident = probs.max(axis=1) >= threshold
    pseudo = np.bincount(probs.argmax(axis=1)[confident], minlength=k)
    prior = np.bincount(np.asarray(labeled), minlength=k)
    out = {
        "threshold": threshold, "unlabeled": len(probs), "confident": int(confident.sum()),
        "classes": classes, "pseudo_counts": pseudo.tolist(), "labeled_counts": prior.tolist(),
        "pseudo_share": (pseudo / max(pseudo.sum(), 1)).tolist(), "labeled_share": (prior / prior.sum()).tolist(),
        "pseudo_imbalance": imbalance_ratio(pseudo), "labeled_imbalance": imbalance_ratio(prior),
    }
    truth = None if unlabeled_truth is None else np.asarray(unlabeled_truth)
    if truth is not None and (truth >= 0).all():
        true_counts = np.bincount(truth, minlength=k)
        out["true_share"] = (true_counts / true_counts.sum()).tolist()
        out["pseudo_acc"] = float((probs.argmax(axis=1) == truth)[confident].mean()) if confident.any() else None
    if pseudo.sum() == 0:
        out["p_value"], out["amplified"] = None, False
        out["verdict"] = f"no unlabeled sample reaches the threshold {threshold:g}: no pseudo-labels to compare"
        return out
    expected = prior / prior.sum() * pseudo.sum()
    used = expected > 0
    out["p_value"] = float(chisquare(pseudo[used], expected[used])[1]) if used.sum() > 1 else 1.0
    out["amplified"] = bool(out["pseudo_imbalance"] >= factor * out["labeled_imbalance"] and out["p_value"] < 0.01)
    gain = np.divide(out["pseudo_share"], out["labeled_share"], out=np.zeros(k), where=prior > 0)
    top, bottom = int(gain.argmax()), int(gain.argmin())
    if out["amplified"]:
        out["verdict"] = (f"SSL is amplifying a class imbalance: the largest/smallest class ratio is "
                          f"{_ratio(out['pseudo_imbalance'])} among the pseudo-labels against "
                          f"{_ratio(out['labeled_imbalance'])} in the labeled set; class {classes[top]} gets "
                          f"{gain[top]:.2f}× its labeled share, class {classes[bottom]} {gain[bottom]:.2f}×. "
                          "Consider distribution alignment, class-wise thresholds or more labels for the starved "
                          "classes.")
    else:
        out["verdict"] = (f"pseudo-labels follow the labeled prior closely enough (imbalance "
                          f"{_ratio(out['pseudo_imbalance'])} against {_ratio(out['labeled_imbalance'])} labeled)")
    return out


def _ratio(value: float) -> str:
    return "∞:1 (a class gets none)" if math.isinf(value) else f"{value:.2f}:1"
