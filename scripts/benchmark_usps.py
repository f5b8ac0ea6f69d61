"""Accuracy benchmark on USPS (11,000 real 16×16 handwritten digits): 100 labels, every method, two step budgets.

    python scripts/benchmark_usps.py                        # 17 method rows x {2000, 6000} steps x 3 seeds
    python scripts/benchmark_usps.py --methods supervised fixmatch --seeds 0 --budgets 200 --out /tmp/usps

The protocol, fixed by the seed s: 2,000 test images (stratified), 10 labeled training images per class (100),
20 labeled validation images per class (200, not taken from the 100) and the other 8,700 images unlabeled (their
labels hidden: y = -1). It is written as an .npz with a split column to <runs>/data/usps_s<s>.npz and read by
`data=npz`. Every run is a normal `ssl-train` job: SmallCNN 16/32/64, 16×16 images, B = 16 labeled and
mu·B = 112 unlabeled per step, no flip (a mirrored digit is another glyph); runs land under runs/benchmark_usps/
and are reused once finished (--fresh retrains); rows of the earlier usps.json that no run of this command
measures stay in the table. A method may carry `+variant`s (benchmark_common.py:
`+noalign`, `+sinkhorn`, or any defined with --variant NAME=OVERRIDES). The table goes to docs/results/usps.md
(the raw numbers to usps.json).

The data is not part of ssl_train: --data names it (default ../shared/data/usps.npz from the repository root,
arrays x uint8 N×16×16 and y).
"""

from __future__ import annotations

from pathlib import Path

import benchmark_common as common
import numpy as np

from ssl_train.data.datasets import npz
from ssl_train.data.splits import carve, sample_labeled
from ssl_train.errors import SSLTrainError
from ssl_train.io import write_atomic

METHODS = ["supervised", "fixmatch", "flexmatch", "freematch", "softmatch", "uda", "mixmatch", "simmatch",
           "adamatch", "pi_model", "mean_teacher", "pseudo_label",
           # alignment on (as configured) against off, and SoftMatch with FixMatch's Sinkhorn alignment
           "fixmatch+noalign", "flexmatch+noalign", "freematch+noalign", "softmatch+noalign", "softmatch+sinkhorn"]
DATA = common.ROOT.parent / "shared" / "data" / "usps.npz"
TRAINING = ["data=npz", "data.num_labels=null", "data.batch_size=16", "data.weak.flip=false", "model=cnn",
            "model.widths=[16,32,64]"]


def protocol(y: np.ndarray, seed: int, test: int = 2000, labeled: int = 10, val: int = 20) -> np.ndarray:
    """The split of each image: `test` images stratified, then `labeled` and `val` images per class (disjoint),
    the rest "unlabeled"; all drawn by `seed` (splits.py, the draws the data module itself makes)."""
    classes = len(np.unique(y))
    pool, test_rows = carve(np.arange(len(y)), y, test, seed, key="--test")
    val_rows = sample_labeled(y, pool, val * classes, classes, seed + 1)
    train_rows = sample_labeled(y, np.setdiff1d(pool, val_rows), labeled * classes, classes, seed + 2)
    split = np.full(len(y), "unlabeled", dtype="<U9")
    split[test_rows], split[val_rows], split[train_rows] = "test", "val", "train"
    return split


def prepare(data: Path, seed: int, folder: Path, **sizes: int) -> Path:
    """folder/usps_s<seed>.npz: the images of `data` with the protocol's split (`sizes`: its counts) and the
    unlabeled labels hidden."""
    try:
        source = npz(str(data))
    except SSLTrainError as exc:
        raise SystemExit(f"error: USPS data: {exc} (--data PATH)") from None
    if any(part is not None for part in (source.val, source.test, source.unlabeled)):
        raise SystemExit(f"error: {data}: expected labeled images only (no split column, no y = -1): the "
                         f"benchmark draws its own splits")
    y = source.train.labels
    split = protocol(y, seed, **sizes)
    arrays = {"x": source.train.images.permute(0, 2, 3, 1).numpy(), "y": np.where(split == "unlabeled", -1, y),
              "split": split, "classes": np.array(source.classes)}
    return write_atomic(folder / f"usps_s{seed}.npz", lambda tmp: np.savez_compressed(tmp, **arrays))


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    """Every method above supervised at every budget; the best method at the smallest budget against FixMatch
    at 3x that budget (within 1 point) and against FixMatch's spread at the same budget (half of it or less)."""
    out = common.above_baseline(rows, "steps", "steps")
    row = {(r["method"], r["steps"]): r for r in rows}
    base = min(r["steps"] for r in rows)
    candidates = [r for r in rows if r["steps"] == base and r["method"] != "supervised"]
    if not candidates:
        return out
    best = max(candidates, key=lambda r: r["acc_mean"])
    name = f"best method at {base} steps ({best['method']}, {best['acc_mean']:.4f})"
    if ("fixmatch", 3 * base) in row:
        target = row["fixmatch", 3 * base]["acc_mean"] - 0.01
        out.append((f"{name} >= FixMatch at {3 * base} steps minus 1 point ({target:.4f})",
                    best["acc_mean"] >= target))
    if ("fixmatch", base) in row and len(best["accs"]) > 1:
        half = row["fixmatch", base]["acc_std"] / 2
        out.append((f"its std ({best['acc_std']:.4f}) <= half of FixMatch's at {base} steps ({half:.4f})",
                    best["acc_std"] <= half))
    return out


def write_report(rows: list[dict], out: Path, note: str = "") -> Path:
    intro = [*common.commands(rows), "", common.machine(),
             "Data: USPS, 11,000 16×16 handwritten digits (J. J. Hull, 1994; `usps.npz`, not shipped). Per seed s: "
             "2,000 stratified test images, 100 labeled training images (10 per class), a labeled validation set "
             "of 200 (20 per class, disjoint from the 100) and 8,700 unlabeled images with their labels hidden, "
             "read through `data=npz`; every method of a seed sees the same split. "
             "SmallCNN 16/32/64, B = 16 labeled + 112 unlabeled per step, no flip, each method's own config. "
             "Test accuracy is that of the final EMA weights (`test_checkpoint=last`); val acc is the same "
             "weights on the 200 validation images."]
    body = common.table(rows, [("method", lambda r: r["method"]), ("steps", lambda r: str(r["steps"])),
                               ("test acc (mean ± std)", common.mean_std), ("per seed", common.per_seed),
                               common.column("val acc (mean)", "val_mean"),
                               common.column("train time (median s)", "time_median", 1)])
    variants = common.variants_table(rows, "steps")
    if variants:
        body += ["", "## Variants", "",
                 "Test accuracy (mean ± std over seeds) of each method as configured and with its variants: "
                 "`+noalign` turns distribution alignment off (`algorithm.alignment=null`), `+sinkhorn` uses "
                 "FixMatch's Sinkhorn alignment (SoftMatch's own is the uniform ratio).", "", *variants]
    return common.write_report(out, "usps", "USPS benchmark", intro, rows, body, checks(rows), note)


def main() -> None:
    p = common.parser(__doc__, METHODS, common.ROOT / "runs" / "benchmark_usps")
    p.add_argument("--budgets", nargs="+", type=int, default=[2000, 6000], help="trainer.max_steps of the runs")
    p.add_argument("--data", type=Path, default=DATA, help="usps.npz (x uint8 N×16×16, y digit 0-9)")
    args = p.parse_args()
    if not args.report_only and not args.data.is_file():
        raise SystemExit(f"error: USPS data {args.data} not found (--data PATH: an .npz with x uint8 N×16×16 and y)")
    known = common.defined_variants(args.variant)
    common.check_methods(args.methods, known)

    results: dict[tuple[str, int], list[dict]] = {}
    for seed in args.seeds:
        data = None if args.report_only else prepare(args.data, seed, args.runs / "data")
        for steps in args.budgets:
            for method in args.methods:
                overrides = [*TRAINING, f"data.dataset.path={data}", f"trainer.max_steps={steps}", f"seed={seed}",
                             *args.overrides]
                metrics = common.run_method(method, args.runs / f"{method}_{steps}_s{seed}", overrides, args.fresh,
                                            args.report_only, known)
                if metrics is None:
                    continue
                results.setdefault((method, steps), []).append(metrics | {"seed": seed})
                print(f"{method:>20} {steps:>5} steps seed {seed}: test acc {metrics['test/acc']:.4f}", flush=True)
    line = common.command("benchmark_usps.py", [("--methods", args.methods), ("--budgets", args.budgets),
                                                ("--seeds", args.seeds)], args.overrides, args.variant)
    rows = common.with_earlier(common.summarize(results, "steps"), "steps", line, args.out / "usps.json")
    print(write_report(rows, args.out, args.note).read_text())


if __name__ == "__main__":
    main()
