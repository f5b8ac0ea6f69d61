"""Shared fixtures: the real Hydra configs, shrunk to a few CPU steps on small data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.run.checkpoint import load_run
from ssl_train.run.config import compose
from ssl_train.run.training import train

os.environ.setdefault("PYTHONHASHSEED", "0")

FAST = [
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=10",
    "data.mu=2",
    "guard=false",
]


@pytest.fixture
def make_cfg(tmp_path):
    """compose(*overrides) -> the real config, shrunk, writing into a temporary run directory."""

    def _make(*overrides: str, fast: bool = True):
        return compose("config", [*(FAST if fast else []), f"paths.output_dir={tmp_path}", *overrides])

    return _make


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


# A model worth deploying, shared by the export, monitor and evaluation tests (trained once per session):
# supervised on 500 labels, 300 steps, ~97% test accuracy in about 15 s on one CPU thread. EMA 0.99 (not 0.999)
# so that the evaluated average has forgotten the first steps by step 300. The unlabeled pool (~600 images)
# calibrates int8.
TRAINED = [
    "algorithm=supervised",
    "algorithm.ema_decay=0.99",
    "data.num_labels=500",
    "trainer.accelerator=cpu",
    "trainer.max_steps=300",
    "trainer.val_check_interval=100",
    "trainer.enable_progress_bar=false",
]


def compose_config(name: str, overrides: list[str]):
    """The real config `name` (config, distill, export, monitor) with overrides, outside of any Hydra app."""
    return compose(name, overrides)


@pytest.fixture
def compose_cfg():
    return compose_config


@pytest.fixture(scope="session", autouse=True)
def image_cache_dir(tmp_path_factory) -> Path:
    """The image caches that data=image_folder builds go to a temporary folder (subprocesses inherit it), not
    the user's ~/.cache."""
    os.environ["SSL_TRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("image_cache"))
    return Path(os.environ["SSL_TRAIN_CACHE_DIR"])


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread: the models here are tiny and gain nothing from more, and on a shared
    2-core machine oversubscribed OpenMP threads make a run several times slower."""
    with threads(1):
        yield


@pytest.fixture
def one_thread_env() -> dict[str, str]:
    """The environment for a subprocess that should also use one thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> Path:
    """The best checkpoint of a short supervised digits run (its run directory is two levels up)."""
    out = tmp_path_factory.mktemp("digits_run")
    with threads(1):
        train(compose_config("config", [*TRAINED, f"paths.output_dir={out}"]))
    return next((out / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="session")
def exported(digits_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """(export directory, metadata) of `digits_ckpt` with every default artifact, for the export and prediction
    tests. Latency is reported, not tested: a few single-thread repeats keep it fast."""
    out = tmp_path_factory.mktemp("export")
    with threads(1):
        return out, export_checkpoint(digits_ckpt, out, ExportOptions(latency_repeats=3, latency_warmup=1,
                                                                       latency_threads=1, calibration_samples=256))


def write_digit_folder(root, splits=("labeled", "test"), per_class=4, start=0):
    """scikit-learn's digits as 8×8 grayscale PNGs in ROOT/<split>/<digit>/ (load with channels=1,
    image_size=[8,8]); each split gets the next `per_class` images of every digit. Returns ROOT."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for s, split in enumerate(splits):
        for c in range(10):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
            members = np.flatnonzero(digits.target == c)[start + s * per_class:start + (s + 1) * per_class]
            for i in members:
                Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(
                    root / split / str(c) / f"{i:04d}.png")
    return root


@pytest.fixture
def digit_folder():
    return write_digit_folder


def html_references(page):
    """(every src/href of an HTML page, the alt texts of its images)."""
    from html.parser import HTMLParser

    refs, images = [], []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            refs.extend(attrs[k] for k in ("src", "href") if k in attrs)
            if tag == "img":
                images.append(attrs.get("alt"))

    Parser().feed(page.read_text())
    return refs, images


@pytest.fixture
def self_contained():
    """check(page): every file the page references exists (embedded PNGs count); returns its image alt texts."""

    def check(page):
        refs, images = html_references(page)
        for ref in refs:
            assert ref.startswith("data:image/png;base64,") or (page.parent / ref).is_file(), ref
        return images

    return check


@pytest.fixture(scope="session")
def run_dir(digits_ckpt) -> Path:
    return digits_ckpt.parent.parent


@pytest.fixture(scope="session")
def digits_test(digits_ckpt) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test split as (pixels in [0, 1], labels): never seen by its reference profile (validation)."""
    datamodule = load_run(digits_ckpt).datamodule()
    batch = datamodule.test[np.arange(len(datamodule.test))]
    return batch["x"].float() * datamodule.source.scale, batch["y"]
