"""audit.html: the audit in one self-contained page, with the duplicate pairs and suspicious labels shown as images."""

from __future__ import annotations

import numpy as np

from ssl_train.audit.scan import Scan
from ssl_train.run import figures
from ssl_train.run.html import box, figure, heading, page, paragraph, section, table

SHOWN_PAIRS = 12
SHOWN_ROWS = 200


def render_audit_report(result: dict, records: Scan, issue_rows: list[int]) -> str:
    s, d = result["summary"], result["data"]
    subtitle = (f"{d['dataset']} · {s['images']} images · input {'×'.join(map(str, d['input_shape']))} · "
                f"{result['created']} · {result['time_s']:.1f} s")
    body = [box(w, True) for w in result["warnings"]] or [box("No leakage, no unreadable files, no warnings.", False)]
    body.append(section("Summary", table(None, [
        *[(f"images: {k}", v) for k, v in d["images"].items()],
        ("exact duplicate pairs", s["exact_pairs"]), ("near duplicate pairs", s["near_pairs"]),
        ("val images leaked", s["leaked"]["val"]), ("test images leaked", s["leaked"]["test"]),
        ("unreadable files", s["unreadable"])])))

    dups = result["duplicates"]
    short = _shortener(d.get("root"))
    parts = [paragraph("Exact: the same decoded pixels (any file name or format). Near: equal after a shift of at "
                       f"most one pixel and a brightness/contrast fit, up to an RMS difference of "
                       f"{result['options']['max_rms']:g} (pixels in [0, 1]) and {result['options']['max_relative']:g}"
                       " of the image's contrast, compared as grayscale thumbnails of at most 32×32. "
                       "A val image is leaked when it has a "
                       "duplicate in labeled or unlabeled; a test image when it has one in those or in val."),
             table(["split pair", "duplicate pairs"], list(result["cross_split"].items()))]
    if dups:
        parts += [heading(f"Pairs ({min(len(dups), SHOWN_ROWS)} of {s['exact_pairs'] + s['near_pairs']}; "
                          "all listed ones are in audit.json)"),
                  paragraph(f"Paths relative to {d['root']}." if d.get("root") else "", "note"),
                  table(["kind", "a", "split a", "b", "split b"],
                        [(p["kind"], short(p["a"]), p["split_a"], short(p["b"]), p["split_b"])
                         for p in dups[:SHOWN_ROWS]]),
                  figure(_pair_grid(_sample_pairs(dups), records), "duplicate pairs")]
    body.append(section("Duplicates and leakage", *parts))

    balance = result["class_balance"]
    classes = d["classes"]
    rows = [(c, *[balance[sp]["counts"][c] for sp in balance]) for c in classes]
    ratio = lambda v: "–" if v is None else f"{v:.2f}:1"  # noqa: E731
    labeled = balance.get("labeled")
    body.append(section(
        "Class balance",
        table(["class", *balance], rows + [("largest/smallest", *[ratio(balance[sp]["imbalance"]) for sp in balance])]),
        figure(figures.bars(classes, [labeled["counts"][c] for c in classes], "Labeled images per class", "images"),
               "labeled class counts") if labeled else ""))

    label = result.get("label_check")
    if label is None:
        body.append(section("Suspicious labels", paragraph("Not checked (audit.label_check=false).", "note")))
    elif "skipped" in label:
        body.append(section("Suspicious labels", paragraph(f"Skipped: {label['skipped']}.", "note")))
    else:
        body.append(section(
            "Suspicious labels",
            paragraph(f"Method: {label['method']}. The quick model's cross-validated accuracy is "
                      f"{label['quick_model_acc']:.3f}; it flags {label['issues_found']} of {label['checked']} labels"
                      + (f" ({label['note']})" if label.get("note") else "") + ". Most suspicious first."),
            box(label["reliability_note"], True) if label.get("reliability_note") else "",
            table(["image", "given", "suggested", "p(given)", "p(suggested)"],
                  [(short(i["path"]), i["given"], i["suggested"], i["given_prob"], i["suggested_prob"])
                   for i in label["issues"][:50]]),
            figure(_issue_grid(issue_rows, label["issues"], records), "suspicious labels") if issue_rows else ""))

    if result["unreadable"]:
        body.append(section("Unreadable files", table(["file", "split folder", "error"],
                                                       [(short(u["path"]), u["split"], u["error"])
                                                        for u in result["unreadable"][:SHOWN_ROWS]])))
    return page("Data audit", subtitle, body)


def _shortener(root: str | None):
    """path → path relative to the data root (when below it), for readable tables."""
    if not root:
        return lambda path: path
    prefix = str(root).rstrip("/") + "/"
    return lambda path: path[len(prefix):] if path.startswith(prefix) else path


def _sample_pairs(pairs: list[dict]) -> list[dict]:
    """Up to SHOWN_PAIRS pairs for the picture: exact and near ones alike, cross-split ones first."""
    exact = [p for p in pairs if p["kind"] == "exact"]
    near = [p for p in pairs if p["kind"] == "near"]
    half = SHOWN_PAIRS // 2
    picked = exact[:max(half, SHOWN_PAIRS - len(near))] + near[:max(half, SHOWN_PAIRS - len(exact))]
    return picked[:SHOWN_PAIRS]


def _display(images) -> list[np.ndarray]:
    x = images.clamp(0, 1).numpy()
    return [im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0) for im in x]


def _pair_grid(pairs: list[dict], records: Scan) -> bytes:
    wanted = {p[k] for p in pairs for k in ("a", "b")}
    row_of = {i: r for r, i in enumerate(records.ids) if i in wanted}
    rows = [row_of[p[k]] for p in pairs for k in ("a", "b")]
    captions = [f"{p['kind']}: {p['split_' + k]}" for p in pairs for k in ("a", "b")]
    return figures.image_grid(_display(records.load(np.array(rows))), captions, columns=8,
                            title="Duplicate pairs, side by side (a, b)")


def _issue_grid(rows: list[int], issues: list[dict], records: Scan) -> bytes:
    captions = [f"{i['given']} → {i['suggested']}?" for i in issues[:len(rows)]]
    return figures.image_grid(_display(records.load(np.array(rows))), captions, columns=8,
                            title="Most suspicious labels (given → suggested)")
