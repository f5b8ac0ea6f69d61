"""The report's figures, each returned as PNG bytes.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg
canvas directly: no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ssl_train.run.figures import BLUE, GREY, ORANGE, RED, png


def confusion_matrix(matrix: list[list[int]], classes: list[str]) -> bytes:
    cm = np.asarray(matrix, dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = min(3 + 0.45 * k, 12)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=90 if max(map(len, classes)) > 3 else 0)
        ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour: row share)")
    return png(fig)


def reliability(before: list[dict], after: list[dict], ece: tuple[float, float], temperature: float) -> bytes:
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    for ax, bins, title in ((axes[0], before, f"as trained: ECE {ece[0]:.4f}"),
                            (axes[1], after, f"temperature {temperature:.3f}: ECE {ece[1]:.4f}")):
        width = bins[0]["upper"] - bins[0]["lower"]
        filled = [b for b in bins if b["count"]]  # empty bins have neither accuracy nor confidence
        centers = [(b["lower"] + b["upper"]) / 2 for b in filled]
        acc, conf = [b["accuracy"] for b in filled], [b["confidence"] for b in filled]
        ax.bar(centers, acc, width=width * 0.95, color=BLUE, edgecolor="white", label="accuracy")
        ax.bar(centers, np.abs(np.subtract(conf, acc)), bottom=np.minimum(conf, acc), width=width * 0.95,
               facecolor="none", edgecolor=RED, hatch="//", linewidth=0.8, label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "--", color=GREY, label="perfect calibration")
        counts = np.array([b["count"] for b in bins], dtype=float)
        twin = ax.twinx()
        twin.plot([(b["lower"] + b["upper"]) / 2 for b in bins], counts / max(counts.sum(), 1), "o-", color=ORANGE,
                  markersize=3, label="share of samples")
        twin.set_ylim(0, 1)
        twin.set_ylabel("share of samples", color=ORANGE)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max softmax)", ylabel="accuracy", title=title)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Reliability diagram (15 bins)")
    fig.tight_layout()
    return png(fig)


def robustness(results: dict, clean_acc: float) -> bytes:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for kind, rows in results.items():
        ax.plot([0] + [r["severity"] for r in rows], [clean_acc] + [r["acc"] for r in rows], "o-",
                label=kind.replace("_", " "))
    ax.set(xticks=[0, 1, 2, 3], xlabel="severity (0 = clean)", ylabel="accuracy", ylim=(0, 1.02),
           title="Accuracy under corruptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def training_curves(curves: dict) -> bytes:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    labels = {"mask_ratio": "mask ratio (share of unlabeled above threshold)",
              "pseudo_acc": "pseudo-label accuracy (where truth is known)"}
    for name, curve in curves.items():
        steps, values = np.asarray(curve["step"]), np.asarray(curve["value"])
        ax.plot(steps, values, alpha=0.25, color=BLUE if name == "mask_ratio" else ORANGE)
        window = max(1, len(values) // 25)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color=BLUE if name == "mask_ratio" else ORANGE, label=labels[name])
    ax.set(xlabel="training step", ylim=(0, 1.02), title="Pseudo-labeling during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def class_shares(classes: list[str], series: dict[str, list[float]], title: str) -> bytes:
    k = len(classes)
    fig = Figure(figsize=(min(4 + 0.5 * k, 14), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (name, shares) in enumerate(series.items()):
        ax.bar(np.arange(k) + (i - (len(series) - 1) / 2) * width, shares, width=width, label=name)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90 if max(map(len, classes)) > 3 else 0)
    ax.set(ylabel="share", title=title)
    ax.legend(fontsize=8)
    return png(fig)


def membership(member_loss: np.ndarray, nonmember_loss: np.ndarray, auc: float) -> bytes:
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    floor = 1e-6
    both = np.log10(np.maximum(np.r_[member_loss, nonmember_loss], floor))
    edges = np.linspace(both.min(), both.max() + 1e-9, 30)
    for losses, label, color in ((nonmember_loss, "test (non-members)", ORANGE),
                                 (member_loss, "labeled training (members)", BLUE)):
        axes[0].hist(np.log10(np.maximum(losses, floor)), bins=edges, density=True, alpha=0.55, color=color,
                     label=label)
    axes[0].set(xlabel="log10 cross-entropy loss", ylabel="density", title="Per-image loss")
    axes[0].legend(fontsize=8)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))],
                            -np.r_[member_loss, nonmember_loss])
    axes[1].plot(fpr, tpr, color=BLUE, label=f"loss-threshold attack (AUC {auc:.3f})")
    axes[1].plot([0, 1], [0, 1], "--", color=GREY, label="guessing")
    axes[1].set(xlabel="false positive rate", ylabel="true positive rate", title="Membership inference ROC")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return png(fig)
