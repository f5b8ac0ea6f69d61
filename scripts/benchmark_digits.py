"""Accuracy benchmark on the built-in digits: every algorithm against the supervised baseline and LabelSpreading.

    python scripts/benchmark_digits.py                      # 5 methods x {20, 40} labels x 3 seeds
    python scripts/benchmark_digits.py --seeds 0 --labels 40 --methods fixmatch

Each run is a normal `ssl-train` job (same configs, same splits) whose run
directory lands under runs/benchmark_digits/; finished runs are reused unless
--fresh is given. LabelSpreading (scikit-learn, kNN kernel, k=7) is fitted on
the same labeled + unlabeled pool and scored on the same test split. The table
goes to docs/results/digits.md (and the raw numbers to digits.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.semi_supervised import LabelSpreading

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import digits
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose
from ssl_train.run.training import train

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["supervised", "pi_model", "mean_teacher", "pseudo_label", "fixmatch"]


def run_method(method: str, labels: int, seed: int, out: Path, fresh: bool, extra: list[str],
               report_only: bool = False) -> dict | None:
    run_dir = out / f"{method}_{labels}_s{seed}"
    if (run_dir / "metrics.json").is_file() and not fresh:
        return json.loads((run_dir / "metrics.json").read_text())
    if report_only:
        return None
    cfg = compose("config", [f"algorithm={method}", f"data.num_labels={labels}", f"seed={seed}",
                             f"paths.output_dir={run_dir}", "trainer.enable_progress_bar=false", *extra])
    return train(cfg)


def label_spreading(labels: int, seed: int) -> dict:
    """LabelSpreading on exactly the split that the SSL runs of this seed use (pixels / 16 as features)."""
    dm = SSLDataModule(digits, num_labels=labels, seed=seed)
    dm.setup()
    x = dm.source.train.images.reshape(len(dm.source.train), -1).numpy() / 16
    y = dm.source.train.labels
    pool = np.concatenate([dm.splits.labeled, dm.splits.unlabeled])
    targets = np.full(len(pool), -1)
    targets[: len(dm.splits.labeled)] = y[dm.splits.labeled]
    start = time.perf_counter()
    model = LabelSpreading(kernel="knn", n_neighbors=7, max_iter=1000).fit(x[pool], targets)
    accuracy = float((model.predict(x[dm.splits.test]) == y[dm.splits.test]).mean())
    return {"test/acc": accuracy, "train/time_s": time.perf_counter() - start}


def summarize(results: dict) -> list[dict]:
    rows = []
    for (method, labels), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        accs = [r["test/acc"] for r in runs]
        rows.append({"method": method, "labels": labels, "acc_mean": statistics.mean(accs),
                     "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs,
                     "alt_mean": statistics.mean(r.get("test_alt/acc", float("nan")) for r in runs),
                     "f1_mean": statistics.mean(r.get("test/f1_macro", float("nan")) for r in runs),
                     "ece_mean": statistics.mean(r.get("test/ece", float("nan")) for r in runs),
                     "time_median": statistics.median(r["train/time_s"] for r in runs),
                     "seeds": [r["seed"] for r in runs]})
    return rows


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    mean = {(r["method"], r["labels"]): r["acc_mean"] for r in rows}
    out = []
    if ("fixmatch", 40) in mean:
        out.append((f"FixMatch >= 0.97 at 40 labels ({mean['fixmatch', 40]:.4f})", mean["fixmatch", 40] >= 0.97))
    if ("fixmatch", 20) in mean:
        out.append((f"FixMatch >= 0.93 at 20 labels ({mean['fixmatch', 20]:.4f})", mean["fixmatch", 20] >= 0.93))
    for (method, labels), acc in sorted(mean.items()):
        if method not in ("supervised", "label_spreading") and ("supervised", labels) in mean:
            base = mean["supervised", labels]
            out.append((f"{method} above supervised at {labels} labels ({acc:.4f} vs {base:.4f})", acc > base))
    if ("fixmatch", 40) in mean and ("label_spreading", 40) in mean:
        gap = mean["fixmatch", 40] - mean["label_spreading", 40]
        out.append((f"FixMatch >= 5 points above LabelSpreading at 40 labels ({100 * gap:+.1f} points)", gap >= 0.05))
    return out


def write_report(rows: list[dict], command: str, out: Path, note: str = "") -> None:
    lines = ["# Digits benchmark", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}.",
             "Data: scikit-learn 8x8 digits, 25% stratified test split (450 images), 10% validation, "
             "labels drawn per class from the rest; every method of a seed sees the same split. "
             "Test accuracy is measured on the final EMA weights (`test_checkpoint=last`, as FixMatch reports); "
             "the best-validation checkpoint's test accuracy is shown beside it.", "",
             "| method | labels | test acc (mean ± std) | per seed | best-val ckpt acc (mean) | macro-F1 | ECE "
             "| train time (median s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"s{seed}: {a:.4f}" for seed, a in zip(r["seeds"], r["accs"]))
        f1 = f"{r['f1_mean']:.4f}" if r["f1_mean"] == r["f1_mean"] else "–"
        ece = f"{r['ece_mean']:.4f}" if r["ece_mean"] == r["ece_mean"] else "–"
        alt = f"{r['alt_mean']:.4f}" if r["alt_mean"] == r["alt_mean"] else "–"
        lines.append(f"| {r['method']} | {r['labels']} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} | {per_seed} "
                     f"| {alt} | {f1} | {ece} | {r['time_median']:.1f} |")
    lines += ["", "## Targets", ""] + [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks(rows)]
    if note:
        lines += ["", "## Notes", "", note]
    write_text_atomic(out / "digits.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "digits.json", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--labels", nargs="+", type=int, default=[20, 40])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "benchmark_digits")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already have metrics.json")
    parser.add_argument("--note", default="", help="a paragraph appended to the report")
    parser.add_argument("--report-only", action="store_true", help="tabulate finished runs, train nothing")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_steps=500")
    args = parser.parse_args()

    results: dict[tuple[str, int], list[dict]] = {}
    for labels in args.labels:
        for seed in args.seeds:
            results.setdefault(("label_spreading", labels), []).append(label_spreading(labels, seed) | {"seed": seed})
            for method in args.methods:
                metrics = run_method(method, labels, seed, args.runs, args.fresh, args.overrides, args.report_only)
                if metrics is None:
                    continue
                results.setdefault((method, labels), []).append(metrics | {"seed": seed})
                print(f"{method:>14} {labels:>3} labels seed {seed}: test acc {metrics['test/acc']:.4f}", flush=True)
    # The command that trains these runs (a --report-only table reproduces with it too).
    command = "python scripts/benchmark_digits.py " + " ".join(
        [f"--methods {' '.join(args.methods)}", f"--labels {' '.join(map(str, args.labels))}",
         f"--seeds {' '.join(map(str, args.seeds))}", *args.overrides])
    write_report(summarize(results), command, args.out, args.note)
    print((args.out / "digits.md").read_text())


if __name__ == "__main__":
    main()
