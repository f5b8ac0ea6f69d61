"""The shipped hparams_search/ and cluster/ groups compose with the real configs and plugins (Slurm itself cannot
run here: its launcher config is checked as composed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from ssl_train.run.config import CONFIG_MODULE, config_dir
from ssl_train.sweep.space import overrides, parse_space

ROOT = Path(__file__).resolve().parents[2]
SEARCHES = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))


@pytest.fixture
def compose_all(monkeypatch):
    """compose(*overrides) -> the job config with its `hydra` node, resolved where read."""
    monkeypatch.syspath_prepend(str(ROOT))  # hydra_plugins/ at the top of the checkout (see test_sweep.sweep_env)
    importlib.import_module("hydra_plugins.ssl_train_sweeper")  # registers hydra/sweeper=ssl_optuna

    def _compose(*args: str):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
                return compose("config", overrides=list(args), return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()

    return _compose


def test_there_is_a_search_per_main_algorithm_and_a_generic_one():
    assert {"fixmatch", "mean_teacher", "pseudo_label", "generic"} <= set(SEARCHES)


@pytest.mark.parametrize("name", SEARCHES)
def test_each_search_selects_the_optuna_sweeper_a_stable_directory_and_a_space_that_composes(compose_all, name):
    cfg = compose_all(f"hparams_search={name}", "algorithm=supervised" if name == "generic" else "seed=0")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.ssl_train_sweeper.SSLOptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.optimized_metric.startswith("val/")  # never a test metric
    assert sweeper.n_trials >= 8 and sweeper.sampler.seed == 0 and sweeper.pruner.monitor == "val/acc"
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    assert "${now" not in raw and f"search_{name}" in raw  # the same command finds the same study
    space = parse_space(OmegaConf.to_container(sweeper.params), [])
    assert len(space.distributions) >= 2 and not space.fixed
    for sample in space.samples():  # every key exists in the algorithm's config, every choice composes
        trial = compose_all(f"hparams_search={name}", *overrides(sample))
        assert all(OmegaConf.select(trial, key) == value for key, value in sample.items())


def test_slurm_runs_a_ddp_job_on_every_gpu_of_every_node(compose_all):
    cfg = compose_all("cluster=slurm", "cluster.partition=gpu", "cluster.nodes=2", "cluster.gpus_per_node=4",
                      "cluster.time=90", "cluster.cpus_per_task=6", "cluster.mem_gb=200", "cluster.account=lab",
                      "cluster.setup=[module load cuda]")
    launcher = {k: OmegaConf.select(cfg, f"hydra.launcher.{k}") for k in (
        "_target_", "partition", "account", "timeout_min", "nodes", "gpus_per_node", "tasks_per_node",
        "cpus_per_task", "mem_gb", "setup")}
    assert launcher == {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                        "partition": "gpu", "account": "lab", "timeout_min": 90, "nodes": 2, "gpus_per_node": 4,
                        "tasks_per_node": 4, "cpus_per_task": 6, "mem_gb": 200, "setup": ["module load cuda"]}
    trainer = cfg.trainer
    assert (trainer.strategy, trainer.accelerator, trainer.devices, trainer.num_nodes) == ("ddp", "gpu", 4, 2)
    assert trainer.use_distributed_sampler is False  # the data module shards its own step-indexed sampler


def test_a_search_on_slurm_and_local_processes(compose_all):
    cfg = compose_all("hparams_search=fixmatch", "cluster=slurm", "hydra.sweeper.n_jobs=8")
    assert cfg.hydra.sweeper.n_jobs == 8 and cfg.hydra.launcher.tasks_per_node == 1 and cfg.trainer.devices == 1
    assert OmegaConf.select(cfg, "hydra.launcher.submitit_folder").startswith("multirun/train/search_fixmatch")
    local = compose_all("cluster=local", "cluster.time=30")
    assert local.hydra.launcher._target_.endswith("LocalLauncher") and local.hydra.launcher.timeout_min == 30
    assert local.trainer == compose_all().trainer  # one process per job: the trainer is left as it is
