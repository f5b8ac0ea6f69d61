"""The reference profile: written by training and by export, faithful to the model, found from any reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ssl_train.errors import SSLTrainError
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.run.checkpoint import load_run
from ssl_train.run.profile import (
    PROFILE_FILE,
    SUMMARY_FILE,
    bin_counts,
    fit_pca,
    load_profile,
    profile_checkpoint,
    project,
    quantile_edges,
    resolve_reference,
)
from ssl_train.run.training import train


def test_training_saves_the_profile_of_the_tested_model(run_dir):
    profile = load_profile(run_dir / PROFILE_FILE)
    run = load_run(run_dir / "checkpoints" / "last.ckpt")  # test_checkpoint=last: the final weights
    val = run.datamodule().val
    batch = val[np.arange(len(val))]
    x, y = batch["x"].float() / 16, batch["y"]
    with torch.inference_mode():
        logits = run.network(x)
    assert profile.source["weights"] == "final" and profile.source["global_step"] == run.global_step
    assert profile.source["split"] == "val" and profile.samples == len(val)
    assert profile.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert int(profile.confusion.sum()) == len(val) and np.trace(profile.confusion.numpy()) == round(
        profile.accuracy * len(val))
    assert profile.predicted_counts.tolist() == torch.bincount(logits.argmax(1), minlength=10).tolist()
    assert profile.channel_mean == pytest.approx([float(x.mean())], rel=1e-5)
    assert profile.feature_dim == run.network.backbone.feature_dim and profile.embeddings.shape == (len(val), 16)
    assert profile.pca_fit_on == "other split" and 0.05 < profile.temperature < 20
    assert int(profile.psi_counts.sum()) == len(val) and int(profile.histogram_counts.sum()) == len(val)
    with torch.inference_mode():  # the network inside the profile is the checkpoint's
        assert torch.equal(profile.network()(x), logits)
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["accuracy"] == profile.accuracy and summary["confusion_matrix"] == profile.confusion.tolist()


def test_profile_is_reproducible_and_export_writes_the_same(run_dir, digits_ckpt, tmp_path):
    saved = load_profile(run_dir / PROFILE_FILE)
    rebuilt = profile_checkpoint(digits_ckpt)
    export_checkpoint(digits_ckpt, tmp_path, ExportOptions(torchscript=False, int8=False, pt2=False,
                                                           latency_repeats=1, latency_warmup=0))
    exported = load_profile(tmp_path / PROFILE_FILE)
    assert json.loads((tmp_path / "metadata.json").read_text())["reference_profile"] == PROFILE_FILE
    for profile in (rebuilt, exported):
        assert profile.accuracy == saved.accuracy and profile.temperature == pytest.approx(saved.temperature)
        assert torch.allclose(profile.embeddings, saved.embeddings, atol=1e-5)
        assert torch.equal(profile.confusion, saved.confusion)


def test_resolve_reference_from_directory_profile_or_checkpoint(run_dir, digits_ckpt, tmp_path):
    _, where, built = resolve_reference(run_dir)
    assert where == str(run_dir / PROFILE_FILE) and not built
    assert resolve_reference(run_dir / PROFILE_FILE)[2] is False
    assert resolve_reference(digits_ckpt)[2] is True
    old_run = tmp_path / "old_run"  # a run made before profiles existed: built from its best checkpoint
    (old_run / "checkpoints").mkdir(parents=True)
    shutil.copy(digits_ckpt, old_run / "checkpoints" / digits_ckpt.name)
    profile, where, built = resolve_reference(old_run)
    assert built and where.endswith(digits_ckpt.name) and profile.samples > 0


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or directory"),
    ("text file", "is neither a reference profile nor a checkpoint: torch.load failed"),
    ("other torch file", "is neither a reference profile nor an ssl-train checkpoint"),
    ("empty directory", f"the directory holds no {PROFILE_FILE} and no checkpoint"),
])
def test_bad_reference_is_one_line_naming_it(tmp_path, case, message):
    path = {"missing": tmp_path / "nowhere", "text file": tmp_path / "notes.txt",
            "other torch file": tmp_path / "weights.pt", "empty directory": tmp_path / "empty"}[case]
    if case == "text file":
        path.write_text("hello\n")
    elif case == "other torch file":
        torch.save({"w": torch.zeros(2)}, path)
    elif case == "empty directory":
        path.mkdir()
    with pytest.raises(SSLTrainError) as error:
        resolve_reference(path)
    assert len(str(error.value).splitlines()) == 1 and str(path) in str(error.value) and message in str(error.value)


def test_load_profile_rejects_other_files(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "p.pt")
    with pytest.raises(SSLTrainError, match="is not a reference profile"):
        load_profile(tmp_path / "p.pt")


def test_without_a_best_checkpoint_the_final_weights_are_profiled(make_cfg, tmp_path):
    train(make_cfg("algorithm=supervised", "data.num_labels=100", "~callbacks.model_checkpoint", "logger=[]",
                   "test=false"))
    profile = load_profile(tmp_path / PROFILE_FILE)
    assert profile.source["checkpoint"] is None and profile.source["weights"].startswith("final")
    assert json.loads((tmp_path / "pool_check.json").read_text())["classes"]["samples"] > 0


def test_quantile_edges_and_bin_counts():
    values = np.arange(100.0)
    edges = quantile_edges(values, 4)
    assert edges == pytest.approx([24.75, 49.5, 74.25])
    assert bin_counts(values, edges).tolist() == [25, 25, 25, 25]
    assert bin_counts(np.array([-5.0, 24.75, 1e9]), edges).tolist() == [1, 1, 0, 1]
    assert len(quantile_edges(np.ones(50), 10)) == 1  # ties merge into one edge


def test_pca_basis_is_orthonormal_and_residual_is_the_distance_to_the_subspace():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(200, 3, generator=gen) @ torch.randn(3, 8, generator=gen) + 0.01 * torch.randn(200, 8,
                                                                                                 generator=gen)
    mean, basis, explained = fit_pca(x, 3)
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-5)
    assert float(explained.sum()) > 0.99
    scores, residual = project(x, mean, basis)
    reconstructed = scores @ basis.T + mean
    assert torch.allclose(residual, (x - reconstructed).norm(dim=1), atol=1e-5)
    assert float(residual.max()) < 0.1
