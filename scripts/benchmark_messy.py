"""Data as it really is, on the built-in digits: classes nobody labeled, long-tailed class mixes, and the guard.

    python scripts/benchmark_messy.py                                   # every scenario, 3 seeds
    python scripts/benchmark_messy.py --scenarios open_set --seeds 0 --methods fixmatch iomatch

Scenarios (each a set of `ssl-train` overrides, so any row reproduces as one command line):
- open_set: labeled classes 0-5 at 4 labels each, the unlabeled pool and the test split keep all 10 classes;
  seen-class test accuracy, outlier AUROC (unseen-class test images against seen ones, the method's own outlier
  score; maximum softmax for the closed-set methods) and the share of the pool's unseen-class images that the
  unlabeled loss trained on (the mean weight over training, `train/unseen_mask_ratio`).
- lt_consistent, lt_uniform, lt_reversed: 100 labels long-tailed with ratio 10 (23 of class 0 down to 3 of
  class 9); the unlabeled pool long-tailed the same way, uniform, or reversed. Balanced test accuracy of FixMatch
  without alignment, as configured (Sinkhorn alignment to the labeled mix), aligned to the pool's estimated mix
  (`+pool`), and ACR.
- guard_plain, guard_inverted: the guard on plain digits, and on an unlabeled pool from another domain (the
  same images, inverted), with the labeled, validation and test images of plain digits.

Runs land under runs/benchmark_messy/ and are reused; rows of the earlier messy.json that no run of this command
measures stay in the table. The table goes to docs/results/messy.md.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import benchmark_common as common
import numpy as np

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import digits

SCENARIOS = {
    "open_set": ["data.open_set=[0,1,2,3,4,5]", "data.num_labels=24"],
    "lt_consistent": ["data.num_labels=100", "data.imbalance={labeled:10,unlabeled:10}"],
    "lt_uniform": ["data.num_labels=100", "data.imbalance={labeled:10,unlabeled:1}"],
    "lt_reversed": ["data.num_labels=100", "data.imbalance={labeled:10,unlabeled:10,reverse_unlabeled:true}"],
    "guard_plain": ["guard=true"],
    "guard_inverted": ["guard=true"],  # + the inverted pool's data config (`inverted_pool`)
}
METHODS = {"open_set": ["fixmatch", "iomatch"], "guard_plain": ["fixmatch"], "guard_inverted": ["fixmatch"]}
LONG_TAIL_METHODS = ["fixmatch+noalign", "fixmatch", "fixmatch+pool", "acr"]
VARIANTS = {"pool": common.fixed(["algorithm.alignment.target=pool"])}


def inverted_pool(runs: Path, seed: int) -> list[str]:
    """Overrides for digits whose unlabeled pool is the pool's images inverted (another domain), the labeled,
    validation and test images those of the seed's plain split, as an .npz (data=npz)."""
    dm = SSLDataModule(digits, seed=seed)
    dm.setup()
    images = (dm.source.train.images[:, 0].numpy().astype(np.float64) * 255 / 16).round().astype(np.uint8)
    labels = dm.source.train.labels
    rows = {"train": dm.splits.labeled, "val": dm.splits.val, "test": dm.splits.test, "unlabeled": dm.splits.unlabeled}
    x = np.concatenate([255 - images[i] if name == "unlabeled" else images[i] for name, i in rows.items()])
    path = runs / f"inverted_pool_s{seed}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, y=np.concatenate([labels[i] for i in rows.values()]),
                 split=np.concatenate([[name] * len(i) for name, i in rows.items()]))
    return ["data=npz", f"data.dataset.path={path}", "data.batch_size=32", "data.weak.flip=false"]


def unseen_mask_ratio(run_dir: Path) -> float:
    """The mean over the logged training steps of the weight given to unseen-class pool images."""
    log = run_dir / "csv" / "metrics.csv"
    with log.open() as f:
        values = [float(r["train/unseen_mask_ratio"]) for r in csv.DictReader(f) if r.get("train/unseen_mask_ratio")]
    return statistics.mean(values) if values else float("nan")


def summarize(results: dict[tuple[str, str], list[dict]]) -> list[dict]:
    rows = []
    for (method, scenario), runs in sorted(results.items()):
        def mean(key: str, runs=runs) -> float:
            return statistics.mean(r.get(key, float("nan")) for r in runs)
        accs = [r["test/balanced_acc" if scenario.startswith("lt_") else "test/acc"] for r in runs]
        rows.append({"method": method, "scenario": scenario, "accs": accs, "seeds": [r["seed"] for r in runs],
                     "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "auroc_mean": mean("test/outlier_auroc"), "unseen_mask_mean": mean("unseen_mask_ratio"),
                     "gain_mean": mean("guard/gain"),
                     "flagged": sum(not r["guard/ssl_better"] for r in runs) if "guard/gain" in runs[0] else None,
                     "guard_time_share": mean("guard_time_share"),
                     "time_median": statistics.median(r["train/time_s"] for r in runs)})
    return rows


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    by = {(r["method"], r["scenario"]): r for r in rows}
    out = []
    if ("iomatch", "open_set") in by and ("fixmatch", "open_set") in by:
        gap = by["iomatch", "open_set"]["acc_mean"] - by["fixmatch", "open_set"]["acc_mean"]
        out.append((f"open set: IOMatch seen-class accuracy >= FixMatch's + 2 points ({100 * gap:+.1f})", gap >= 0.02))
        auroc = by["iomatch", "open_set"]["auroc_mean"]
        out.append((f"open set: IOMatch outlier AUROC >= 0.90 ({auroc:.3f})", auroc >= 0.90))
    for scenario in ("lt_uniform", "lt_reversed", "lt_consistent"):
        for method, name in (("acr", "ACR"), ("fixmatch+pool", "pool-target alignment")):
            if (method, scenario) in by and ("fixmatch", scenario) in by:
                gap = by[method, scenario]["acc_mean"] - by["fixmatch", scenario]["acc_mean"]
                need = 0.0 if scenario == "lt_consistent" else 0.03
                out.append((f"{scenario}: {name} >= default FixMatch + {100 * need:.0f} points "
                            f"({100 * gap:+.1f})", gap >= need))
        if ("fixmatch+noalign", scenario) in by and ("fixmatch", scenario) in by:
            gap = by["fixmatch", scenario]["acc_mean"] - by["fixmatch+noalign", scenario]["acc_mean"]
            out.append((f"{scenario}: the default (alignment on) not below FixMatch without alignment "
                        f"({100 * gap:+.1f})", gap >= 0))
    for scenario, want in (("guard_plain", 0), ("guard_inverted", None)):
        if ("fixmatch", scenario) in by:
            r = by["fixmatch", scenario]
            ok = r["flagged"] == 0 if want == 0 else r["flagged"] == len(r["seeds"])
            out.append((f"{scenario}: the guard flags {r['flagged']} of {len(r['seeds'])} seeds "
                        f"(gain {100 * r['gain_mean']:+.1f} points)", ok))
    return out


def write_report(rows: list[dict], out: Path, note: str) -> None:
    intro = [*common.commands(rows), "", common.machine(),
             "Data: scikit-learn 8x8 digits, the default splits of each seed (25% test, 10% validation), reshaped "
             "by the scenario's data options (`data.open_set`, `data.imbalance`); 2,000 steps. Accuracy is the "
             "final EMA weights' test accuracy: seen classes only for open_set, balanced (mean per-class recall) "
             "for the long tails. No setting was chosen on the test split."]
    flagged = lambda r: "–" if r["flagged"] is None else str(r["flagged"])  # noqa: E731
    fmt = lambda key, digits=3: (lambda r: f"{r[key]:.{digits}f}" if r[key] == r[key] else "–")  # noqa: E731
    body = common.table(rows, [("scenario", lambda r: r["scenario"]), ("method", lambda r: r["method"]),
                               ("accuracy (mean ± std)", common.mean_std), ("per seed", common.per_seed),
                               ("outlier AUROC", fmt("auroc_mean")),
                               ("unseen images trained on", fmt("unseen_mask_mean")),
                               ("guard gain", fmt("gain_mean")), ("flagged", flagged),
                               ("guard time share", fmt("guard_time_share", 2)),
                               ("train time (median s)", fmt("time_median", 1))])
    common.write_report(out, "messy", "Messy data benchmark", intro, rows, body, checks(rows), note)


def main() -> None:
    p = common.parser(__doc__, [], common.ROOT / "runs" / "benchmark_messy")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = p.parse_args()
    known = common.defined_variants(args.variant) | VARIANTS
    results: dict[tuple[str, str], list[dict]] = {}
    for scenario in args.scenarios:
        methods = args.methods or METHODS.get(scenario, LONG_TAIL_METHODS)
        common.check_methods(methods, known)
        for seed in args.seeds:
            for method in methods:
                extra = inverted_pool(args.runs, seed) if scenario == "guard_inverted" else []
                run_dir = args.runs / f"{scenario}_{method}_s{seed}"
                metrics = common.run_method(method, run_dir, [*SCENARIOS[scenario], *extra, f"seed={seed}",
                                                              *args.overrides], args.fresh, args.report_only, known)
                if metrics is None:
                    continue
                metrics |= {"seed": seed, "unseen_mask_ratio": unseen_mask_ratio(run_dir)}
                if "guard/time_s" in metrics:
                    metrics["guard_time_share"] = metrics["guard/time_s"] / metrics["train/time_s"]
                results.setdefault((method, scenario), []).append(metrics)
                print(f"{scenario:>14} {method:>18} seed {seed}: {metrics['test/acc']:.4f}", flush=True)
    line = common.command("benchmark_messy.py", [("--scenarios", args.scenarios), ("--seeds", args.seeds)]
                          + ([("--methods", args.methods)] if args.methods else []), args.overrides, args.variant)
    rows = common.with_earlier(summarize(results), "scenario", line, args.out / "messy.json")
    write_report(rows, args.out, args.note)
    print((args.out / "messy.md").read_text())


if __name__ == "__main__":
    main()
