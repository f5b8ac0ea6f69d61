"""Export benchmark: fp32 vs int8 accuracy, file size and CPU latency, and a distilled student, against the targets.

    python scripts/benchmark_export.py                  # digits (default CNN), WRN-28-2 on synthetic
    python scripts/benchmark_export.py --setups digits  # one setup
    python scripts/benchmark_export.py --fresh          # retrain instead of reusing finished runs

Each setup is a normal `ssl-train` run (reused when its metrics.json exists),
exported with `export_checkpoint` as `ssl-export` does; on digits a student is
also distilled with the default `ssl-distill` config. Targets (issue 3): int8 within 1
point of fp32 accuracy; int8 file at most 1/3.5 of the fp32 file; int8 at least
2x faster than fp32 eager at batch 64 on CPU; a student with at most 1/4 of the
teacher's parameters within 1.5 points of the teacher on digits.
The table goes to docs/results/export.md (raw numbers: export.json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from hydra.utils import instantiate

from ssl_train.export.card import arguments, artifact_table
from ssl_train.export.distill import distill
from ssl_train.export.measure import threads
from ssl_train.export.pipeline import export_checkpoint
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose
from ssl_train.run.training import train

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["trainer.enable_progress_bar=false"]
# WRN-28-2 on a CPU: supervised, small batches. The targets are relative to fp32, but the model must be a
# real one: WRN's batch norm momentum is 0.001 (FixMatch's), so its running statistics need a few thousand
# steps to converge (after 150 steps the eval-mode model is at chance); EMA 0.99 follows them closely.
SETUPS = {
    "digits": {"train": [], "distill": True,
               "title": "digits, FixMatch, default config (40 labels, 2000 steps)"},
    "synthetic_wrn28_2": {"train": ["data=synthetic", "model=wrn28_2", "algorithm=supervised", "data.num_labels=1000",
                                    "data.batch_size=8", "trainer.max_steps=4000", "trainer.val_check_interval=1000",
                                    "algorithm.ema_decay=0.99"], "distill": False,
                          "title": "synthetic 3x32x32 (2,000 images, 10 classes), WRN-28-2, supervised, "
                                   "1,000 labels, batch 8, 4000 steps"},
}


def compose_config(name: str, overrides: list[str]):
    return compose(name, overrides)


def trained(run_dir: Path, overrides: list[str], fresh: bool) -> Path:
    """The final checkpoint (last.ckpt: the weights behind the run's test/* metrics) of a (reused) ssl-train run.

    Training runs on one thread: it changes no result, and on a small shared machine oversubscribed
    threads make it several times slower. Latency is measured afterwards at the machine's thread count.
    """
    if fresh or not (run_dir / "metrics.json").is_file():
        with threads(1):
            train(compose_config("config", [*overrides, *QUIET, f"paths.output_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def run_setup(name: str, runs: Path, fresh: bool, latency_threads: int) -> dict:
    setup = SETUPS[name]
    ckpt = trained(runs / name / "train", setup["train"], fresh)
    result = {"title": setup["title"], "export": exported(ckpt, runs / name / "export", latency_threads)}
    if setup["distill"]:
        result["distill"] = distilled(ckpt, runs / name / "distill", fresh, latency_threads)
    return result


def exported(ckpt: Path, out_dir: Path, latency_threads: int) -> dict:
    """`ssl-export`'s default artifacts of `ckpt` (always redone: timings belong to this run of the benchmark)."""
    cfg = compose_config("export", [f"ckpt_path={ckpt}", f"export.latency_threads={latency_threads}"])
    return export_checkpoint(ckpt, out_dir, instantiate(cfg.export))


def distilled(teacher: Path, run_dir: Path, fresh: bool, latency_threads: int) -> dict:
    """The default ssl-distill run from `teacher` (reused when finished): its distill.json plus the export."""
    if fresh or not (run_dir / "distill.json").is_file():
        with threads(1):
            distill(compose_config("distill", [f"teacher_ckpt={teacher}", *QUIET, "export_student=false",
                                               f"paths.output_dir={run_dir}"]))
    summary = json.loads((run_dir / "distill.json").read_text())
    return summary | {"export": exported(Path(summary["student"]["checkpoint"]), run_dir, latency_threads)}


def checks(results: dict) -> list[tuple[str, bool]]:
    out = []
    for name, result in results.items():
        meta = result["export"]
        fp32, int8 = meta["artifacts"]["model.ts"], meta["artifacts"]["model_int8.ts"]
        drop = 100 * (meta["reference"]["acc"] - int8["acc"])
        size = fp32["size_bytes"] / int8["size_bytes"]
        speed = meta["reference"]["latency_ms"]["64"] / int8["latency_ms"]["64"]
        out += [(f"{name}: int8 within 1 point of fp32 accuracy ({-drop:+.2f} points)", drop <= 1.0),
                (f"{name}: int8 file at most 1/3.5 of fp32 (1/{size:.2f}; beyond one byte per parameter it holds "
                 f"{(int8['size_bytes'] - meta['model']['num_parameters']) / 1024:.1f} KiB that do not shrink: code, "
                 "quantization parameters, fp32 biases and unfused norms, zip records)", size >= 3.5),
                (f"{name}: int8 at least 2x faster than fp32 eager at batch 64 ({speed:.2f}x)", speed >= 2.0)]
        if "distill" in result:
            d = result["distill"]
            out += [(f"{name}: student has at most 1/4 of the teacher's parameters "
                     f"({d['student']['parameters']:,} / {d['teacher']['parameters']:,} = {d['parameter_ratio']:.3f})",
                     d["parameter_ratio"] <= 0.25),
                    (f"{name}: student within 1.5 points of the teacher "
                     f"({d['student']['acc']:.4f} vs {d['teacher']['acc']:.4f}, {100 * d['acc_change']:+.2f} points)",
                     d["acc_change"] >= -0.015)]
    return out


def relative(path: str) -> str:
    return str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else path


def write_report(results: dict, command: str, out: Path) -> None:
    any_meta = next(iter(results.values()))["export"]
    latency = any_meta["export"]["latency"]
    lines = ["# Export benchmark", "", f"Command: `{command}`", "",
             f"Machine: {latency['cpu']}; latency measured on {latency['threads']} torch thread(s) (median of "
             f"{latency['repeats']} runs after {latency['warmup']} warm-up), torch {any_meta['export']['torch']}, "
             f"load average at the end {os.getloadavg()[0]:.1f}.",
             "Latency is wall time, so it depends on what else the machine runs: with several threads a parallel "
             "region waits for its slowest thread, and on a busy machine the timings of small models measure the "
             "scheduler; `--threads 1` keeps them stable.",
             "Accuracy, macro-F1 and ECE on each run's test split, each artifact loaded back from its file; "
             "int8 = FX static post-training quantization (x86 engine) calibrated on 512 unlabeled images.", ""]
    for result in results.values():
        meta = result["export"]
        model = meta["training"]
        lines += [f"## {result['title']}", "", f"Checkpoint `{relative(meta['source_checkpoint']['path'])}`: "
                  f"{model['model']}{arguments(model['model_args'])}, {meta['model']['num_parameters']:,} parameters.",
                  "", artifact_table(meta), ""]
        if "distill" in result:
            d = result["distill"]
            student = d["export"]["training"]
            hyper = {k: v for k, v in student["algorithm_args"].items() if k != "teacher_ckpt"}
            lines += [f"Distilled student (`ssl-distill` defaults, labeled + unlabeled data): {student['model']}"
                      f"{arguments(student['model_args'])}, {student['algorithm']}{arguments(hyper)}, "
                      f"{student['max_steps']} steps.", "",
                      "| model | parameters | test acc | macro-F1 | ECE |", "|---|---|---|---|---|"]
            lines += [f"| {role} | {d[role]['parameters']:,} | {d[role]['acc']:.4f} | {d[role]['f1_macro']:.4f} "
                      f"| {d[role]['ece']:.4f} |" for role in ("teacher", "student")]
            lines += ["", "Student artifacts:", "", artifact_table(d["export"]), ""]
    lines += ["## Targets", ""] + [f"- [{'x' if ok else ' '}] {text}" for text, ok in checks(results)]
    write_text_atomic(out / "export.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "export.json", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads while timing (default: this machine's setting)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "benchmark_export")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already have metrics.json")
    args = parser.parse_args()

    results = {name: run_setup(name, args.runs, args.fresh, args.threads) for name in args.setups}
    command = f"python scripts/benchmark_export.py --setups {' '.join(args.setups)} --threads {args.threads}"
    write_report(results, command, args.out)
    print((args.out / "export.md").read_text())


if __name__ == "__main__":
    main()
