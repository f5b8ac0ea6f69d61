"""New inputs against a model's reference profile: the flow behind `ssl-monitor`.

    reference (profile, checkpoint, run or export directory) → ReferenceProfile (built now if there is none)
      + inputs (image folder, .npy/.pt arrays; streamed in chunks) → Monitor: windows, tests, verdict
      → drift.png, then drift.json (written last: a directory without it holds no finished result)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ssl_train.io import write_json_atomic
from ssl_train.monitor.detector import Monitor, MonitorOptions
from ssl_train.monitor.inputs import Inputs
from ssl_train.monitor.plot import plot_series, plot_window
from ssl_train.run.profile import ProfileOptions, ReferenceProfile, resolve_reference, save_profile
from ssl_train.run.safety import Trust


def monitor(reference: str | Path, inputs: str | Path | Sequence[str | Path], out_dir: str | Path,
            options: MonitorOptions | None = None, seed: int = 0, trust: Trust | None = None) -> dict:
    """Judge `inputs` (one source, or a list: one window per file) against `reference`; writes drift.png then
    drift.json into `out_dir` and returns drift.json's content."""
    options = options or MonitorOptions()
    paths = str(inputs) if isinstance(inputs, (str, Path)) else [str(p) for p in inputs]
    profile, source, built = resolve_reference(reference, ProfileOptions(seed=seed), trust)
    resize = profile.resize_images if options.resize is None else bool(options.resize)
    stream = Inputs(paths, profile.input_shape, resize=resize)
    report, plot = Monitor(profile, options, source=source, trust=trust).run(stream)
    report = {"format_version": report.pop("format_version"),
              "reference": {"path": source, "built_now": built, **_reference_brief(profile)},
              "input": {"sources": stream.describe(), "samples": stream.total, "resize": resize}, **report}

    out = Path(out_dir)
    if built:  # keep the profile that was computed, so the next call can use it directly
        save_profile(profile, out)
    plot_file = out / "drift.png"
    if "windows" in report:
        plot_series(report, plot_file)
    else:
        plot_window(report, plot, profile, plot_file)
    report["plot"] = plot_file.name
    write_json_atomic(out / "drift.json", report)
    return report


def _reference_brief(profile: ReferenceProfile) -> dict:
    return {"source": profile.source, "samples": profile.samples, "validation_accuracy": profile.accuracy,
            "temperature": profile.temperature, "classes": profile.classes, "input_shape": list(profile.input_shape)}
