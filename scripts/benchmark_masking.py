"""Per-step training cost of each masking part (and alignment on or off) against FixMatch's fixed threshold, CPU.

    python scripts/benchmark_masking.py                          # 200 timed steps, 3 repeats, 1 thread
    python scripts/benchmark_masking.py --alignments sinkhorn ratio off --steps 50

Each row is the default `ssl-train` configuration (built-in digits, 40 labels, SmallCNN, B=32, mu=7) with
`algorithm/masking=<part>` and `algorithm/alignment=<alignment>` (`off`: `algorithm.alignment=null`), built by
`ssl_train.run.training.build` and trained by Lightning's `trainer.fit` with validation, checkpoints and loggers
off. A repeat's figures are the mean process CPU time and wall time per step (between training-batch ends, data
loading included) over the timed steps after the warm-up; the table gives their medians over the repeats, which
go round-robin over the rows, and the ratio of CPU times to FixMatch's (the fixed threshold with the same
alignment). With one torch thread and the data loaded in the training process, CPU time is the work a step does,
which other jobs on the machine disturb far less than wall time. "part alone" is the CPU time of the parts by
themselves (alignment, masking and its penalty on a step's batch of logits, 500 calls) and what a part adds to
fixed's, as a share of fixed's step. Target: every masking part within 10% of FixMatch's per-step cost.

The table goes to docs/results/masking.md (raw numbers: masking.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from ssl_train.export.measure import cpu_name
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose
from ssl_train.run.training import build

ROOT = Path(__file__).resolve().parent.parent
MASKINGS = ["fixed", "curriculum", "self_adaptive", "truncated_gaussian", "relative"]
ALIGNMENTS = ["sinkhorn", "ratio", "off"]  # sinkhorn: fixmatch.yaml's default; off: algorithm.alignment=null
QUIET = ["trainer.accelerator=cpu", "trainer.val_check_interval=1000000", "+trainer.enable_checkpointing=false",
         "+trainer.limit_val_batches=0", "trainer.enable_progress_bar=false", "~logger", "~callbacks", "test=false",
         "paths.output_dir=runs/benchmark_masking"]


def overrides(masking: str, alignment: str, total_steps: int) -> list[str]:
    align = ["algorithm.alignment=null"] if alignment == "off" else [f"algorithm/alignment={alignment}"]
    return [f"algorithm/masking={masking}", *align, f"trainer.max_steps={total_steps}", *QUIET]


class StepTimer(L.Callback):
    def __init__(self):
        self.stamps: list[tuple[float, float]] = []  # (CPU time, wall time)

    def on_train_batch_end(self, *args):
        self.stamps.append((time.process_time(), time.perf_counter()))


def step_seconds(masking: str, alignment: str, warmup: int, steps: int) -> tuple[float, float]:
    """Mean (CPU, wall) seconds per training step over `steps` steps after `warmup` (one fresh run)."""
    datamodule, model, trainer = build(compose("config", overrides(masking, alignment, warmup + steps)))
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    (cpu0, wall0), (cpu1, wall1) = timer.stamps[warmup - 1], timer.stamps[warmup + steps - 1]
    return (cpu1 - cpu0) / steps, (wall1 - wall0) / steps


def part_seconds(masking: str, alignment: str, calls: int = 500) -> float:
    """CPU seconds per call of the parts alone (alignment, masking, penalty) on a step's batch of logits."""
    datamodule, model, _ = build(compose("config", overrides(masking, alignment, 1)))
    datamodule.setup("fit")
    for part in model.parts().values():
        part.bind(datamodule)
    g = torch.Generator().manual_seed(0)
    n_ulb, n_lb = datamodule.batch_size * datamodule.mu, datamodule.batch_size
    logits_lb, logits_weak, logits_strong = (torch.randn(n, datamodule.num_classes, generator=g)
                                             for n in (n_lb, n_ulb, n_ulb))
    idx = torch.randperm(len(datamodule.unlabeled), generator=g)[:n_ulb]
    stamps = []
    for _ in range(calls + 20):
        _, weights, _ = model.pseudo_targets(logits_lb, logits_weak, idx)
        model.masking.penalty(logits_strong, weights)
        stamps.append(time.process_time())
    return (stamps[-1] - stamps[19]) / calls


def machine() -> str:
    return f"{cpu_name()}, {torch.get_num_threads()} torch thread(s); torch {torch.__version__}"


def write_report(results: dict, out: Path) -> None:
    lines = [
        "# Masking parts: per-step training cost", "",
        f"Command: `{results['command']}`", "",
        f"Machine: {results['machine']}. FixMatch on the built-in digits, default config (SmallCNN, B=32, mu=7: "
        f"480 images per step); mean step time over {results['steps']} steps after {results['warmup']} warm-up "
        f"steps, median of {results['repeats']} repeats (round-robin over the rows). Load average (1 min) "
        f"{results['load_before']:.2f} before, {results['load_after']:.2f} after.", "",
        "| masking | alignment | CPU ms/step | range (ms) | ratio to fixed | wall ms/step | part alone (us/call) "
        "| part added to fixed's step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        cpu = [s * 1e3 for s in row["cpu_repeats_s"]]
        lines.append(f"| {row['masking']} | {row['alignment']} | {row['cpu_s'] * 1e3:.2f} | "
                     f"{min(cpu):.2f}-{max(cpu):.2f} | {row['ratio']:.3f} | {row['wall_s'] * 1e3:.2f} | "
                     f"{row['part_s'] * 1e6:.0f} | {row['part_added'] * 100:+.2f}% |")
    worst = max((r for r in results["rows"] if r["masking"] != "fixed"), key=lambda r: r["ratio"], default=None)
    if worst:
        lines += ["", f"Largest ratio: {worst['ratio']:.3f} ({worst['masking']}, alignment {worst['alignment']}); "
                  f"target: every masking part <= 1.10."]
    if results.get("note"):
        lines += ["", results["note"]]
    write_text_atomic(out / "masking.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "masking.json", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maskings", nargs="*", default=MASKINGS, choices=MASKINGS)
    parser.add_argument("--alignments", nargs="*", default=["sinkhorn", "off"], choices=ALIGNMENTS)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for every row)")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    torch.set_num_threads(args.threads)
    maskings = list(dict.fromkeys(["fixed", *args.maskings]))
    grid = [(m, a) for a in args.alignments for m in maskings]
    load_before = os.getloadavg()[0]
    timings = {key: [] for key in grid}
    for repeat in range(args.repeats):
        for key in grid:
            timings[key].append(step_seconds(*key, args.warmup, args.steps))
            cpu, wall = timings[key][-1]
            print(f"repeat {repeat + 1}: {key[0]}, alignment {key[1]}: {cpu * 1e3:.2f} CPU ms/step, "
                  f"{wall * 1e3:.2f} wall ms/step", flush=True)
    cpu = {key: statistics.median(c for c, _ in times) for key, times in timings.items()}
    parts = {key: part_seconds(*key) for key in grid}
    rows = [{"masking": m, "alignment": a, "cpu_s": cpu[m, a], "cpu_repeats_s": [c for c, _ in timings[m, a]],
             "wall_s": statistics.median(w for _, w in timings[m, a]), "wall_repeats_s": [w for _, w in timings[m, a]],
             "ratio": cpu[m, a] / cpu["fixed", a], "part_s": parts[m, a],
             "part_added": (parts[m, a] - parts["fixed", a]) / cpu["fixed", a]} for m, a in grid]
    results = {
        "command": "python scripts/benchmark_masking.py " + " ".join(
            ["--maskings", *args.maskings, "--alignments", *args.alignments, f"--warmup {args.warmup}",
             f"--steps {args.steps}", f"--repeats {args.repeats}", f"--threads {args.threads}"]),
        "machine": machine(), "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads, "load_before": load_before, "load_after": os.getloadavg()[0], "rows": rows,
        "note": args.note,
    }
    write_report(results, args.out)
    print((args.out / "masking.md").read_text())


if __name__ == "__main__":
    main()
