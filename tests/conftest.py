"""Shared fixtures: the real Hydra configs, shrunk to a few CPU steps on small data."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ssl_train.train import CONFIG_DIR

os.environ.setdefault("PYTHONHASHSEED", "0")

FAST = [
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=10",
    "data.mu=2",
]


@pytest.fixture
def make_cfg(tmp_path):
    """compose(*overrides) -> the real config, shrunk, writing into a temporary run directory."""

    def _make(*overrides: str, fast: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=[*(FAST if fast else []), f"paths.output_dir={tmp_path}", *overrides])

    yield _make
    GlobalHydra.instance().clear()
