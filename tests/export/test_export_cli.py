"""ssl-export and ssl-distill from the command line, and bad checkpoints: one clear line, exit 1, no artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_train.errors import SSLTrainError
from ssl_train.export.pipeline import export_checkpoint

NO_TIMING = ["export.latency_repeats=1", "export.latency_warmup=0", "export.latency_threads=1"]


def run_module(module: str, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_ssl_export_writes_the_run_directory(digits_ckpt, tmp_path, one_thread_env):
    out = tmp_path / "export"
    result = run_module("ssl_train.export_cli", f"ckpt_path={digits_ckpt}", "export.pt2=false", *NO_TIMING,
                        f"hydra.run.dir={out}", cwd=tmp_path, env=one_thread_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| model_int8.ts |" in result.stdout
    assert "deprecat" not in result.stderr.lower()  # torch.jit / torch.ao notices kept out of the console
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["artifacts"]) == {"model.ts", "model_int8.ts"} and (out / "MODEL_CARD.md").is_file()


def bad_input(case: str, ckpt: Path, tmp: Path) -> Path:
    """A file for each way a checkpoint path can be wrong."""
    if case == "missing":
        return tmp / "nowhere.ckpt"
    if case == "not a checkpoint":
        (tmp / "notes.txt").write_text("not a checkpoint\n")
        return tmp / "notes.txt"
    if case == "not from ssl-train":
        torch.save({"weights": torch.zeros(3)}, tmp / "other.ckpt")
        return tmp / "other.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["ssl_train"]["config"]["model"] = ARCHITECTURES[case]
    torch.save(checkpoint, tmp / "renamed.ckpt")
    return tmp / "renamed.ckpt"


ARCHITECTURES = {"other widths": {"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [8, 8, 8]},
                 "other model": {"_target_": "ssl_train.models.mlp.MLP", "hidden": [32]}}
MESSAGES = {
    "missing": "no such checkpoint file",
    "not a checkpoint": "is not a checkpoint: torch.load failed",
    "not from ssl-train": "is not an ssl-train checkpoint",
    "other widths": "its weights do not fit the configured model ssl_train.models.cnn.SmallCNN (size mismatch",
    "other model": "its weights do not fit the configured model ssl_train.models.mlp.MLP",
}


@pytest.mark.parametrize("case", MESSAGES)
def test_bad_checkpoint_is_one_clear_error_naming_it_and_no_artifact(digits_ckpt, tmp_path, case):
    path = bad_input(case, digits_ckpt, tmp_path)
    with pytest.raises(SSLTrainError) as error:
        export_checkpoint(path, tmp_path / "export")
    assert len(str(error.value).splitlines()) == 1
    assert str(path) in str(error.value) and MESSAGES[case] in str(error.value)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("module, args, message", [
    ("ssl_train.export_cli", ["ckpt_path={other}"], "error: {other}: its weights do not fit the configured model"),
    ("ssl_train.distill_cli", ["teacher_ckpt={missing}"], "error: teacher_ckpt={missing}: no such checkpoint file"),
])
def test_cli_bad_input_is_one_line_on_stderr_and_exit_1(digits_ckpt, tmp_path, one_thread_env, module, args, message):
    names = {"other": bad_input("other model", digits_ckpt, tmp_path), "missing": tmp_path / "nowhere.ckpt"}
    out = tmp_path / "run"
    result = run_module(module, *(a.format(**names) for a in args), f"hydra.run.dir={out}", cwd=tmp_path,
                        env=one_thread_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(**names)), result.stderr[-2000:]
    assert not [p.name for p in out.glob("*") if not p.name.startswith(".") and p.suffix != ".log"]
