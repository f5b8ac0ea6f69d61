"""The console side of `ssl-monitor`: a short verdict, and the time series of sliding-window mode."""

from __future__ import annotations

from ssl_train.monitor.detector import TESTS

LABELS = {"embedding_mmd": "embedding MMD", "embedding_ks": "embedding KS (FDR)",
          "confidence_psi": "confidence PSI", "predicted_classes": "predicted classes"}
SHORT = {"embedding_mmd": "mmd", "embedding_ks": "ks", "confidence_psi": "psi", "predicted_classes": "classes"}


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.0e}"


def effect(name: str, test: dict) -> str:
    if name == "embedding_mmd":
        return f"MMD² {test['statistic']:.4f}"
    if name == "embedding_ks":
        return f"{test['components_drifting']}/{test['components']} components"
    if name == "confidence_psi":
        return f"PSI {test['psi']:.3f} ({test['band']})"
    return f"χ² {test['statistic']:.1f}, dof {test['dof']}"


def verdict(report: dict) -> str:
    """A few lines: the decision, the expected accuracy, each test, and why retraining is recommended."""
    perf = report["performance"]
    drop = 100 * perf["accuracy_drop"]
    head = (f"{'DRIFT' if report['drift'] else 'NO DRIFT'} ({len(report['drifting_tests'])} of {len(TESTS)} tests)"
            f" · {report['samples']} samples · estimated accuracy {report['estimated_accuracy']:.3f} "
            f"(validation {perf['validation_accuracy']:.3f}, {-drop:+.1f} points)"
            f" · {'retrain recommended' if report['retrain_recommended'] else 'no retraining needed'}")
    width = max(len(v) for v in LABELS.values())
    lines = [head, f"  {'test':<{width}}  p-value  drift  effect"]
    for name in TESTS:
        test = report["tests"][name]
        lines.append(f"  {LABELS[name]:<{width}}  {_p(test['p_value']):>7}  {'yes' if test['drift'] else 'no':<5}  "
                     f"{effect(name, test)}")
    threshold = report["tests"][TESTS[0]]["threshold"]
    lines.append(f"  (drift when p ≤ {threshold:.4g}: alpha {report['options']['alpha']:g} over {len(TESTS)} tests)")
    lines += [f"  retrain: {reason}" for reason in report["retrain_reasons"]]
    if report["samples"] < 30:
        lines.append(f"  note: {report['samples']} samples give the tests little power")
    return "\n".join(lines)


def series_table(windows: list[dict]) -> str:
    """One line per window: its span, decision, p-values, PSI and estimated accuracy."""
    span = [w.get("source") or f"{w['start']}-{w['end']}" for w in windows]
    width = max(len("window"), *(len(s) for s in span))
    lines = [f"{'#':>3}  {'window':<{width}}  drift  " + "  ".join(f"{SHORT[n]:>7}" for n in TESTS)
             + "  est.acc  retrain"]
    for w, s in zip(windows, span):
        lines.append(f"{w['index']:>3}  {s:<{width}}  {'yes' if w['drift'] else 'no':<5}  "
                     + "  ".join(f"{_p(w['p_values'][n]):>7}" for n in TESTS)
                     + f"  {w['estimated_accuracy']:>7.3f}  {'yes' if w['retrain_recommended'] else 'no'}")
    return "\n".join(lines)
