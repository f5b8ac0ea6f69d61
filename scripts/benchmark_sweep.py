"""Sweep benchmark: an 8-trial Optuna search of FixMatch on digits, one trial at a time and two at a time.

    python scripts/benchmark_sweep.py                  # both, 300 steps per trial
    python scripts/benchmark_sweep.py --steps 200      # a shorter budget

Each setup is the real command, `ssl-train -m hparams_search=fixmatch hydra.sweeper.n_trials=8 ...` (the default
config otherwise: CNN, 40 labels, every callback), started fresh in runs/benchmark_sweep/<setup>/:
- serial: Hydra's basic launcher, trials one after another in the sweep's process;
- parallel: `cluster=local hydra.sweeper.n_jobs=2`, two trials at a time as submitit processes;
each trial process on one torch thread.
Reported: per-trial time (median of the jobs' spans), the sweep's wall time, the start-up before the first job,
the sweeper's own time per trial (the median gap between the running jobs ending and the next job starting:
telling, the summary and plot, sampling, composing), and the best trial by validation
accuracy (`val/acc_best`, the value the study maximizes; test accuracy is shown for the chosen trial only, never
used to choose). The table goes to docs/results/sweep.md (raw numbers: sweep.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ssl_train.io import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
# One torch thread per trial process in both: on a 2-core machine shared with other work, two threads per process
# mostly contend; the parallel setup then uses the second core by running a second trial.
SETUPS = {
    "serial": {"overrides": [], "env": {"OMP_NUM_THREADS": "1"}},
    "parallel": {"overrides": ["cluster=local", "hydra.sweeper.n_jobs=2"], "env": {"OMP_NUM_THREADS": "1"}},
}


def run_setup(name: str, steps: int, trials: int) -> dict:
    sweep_dir = ROOT / "runs" / "benchmark_sweep" / name
    shutil.rmtree(sweep_dir, ignore_errors=True)
    overrides = ["hparams_search=fixmatch", f"hydra.sweeper.n_trials={trials}",
                 "hydra.sweeper.sampler.n_startup_trials=4",
                 f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps // 3}",
                 "trainer.enable_progress_bar=false",
                 *SETUPS[name]["overrides"], f"hydra.sweep.dir={sweep_dir}"]
    # The plugin sits at the top of the checkout (hydra_plugins/); on the path in case the install predates it.
    env = {**os.environ, **SETUPS[name]["env"],
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    load = os.getloadavg()[0]
    start, started = time.time(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ssl_train.train", "-m", *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{name}: the sweep failed\n{result.stderr[-3000:]}")
    study = optuna.load_study(study_name="fixmatch", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    metrics = {t.number: json.loads((sweep_dir / str(t.number) / "metrics.json").read_text()) for t in done}
    # A job's own span: Hydra saves its config when the job starts; metrics.json is written last.
    spans = sorted(((sweep_dir / str(t.number) / ".hydra" / "config.yaml").stat().st_mtime,
                    (sweep_dir / str(t.number) / "metrics.json").stat().st_mtime) for t in done)
    # The sweeper's (and launcher's) time per batch: from the last running job's end to the next job's start.
    gaps = [begin - max(end for _, end in spans[:i]) for i, (begin, _) in enumerate(spans) if i]
    best = study.best_trial
    return {
        "setup": name, "overrides": overrides, "env": SETUPS[name]["env"], "load_before": load, "wall_s": wall,
        "startup_s": spans[0][0] - start,
        "job_s": [end - begin for begin, end in spans],
        "trial_s": [t.duration.total_seconds() for t in done],
        "train_s": [metrics[t.number]["train/time_s"] for t in done],
        "sweeper_gap_s": [g for g in gaps if g > 0],
        "states": {s.name: sum(t.state == s for t in study.trials) for s in TrialState},
        "best": {"number": best.number, "val/acc_best": best.value, "params": best.params,
                 "test/acc": metrics[best.number].get("test/acc")},
        "values": [t.value for t in done],
    }


def table(results: list[dict], steps: int) -> str:
    serial = next((r for r in results if r["setup"] == "serial"), None)
    lines = ["| setup | trials (complete / pruned) | per-trial time, median (s) | training in a trial, median (s) | "
             "sweep wall time (s) | start-up (s) | sweeper per trial, median (s) | best val/acc_best (trial) | "
             "its test/acc |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        speedup = f" ({serial['wall_s'] / r['wall_s']:.2f}x)" if serial and r is not serial else ""
        gap = f"{statistics.median(r['sweeper_gap_s']):.2f}" if r["sweeper_gap_s"] else "-"
        lines.append(
            f"| {r['setup']} | {r['states']['COMPLETE']} / {r['states']['PRUNED']} | "
            f"{statistics.median(r['job_s']):.1f} | {statistics.median(r['train_s']):.1f} | "
            f"{r['wall_s']:.0f}{speedup} | {r['startup_s']:.1f} | {gap} | "
            f"{r['best']['val/acc_best']:.4f} ({r['best']['number']}) | {r['best']['test/acc']:.4f} |")
    busy = [f"{r['setup']}: {r['load_before']:.1f}" for r in results]
    best = max(results, key=lambda r: r["best"]["val/acc_best"])
    params = ", ".join(f"`{k}={v:.4g}`" for k, v in best["best"]["params"].items())
    return "\n".join([
        "# Hyperparameter search on digits", "",
        f"`python scripts/benchmark_sweep.py`: `ssl-train -m hparams_search=fixmatch hydra.sweeper.n_trials=8` with "
        f"`trainer.max_steps={steps}` (validated every {steps // 3} steps; the default config otherwise: CNN, 40 "
        "labels), TPE seeded 0 after 4 random start-up trials (the setups ask the same first 4; then TPE sees "
        "running trials as well in the parallel one), median pruning after 5 finished trials. "
        "serial: one trial at a time in the sweep's process; parallel: `cluster=local hydra.sweeper.n_jobs=2`, "
        "two submitit processes at a time; one torch thread per trial process in both.", "",
        *lines, "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, optuna {optuna.__version__}; 1-minute load average before each setup: "
        f"{', '.join(busy)} (above ~0.5 means other processes shared the CPUs and the times are preliminary).", "",
        "Per-trial time is a job's own span (from Hydra saving its config to metrics.json: building, training, "
        "testing, the reference profile); training is `train/time_s`. The sweeper's time per trial is the gap "
        "between the jobs running ending and the next job starting (telling, rewriting summary.json/.md and "
        "trials.png, sampling, composing, and for submitit a new process importing torch); start-up is the "
        "sweep's own process starting before the first job.", "",
        f"Best by validation accuracy: {params} ({best['setup']}). The test accuracy of the chosen trial is "
        "shown, never used to choose.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()
    results = []
    for name in args.setups:
        results.append(run_setup(name, args.steps, args.trials))
        r = results[-1]
        print(f"{name}: {r['wall_s']:.0f} s, median trial {statistics.median(r['job_s']):.1f} s, "
              f"best val/acc_best {r['best']['val/acc_best']:.4f}", flush=True)
    out = ROOT / "docs" / "results"
    write_json_atomic(out / "sweep.json", {"steps": args.steps, "trials": args.trials, "results": results})
    write_text_atomic(out / "sweep.md", table(results, args.steps))
    print(f"wrote {out / 'sweep.md'}")


if __name__ == "__main__":
    main()
