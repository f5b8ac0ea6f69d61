"""Distillation: the training step is the Hinton loss (by hand); ssl-distill trains and exports a student."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_train.errors import SSLTrainError
from ssl_train.export.distill import distill
from ssl_train.models.classifier import Classifier
from ssl_train.models.cnn import SmallCNN
from ssl_train.run.checkpoint import load_run

FAST = ["trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "+data.batch_size=10", "+data.mu=2"]


def hand_kl(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """KL(teacher_T ‖ student_T) summed over classes, averaged over samples, written out."""
    p_teacher = torch.exp(teacher / T) / torch.exp(teacher / T).sum(-1, keepdim=True)
    log_student = student / T - torch.log(torch.exp(student / T).sum(-1, keepdim=True))
    return (p_teacher * (torch.log(p_teacher) - log_student)).sum(-1).mean()


@pytest.mark.parametrize("view", ["weak", "strong"])
def test_distillation_step_is_the_hinton_loss_by_hand(digits_ckpt, compose_cfg, view):
    cfg = compose_cfg("distill", [f"teacher_ckpt={digits_ckpt}", "algorithm.temperature=3.0",
                                     "algorithm.alpha=0.7", f"algorithm.view={view}"])
    student = Classifier(SmallCNN((1, 8, 8), 10, widths=(4, 4, 4)), [0.3], [0.4])
    teacher = load_run(digits_ckpt).network
    module = instantiate(cfg.algorithm, net=student, num_classes=10, optimizer=instantiate(cfg.optimizer),
                         teacher=teacher)
    gen = torch.Generator().manual_seed(0)
    x_lb, x_ulb = torch.rand(3, 1, 8, 8, generator=gen), torch.rand(5, 1, 8, 8, generator=gen)
    y = torch.tensor([0, 4, 9])

    assert module.unlabeled_views == (view,)
    out = module.losses({"lb": {"x": x_lb, "y": y}, "ulb": {view: x_ulb}})

    with torch.no_grad():
        zs = student(torch.cat([x_lb, x_ulb]))  # one forward over both, as the step does (batch norm in train mode)
        zt = teacher(torch.cat([x_lb, x_ulb]))
    T, alpha = 3.0, 0.7
    ce = -(zs[:3] - torch.log(torch.exp(zs[:3]).sum(-1, keepdim=True)))[torch.arange(3), y].mean()
    assert out.sup.item() == pytest.approx((alpha * T * T * hand_kl(zs[:3], zt[:3], T) + (1 - alpha) * ce).item(),
                                           rel=1e-4)
    assert out.unsup.item() == pytest.approx((alpha * T * T * hand_kl(zs[3:], zt[3:], T)).item(), rel=1e-4)
    assert out.sup.requires_grad and F.cross_entropy(zs[:3], y).item() == pytest.approx(ce.item(), rel=1e-5)
    # The teacher is frozen, kept in eval mode and out of the student's checkpoints.
    module.train()
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    assert not any(k.startswith("teacher") or "_frozen" in k for k in module.state_dict())


def test_ssl_distill_trains_a_smaller_student_on_the_teachers_splits_and_exports_it(digits_ckpt, compose_cfg, tmp_path):
    cfg = compose_cfg("distill", [f"teacher_ckpt={digits_ckpt}", *FAST, f"paths.output_dir={tmp_path}",
                                     "export.pt2=false", "export.latency_repeats=1", "export.latency_threads=1"])
    summary = distill(cfg)

    assert summary["parameter_ratio"] <= 0.25 and json.loads((tmp_path / "distill.json").read_text())["student"]
    assert summary["metrics"]["train/steps"] == 4 and (tmp_path / "metrics.json").is_file()
    teacher, student = load_run(digits_ckpt), load_run(summary["student"]["checkpoint"])
    assert student.config["data"] == teacher.config["data"] | {"batch_size": 10, "mu": 2}
    assert student.config["algorithm"]["_target_"].endswith("Distillation")
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["training"]["algorithm"] == "Distillation" and set(meta["artifacts"]) == {"model.ts", "model_int8.ts"}
    assert meta["model"]["num_parameters"] == summary["student"]["parameters"]


def test_a_teacher_with_other_classes_is_refused(digits_ckpt, compose_cfg):
    cfg = compose_cfg("distill", [f"teacher_ckpt={digits_ckpt}"])
    student = Classifier(SmallCNN((1, 8, 8), 3, widths=(4, 4, 4)), [0.3], [0.4])
    with pytest.raises(InstantiationException) as error:
        instantiate(cfg.algorithm, net=student, num_classes=3, optimizer=instantiate(cfg.optimizer),
                    teacher=load_run(digits_ckpt).network)
    assert isinstance(error.value.__cause__, SSLTrainError)
    assert "the teacher has 10 classes, the data 3" in str(error.value.__cause__)
