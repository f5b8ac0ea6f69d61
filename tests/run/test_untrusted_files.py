"""Shared files that name code: every route into the real console commands refuses them, and nothing runs.

Each crafted file is a real trained checkpoint (or its reference profile, or an export pointing at it) with a
payload planted in its saved config. The payloads are harmless but observable: they would create a marker
file in the test's temporary directory. Each command must exit 1 with one `error:` line naming the refused
target and the file, leave no marker, and write no result.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

BIN = Path(sys.executable).parent
RESULTS = ("metadata.json", "eval.json", "report.html", "drift.json", "drift.png", "distill.json", "metrics.json",
           "config.yaml", "model.ts", "MODEL_CARD.md", "reference_profile.pt", "checkpoints")
EXPORT_FAST = ["export.int8=false", "export.pt2=false", "export.latency_repeats=1", "export.latency_warmup=0",
               "export.reference_profile=false"]


def write_payload(marker: Path) -> dict:
    """Would write 'pwned' into `marker`: Path(marker).write_text("pwned"), as a Hydra config."""
    return {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(marker)]},
            "data": "pwned"}


def system_payload(marker: Path) -> dict:
    """Would run a shell command: os.system("touch MARKER")."""
    return {"_target_": "os.system", "_args_": [f"touch {marker}"]}


# Where each payload is planted in a saved run config, and the location the refusal must name.
def in_widths(config: dict, marker: Path) -> str:
    config["model"]["widths"] = [write_payload(marker), *config["model"]["widths"][1:]]
    return "model.widths[0]"


def as_model(config: dict, marker: Path) -> str:
    config["model"] = write_payload(marker)
    return "model"


def in_dataset(config: dict, marker: Path) -> str:
    config["data"]["dataset"] = write_payload(marker)
    return "data.dataset"


def system_in_weak(config: dict, marker: Path) -> str:
    config["data"]["weak"] = system_payload(marker)
    return "data.weak"


class _Touch:
    """Pickled as a call to Path(marker).touch(): what unpickling with weights_only=False would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture(scope="module")
def saved(digits_ckpt) -> dict:
    return torch.load(digits_ckpt, map_location="cpu", weights_only=True)


def crafted_checkpoint(saved: dict, path: Path, plant, marker: Path, model_target: str | None = None) -> str:
    checkpoint = copy.deepcopy(saved)
    config = checkpoint["ssl_train"]["config"]
    if model_target is not None:
        config["model"]["_target_"] = model_target
    location = plant(config, marker) if plant is not None else ""
    torch.save(checkpoint, path)
    return location


def run(command: str, args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def assert_refused(result: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 1, the last stderr line is the one `error:` line, no traceback; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], result.stderr[-3000:]
    for text in named:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def assert_nothing_written(out: Path) -> None:
    """No result in the run directory: at most Hydra's own .hydra folder and job log."""
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [name for name in left if name in RESULTS], left
    assert all(name == ".hydra" or name.endswith(".log") for name in left), left


def test_the_payloads_would_run(tmp_path):
    """Without the check, the planted nodes do what they say: the refusals below are of real attacks.

    Recent Hydra releases blocklist os.system themselves (not pathlib.Path.write_text): the write payload is the
    one that proves ssl_train's check is what stops the attack, os.system that the check comes first.
    """
    instantiate(write_payload(tmp_path / "written"))
    assert (tmp_path / "written").read_text() == "pwned"
    try:
        instantiate(system_payload(tmp_path / "touched"))
    except InstantiationException as exc:
        assert "blocklisted" in str(exc)
    else:
        assert (tmp_path / "touched").is_file()
    torch.save({"x": _Touch(tmp_path / "unpickled")}, tmp_path / "pickled.ckpt")
    torch.load(tmp_path / "pickled.ckpt", weights_only=False)
    assert (tmp_path / "unpickled").is_file()


# (command, the file option, how the crafted file is made, payload placement)
ROUTES = {
    "export-widths": ("ssl-export", "ckpt_path", "checkpoint", in_widths),
    "eval-model-chain": ("ssl-eval", "ckpt_path", "checkpoint", as_model),
    "monitor-checkpoint-dataset": ("ssl-monitor", "reference", "checkpoint", in_dataset),
    "monitor-profile-model-chain": ("ssl-monitor", "reference", "profile", None),
    "monitor-export-dir-system": ("ssl-monitor", "reference", "export_dir", system_in_weak),
    "distill-teacher-dataset": ("ssl-distill", "teacher_ckpt", "checkpoint", in_dataset),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_crafted_file_is_refused_and_nothing_runs(route, saved, digits_ckpt, tmp_path, one_thread_env):
    command, option, kind, plant = ROUTES[route]
    marker = tmp_path / "MARKER"
    crafted = tmp_path / "crafted.ckpt"
    if kind == "profile":
        from ssl_train.run.profile import profile_checkpoint, save_profile

        profile = save_profile(profile_checkpoint(digits_ckpt), tmp_path / "profile")
        data = torch.load(profile, map_location="cpu", weights_only=True)
        data["model"]["config"] = write_payload(marker)
        torch.save(data, profile)
        reference, named, target, location = profile, profile, "pathlib.Path.write_text", "model"
    else:
        location = crafted_checkpoint(saved, crafted, plant, marker)
        target = "os.system" if plant is system_in_weak else "pathlib.Path.write_text"
        reference = named = crafted
        if kind == "export_dir":
            reference = tmp_path / "export"  # an export directory holding only its metadata.json
            reference.mkdir()
            (reference / "metadata.json").write_text(json.dumps({"source_checkpoint": {"path": str(crafted)}}))
    args = [f"{option}={reference}"]
    if command == "ssl-monitor":
        np.save(tmp_path / "x.npy", np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32))
        args.append(f"input={tmp_path / 'x.npy'}")
    out = tmp_path / "out"
    result = run(command, [*args, f"hydra.run.dir={out}"], tmp_path, one_thread_env)

    line = assert_refused(result, f"refused _target_ '{target}' at {location}:", str(named),
                          f"trust_targets=[{target}]")
    print(f"{route}: {line}")
    assert not marker.exists()
    assert_nothing_written(out)


def test_resuming_from_a_pickled_checkpoint_is_refused(tmp_path, one_thread_env):
    marker = tmp_path / "MARKER"
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "x": _Touch(marker)}, pickled)
    out = tmp_path / "out"
    result = run("ssl-train", [f"ckpt_path={pickled}", "trainer.accelerator=cpu", f"hydra.run.dir={out}"], tmp_path,
                 one_thread_env)

    line = assert_refused(result, f"ckpt_path={pickled}", "weights_only", "refused")
    print(f"train-pickled: {line}")
    assert not marker.exists()
    assert_nothing_written(out)


@pytest.fixture
def user_model(saved, tmp_path, one_thread_env) -> tuple[dict, Path]:
    """(env, a checkpoint whose model is the user's own `mymodels.Net`, importable from tmp_path)."""
    (tmp_path / "mymodels.py").write_text("from ssl_train.models.cnn import SmallCNN as Net  # noqa: F401\n")
    env = {**one_thread_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    crafted = tmp_path / "user.ckpt"
    crafted_checkpoint(saved, crafted, None, tmp_path / "MARKER", model_target="mymodels.Net")
    return env, crafted


def test_a_users_own_model_needs_trust_targets(user_model, tmp_path):
    env, crafted = user_model
    out = tmp_path / "refused"
    result = run("ssl-export", [f"ckpt_path={crafted}", *EXPORT_FAST, f"hydra.run.dir={out}"], tmp_path, env)
    line = assert_refused(result, "refused _target_ 'mymodels.Net' at model:", str(crafted),
                          "trust_targets=[mymodels.Net]")
    print(f"export-untrusted-user-model: {line}")
    assert_nothing_written(out)

    out = tmp_path / "trusted"
    result = run("ssl-export", [f"ckpt_path={crafted}", *EXPORT_FAST, "++trust_targets=[mymodels.Net]",
                                f"hydra.run.dir={out}"], tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source_checkpoint"]["path"] == str(crafted)
    assert (out / "model.ts").is_file()


def test_trusting_one_target_trusts_nothing_else(saved, tmp_path, one_thread_env):
    """trust_targets=[mymodels.Net] lets the user's model through, not a payload planted beside it."""
    (tmp_path / "mymodels.py").write_text("from ssl_train.models.cnn import SmallCNN as Net  # noqa: F401\n")
    env = {**one_thread_env, "PYTHONPATH": str(tmp_path)}
    marker = tmp_path / "MARKER"
    crafted = tmp_path / "crafted.ckpt"
    crafted_checkpoint(saved, crafted, in_widths, marker, model_target="mymodels.Net")
    out = tmp_path / "out"
    result = run("ssl-export", [f"ckpt_path={crafted}", *EXPORT_FAST, "++trust_targets=[mymodels.Net]",
                                f"hydra.run.dir={out}"], tmp_path, env)
    line = assert_refused(result, "refused _target_ 'pathlib.Path.write_text' at model.widths[0]:", str(crafted))
    print(f"export-trusted-model-with-payload: {line}")
    assert not marker.exists()
    assert_nothing_written(out)



def test_a_torch_export_program_is_loaded_only_when_trusted(digits_ckpt, tmp_path):
    """torch.export.load unpickles (weights_only=False): a shared model.pt2 could run code, so ssl-eval refuses it
    unless the user says the file is theirs."""
    from ssl_train.export.pipeline import ExportOptions, export_checkpoint
    from ssl_train.run.artifacts import load_model
    from ssl_train.run.safety import Trust, UntrustedFileError

    export_checkpoint(digits_ckpt, tmp_path, ExportOptions(torchscript=False, int8=False, latency_repeats=1,
                                                           latency_warmup=0, reference_profile=False))
    with pytest.raises(UntrustedFileError, match="unpickles on load and could run code.*trust_checkpoint=true"):
        load_model(tmp_path / "model.pt2")
    model = load_model(tmp_path / "model.pt2", Trust(everything=True))
    with torch.inference_mode():
        assert model.predict(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
