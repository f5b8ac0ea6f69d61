"""Slice-based evaluation: accuracy per class, per confidence bucket and per user-defined slice.

A slice is flagged when its accuracy is significantly below the rest of the
split: a one-sided Fisher exact test of (correct, wrong) in the slice against
the other samples, with the Benjamini–Hochberg correction over all slices of
one kind (many slices tested at once would otherwise flag some by chance).
Confidence buckets are reported but not flagged: low-confidence samples are
expected to be less accurate; whether they are as accurate as they claim is
calibration's question.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import false_discovery_control, fisher_exact

from ssl_train.errors import SSLTrainError

CONFIDENCE_EDGES = (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)
UNMAPPED = "(not in the CSV)"
SPLIT_FOLDERS = ("labeled", "val", "test")


def slice_accuracy(correct: np.ndarray, groups: Sequence[str], alpha: float = 0.05) -> list[dict]:
    """Per slice name: samples, accuracy, one-sided p-value against the rest, BH q-value, flagged.

    `groups[i]` names the slice of sample i. Sorted by accuracy, worst first.
    """
    correct, groups = np.asarray(correct, dtype=bool), np.asarray(groups, dtype=object)
    total_n, total_k = len(correct), int(correct.sum())
    rows = []
    for name in sorted(set(groups.tolist()), key=str):
        members = groups == name
        n, k = int(members.sum()), int(correct[members].sum())
        rest_n, rest_k = total_n - n, total_k - k
        p = 1.0 if rest_n == 0 else float(fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]], alternative="less")[1])
        rows.append({"slice": str(name), "samples": n, "acc": k / n, "rest_acc": rest_k / rest_n if rest_n else None,
                     "p_value": p})
    if rows:
        q = false_discovery_control([r["p_value"] for r in rows], method="bh")
        for row, q_value in zip(rows, q):
            row["q_value"] = float(q_value)
            row["flagged"] = bool(q_value < alpha and row["rest_acc"] is not None and row["acc"] < row["rest_acc"])
    return sorted(rows, key=lambda r: (r["acc"], r["slice"]))


def confidence_buckets(confidence: np.ndarray, correct: np.ndarray,
                       edges: Sequence[float] = CONFIDENCE_EDGES) -> list[dict]:
    """Samples, accuracy and mean confidence per confidence bucket [lower, upper) (the last one closed)."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, dtype=bool)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        members = which == b
        n = int(members.sum())
        rows.append({"bucket": f"[{edges[b]:g}, {edges[b + 1]:g}{']' if b == len(edges) - 2 else ')'}",
                     "samples": n, "acc": float(correct[members].mean()) if n else None,
                     "confidence": float(confidence[members].mean()) if n else None})
    return rows


def subfolder_slices(paths: Sequence[Path], class_names: Sequence[str]) -> list[str]:
    """The subfolder of each image below its class folder: ROOT/<split>/<class>/<subfolder...>/file.

    `class_names[i]` is the class of image i; images directly in their class folder form the slice
    "(class folder)".
    """
    out = []
    for path, name in zip(paths, class_names):
        path = Path(path)
        folder = next((p for p in path.parents if p.name == name and p.parent.name in SPLIT_FOLDERS), None)
        if folder is None:
            raise SSLTrainError(f"{path} is not in a class folder <split>/{name}/ of an image folder")
        out.append(path.parent.relative_to(folder).as_posix() if path.parent != folder else "(class folder)")
    return out


def csv_slices(ids: Sequence[str], csv_path: str | Path, column: str, file_column: str = "file",
               root: str | Path | None = None) -> list[str]:
    """The slice of each sample from a metadata CSV mapping files (or sample ids) to a value of `column`.

    A file entry may be absolute, relative to the data root, or relative to the working directory;
    samples the CSV does not mention form the slice "(not in the CSV)".
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SSLTrainError(f"eval.slice_csv={csv_path}: no such file")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (file_column, column) if c not in (reader.fieldnames or [])]
        if missing:
            raise SSLTrainError(f"{csv_path} has no column {', '.join(map(repr, missing))} "
                                f"(its columns: {', '.join(reader.fieldnames or [])})")
        mapping = {}
        for row in reader:
            for key in _keys(row[file_column], root):
                mapping.setdefault(key, row[column])
    return [next((mapping[k] for k in _keys(i, None) if k in mapping), UNMAPPED) for i in ids]


def _keys(entry: str, root: str | Path | None) -> list[str]:
    """Ways to name a file: as written, resolved, and resolved below the data root."""
    keys = [entry, str(Path(entry).resolve())]
    if root is not None and not Path(entry).is_absolute():
        keys.append(str((Path(root) / entry).resolve()))
    return keys
