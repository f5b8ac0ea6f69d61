"""The guard: SSL's validation gain over the supervised baseline on the same labels, its interval, its verdict, and
a run that trains both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssl_train.errors import SSLTrainError
from ssl_train.run import guard
from ssl_train.run.checkpoint import load_run
from ssl_train.run.training import train


def test_the_gain_is_the_accuracy_difference_with_a_paired_interval():
    ssl = np.array([1] * 90 + [0] * 10, bool)
    supervised = np.array([1] * 60 + [0] * 40, bool)
    result = guard.gain(ssl, supervised, seed=0)
    assert result["guard/val_acc_ssl"] == 0.9 and result["guard/val_acc_supervised"] == 0.6
    assert result["guard/gain"] == pytest.approx(0.3)
    # 30 images SSL gets right and the baseline does not: the gain's binomial spread is about 0.046.
    assert 0.18 < result["guard/gain_low"] < 0.25 < 0.35 < result["guard/gain_high"] < 0.42
    assert result["guard/ssl_better"] == 1.0
    assert guard.gain(ssl, supervised, seed=0) == result  # seeded


def test_ssl_is_not_better_when_the_interval_reaches_zero_and_the_verdict_says_so():
    ssl = np.array([1, 0] * 50, bool)
    supervised = np.array([1, 1, 0, 0] * 25, bool)  # the same accuracy, other images
    result = guard.gain(ssl, supervised, seed=0)
    assert result["guard/gain"] == 0 and result["guard/gain_low"] < 0 < result["guard/gain_high"]
    assert result["guard/ssl_better"] == 0.0
    assert guard.verdict(result).startswith("guard: SSL is not better than supervised training on the same labels: "
                                            "validation accuracy 0.5000 against 0.5000 supervised")
    same = guard.gain(ssl, ssl, seed=0)
    assert same["guard/gain_low"] == same["guard/gain_high"] == 0 and not same["guard/ssl_better"]


def test_guard_must_be_a_boolean(make_cfg):
    with pytest.raises(SSLTrainError, match=r"^guard='yes': expected true"):
        guard.enabled(make_cfg("guard='yes'"))
    assert not guard.enabled(make_cfg("algorithm=supervised", "guard=true"))


@pytest.mark.parametrize("saved", ["0.3", {"guard/gain": "print('hi')"}, {"guard/gain": 0.1}])
def test_a_checkpoints_guard_entry_must_be_its_numbers(saved):
    with pytest.raises(SSLTrainError, match=r"^x\.ckpt: its 'guard' entry is not the guard's numbers"):
        guard.read(saved, "x.ckpt")


def test_a_run_trains_the_baseline_on_the_same_splits_and_its_checkpoint_keeps_the_gain(make_cfg, tmp_path):
    metrics = train(make_cfg("guard=true", "trainer.max_steps=30", "trainer.val_check_interval=30"))
    keys = {"guard/val_acc_ssl", "guard/val_acc_supervised", "guard/gain", "guard/gain_low", "guard/gain_high",
            "guard/ssl_better", "guard/time_s"}
    assert keys <= set(metrics)
    assert metrics["guard/gain_low"] <= metrics["guard/gain"] <= metrics["guard/gain_high"]
    # The SSL side is the run's own final validation accuracy.
    assert metrics["guard/val_acc_ssl"] == pytest.approx(metrics["val/acc"])
    assert json.loads((tmp_path / "metrics.json").read_text())["guard/gain"] == metrics["guard/gain"]
    run = load_run(tmp_path / "checkpoints" / "last.ckpt")
    assert run.guard == {k: metrics[k] for k in keys}
    assert not (tmp_path / "guard" / "checkpoints").exists()  # the baseline writes no checkpoints
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["ssl_train"]["config"]
    assert saved["algorithm"]["_target_"].endswith("FixMatch") and saved["guard"] is True
