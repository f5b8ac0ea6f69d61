"""End-to-end: the real configs compose and train a few steps; multirun, resume, seeds and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from ssl_train.run.config import config_dir
from ssl_train.run.training import build, train

ALGORITHMS = sorted(p.stem for p in (config_dir() / "algorithm").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (config_dir() / "data").glob("*.yaml") if not p.stem.startswith("_"))
REQUIRED = {"test/acc", "test/f1_macro", "test/ece", "val/acc_best", "train/time_s"}


def weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_and_writes_a_complete_run(make_cfg, algorithm, tmp_path):
    metrics = train(make_cfg(f"algorithm={algorithm}"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert REQUIRED <= saved.keys() and saved["train/steps"] == 4
    assert 0.0 <= saved["test/acc"] <= 1.0 and metrics["test/acc"] == saved["test/acc"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()
    logged = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/sup_loss" in logged and "train/lr" in logged
    if algorithm != "supervised":
        assert "train/unsup_loss" in logged


@pytest.mark.parametrize("choice", ["last", "best"])
def test_test_metrics_name_the_chosen_checkpoint_and_report_the_other(make_cfg, tmp_path, choice):
    metrics = train(make_cfg(f"test_checkpoint={choice}"))
    best = str(next((tmp_path / "checkpoints").glob("best-*.ckpt")))
    expected = {"last": str(tmp_path / "checkpoints" / "last.ckpt"), "best": best}
    assert metrics["test/checkpoint"] == expected[choice]
    assert metrics["test_alt/checkpoint"] == expected["best" if choice == "last" else "last"]
    assert 0.0 <= metrics["test_alt/acc"] <= 1.0


def logged_steps(run_dir: Path, key: str) -> list[int]:
    import csv

    return [int(r["step"]) for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r.get(key)]


@pytest.mark.parametrize("steps, interval, validated", [(6, 4, [4, 6]), (3, 200, [3])])
def test_every_run_validates_its_final_weights(make_cfg, tmp_path, steps, interval, validated):
    """Validation at each interval and at the last step, also for a run shorter than one interval."""
    metrics = train(make_cfg(f"trainer.max_steps={steps}", f"trainer.val_check_interval={interval}"))
    assert [s + 1 for s in logged_steps(tmp_path, "val/acc")] == validated  # the CSV step counts from 0
    assert "val/acc_best" in metrics
    assert list((tmp_path / "checkpoints").glob("best-step*.ckpt"))


def test_test_results_are_logged_once_each_under_distinct_keys(make_cfg, tmp_path):
    metrics = train(make_cfg())
    for key in ("test/acc", "test_alt/acc", "test/ece", "test_alt/ece"):
        assert len(logged_steps(tmp_path, key)) == 1, key
    assert metrics["test/acc"] != metrics["test_alt/acc"] or metrics["test/ece"] != metrics["test_alt/ece"]


def test_fixmatch_logs_mask_ratio_and_pseudo_label_accuracy(make_cfg, tmp_path):
    train(make_cfg("algorithm=fixmatch", "algorithm.masking.threshold=0.0"))
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/mask_ratio" in header and "train/pseudo_acc" in header


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_data_config_composes(make_cfg, dataset):
    cfg = make_cfg(f"data={dataset}")
    assert cfg.data._target_.endswith("SSLDataModule") and cfg.data.dataset._partial_


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml")))
def test_every_experiment_composes(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.trainer.max_steps > 0 and cfg.model._target_


@pytest.mark.parametrize("dataset, extra", [
    ("digits", []),
    ("synthetic", ["data.dataset.num_samples=200", "data.dataset.image_shape=[3,16,16]", "model=mlp"]),
])
def test_builtin_datasets_train(make_cfg, dataset, extra, tmp_path):
    train(make_cfg(f"data={dataset}", *extra))
    assert (tmp_path / "metrics.json").is_file()


def test_image_folder_trains_and_aligns_to_its_labeled_class_frequencies(make_cfg, image_root, tmp_path):
    for i, png in enumerate(sorted((image_root / "labeled" / "dog").glob("*.png"))):
        (image_root / "labeled" / "dog" / f"extra{i}.png").write_bytes(png.read_bytes())  # 6 cats, 12 dogs
    cfg = make_cfg("data=image_folder", f"data.dataset.root={image_root}", "data.dataset.image_size=[16,16]",
                   "data.val_size=2", "data.test_size=2")
    train(cfg)
    assert (tmp_path / "metrics.json").is_file()
    datamodule, _, _ = build(cfg)
    prior = datamodule.labeled_class_prior()
    assert prior[1] > 1.5 * prior[0]
    torch.testing.assert_close(weights(tmp_path / "checkpoints" / "last.ckpt")["alignment.target"], prior)


def test_same_seed_same_numbers_on_cpu(make_cfg, tmp_path):
    a = train(make_cfg("seed=7"))
    ckpt_a = weights(tmp_path / "checkpoints" / "last.ckpt")
    b = train(make_cfg("seed=7", f"paths.output_dir={tmp_path / 'again'}"))
    ckpt_b = weights(tmp_path / "again" / "checkpoints" / "last.ckpt")
    assert a["test/acc"] == b["test/acc"] and a["train/loss"] == b["train/loss"]
    assert all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)


class StopAt(L.Callback):
    """Simulates an interruption: the trainer stops after `step` steps, having checkpointed."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.parametrize("algorithm, parts", [
    ([], ["alignment.window", "alignment.log_weights"]),
    (["algorithm=flexmatch", "algorithm.masking.threshold=0.2"], ["masking.selected", "masking.learning_effect"]),
    (["algorithm=freematch", "algorithm/alignment=ratio"],
     ["masking.global_threshold", "masking.class_probs", "masking.label_hist", "alignment.model_mean"]),
    (["algorithm=softmatch"], ["masking.mean", "masking.var", "alignment.model_mean"]),
], ids=["fixmatch", "flexmatch", "freematch-ratio", "softmatch"])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(make_cfg, tmp_path, algorithm, parts):
    """The network and the parts' state (masking, alignment: buffers in the checkpoint) end as in one run;
    FlexMatch's per-sample state is sized from the data in `setup`, before the restore, so it loads."""
    steps = [*algorithm, "trainer.max_steps=8", "trainer.val_check_interval=4"]
    train(make_cfg(*steps, f"paths.output_dir={tmp_path / 'whole'}"))

    cfg = make_cfg(*steps, f"paths.output_dir={tmp_path / 'part'}")
    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(StopAt(4))
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 4
    train(make_cfg(*steps, f"paths.output_dir={tmp_path / 'resumed'}",
                   f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"))

    whole = weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    resumed = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    halfway = weights(tmp_path / "part" / "checkpoints" / "last.ckpt")
    for key in parts:  # the state moved after the restore: its equality says something
        assert not torch.equal(halfway[key], resumed[key]), key


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_train.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


FAST_CLI = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
            "data.batch_size=10", "data.mu=1", "trainer.accelerator=cpu"]


def test_multirun_sweeps_two_jobs(tmp_path):
    result = run_cli("-m", "algorithm=supervised,fixmatch", *FAST_CLI, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        assert REQUIRED <= json.loads((tmp_path / job / "metrics.json").read_text()).keys()


@pytest.mark.slow  # a two-job multirun in a subprocess
def test_a_sweep_job_without_its_metric_fails_alone_with_one_line(tmp_path):
    """A job whose optimized_metric is missing fails (no NaN for the sweeper); the other jobs still run."""
    result = run_cli("-m", "optimized_metric=val/nope,val/acc_best", *FAST_CLI, f"hydra.sweep.dir={tmp_path}",
                     cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and errors[0].startswith("error: optimized_metric=val/nope is absent"), errors
    assert (tmp_path / "1" / "metrics.json").is_file()


@pytest.mark.parametrize("override, message", [
    ("data.num_labels=41", "error: num_labels=41 must be a positive multiple of the class count 10"),
    ("data.num_labels=2000", "error: num_labels=2000 needs 200 labeled samples of class 0"),
    ("data=image_folder", "error: data.dataset.root is required"),
    ("data=image_folder data.dataset.root=nowhere", "error: image folder"),
    ("optimizer.lr=1e30", "error: non-finite loss at step"),
    ("test_checkpoint=middle", "error: test_checkpoint='middle': expected 'last' or 'best'"),
    ("algorithm.alignment.window=0", "error: algorithm.alignment.window=0: expected an integer >= 1"),
])
def test_bad_input_is_one_clear_line_and_no_complete_run(tmp_path, override, message):
    result = run_cli(*FAST_CLI, *override.split(), f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("override", [
    "trainer.precision=bf16-mixed", "logger=tensorboard",
    "speed.channels_last=true optimizer.fused=true trainer.benchmark=true data.augment_on=loader data.num_workers=1",
    pytest.param("speed=fast data.num_workers=0", marks=pytest.mark.slow),  # torch.compile takes a minute on a CPU
])
def test_trainer_options(make_cfg, tmp_path, override):
    train(make_cfg(*override.split()))
    assert (tmp_path / "metrics.json").is_file()
    if override == "logger=tensorboard":
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def csv_losses(run_dir: Path) -> list[float]:
    import csv

    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return [float(r["train/loss"]) for r in rows if r["train/loss"]]


def test_ddp_on_two_cpu_processes_follows_the_single_process_loss(tmp_path):
    """2 gloo processes x B/2 per device against 1 process x B: the ranks split the same global batch, so
    the (rank-averaged) losses agree up to per-device batch-norm statistics (SyncBN needs CUDA)."""
    common = ["data=synthetic", "data.dataset.num_samples=400", "data.dataset.image_shape=[3,8,8]", "model=cnn_small",
              "data.num_labels=40", "data.mu=2", "data.weak.translate=0", "data.weak.flip=false",
              "data.strong.ops=[identity]", "data.strong.cutout=0", "algorithm.masking.threshold=0.3",
              "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.log_every_n_steps=1",
              "trainer.enable_progress_bar=false"]
    single = run_cli(*common, "data.batch_size=8", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'one'}",
                     cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = run_cli(*common, "data.batch_size=4", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                  f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one, two = csv_losses(tmp_path / "one"), csv_losses(tmp_path / "ddp")
    assert len(one) == len(two) == 6
    assert one != two  # really two runs
    assert max(abs(a - b) / a for a, b in zip(one, two)) < 0.05, (one, two)
    assert two[-1] < two[0] - 0.2  # and it learns
    assert REQUIRED <= json.loads((tmp_path / "ddp" / "metrics.json").read_text()).keys()
