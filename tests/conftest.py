"""Shared fixtures: the real Hydra configs, shrunk to a few CPU steps on small data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ssl_train.train import CONFIG_DIR

os.environ.setdefault("PYTHONHASHSEED", "0")

FAST = [
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
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


def write_image_folder(root, classes=("cat", "dog"), per_class=6, unlabeled=5, size=(10, 12)):
    """A tiny image_folder dataset of random RGB images: labeled/<class>/*.png and unlabeled/batch1/*.jpg."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = lambda: Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))  # noqa: E731
    for c in classes:
        (root / "labeled" / c).mkdir(parents=True)
        for i in range(per_class):
            image().save(root / "labeled" / c / f"{i}.png")
    (root / "unlabeled" / "batch1").mkdir(parents=True)
    for i in range(unlabeled):
        image().save(root / "unlabeled" / "batch1" / f"{i}.jpg")
    return root


@pytest.fixture
def image_root(tmp_path):
    return write_image_folder(tmp_path / "images")
