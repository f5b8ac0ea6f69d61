"""`ssl-monitor`: new inputs against a model's reference profile → drift.json, drift.png and a verdict.

    ssl-monitor reference=runs/train/<run> input=new_images/
    ssl-monitor reference=exports/digits/reference_profile.pt input=batch.npy fail_on_drift=true
    ssl-monitor reference=... input=stream.npy monitor.window=200          # sliding windows: a time series
    ssl-monitor reference=... input=[day1.npy,day2.npy,day3.npy]           # one window per file
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from ssl_train.cli import run_cli
from ssl_train.monitor.pipeline import monitor
from ssl_train.monitor.report import series_table, verdict
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.safety import Trust

DRIFT_EXIT_CODE = 3  # 1 is an error; a pipeline tells the two apart


def _task(cfg: DictConfig) -> None:
    inputs = list(cfg.input) if isinstance(cfg.input, ListConfig) else cfg.input
    report = monitor(cfg.reference, inputs, cfg.paths.output_dir, instantiate(cfg.monitor), cfg.seed,
                     Trust.from_config(cfg))
    if "windows" in report:
        print(series_table(report["windows"]))
        summary = report["windows_summary"]
        print(f"{summary['drifting']} of {summary['count']} windows drift"
              + (f" (first: window {summary['first_drift']})" if summary["first_drift"] is not None else ""))
        print("whole input:")
    print(verdict(report))
    print(f"→ {Path(cfg.paths.output_dir) / 'drift.json'}, {report['plot']}")
    if cfg.fail_on_drift and report["drift"]:
        sys.exit(DRIFT_EXIT_CODE)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="monitor")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
