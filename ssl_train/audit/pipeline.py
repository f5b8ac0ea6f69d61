"""A data config in; audit.json and audit.html out: the flow behind `ssl-audit` (and `audit.before_train`).

    data module (the splits training would use; unreadable files skipped and listed, not fatal)
      → scan: one streaming pass, compact records per image
      → exact duplicates (content hash) · near duplicates (descriptor neighbours, aligned pixel check)
      → leakage into val/test · class balance · suspicious labels (cross-validated quick model)
      → audit.html, then audit.json (written last)
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ssl_train.audit import duplicates as dup
from ssl_train.audit import labels as lab
from ssl_train.audit.report import render_audit_report
from ssl_train.audit.scan import SPLITS, Scan, descriptors, scan
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import IMAGE_EXTENSIONS, FileImages
from ssl_train.errors import SSLTrainError
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.data import build_datamodule

log = logging.getLogger(__name__)

CHUNK = 512         # candidate pairs compared at once
SHIFT_QUERY_SIDE = 16  # thumbnails this small get one-pixel-shifted candidate queries
MIN_PER_CLASS = 10  # labeled images per class below which the label check only informs


class LeakageError(SSLTrainError):
    """Val or test images have duplicates in the training data (or test in val)."""


@dataclass
class AuditOptions:
    """What `ssl-audit` checks (conf/audit/default.yaml).

    Args:
        near_duplicates: search near duplicates (exact ones are always found).
        max_rms, max_relative: a pair is a near duplicate when, aligned by ≤ 1 pixel and
            brightness/contrast-fitted, its RMS pixel difference (pixels in [0, 1]) is at most `max_rms` and at
            most `max_relative` × the image's standard deviation (0.4: a correlation of about 0.92, or
            noise at most 40% of the image's contrast).
        neighbours, min_cosine: candidates per image (and shift), and the descriptor similarity they need.
        label_check: look for suspicious labels; label_check_max caps the labeled images it looks at.
        folds: cross-validation folds of the label check's quick model.
        fail_on_leakage: `ssl-audit` exits 1 (after writing the report) when val or test images have
            duplicates in earlier splits.
        batch_size: images decoded per step of the streaming pass.
        max_listed: duplicate pairs listed in audit.json (the counts are always complete).
        seed: cross-validation folds and the label-check sample.
    """

    near_duplicates: bool = True
    max_rms: float = 0.03
    max_relative: float = 0.4
    neighbours: int = 5
    min_cosine: float = 0.75
    label_check: bool = True
    label_check_max: int = 20000
    folds: int = 5
    fail_on_leakage: bool = False
    batch_size: int = 256
    max_listed: int = 10000
    seed: int = 0


def audit(data: dict, out_dir: str | Path, options: AuditOptions | None = None) -> dict:
    """Audit the dataset of a data config into `out_dir` (audit.html, then audit.json); returns audit.json's content."""
    start = time.perf_counter()
    options = options or AuditOptions()
    datamodule, name = _datamodule(data)
    records = scan(datamodule, options.batch_size)
    try:
        return _audit(records, datamodule, name, data, out_dir, options, start)
    finally:
        records.close()


def _audit(records: Scan, datamodule: SSLDataModule, name: str, data: dict, out_dir: str | Path,
           options: AuditOptions, start: float) -> dict:
    unreadable = _skipped(datamodule) + records.unreadable
    if len(records) == 0:
        example = f" ({len(unreadable)} unreadable files, e.g. {unreadable[0]['path']})" if unreadable else ""
        raise SSLTrainError(f"no readable image in the {name} dataset{example}")
    classes = list(datamodule.source.classes)

    exact = _exact_pairs(records)
    near, candidates = (_near_pairs(records, exact, options) if options.near_duplicates
                        else (np.zeros((0, 2), np.int64), 0))
    pairs = np.concatenate([exact, near]) if len(exact) + len(near) else np.zeros((0, 2), np.int64)
    leaked = dup.leakage(records.split, pairs, SPLITS)

    result = {
        "format_version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"dataset": name, "classes": classes, "seed": data.get("seed"),
                 "root": getattr(datamodule.dataset_fn, "keywords", {}).get("root"),
                 "images": {s: int((records.split == k).sum()) for k, s in enumerate(SPLITS)},
                 "input_shape": list(datamodule.input_shape)},
        "options": asdict(options),
        "summary": {"images": len(records), "exact_pairs": len(exact), "near_pairs": len(near),
                    "near_candidates_checked": int(candidates), "unreadable": len(unreadable),
                    "leaked": leaked, "leakage": bool(leaked["val"] or leaked["test"])},
        "duplicates": _listed(records, exact, near, options.max_listed),
        "cross_split": _cross_split_counts(records, pairs),
        "class_balance": {s: lab.class_balance(records.label[records.split == k], classes)
                          for k, s in enumerate(SPLITS) if s != "unlabeled" and (records.split == k).any()},
        "unreadable": unreadable,
    }
    result["label_check"], issue_rows = _label_check(records, classes, options) if options.label_check else (None, [])
    result["warnings"] = _warnings(result)
    result["time_s"] = time.perf_counter() - start

    html = render_audit_report(result, records, issue_rows)
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "audit.html", html)
    write_json_atomic(out_dir / "audit.json", result)
    return result


def check_leakage(result: dict, out_dir: str | Path, splits: tuple[str, ...] = ("val", "test"), hint: str = "") -> None:
    """Raise LeakageError when images of `splits` have duplicates in earlier splits."""
    leaked = result["summary"]["leaked"]
    if any(leaked[s] for s in splits):
        counts = " and ".join(f"{leaked[s]} {s}" for s in splits)
        raise LeakageError(f"data leakage: {counts} images have (near-)duplicates in earlier splits "
                           f"(see {Path(out_dir) / 'audit.html'}){hint}")


def audit_before_training(cfg, out_dir: str | Path) -> dict:
    """`ssl-train audit.before_train=true`: audit the run's data and stop on test leakage unless it is allowed."""
    from omegaconf import OmegaConf

    result = audit(OmegaConf.to_container(cfg.data, resolve=True), out_dir, AuditOptions(seed=cfg.seed))
    log.info("data audit → %s (%d exact, %d near duplicate pairs)", out_dir, result["summary"]["exact_pairs"],
             result["summary"]["near_pairs"])
    if not cfg.audit.get("allow_test_leakage"):
        check_leakage(result, out_dir, ("test",), hint="; set audit.allow_test_leakage=true to train anyway")
    return result


def summary_table(result: dict, out_dir: str | Path) -> str:
    s, d = result["summary"], result["data"]
    title = f"audit of {d['dataset']}: {s['images']} images ({', '.join(f'{k} {v}' for k, v in d['images'].items())})"
    label = result.get("label_check") or {}
    rows = [("exact duplicate pairs", s["exact_pairs"]), ("near duplicate pairs", s["near_pairs"]),
            ("leaked into val / test", f"{s['leaked']['val']} / {s['leaked']['test']} images"),
            ("labeled class imbalance", _fmt_ratio((result["class_balance"].get("labeled") or {}).get("imbalance"))),
            ("suspicious labels", _issues_cell(label)),
            ("unreadable files", s["unreadable"]), ("time", f"{result['time_s']:.1f} s"),
            ("written", f"{out_dir}/audit.json, {out_dir}/audit.html")]
    width = max(len(k) for k, _ in rows)
    return "\n".join([title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows]
                     + [f"warning: {w}" for w in result["warnings"]])


# --- steps -------------------------------------------------------------------------------------------------------


def _datamodule(data: dict) -> tuple[SSLDataModule, str]:
    """The data module training would build, except that unreadable files are skipped (and listed) rather than
    fatal, and that an empty unlabeled split is allowed (mu=0): an audit reads, it does not train."""
    data = {**data, "dataset": dict(data.get("dataset") or {}), "mu": 0}
    name = str(data["dataset"].get("_target_", "?")).rsplit(".", 1)[-1]
    if "on_bad_image" in data["dataset"]:
        data["dataset"]["on_bad_image"] = "skip"
    datamodule = build_datamodule(data, setup=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping unreadable image file")
        datamodule.setup()
    return datamodule, name


def _skipped(datamodule: SSLDataModule) -> list[dict]:
    """Image files of an image folder that its source left out as unreadable."""
    source = datamodule.source
    parts = [getattr(source, p) for p in ("train", "val", "test", "unlabeled")]
    held = [p for p in parts if isinstance(p, FileImages)]
    root = getattr(datamodule.dataset_fn, "keywords", {}).get("root")
    if not held or root is None:
        return []
    kept = {str(p) for part in held for p in part.paths}  # the source found them by the same walk from ROOT
    out = []
    for folder in ("labeled", "unlabeled", "val", "test"):
        for dirpath, _, names in os.walk(Path(root) / folder):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and path not in kept:
                    out.append({"path": path, "split": folder, "error": "not a readable image"})
    return out


def _exact_pairs(records: Scan) -> np.ndarray:
    """Each exact-duplicate group as pairs (first, other), the first being in the earliest split."""
    pairs = []
    for group in dup.exact_groups(records.hashes):
        group = group[np.lexsort((group, records.split[group]))]
        pairs += [(group[0], other) for other in group[1:]]
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def _near_pairs(records: Scan, exact: np.ndarray, options: AuditOptions) -> tuple[np.ndarray, int]:
    """Confirmed near-duplicate pairs among exact-group representatives, and how many candidates were checked."""
    reps = np.setdiff1d(np.arange(len(records)), exact[:, 1]) if len(exact) else np.arange(len(records))
    shifted = None
    if min(records.thumb_shape) <= SHIFT_QUERY_SIDE:
        def shifted(block: np.ndarray) -> list[torch.Tensor]:
            thumbs = records.thumbs(block)
            return [descriptors(dup.shift(thumbs, dy, dx)) for dy, dx in dup.SHIFTS]
    candidates = dup.near_candidates(records.descriptors, reps, options.neighbours, options.min_cosine, shifted)
    keep = []
    for start in range(0, len(candidates), CHUNK):
        block = candidates[start:start + CHUNK]
        rows, inverse = np.unique(block, return_inverse=True)
        thumbs, inverse = records.thumbs(rows), torch.from_numpy(inverse.reshape(-1, 2))
        rms, relative = dup.aligned_rms(thumbs[inverse[:, 0]], thumbs[inverse[:, 1]])
        keep.append(block[((rms <= options.max_rms) & (relative <= options.max_relative)).numpy()])
    keep = np.concatenate(keep) if keep else np.zeros((0, 2), np.int64)
    swap = records.split[keep[:, 0]] > records.split[keep[:, 1]]  # the earlier split first in each pair
    keep[swap] = keep[swap][:, ::-1]
    return keep, len(candidates)


def _listed(records: Scan, exact: np.ndarray, near: np.ndarray, limit: int) -> list[dict]:
    """Duplicate pairs for audit.json: those linking different splits first, then within-split ones."""
    rows = [(kind, int(a), int(b)) for kind, pairs in (("exact", exact), ("near", near)) for a, b in pairs]
    rows.sort(key=lambda r: (records.split[r[1]] == records.split[r[2]], -int(records.split[r[2]]), r[0] != "exact"))
    return [{"kind": kind, "a": records.ids[a], "b": records.ids[b], "split_a": SPLITS[records.split[a]],
             "split_b": SPLITS[records.split[b]]} for kind, a, b in rows[:limit]]


def _cross_split_counts(records: Scan, pairs: np.ndarray) -> dict[str, int]:
    """Duplicate pairs per split pair, e.g. {"labeled-test": 3, "unlabeled-unlabeled": 10}."""
    out: dict[str, int] = {}
    for a, b in pairs:
        key = f"{SPLITS[records.split[a]]}-{SPLITS[records.split[b]]}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _label_check(records: Scan, classes: list[str], options: AuditOptions) -> tuple[dict, list[int]]:
    """The label-check section, and the record positions of the most suspicious labels (for the report)."""
    rows, features = records.feature_rows, records.features.astype(np.float32)
    known = records.label[rows] >= 0  # images of unseen classes (data.open_set) have no label to check
    rows, features = rows[known], features[known]
    note = None
    if len(rows) > options.label_check_max:
        pick = np.sort(np.random.default_rng(options.seed).choice(len(rows), options.label_check_max, replace=False))
        rows, features = rows[pick], features[pick]
        note = f"a seeded sample of {options.label_check_max} of {len(records.feature_rows)} labeled images"
    labels = records.label[rows]
    try:
        probs = lab.out_of_sample_probs(features, labels, len(classes), options.folds, options.seed)
    except ValueError as exc:
        return {"skipped": str(exc)}, []
    order, suggested = lab.label_issues(probs, labels)
    quick_acc = float((probs.argmax(1) == labels).mean())
    smallest = int(np.bincount(labels)[np.unique(labels)].min())
    return {
        "reliable": smallest >= MIN_PER_CLASS,
        "reliability_note": None if smallest >= MIN_PER_CLASS else
        (f"only {smallest} labeled images in the smallest class: a model trained on so few cannot tell a wrong "
         f"label from a hard image (at least {MIN_PER_CLASS} per class needed); listed for information only"),
        "method": "confident learning (plus out-of-sample disagreements by a margin of 0.5) over the "
                  "cross-validated probabilities of a logistic regression on 8x8 thumbnails "
                  f"({min(options.folds, smallest)}-fold)",
        "checked": len(rows), "note": note, "quick_model_acc": quick_acc, "issues_found": len(order),
        "issues": [{"path": records.ids[rows[p]], "given": classes[labels[p]], "suggested": classes[s],
                    "given_prob": float(probs[p, labels[p]]), "suggested_prob": float(probs[p, s])}
                   for p, s in zip(order[:1000], suggested[:1000])],
    }, [int(rows[p]) for p in order[:24]]


def _warnings(result: dict) -> list[str]:
    out = []
    s = result["summary"]
    if s["leakage"]:
        out.append(f"leakage: {s['leaked']['test']} test and {s['leaked']['val']} val images have (near-)duplicates "
                   "in earlier splits: their scores overstate generalization")
    balance = result["class_balance"].get("labeled") or {}
    if balance.get("empty_classes"):
        out.append(f"labeled classes without images: {', '.join(balance['empty_classes'])}")
    elif balance.get("imbalance") and balance["imbalance"] > 1.5:
        out.append(f"the labeled set is imbalanced ({balance['imbalance']:.2f}:1 largest/smallest class): SSL tends to "
                   "amplify it through its pseudo-labels")
    label = result.get("label_check") or {}
    if label.get("reliable") and label["issues_found"] > 0.02 * label["checked"]:
        out.append(f"{label['issues_found']} of {label['checked']} labels look suspicious to a quick model "
                   f"({100 * label['issues_found'] / label['checked']:.1f}%): review them")
    if s["unreadable"]:
        out.append(f"{s['unreadable']} unreadable image files (training stops on them unless "
                   "data.dataset.on_bad_image=skip)")
    return out


def _issues_cell(label: dict | None) -> str:
    if not label:
        return "not checked"
    if "skipped" in label:
        return f"skipped ({label['skipped']})"
    trust = "" if label["reliable"] else " (too few labels per class to trust)"
    return f"{label['issues_found']} of {label['checked']}{trust}"


def _fmt_ratio(value) -> str:
    return "–" if value is None else f"{value:.2f}:1"
