"""Knowledge distillation (Hinton et al., 2015): a smaller student learns a trained teacher's soft predictions.

A `Distillation` is an ordinary algorithm of the framework (one LightningModule
file, the base owns optimizer, schedule, EMA, metrics and logging), so a
distilled student trains, checkpoints, resumes and exports exactly like any
`ssl-train` run. The teacher is any network (pixels → logits; `ssl-distill`
loads it from a run checkpoint), frozen and always in eval mode; it sees the
same augmented views as the student. With `view="strong"` the
unlabeled images are strongly augmented ("function matching", Beyer et al.,
2022: teacher and student on the same aggressive view), which shows the
student much more of the teacher's function than the few weak views of a
small pool do.

Per step, with `distillation_loss` (ssl_train.losses) = α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE:
    sup   = distillation_loss on the labeled batch, with the labels
    unsup = distillation_loss on the unlabeled batch, KL term only (no labels)
    loss  = sup + λ_u·unsup
The unlabeled pool is where distillation earns its keep in SSL: the teacher
labels every unlabeled image softly, so the student sees far more than the
few labeled examples.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.errors import SSLTrainError
from ssl_train.losses import distillation_loss


class Distillation(SSLAlgorithm):
    """Trains `net` (the student) from the frozen `teacher` network.

    Args:
        teacher: the trained network (`ssl-distill`: the evaluated network of `teacher_ckpt`, EMA when the run
            used it), with as many outputs as the data has classes.
        temperature: T, softens both distributions; the loss carries T² so gradients keep their scale.
        alpha: α, the weight of the KL term against the labeled cross-entropy.
        view: the unlabeled view both networks see, "weak" or "strong".
    """

    unlabeled_views = ("weak",)

    def __init__(self, *args, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9, view: str = "weak",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not temperature > 0:
            raise SSLTrainError(f"algorithm.temperature={temperature}: expected a number > 0")
        if not 0.0 <= alpha <= 1.0:
            raise SSLTrainError(f"algorithm.alpha={alpha}: expected a number in [0, 1]")
        if view not in ("weak", "strong"):
            raise SSLTrainError(f"algorithm.view={view!r}: expected 'weak' or 'strong'")
        self.unlabeled_views = (view,)
        head = getattr(getattr(teacher, "backbone", teacher), "head", None)
        if isinstance(head, nn.Linear) and head.out_features != self.hparams.num_classes:
            raise SSLTrainError(f"the teacher has {head.out_features} classes, the data {self.hparams.num_classes}")
        # Held outside the module tree: the teacher is not a trained part of this module, so it stays out of
        # the student's checkpoints (its own checkpoint is `teacher_ckpt`) and out of Lightning's train/eval
        # switching; on_fit_start puts it on the student's device.
        self._frozen = (teacher.requires_grad_(False).eval(),)
        self.temperature, self.alpha = temperature, alpha

    @property
    def teacher(self) -> nn.Module:
        return self._frozen[0]

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    def losses(self, batch: dict) -> StepLosses:
        x_lb, y, x_ulb = batch["lb"]["x"], batch["lb"]["y"], batch["ulb"][self.unlabeled_views[0]]
        student_lb, student_ulb = self.forward_views(x_lb, x_ulb)
        with torch.no_grad():
            teacher_lb, teacher_ulb = self.teacher(torch.cat([x_lb, x_ulb])).split([len(x_lb), len(x_ulb)])
        return StepLosses(
            sup=distillation_loss(student_lb, teacher_lb, y, self.temperature, self.alpha),
            unsup=distillation_loss(student_ulb, teacher_ulb, None, self.temperature, self.alpha))
