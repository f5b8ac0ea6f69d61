"""Tracking overhead: the time per step of a digits run with logger=csv, logger=tensorboard and logger=mlflow, and
the one-off cost of `finish_tracking` (ssl_train/run/tracking.py) at the end of a run.

    python scripts/benchmark_tracking.py                          # 400 steps, 3 repeats of each logger
    python scripts/benchmark_tracking.py --steps 300 --repeats 5

Every run is the default digits FixMatch config (`build(cfg)`, Lightning `trainer.fit`) for the same steps and
seed, on one torch thread, no test phase; the loggers take turns, in a rotating order, so that a machine busy
with other work slows them alike. The per-step time of a run (wall clock, and the process's CPU time, which other
processes disturb less) is the time from the start of step `--warmup` to the start of the last step divided by the
steps between: it holds Lightning's logging (every `trainer.log_every_n_steps`, 20 by default) and the validation
every 200 steps, as a real run does.
logger=tensorboard and logger=mlflow both include the CSV logger of logger=csv, so their difference to csv is what
the extra logger costs. MLflow writes to a SQLite store (its default kind) in a temporary folder, created before
the first timed run: its schema set-up is a one-off of the store, not of a run. Also measured: one
`log_metrics` call of each logger on its own (8 metrics), median of `--calls` calls.
The table goes to docs/results/tracking.md (raw numbers: tracking.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from contextlib import chdir
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ssl_train.export.measure import cpu_name, threads
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose
from ssl_train.run.tracking import MLflowRunLogger, finish_tracking, mlflow_client
from ssl_train.run.training import build

ROOT = Path(__file__).resolve().parent.parent
LOGGERS = ("csv", "tensorboard", "mlflow")


class StepClock(L.Callback):
    """Wall-clock and process CPU time at the start of every training step."""

    def __init__(self):
        self.starts: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))


def timed_run(logger: str, steps: int, warmup: int, run_dir: Path, uri: str) -> dict:
    """One training run with `logger`: its per-step time and what finish_tracking then takes."""
    overrides = [f"logger={logger}", f"trainer.max_steps={steps}", "trainer.accelerator=cpu", "test=false",
                 "trainer.enable_progress_bar=false", f"paths.output_dir={run_dir}"]
    cfg = compose("config", overrides + ([f"logger.mlflow.tracking_uri={uri}"] if logger == "mlflow" else []))
    datamodule, model, trainer = build(cfg)
    clock = StepClock()
    trainer.callbacks.append(clock)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    metrics = {"train/time_s": fit_s, "train/steps": trainer.global_step,
               **{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}}
    write_json_atomic(run_dir / "metrics.json", metrics)
    start = time.perf_counter()
    finish_tracking(trainer, cfg, metrics, run_dir)
    finish_s = time.perf_counter() - start
    (wall0, cpu0), (wall1, cpu1), steps = clock.starts[warmup], clock.starts[-1], len(clock.starts) - warmup - 1
    return {"step_ms": 1000 * (wall1 - wall0) / steps, "step_cpu_ms": 1000 * (cpu1 - cpu0) / steps, "fit_s": fit_s,
            "finish_ms": 1000 * finish_s}


def log_call_ms(work: Path, uri: str, calls: int) -> dict[str, float]:
    """Median time of one log_metrics call (8 metrics) of each logger alone."""
    loggers = {"csv": CSVLogger(work / "calls", name="csv", version=""),
               "tensorboard": TensorBoardLogger(work / "calls", name="tensorboard", version=""),
               "mlflow": MLflowRunLogger(str(work / "calls"), tracking_uri=uri, experiment_name="log_calls")}
    result = {}
    for name, logger in loggers.items():
        logger.log_metrics({"warm": 0.0}, step=0)  # creates the run, the event file
        times = []
        for step in range(1, calls + 1):
            values = {f"train/metric_{i}": 1.0 / (step + i) for i in range(8)}
            start = time.perf_counter()
            logger.log_metrics(values, step=step)
            times.append(time.perf_counter() - start)
        logger.finalize("success")
        result[name] = 1000 * statistics.median(times)
    return result


def run(args) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ssl_train_tracking_") as work, chdir(work), threads(1):
        work = Path(work)  # also the working directory: MLflow puts the artifacts in ./mlruns
        uri = f"sqlite:///{work / 'mlflow.db'}"
        mlflow_client(uri).search_experiments()  # the store's one-off set-up (schema migrations)
        runs: dict[str, list[dict]] = {name: [] for name in LOGGERS}
        for repeat in range(args.repeats):
            for name in LOGGERS[repeat % 3:] + LOGGERS[:repeat % 3]:  # each logger first once: no order bias
                runs[name].append(timed_run(name, args.steps, args.warmup, work / f"{name}_{repeat}", uri))
                print(f"{name} #{repeat}: {runs[name][-1]['step_ms']:.2f} ms/step "
                      f"({runs[name][-1]['step_cpu_ms']:.2f} ms CPU), "
                      f"finish_tracking {runs[name][-1]['finish_ms']:.0f} ms", flush=True)
        calls = log_call_ms(work, uri, args.calls)
    return {
        "command": f"python scripts/benchmark_tracking.py --steps {args.steps} --repeats {args.repeats} "
                   f"--warmup {args.warmup} --calls {args.calls}",
        "machine": cpu_name(), "cpus": os.cpu_count(), "torch_threads": 1, "python": platform.python_version(),
        "torch": torch.__version__, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "runs": runs,
        "log_every_n_steps": compose("config").trainer.log_every_n_steps,
        "log_metrics_call_ms": calls,
        "median": {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                   for name, rows in runs.items()},
    }


def write(result: dict, out: Path) -> None:
    median, calls, every = result["median"], result["log_metrics_call_ms"], result["log_every_n_steps"]
    load = [", ".join(f"{x:.1f}" for x in result[k]) for k in ("load_average_before", "load_average_after")]
    busy = max(result["load_average_before"][0], result["load_average_after"][0]) > 1.5  # this run is one of them
    lines = [
        "# Tracking overhead", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {result['machine']}, {result['cpus']} CPU cores, 1 torch thread; torch {result['torch']}. "
        f"Digits, FixMatch, default config, {result['steps']} steps, seed 0, no test phase. "
        f"Figures are medians of {result['repeats']} runs per logger on the 2-core CPU, the loggers taking turns "
        "in a rotating order. "
        f"A run's time per step runs from step {result['warmup']} to the last step and holds the logging every "
        f"{every} steps and the validation every 200; wall-clock time and the process's CPU time (which other "
        f"processes disturb less). Load average (1, 5, 15 min) before: {load[0]}; after: {load[1]}"
        + (": the machine was busy with other work, so the figures are preliminary." if busy else "."),
        "",
        "| logger | wall per step (ms, range) | overhead vs csv | CPU per step (ms, range) | overhead vs csv "
        f"| finish_tracking (ms, once) | one log_metrics call (ms) | its share of a step (ms: call / {every}) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def overhead(name: str, key: str) -> str:
        value, base = median[name][key], median["csv"][key]
        return "–" if name == "csv" else f"{value - base:+.2f} ms ({100 * (value - base) / base:+.1f}%)"

    def spread(name: str, key: str) -> str:
        values = [r[key] for r in result["runs"][name]]
        return f"{median[name][key]:.1f} ({min(values):.1f}–{max(values):.1f})"

    for name in LOGGERS:
        lines.append(f"| {name} | {spread(name, 'step_ms')} | {overhead(name, 'step_ms')} "
                     f"| {spread(name, 'step_cpu_ms')} | {overhead(name, 'step_cpu_ms')} "
                     f"| {median[name]['finish_ms']:.0f} | {calls[name]:.3f} | {calls[name] / every:.3f} |")
    share = {name: 100 * calls[name] / every / median["csv"]["step_cpu_ms"] for name in LOGGERS}
    lines += [
        "",
        "logger=tensorboard and logger=mlflow also write the CSV log: their overhead is the extra logger's. "
        "finish_tracking: MLflow logs the flattened config as params, the final metrics and the run directory's "
        "reports as artifacts and writes mlflow.json; TensorBoard writes the hparams. Lightning calls log_metrics "
        "once every `trainer.log_every_n_steps` steps: the last column is what that adds to a step, measured "
        "without the run-to-run noise of whole runs (which, on a busy machine, can exceed the overhead itself).",
        "",
        f"Per step, logging adds {calls['mlflow'] / every:.2f} ms with MLflow ({share['mlflow']:.2f}% of a step) and "
        f"{calls['tensorboard'] / every:.3f} ms with TensorBoard ({share['tensorboard']:.3f}%); whole runs differ by "
        "more than that from one run to the next (the ranges in brackets: min–max over the runs).",
    ]
    write_text_atomic(out / "tracking.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "tracking.json", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out at the start of each run")
    parser.add_argument("--calls", type=int, default=200, help="log_metrics calls timed per logger")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    write(run(args), args.out)
    print((args.out / "tracking.md").read_text())


if __name__ == "__main__":
    main()
