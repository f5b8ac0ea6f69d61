"""ssl-monitor end to end on the trained digits run: verdicts, outputs, exit codes, and bad input that leaves
earlier results alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from hydra.utils import instantiate
from PIL import Image

from ssl_train.errors import SSLTrainError
from ssl_train.monitor.pipeline import monitor
from ssl_train.monitor_cli import DRIFT_EXIT_CODE

PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_train.monitor_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run_monitor(cfg) -> dict:
    """What `ssl-monitor` runs for a composed config."""
    return monitor(cfg.reference, cfg.input, cfg.paths.output_dir, instantiate(cfg.monitor), cfg.seed)


@pytest.fixture
def cfg(compose_cfg):
    """cfg(reference, input, out, *overrides): the real monitor config, composed outside of a Hydra app."""

    def make(reference, inputs, out: Path, *overrides: str):
        return compose_cfg("monitor", [f"reference={reference}", f"input={inputs}", f"paths.output_dir={out}",
                                       "monitor.permutations=300", *overrides])

    return make


def test_cli_round_trip_on_held_out_data(run_dir, digits_test, tmp_path, one_thread_env):
    np.save(tmp_path / "test.npy", digits_test[0].numpy())
    out = tmp_path / "out"
    result = run_cli(f"reference={run_dir}", f"input={tmp_path / 'test.npy'}", f"hydra.run.dir={out}",
                     "fail_on_drift=true", cwd=tmp_path, env=one_thread_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("NO DRIFT (0 of 4 tests) · 450 samples")
    report = json.loads((out / "drift.json").read_text())
    assert report["drift"] is False and report["retrain_recommended"] is False
    assert set(report["tests"]) == {"embedding_mmd", "embedding_ks", "confidence_psi", "predicted_classes"}
    assert all(t["drift"] is False for t in report["tests"].values())
    # Held-out data of the same distribution: the unlabeled estimate is near the measured accuracy.
    assert abs(report["estimated_accuracy"] - report["reference"]["validation_accuracy"]) < 0.05
    assert (out / "drift.png").read_bytes()[:8] == PNG and report["plot"] == "drift.png"
    assert report["input"]["samples"] == len(digits_test[1])


def test_cli_exits_3_on_drift_when_asked(run_dir, digits_test, tmp_path, one_thread_env):
    noisy = (digits_test[0] + 0.3 * torch.randn(digits_test[0].shape, generator=torch.Generator().manual_seed(0)))
    np.save(tmp_path / "noisy.npy", noisy.clamp(0, 1).numpy())
    out = tmp_path / "out"
    result = run_cli(f"reference={run_dir}", f"input={tmp_path / 'noisy.npy'}", f"hydra.run.dir={out}",
                     "fail_on_drift=true", cwd=tmp_path, env=one_thread_env)
    assert result.returncode == DRIFT_EXIT_CODE, result.stderr[-3000:]
    assert result.stdout.startswith("DRIFT") and "retrain recommended" in result.stdout
    report = json.loads((out / "drift.json").read_text())
    assert report["drift"] and report["retrain_recommended"] and report["performance"]["accuracy_drop"] > 0


def test_cli_bad_input_is_one_line_exit_1_and_leaves_earlier_results(run_dir, tmp_path, one_thread_env):
    out = tmp_path / "out"
    out.mkdir()
    (out / "drift.json").write_text('{"earlier": true}\n')
    (out / "drift.png").write_bytes(PNG + b"earlier")
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32))
    result = run_cli(f"reference={run_dir}", f"input={tmp_path / 'rgb.npy'}", f"hydra.run.dir={out}",
                     cwd=tmp_path, env=one_thread_env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"error: input={tmp_path / 'rgb.npy'}: channel count differs from the reference: "
                                     "samples are 3×8×8, the reference model takes 1×8×8 (C×H×W)")
    assert (out / "drift.json").read_text() == '{"earlier": true}\n'
    assert (out / "drift.png").read_bytes() == PNG + b"earlier"


def test_image_folder_input(cfg, run_dir, digits_test, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, x in enumerate(digits_test[0][:200]):
        Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    report = run_monitor(cfg(run_dir, folder, tmp_path / "out"))
    assert report["input"]["sources"][0]["kind"] == "folder" and report["samples"] == 200
    assert not report["drift"]


def test_sliding_windows_find_where_the_drift_starts(cfg, run_dir, digits_test, tmp_path):
    x = digits_test[0]
    rotated = TF.rotate(x, 20.0, interpolation=TF.InterpolationMode.BILINEAR)
    np.save(tmp_path / "stream.npy", torch.cat([x, rotated]).numpy())
    report = run_monitor(cfg(run_dir, tmp_path / "stream.npy", tmp_path / "out", "monitor.window=150"))
    windows = report["windows"]
    assert len(windows) == 6 and report["drift"]
    assert sum(w["drift"] for w in windows[:3]) <= 1 and all(w["drift"] for w in windows[3:])
    assert report["windows_summary"]["first_drift"] <= 3
    assert (tmp_path / "out" / "drift.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("case, message", [
    ("corrupt image", "1 unreadable image file: {path}/broken.png"),
    ("NaN pixels", "non-finite pixel values (NaN or inf), first in sample 300"),
    ("empty folder", "the folder holds no image files"),
    ("reference is not a profile", "reference={reference} is neither a reference profile nor an ssl-train checkpoint"),
])
def test_bad_input_leaves_earlier_results(cfg, run_dir, digits_test, tmp_path, case, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "drift.json").write_text('{"earlier": true}\n')
    reference, path = run_dir, tmp_path / "input"
    if case == "corrupt image":
        path.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(path / "fine.png")
        (path / "broken.png").write_bytes(PNG + b"truncated")
    elif case == "NaN pixels":
        x = digits_test[0].clone()
        x[300, 0, 0, 0] = float("nan")
        path = tmp_path / "x.npy"
        np.save(path, x.numpy())
    elif case == "empty folder":
        path.mkdir()
    else:
        reference = tmp_path / "weights.pt"
        torch.save({"w": torch.zeros(1)}, reference)
        path = tmp_path / "x.npy"
        np.save(path, digits_test[0].numpy())
    with pytest.raises(SSLTrainError) as error:
        run_monitor(cfg(reference, path, out))
    assert message.format(path=path, reference=reference) in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == ["drift.json"]
    assert (out / "drift.json").read_text() == '{"earlier": true}\n'
