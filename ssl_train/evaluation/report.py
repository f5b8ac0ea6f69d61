"""report.html: the evaluation in one self-contained page (figures embedded as base64 PNG).

`render_eval_report` lays out eval.json's content with the page building blocks of
`ssl_train.run.html`. Every value
shown comes from the eval dict, so the page and eval.json cannot disagree, and
the page references no file at all: it can be mailed or archived alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from ssl_train.evaluation.robustness import SEVERITIES
from ssl_train.run.html import box, esc, figure, heading, page, paragraph, section, table


def ci(interval: Sequence[float]) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """The headline numbers, shared by the printed table and the report."""
    m, cal = result["metrics"], result["calibration"]
    boot = result["bootstrap"]
    level = f"{100 * boot['level']:g}% CI"
    rows = [("accuracy", f"{m['acc']:.4f}  {level} {ci(boot['acc'])}"),
            ("macro-F1", f"{m['f1_macro']:.4f}  {level} {ci(boot['f1_macro'])}"),
            (f"ECE ({cal['bins']} bins)", f"{cal['ece']:.4f} → {cal['ece_scaled']:.4f} with temperature "
                                         f"{cal['temperature']:.3f} (fitted on {cal['fitted_on']})"),
            ("MCE", f"{cal['mce']:.4f} → {cal['mce_scaled']:.4f}")]
    if result.get("outliers"):  # accuracy above is on the labeled classes' images only
        o = result["outliers"]
        rows.append(("outlier AUROC", f"{o['auroc']:.4f} ({o['unseen']} images of unseen classes against {o['seen']}; "
                                      f"score: {o['score']})"))
    flagged = [s["slice"] for kind in ("classes", "user") for s in result["slices"].get(kind) or [] if s["flagged"]]
    rows.append(("slices below the whole", ", ".join(flagged) if flagged else "none (FDR "
                 f"{result['slices']['alpha']:g})"))
    if result.get("robustness"):
        worst = {k: v[-1]["acc"] for k, v in result["robustness"].items()}
        rows.append(("accuracy at severity 3", ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in worst.items())))
    ssl = result.get("ssl") or {}
    curves = ssl.get("training_curves") or {}
    if curves:
        rows.append(("end of training", ", ".join(f"{k.replace('_', ' ')} {v['final_mean']:.3f}"
                                                  for k, v in curves.items())))
    if ssl.get("pseudo_labels"):
        rows.append(("pseudo-label balance", "AMPLIFIED imbalance" if ssl["pseudo_labels"]["amplified"] else "ok"))
    if result.get("guard"):
        g = result["guard"]
        rows.append(("SSL gain over supervised", f"{100 * g['guard/gain']:+.1f} points on val, 95% CI "
                     f"[{100 * g['guard/gain_low']:+.1f}, {100 * g['guard/gain_high']:+.1f}] (training's guard)"))
    if result.get("privacy"):
        p = result["privacy"]
        rows.append(("membership inference", f"AUC {p['auc']:.3f}: {p['risk']} risk"))
    return rows


def render_eval_report(result: dict, figures: dict[str, bytes]) -> str:
    """The evaluation page from eval.json's content and the figures (PNG bytes by name)."""
    model, data, m, cal = result["model"], result["data"], result["metrics"], result["calibration"]
    subtitle = (f"{model['kind']} {model['path']} · {data['dataset']} {data['split']} split, {m['samples']} images · "
                f"{result['created']}")
    body = [box(w, True) for w in result["warnings"]]
    body.append(section("Summary", table(None, summary_rows(result))))

    per_class = [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in m["per_class"]]
    body.append(section(
        "Classification",
        table(["class", "precision", "recall", "F1", "support"], per_class),
        figure(figures.get("confusion_matrix"), "confusion matrix")))

    body.append(section(
        "Calibration",
        paragraph(f"Temperature scaling divides the logits by T = {cal['temperature']:.4f}, fitted on the "
                  f"{cal['fitted_on']} split ({cal['fitted_samples']} images) by minimizing the negative "
                  "log-likelihood. It changes confidences, never predictions."),
        table(["", "as trained", f"T = {cal['temperature']:.3f}"],
              [("ECE", cal["ece"], cal["ece_scaled"]), ("MCE", cal["mce"], cal["mce_scaled"]),
               ("NLL", cal["nll"], cal["nll_scaled"])]),
        figure(figures.get("reliability"), "reliability diagram"),
        f"<p class=\"note\">Carry it into export: <code>{esc(cal['export_hint'])}</code></p>"
        if cal.get("export_hint") else ""))

    slices = result["slices"]
    slice_header = ["slice", "images", "accuracy", "rest", "p (one-sided)", "q (BH)", "flagged"]
    def slice_rows(rows: list[dict]) -> list[tuple]:
        return [(r["slice"], r["samples"], r["acc"], r["rest_acc"], r["p_value"], r["q_value"],
                 "yes" if r["flagged"] else "") for r in rows]

    parts = [paragraph(f"A slice is flagged when its accuracy is below the rest of the split by a one-sided Fisher "
                       f"exact test with Benjamini–Hochberg false discovery rate {slices['alpha']:g}."),
             heading("Per class"), table(slice_header, slice_rows(slices["classes"]),
                                          [r["flagged"] for r in slices["classes"]]),
             heading("Per confidence bucket"),
             table(["max softmax", "images", "accuracy", "mean confidence"],
                   [(r["bucket"], r["samples"], r["acc"], r["confidence"]) for r in slices["confidence"]])]
    if slices.get("user") is not None:
        parts += [heading(f"User-defined: {slices['user_source']}"),
                  table(slice_header, slice_rows(slices["user"]), [r["flagged"] for r in slices["user"]])]
    body.append(section("Slices", *parts))

    if result.get("robustness"):
        rows = [(kind.replace("_", " "), *[f"{r['acc']:.4f} ({r['value']:g})" for r in levels])
                for kind, levels in result["robustness"].items()]
        body.append(section(
            "Robustness",
            paragraph(f"Clean accuracy {m['acc']:.4f}. In brackets: the corruption strength (noise std, blur sigma "
                      "in pixels, contrast factor, rotation in degrees) on pixels in [0, 1]."),
            table(["corruption", "severity 1", "severity 2", "severity 3"], rows),
            figure(figures.get("robustness"), "accuracy under corruptions")))

    ssl = result.get("ssl") or {}
    parts = []
    if ssl.get("training_curves"):
        rows = [(k.replace("_", " "), v["first"], v["last"], v["final_mean"], v["points"])
                for k, v in ssl["training_curves"].items()]
        parts += [table(["signal", "first logged", "last logged", "mean of last 10%", "points"], rows),
                  figure(figures.get("training_curves"), "mask ratio and pseudo-label accuracy over training")]
    else:
        parts.append(paragraph(ssl.get("training_curves_note", "No training logs."), "note"))
    if ssl.get("pseudo_labels"):
        pl = ssl["pseudo_labels"]
        parts += [heading("Pseudo-label class distribution"),
                  paragraph(f"The evaluated model's pseudo-labels on {pl['unlabeled']} unlabeled images at threshold "
                            f"{pl['threshold']:g}: {pl['confident']} pass it."),
                  box(pl["verdict"], pl["amplified"]), figure(figures.get("pseudo_labels"), "pseudo-label shares")]
    body.append(section("Semi-supervised learning", *parts))

    if result.get("privacy"):
        p = result["privacy"]
        body.append(section("Privacy: membership inference", box(p["verdict"], p["risk"] != "low"),
                            figure(figures.get("membership"), "membership inference")))
    body.append(section("Provenance", table(None, [
        ("model", f"{model['path']} (sha256 {model['sha256'][:16]}…)"), ("model kind", model["kind"]),
        ("dataset", f"{data['dataset']} (seed {data['seed']})"), ("split", data["split"]),
        ("bootstrap", f"{result['bootstrap']['resamples']} resamples, seed {result['bootstrap']['seed']}"),
        ("robustness severities", "; ".join(f"{k}: {v}" for k, v in SEVERITIES.items())),
        ("computing time", f"{result['time_s']:.1f} s (without start-up and figures)")])))
    return page("Evaluation report", subtitle, body)
