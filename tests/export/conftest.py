"""One trained digits model and its export, shared by the export tests (trained once per session).

Everything here runs on one torch thread (subprocesses too: `one_thread_env`): these tiny models gain nothing
from more, and on a shared 2-core machine oversubscribed OpenMP threads make a run several times slower.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.train import CONFIG_DIR, train

# Supervised on 500 labels, 300 steps: ~97% test accuracy in about 15 s on one CPU thread, so int8 and
# distillation are measured on a model worth deploying. EMA 0.99 (not 0.999) so that the evaluated average
# has forgotten the first steps by step 300. The unlabeled pool (~600 images) calibrates int8.
TRAINED = [
    "algorithm=supervised",
    "algorithm.ema_decay=0.99",
    "data.num_labels=500",
    "trainer.accelerator=cpu",
    "trainer.max_steps=300",
    "trainer.val_check_interval=100",
    "trainer.enable_progress_bar=false",
]
# Latency is reported, not tested: a few single-thread repeats keep the fixture fast.
QUICK = ExportOptions(latency_repeats=3, latency_warmup=1, latency_threads=1, calibration_samples=256)


def compose_config(name: str, overrides: list[str]):
    """The real config `name` (config, distill, export) with overrides, outside of any Hydra app."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def one_thread():
    with threads(1):
        yield


@pytest.fixture
def one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def compose_cfg():
    return compose_config


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> Path:
    """The best checkpoint of a short supervised digits run."""
    out = tmp_path_factory.mktemp("digits_run")
    with threads(1):
        train(compose_config("config", [*TRAINED, f"paths.output_dir={out}"]))
    return next((out / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="session")
def exported(digits_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """(export directory, metadata) of `digits_ckpt` with every default artifact."""
    out = tmp_path_factory.mktemp("export")
    with threads(1):
        return out, export_checkpoint(digits_ckpt, out, QUICK)
