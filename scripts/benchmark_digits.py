"""Accuracy benchmark on the built-in digits: every algorithm against the supervised baseline and LabelSpreading.

    python scripts/benchmark_digits.py                      # 5 methods x {20, 40} labels x 3 seeds
    python scripts/benchmark_digits.py --seeds 0 --labels 40 --methods fixmatch
    python scripts/benchmark_digits.py --methods fixmatch fixmatch+noalign   # a method with variant overrides

Each run is a normal `ssl-train` job (same configs, same splits) whose run
directory lands under runs/benchmark_digits/; finished runs are reused unless
--fresh is given, and rows of the earlier digits.json that no run of this command measures stay in the table.
LabelSpreading (scikit-learn, kNN kernel, k=7) is fitted on
the same labeled + unlabeled pool and scored on the same test split. The table
goes to docs/results/digits.md (and the raw numbers to digits.json). A method may carry `+variant`s
(benchmark_common.py: `+noalign`, `+sinkhorn`, or any defined with --variant NAME=OVERRIDES).
"""

from __future__ import annotations

import time

import benchmark_common as common
import numpy as np
from sklearn.semi_supervised import LabelSpreading

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import digits

METHODS = ["supervised", "pi_model", "mean_teacher", "pseudo_label", "fixmatch"]


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


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    mean = {(r["method"], r["labels"]): r["acc_mean"] for r in rows}
    out = []
    if ("fixmatch", 40) in mean:
        out.append((f"FixMatch >= 0.97 at 40 labels ({mean['fixmatch', 40]:.4f})", mean["fixmatch", 40] >= 0.97))
    if ("fixmatch", 20) in mean:
        out.append((f"FixMatch >= 0.93 at 20 labels ({mean['fixmatch', 20]:.4f})", mean["fixmatch", 20] >= 0.93))
    out += common.above_baseline(rows, "labels", "labels")
    if ("fixmatch", 40) in mean and ("label_spreading", 40) in mean:
        gap = mean["fixmatch", 40] - mean["label_spreading", 40]
        out.append((f"FixMatch >= 5 points above LabelSpreading at 40 labels ({100 * gap:+.1f} points)", gap >= 0.05))
    return out


def write_report(rows: list[dict], out, note: str = "") -> None:
    intro = [*common.commands(rows), "", common.machine(),
             "Data: scikit-learn 8x8 digits, 25% stratified test split (450 images), 10% validation, "
             "labels drawn per class from the rest; every method of a seed sees the same split. "
             "Test accuracy is measured on the final EMA weights (`test_checkpoint=last`, as FixMatch reports); "
             "the best-validation checkpoint's test accuracy is shown beside it."]
    body = common.table(rows, [("method", lambda r: r["method"]), ("labels", lambda r: str(r["labels"])),
                               ("test acc (mean ± std)", common.mean_std), ("per seed", common.per_seed),
                               common.column("best-val ckpt acc (mean)", "alt_mean"),
                               common.column("macro-F1", "f1_mean"), common.column("ECE", "ece_mean"),
                               common.column("train time (median s)", "time_median", 1)])
    common.write_report(out, "digits", "Digits benchmark", intro, rows, body, checks(rows), note)


def main() -> None:
    p = common.parser(__doc__, METHODS, common.ROOT / "runs" / "benchmark_digits")
    p.add_argument("--labels", nargs="+", type=int, default=[20, 40])
    args = p.parse_args()
    known = common.defined_variants(args.variant)
    common.check_methods(args.methods, known)

    results: dict[tuple[str, int], list[dict]] = {}
    for labels in args.labels:
        for seed in args.seeds:
            results.setdefault(("label_spreading", labels), []).append(label_spreading(labels, seed) | {"seed": seed})
            for method in args.methods:
                metrics = common.run_method(method, args.runs / f"{method}_{labels}_s{seed}",
                                            [f"data.num_labels={labels}", f"seed={seed}", *args.overrides],
                                            args.fresh, args.report_only, known)
                if metrics is None:
                    continue
                results.setdefault((method, labels), []).append(metrics | {"seed": seed})
                print(f"{method:>14} {labels:>3} labels seed {seed}: test acc {metrics['test/acc']:.4f}", flush=True)
    line = common.command("benchmark_digits.py", [("--methods", args.methods), ("--labels", args.labels),
                                                  ("--seeds", args.seeds)], args.overrides, args.variant)
    rows = common.with_earlier(common.summarize(results, "labels"), "labels", line, args.out / "digits.json")
    write_report(rows, args.out, args.note)
    print((args.out / "digits.md").read_text())


if __name__ == "__main__":
    main()
