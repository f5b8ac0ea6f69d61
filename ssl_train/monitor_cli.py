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

from ssl_train.io import write_json_atomic
from ssl_train.monitor.detector import Monitor, MonitorOptions
from ssl_train.monitor.inputs import Inputs
from ssl_train.monitor.plot import plot_series, plot_window
from ssl_train.monitor.profile import ProfileOptions, resolve_reference, save_profile
from ssl_train.monitor.report import series_table, verdict
from ssl_train.train import CONFIG_DIR, run_cli

DRIFT_EXIT_CODE = 3  # 1 is an error; a pipeline tells the two apart


def monitor(cfg: DictConfig) -> dict:
    """Judge `cfg.input` against `cfg.reference`; writes drift.png then drift.json into the run directory."""
    options: MonitorOptions = instantiate(cfg.monitor)
    paths = cfg.input
    paths = [str(p) for p in paths] if isinstance(paths, (list, ListConfig)) else str(paths)
    profile, reference, built = resolve_reference(cfg.reference, ProfileOptions(seed=cfg.seed))
    resize = profile.resize_images if options.resize is None else bool(options.resize)
    inputs = Inputs(paths, profile.input_shape, resize=resize)
    report, plot = Monitor(profile, options, source=reference).run(inputs)
    report = {"format_version": report.pop("format_version"),
              "reference": {"path": reference, "built_now": built, **_reference_brief(profile)},
              "input": {"sources": inputs.describe(), "samples": inputs.total, "resize": resize}, **report}

    out = Path(cfg.paths.output_dir)
    if built:  # keep the profile that was computed, so the next call can use it directly
        save_profile(profile, out)
    plot_file = out / "drift.png"
    if "windows" in report:
        plot_series(report, plot_file)
    else:
        plot_window(report, plot, profile, plot_file)
    report["plot"] = plot_file.name
    write_json_atomic(out / "drift.json", report)  # last: a directory without it holds no finished result
    return report


def _reference_brief(profile) -> dict:
    return {"source": profile.source, "samples": profile.samples, "validation_accuracy": profile.accuracy,
            "temperature": profile.temperature, "classes": profile.classes, "input_shape": list(profile.input_shape)}


def _task(cfg: DictConfig) -> None:
    report = monitor(cfg)
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="monitor")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
