"""The training-time pool check: quiet when labeled and unlabeled data share a distribution, loud when not."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import SourceData, TensorImages
from ssl_train.monitor.callbacks import PoolShiftCheck

K = 4


def images(labels: np.ndarray, seed: int) -> TensorImages:
    """8×8 images whose brightness encodes the class (level 40 + 50·y), with pixel noise."""
    rng = np.random.default_rng(seed)
    x = 40 + 50 * labels[:, None, None, None] + rng.normal(0, 8, (len(labels), 1, 8, 8))
    return TensorImages(torch.from_numpy(x.clip(0, 255).astype(np.uint8)), labels)


class Brightness(nn.Module):
    """A classifier that reads the class off the mean brightness: enough to estimate class mixes."""

    def forward(self, x):
        level = x.mean((1, 2, 3))[:, None] * 255
        return -((level - (40 + 50 * torch.arange(K)[None])) / 10) ** 2


def datamodule(unlabeled_classes: list[int] | None) -> SSLDataModule:
    """Balanced train pool (labels, val, test and the unlabeled rest drawn from it), plus optionally an
    unlabeled-only split of 2,000 images from `unlabeled_classes` only."""
    rng = np.random.default_rng(0)
    train = rng.permutation(np.repeat(np.arange(K), 100))
    extra = None
    if unlabeled_classes is not None:
        extra = images(rng.choice(unlabeled_classes, 2000), seed=2)
        extra.labels = np.full(2000, -1)
    source = SourceData(train=images(train, seed=1), classes=[str(k) for k in range(K)], scale=1 / 255,
                        unlabeled=extra)
    dm = SSLDataModule(lambda: source, num_labels=40, batch_size=8, mu=1)
    dm.setup()
    return dm


def run_check(dm: SSLDataModule, tmp_path) -> dict:
    check = PoolShiftCheck(output_dir=str(tmp_path))
    trainer = SimpleNamespace(is_global_zero=True, datamodule=dm)
    module = SimpleNamespace(eval_net=Brightness(), device=torch.device("cpu"))
    check.on_fit_start(trainer, module)
    check.on_fit_end(trainer, module)
    return json.loads((tmp_path / "pool_check.json").read_text())


def test_shared_distribution_gives_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ssl_train.monitor.callbacks"):
        result = run_check(datamodule(None), tmp_path)
    assert not result["inputs"]["mismatch"] and not result["classes"]["mismatch"]
    assert result["classes"]["total_variation"] < 0.1 and not caplog.records


def test_a_pool_dominated_by_two_classes_is_reported(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ssl_train.monitor.callbacks"):
        result = run_check(datamodule([0, 1]), tmp_path)
    assert result["inputs"]["mismatch"] and result["inputs"]["p_value"] <= 0.01
    classes = result["classes"]
    assert classes["mismatch"] and classes["total_variation"] > 0.3
    assert classes["unlabeled_priors"]["0"] + classes["unlabeled_priors"]["1"] > 0.85
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "images differ in distribution" in messages and "estimated class mix differs" in messages


def test_a_check_that_cannot_run_is_logged_not_raised(tmp_path, caplog):
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(unlabeled=None))
    with caplog.at_level(logging.WARNING, logger="ssl_train.monitor.callbacks"):
        PoolShiftCheck(output_dir=str(tmp_path)).on_fit_start(trainer, None)
    assert "pool check skipped" in caplog.text
