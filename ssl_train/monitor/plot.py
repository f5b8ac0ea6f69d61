"""drift.png: what moved, at a glance. Drawn with matplotlib's Agg canvas (no display, no global backend switch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_train.io import write_atomic
from ssl_train.monitor.detector import TESTS
from ssl_train.monitor.report import SHORT
from ssl_train.run.profile import ReferenceProfile


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_window(report: dict, plot: dict, profile: ReferenceProfile, path: str | Path) -> Path:
    """Four panels: confidence histograms, predicted classes with estimated priors, the first two embedding
    components, and each test's p-value against the decision threshold."""
    fig, axes = _figure(2, 2, (11, 8))
    (conf, classes), (emb, tests) = axes
    bins = len(profile.histogram_counts)
    centers = (np.arange(bins) + 0.5) / bins
    ref_h = profile.histogram_counts.numpy() / max(int(profile.histogram_counts.sum()), 1)
    new_h = plot["histogram"] / max(int(plot["histogram"].sum()), 1)
    conf.bar(centers - 0.25 / bins, ref_h, width=0.5 / bins, label="reference (validation)", color="tab:blue")
    conf.bar(centers + 0.25 / bins, new_h, width=0.5 / bins, label="input", color="tab:orange")
    psi = report["tests"]["confidence_psi"]
    conf.set(title=f"calibrated confidence · PSI {psi['psi']:.3f}", xlabel="max softmax", ylabel="share")
    conf.legend()

    k = np.arange(len(profile.classes))
    ref_pred = profile.predicted_counts.numpy() / max(int(profile.predicted_counts.sum()), 1)
    new_pred = plot["predicted"] / max(int(plot["predicted"].sum()), 1)
    classes.bar(k - 0.27, ref_pred, width=0.27, label="reference predicted", color="tab:blue")
    classes.bar(k, new_pred, width=0.27, label="input predicted", color="tab:orange")
    classes.bar(k + 0.27, plot["priors"], width=0.27, label="input priors (BBSE)", color="tab:green")
    classes.set_xticks(k, profile.classes, rotation=45 if len(k) > 12 else 0)
    classes.set(title=f"classes · χ² p = {report['tests']['predicted_classes']['p_value']:.3g}", ylabel="share")
    classes.legend(fontsize=8)

    ref_e = profile.embeddings[:, :2].numpy()
    new_e = plot["embeddings"].numpy()
    if ref_e.shape[1] == 2:
        emb.scatter(ref_e[:, 0], ref_e[:, 1], s=8, alpha=0.5, label="reference", color="tab:blue")
        emb.scatter(new_e[:, 0], new_e[:, 1], s=8, alpha=0.5, label="input", color="tab:orange")
        emb.legend()
    mmd = report["tests"]["embedding_mmd"]
    emb.set(title=f"embeddings, first two components · MMD p = {mmd['p_value']:.3g}", xlabel="1", ylabel="2")

    p = [max(report["tests"][n]["p_value"], 1e-6) for n in TESTS]
    colors = ["tab:red" if report["tests"][n]["drift"] else "tab:gray" for n in TESTS]
    tests.barh([SHORT[n] for n in TESTS], -np.log10(p), color=colors)
    threshold = report["tests"][TESTS[0]]["threshold"]
    tests.axvline(-np.log10(threshold), color="black", linestyle="--", label=f"threshold p = {threshold:.3g}")
    validation = report["performance"]["validation_accuracy"]
    tests.set(title=f"{'DRIFT' if report['drift'] else 'no drift'} · estimated accuracy "
                    f"{report['estimated_accuracy']:.3f} (validation {validation:.3f})", xlabel="−log10 p")
    tests.legend()
    return _save(fig, path)


def plot_series(report: dict, path: str | Path) -> Path:
    """The time series of sliding-window mode: p-values per test, and the estimated accuracy."""
    from matplotlib.ticker import MaxNLocator

    windows = report["windows"]
    fig, axes = _figure(2, 1, (11, 7))
    pv, acc = axes[:, 0]
    x = np.arange(len(windows))
    for name in TESTS:
        pv.plot(x, [max(w["p_values"][name], 1e-6) for w in windows], marker="o", ms=3, label=SHORT[name])
    threshold = report["tests"][TESTS[0]]["threshold"]
    pv.axhline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    pv.set(yscale="log", ylabel="p-value", title="drift tests per window")
    acc.plot(x, [w["estimated_accuracy"] for w in windows], marker="o", ms=3, color="tab:green",
             label="estimated accuracy")
    acc.axhline(report["performance"]["validation_accuracy"], color="tab:blue", linestyle="--",
                label="validation accuracy")
    for ax in (pv, acc):
        for w in windows:
            if w["drift"]:
                ax.axvspan(w["index"] - 0.5, w["index"] + 0.5, color="tab:red", alpha=0.12, lw=0)
        ax.legend(fontsize=8)
    acc.set(xlabel="window", ylabel="accuracy", title="estimated accuracy (CBPE) · shaded: drift")
    for ax in (pv, acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write-then-rename, like every other output."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
