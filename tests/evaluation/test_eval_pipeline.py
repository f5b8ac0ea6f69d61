"""ssl-eval end to end on the shared trained digits model: consistency with training, the report, exported models,
temperature carried into export, and bad input (one clear error, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_train.cli import data_config
from ssl_train.data.samples import sample_ids
from ssl_train.errors import SSLTrainError
from ssl_train.evaluation.pipeline import EvalOptions, evaluate
from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.run.artifacts import load_torchscript
from ssl_train.run.checkpoint import load_run

QUICK = dict(bootstrap=200)
FIGURES = {"confusion matrix", "reliability diagram", "accuracy under corruptions", "pseudo-label shares",
           "membership inference"}


@pytest.fixture(scope="module")
def evaluated(digits_ckpt, tmp_path_factory):
    """(run directory, eval.json) of the digits model, with a CSV slicing its test split in two."""
    out = tmp_path_factory.mktemp("eval")
    datamodule = load_run(digits_ckpt).datamodule()
    ids = sample_ids(datamodule, datamodule.test)
    csv = out.parent / "slices.csv"
    csv.write_text("file,half\n" + "".join(f"{i},{'first' if n % 2 else 'second'}\n" for n, i in enumerate(ids)))
    with threads(1):
        return out, evaluate(digits_ckpt, out, EvalOptions(**QUICK, slice_csv=str(csv), slice_column="half"))


@pytest.fixture(scope="module")
def exported_ts(digits_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_ts")
    with threads(1):
        export_checkpoint(digits_ckpt, out, ExportOptions(int8=False, pt2=False, latency_repeats=1, latency_warmup=0,
                                                          latency_threads=1))
    return out / "model.ts"


def test_evaluation_agrees_with_the_training_runs_test_metrics(evaluated, digits_ckpt):
    out, result = evaluated
    trained = json.loads((digits_ckpt.parent.parent / "metrics.json").read_text())
    # the run tests its final weights and its best checkpoint; compare with the entry for this checkpoint
    prefix = next((p for p in ("test", "test_alt") if trained.get(f"{p}/checkpoint") == str(digits_ckpt)), "test")
    assert result["metrics"]["acc"] == pytest.approx(trained[f"{prefix}/acc"], abs=1e-6)
    assert result["metrics"]["f1_macro"] == pytest.approx(trained[f"{prefix}/f1_macro"], abs=1e-6)
    assert result["calibration"]["ece"] == pytest.approx(trained[f"{prefix}/ece"], abs=1e-6)
    assert result["bootstrap"]["acc"][0] < result["metrics"]["acc"] < result["bootstrap"]["acc"][1]
    assert json.loads((out / "eval.json").read_text()) == result


def test_every_section_is_there(evaluated):
    _, result = evaluated
    assert result["metrics"]["samples"] == 450 and len(result["metrics"]["per_class"]) == 10
    assert result["calibration"]["temperature"] > 0 and len(result["calibration"]["reliability"]) == 15
    assert {r["slice"] for r in result["slices"]["user"]} == {"first", "second"}
    assert sum(r["samples"] for r in result["slices"]["user"]) == 450
    assert set(result["robustness"]) == {"gaussian_noise", "blur", "contrast", "rotation"}
    assert result["ssl"]["pseudo_labels"]["unlabeled"] > 0
    assert "supervised" in result["ssl"]["training_curves_note"]  # no mask ratio in a supervised run's log
    assert 0 <= result["privacy"]["auc"] <= 1 and result["privacy"]["members"] == 500


def test_report_is_self_contained_and_shows_every_figure(evaluated, self_contained):
    out, result = evaluated
    page = out / "report.html"
    assert FIGURES <= set(self_contained(page))
    text = page.read_text()
    assert result["privacy"]["verdict"].split(":")[0] in text and f"{result['metrics']['acc']:.4f}" in text


def test_an_exported_model_evaluates_like_its_checkpoint(evaluated, exported_ts, compose_cfg, tmp_path):
    _, by_checkpoint = evaluated
    data = data_config(compose_cfg("eval", [f"ckpt_path={exported_ts}", "data=digits"]))
    result = evaluate(exported_ts, tmp_path, EvalOptions(**QUICK, robustness=False), data)
    assert result["model"]["kind"] == "TorchScript"
    assert result["metrics"]["acc"] == pytest.approx(by_checkpoint["metrics"]["acc"], abs=1e-6)
    assert result["calibration"]["ece"] == pytest.approx(by_checkpoint["calibration"]["ece"], abs=1e-5)
    assert not any("seed" in w for w in result["warnings"])


def test_the_fitted_temperature_carries_into_export(evaluated, digits_ckpt, tmp_path):
    _, result = evaluated
    t = result["calibration"]["temperature"]
    assert f"export.temperature={t:.4f}" in result["calibration"]["export_hint"]
    meta = export_checkpoint(digits_ckpt, tmp_path, ExportOptions(int8=False, pt2=False, latency_repeats=1,
                                                                  latency_warmup=0, latency_threads=1, temperature=t))
    x = torch.rand(5, 1, 8, 8)
    eager = load_run(digits_ckpt).network(x)
    torch.testing.assert_close(load_torchscript(tmp_path / "model.ts")(x), eager / t, rtol=1e-5, atol=1e-5)
    assert meta["export"]["temperature"] == t
    assert meta["reference"]["ece"] == pytest.approx(result["calibration"]["ece_scaled"], abs=1e-5)


def test_a_fixmatch_run_shows_its_mask_ratio_and_pseudo_label_accuracy(make_cfg, self_contained, tmp_path):
    from ssl_train.run.training import train

    train(make_cfg("algorithm=fixmatch", "algorithm.masking.threshold=0.0", "trainer.max_steps=6"))
    ckpt = next((tmp_path / "checkpoints").glob("best-*.ckpt"))
    result = evaluate(ckpt, tmp_path / "eval", EvalOptions(**QUICK, robustness=False, membership=False))
    curves = result["ssl"]["training_curves"]
    assert set(curves) == {"mask_ratio", "pseudo_acc"} and curves["mask_ratio"]["points"] == 6
    assert result["ssl"]["pseudo_labels"]["threshold"] == 0.0  # the run's own threshold
    assert "mask ratio and pseudo-label accuracy over training" in self_contained(tmp_path / "eval" / "report.html")


def test_an_open_set_run_is_scored_on_its_labeled_classes_and_reports_outlier_auroc(make_cfg, tmp_path):
    from ssl_train.run.training import train

    metrics = train(make_cfg("data.open_set=[0,1,2,3,4,5]", "data.num_labels=24", "trainer.max_steps=4"))
    result = evaluate(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "eval",
                      EvalOptions(**QUICK, robustness=False, membership=False))
    outliers = result["outliers"]
    assert result["metrics"]["samples"] == outliers["seen"] and outliers["unseen"] > 0
    assert result["metrics"]["acc"] == pytest.approx(metrics["test/acc"], abs=1e-4)
    assert outliers["auroc"] == pytest.approx(metrics["test/outlier_auroc"], abs=1e-4)  # the same score


@pytest.mark.parametrize("case, message", [
    ("no data", "is an exported model (TorchScript): name the data"),
    ("class mismatch", "predicts 10 classes but the data (synthetic) has 3"),
    ("shape mismatch", "cannot take the images of synthetic (shape 3×8×8)"),
])
def test_bad_model_data_pairs_are_one_clear_error_and_nothing_written(exported_ts, compose_cfg, tmp_path, case,
                                                                      message):
    overrides = {"no data": [], "class mismatch": ["data=synthetic", "data.dataset.image_shape=[1,8,8]",
                                                   "data.dataset.num_classes=3", "data.num_labels=30"],
                 "shape mismatch": ["data=synthetic", "data.dataset.image_shape=[3,8,8]"]}[case]
    data = data_config(compose_cfg("eval", [f"ckpt_path={exported_ts}", *overrides]))
    with pytest.raises(SSLTrainError) as error:
        evaluate(exported_ts, tmp_path / "out", EvalOptions(**QUICK), data)
    assert message in str(error.value) and str(exported_ts) in str(error.value)
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, message", [
    ("unreadable", "unreadable image file {root}/test/3/bad.png"),
    ("empty split", "split folder {root}/test holds no readable images"),
])
def test_unreadable_images_and_empty_splits_are_named_and_nothing_written(digits_ckpt, compose_cfg, digit_folder,
                                                                          tmp_path, case, message):
    root = digit_folder(tmp_path / "images", splits=("labeled",) if case == "empty split" else ("labeled", "test"))
    if case == "unreadable":
        (root / "test" / "3" / "bad.png").write_bytes(b"not a png")
    else:
        for c in range(10):
            (root / "test" / str(c)).mkdir(parents=True)
    data = data_config(compose_cfg("eval", ["ckpt_path=x", "data=image_folder", f"data.root={root}",
                                            "data.dataset.channels=1", "data.dataset.image_size=[8,8]",
                                            "data.val_size=10"]))
    with pytest.raises(SSLTrainError) as error:
        evaluate(digits_ckpt, tmp_path / "out", EvalOptions(**QUICK), data)
    assert message.format(root=root) in str(error.value) and not (tmp_path / "out").exists()


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_train.eval_cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ssl_eval_command_prints_the_summary_and_writes_both_files(digits_ckpt, tmp_path):
    result = run_eval(f"ckpt_path={digits_ckpt}", "eval.bootstrap=100", "eval.robustness=false",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout and "95% CI" in result.stdout and "temperature" in result.stdout
    assert (tmp_path / "run" / "eval.json").is_file() and (tmp_path / "run" / "report.html").is_file()
    missing = run_eval(f"ckpt_path={tmp_path / 'nowhere.ckpt'}", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"error: ckpt_path={tmp_path / 'nowhere.ckpt'}: no such file"
