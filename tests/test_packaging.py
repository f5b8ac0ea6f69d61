"""The configs ship with the package: a built wheel, installed outside the checkout, runs every command.

The slow tests build the wheel from a copy of the sources (nothing is written into the checkout), install it
with `--no-deps` into a fresh venv under a temporary directory that borrows the dev venv's dependencies through
a .pth file (torch & co. are not installed again; a directory added by a .pth is not scanned for .pth files
itself, so the dev venv's editable-install finder for ssl_train stays inactive there), and then run the
installed console scripts from an empty directory: `--help`, a short train → export / eval / monitor / predict /
distill chain, an audit, a user's own Hydra app on `pkg://ssl_train.conf`, and `--config-dir` with a user's group.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_train.run.config import CONFIG_PATH, compose, config_dir

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["ssl-train", "ssl-export", "ssl-eval", "ssl-audit", "ssl-monitor", "ssl-distill", "ssl-predict"]
PRIMARY = ["config", "export", "distill", "eval", "audit", "monitor", "predict"]
# What the wheel is built from; anything else in the checkout is not part of it.
SOURCES = ["pyproject.toml", "README.md", "ssl_train", "conf", "hydra_plugins", "setup.py", "setup.cfg", "MANIFEST.in",
           "LICENSE"]
TINY_TRAIN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
              "data.batch_size=10", "data.mu=1", "trainer.accelerator=cpu"]
TINY_DISTILL = [*TINY_TRAIN[:3], "trainer.accelerator=cpu", "+data.batch_size=10", "+data.mu=1"]
TINY_EXPORT = ["export.pt2=false", "export.latency_repeats=1", "export.latency_warmup=0", "export.latency_threads=1"]


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- fast: the layout the wheel is built from


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject.toml lists the packages by hand (package-dir moves ssl_train.conf, which `find` cannot see):
    a new ssl_train subpackage missing from that list would be left out of the wheel."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for top in ("ssl_train", "hydra_plugins")
             for init in (ROOT / top).rglob("__init__.py")}
    assert listed == {*found, "ssl_train.conf", "hydra_plugins"}  # hydra_plugins: a namespace package, no __init__.py


def test_configs_are_found_through_the_package():
    assert CONFIG_PATH == "pkg://ssl_train.conf"
    assert config_dir() == (ROOT / "conf").resolve()  # the editable install maps ssl_train.conf to conf/
    for name in PRIMARY:
        primary = OmegaConf.load(config_dir() / f"{name}.yaml")
        assert {"hydra": "default"} in OmegaConf.to_container(primary.defaults), f"{name}.yaml"
        assert "hydra" not in primary, f"{name}.yaml: Hydra settings belong in conf/hydra/default.yaml"


def test_compose_resolves_the_run_directory_like_a_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose("export", ["ckpt_path=x.ckpt"])
    out = Path(cfg.paths.output_dir)
    assert out.parent == tmp_path / "runs" / "export" and "hydra" not in cfg and not out.exists()
    assert Path(compose("config", ["paths.output_dir=elsewhere"]).paths.output_dir) == Path("elsewhere")


# ---------------------------------------------------------------- slow: the installed wheel


def run(args: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def build_wheel(dest: Path, env: dict) -> Path:
    src = dest / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        elif path.is_file():
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    # Without build isolation when this venv has setuptools (fast, offline); else pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", dest / "wheels", src], dest, env)
    (wheel,) = (dest / "wheels").glob("ssl_train-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin directory, environment, an empty working directory) with the built wheel installed."""
    base = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheel = build_wheel(base, env)

    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], base, env)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env)
                .stdout.strip()).resolve()
    dev = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_ssl_train_dev_deps.pth").write_text("".join(f"{p}\n" for p in dev))
    # pip itself comes from the dev venv; --ignore-installed: pip sees the dev venv's (editable) ssl_train through
    # the .pth and must neither count it as installed nor try to uninstall it.
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], base, env)

    work = base / "work"
    work.mkdir()
    where = run([python, "-c", "import ssl_train, ssl_train.conf as c; print(ssl_train.__file__); print(c.__file__)"],
                work, env).stdout.split()
    assert all(Path(p).resolve().is_relative_to(site / "ssl_train") for p in where), where
    assert not any(Path(p).resolve().is_relative_to(ROOT) for p in where), where
    for yaml in ("config.yaml", "hydra/default.yaml", "algorithm/fixmatch.yaml", "data/_base.yaml"):
        assert (site / "ssl_train" / "conf" / yaml).is_file(), yaml
    return venv / "bin", env, work


def only_run_dir(work: Path, task: str) -> Path:
    (run_dir,) = (work / "runs" / task).iterdir()  # the shipped hydra/default.yaml: runs/<task_name>/<time>
    return run_dir


@pytest.mark.slow
def test_every_installed_command_has_help(installed):
    bin_dir, env, work = installed
    procs = {c: subprocess.Popen([bin_dir / c, "--help"], cwd=work, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for c in COMMANDS}
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{command}: {err[-3000:]}"
        assert "== Configuration groups ==" in out and "paths: default" in out, f"{command}: {out[:2000]}"
    assert not (work / "runs").exists()


@pytest.mark.slow
def test_installed_commands_train_export_evaluate_monitor_audit_and_distill(installed, tmp_path):
    bin_dir, env, work = installed
    result = run([bin_dir / "ssl-train", *TINY_TRAIN], work, env)
    train_dir = only_run_dir(work, "train")
    assert "test/acc" in result.stdout and (train_dir / "metrics.json").is_file()
    ckpt = train_dir / "checkpoints" / "last.ckpt"

    run([bin_dir / "ssl-export", f"ckpt_path={ckpt}", *TINY_EXPORT], work, env)
    assert {"model.ts", "model_int8.ts"} <= json.loads((only_run_dir(work, "export") / "metadata.json")
                                                       .read_text())["artifacts"].keys()

    run([bin_dir / "ssl-eval", f"ckpt_path={ckpt}", "eval.bootstrap=50", "eval.robustness=false"], work, env)
    assert (only_run_dir(work, "eval") / "eval.json").is_file()

    from sklearn.datasets import load_digits

    images = load_digits().images[:120, None].astype(np.float32) / 16  # N×1×8×8 in [0, 1]
    np.save(tmp_path / "batch.npy", images)
    run([bin_dir / "ssl-monitor", f"reference={train_dir}", f"input={tmp_path / 'batch.npy'}",
         "monitor.permutations=100"], work, env)
    assert json.loads((only_run_dir(work, "monitor") / "drift.json").read_text())["input"]["samples"] == 120

    run([bin_dir / "ssl-predict", f"model_path={train_dir}", f"input={tmp_path / 'batch.npy'}"], work, env)
    assert len((only_run_dir(work, "predict") / "predictions.csv").read_text().splitlines()) == 1 + 120

    run([bin_dir / "ssl-audit", "audit.label_check=false"], work, env)  # the default data: digits
    assert (only_run_dir(work, "audit") / "audit.json").is_file()

    run([bin_dir / "ssl-distill", f"teacher_ckpt={ckpt}", *TINY_DISTILL, *TINY_EXPORT, "export.int8=false"], work, env)
    distill_dir = only_run_dir(work, "distill")
    assert (distill_dir / "distill.json").is_file() and (distill_dir / "model.ts").is_file()


@pytest.mark.slow
def test_a_users_hydra_app_composes_the_shipped_groups(installed, tmp_path):
    bin_dir, env, work = installed
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "conf" / "my_config.yaml").write_text(
        "defaults:\n  - data: digits\n  - _self_\nhydra:\n  searchpath:\n    - pkg://ssl_train.conf\n")
    (app / "my_app.py").write_text(
        "import hydra\nimport ssl_train\n\n\n"
        "@hydra.main(version_base='1.3', config_path='conf', config_name='my_config')\n"
        "def main(cfg):\n    print(ssl_train.__file__)\n    print(cfg.data._target_, cfg.data.dataset._target_)\n\n\n"
        "main()\n")
    out = run([bin_dir / "python", app / "my_app.py", "hydra.run.dir=.", "hydra.output_subdir=null"], work, env)
    module, datamodule, dataset = out.stdout.split()
    assert not Path(module).resolve().is_relative_to(ROOT)
    assert datamodule.endswith("SSLDataModule") and dataset == "ssl_train.data.datasets.digits"


@pytest.mark.slow
def test_config_dir_adds_a_users_own_group_option(installed, tmp_path):
    bin_dir, env, work = installed
    (tmp_path / "mine" / "algorithm").mkdir(parents=True)
    (tmp_path / "mine" / "algorithm" / "my_algo.yaml").write_text(
        "defaults:\n  - supervised\n  - _self_\nema_decay: 0.5\n")  # extends the shipped algorithm/supervised
    out = run([bin_dir / "ssl-train", "--config-dir", tmp_path / "mine", "algorithm=my_algo", "--cfg", "job"],
              work, env).stdout
    algorithm = OmegaConf.create(out).algorithm
    assert algorithm._target_ == "ssl_train.algorithms.supervised.Supervised" and algorithm.ema_decay == 0.5
