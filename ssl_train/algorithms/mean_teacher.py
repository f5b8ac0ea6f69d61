"""Mean Teacher (Tarvainen & Valpola, 2017): an EMA teacher's prediction on one view targets the student's on another."""

import torch
import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.errors import SSLTrainError
from ssl_train.losses import softmax_mse


class MeanTeacher(SSLAlgorithm):
    """The teacher is the base's EMA copy with its own forward pass, under no_grad.

    The student's logits come from the student's forward on its own view; taking
    them from the teacher's output makes the consistency loss identically zero
    (a bug shipped by a widely used codebase), which a test guards against.
    """

    unlabeled_views = ("weak", "weak2")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.ema is None:
            raise SSLTrainError("mean_teacher needs algorithm.ema_decay > 0: the EMA copy is the teacher")

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_student = self.forward_views(batch["lb"]["x"], batch["ulb"]["weak"])
        with torch.no_grad():
            logits_teacher = self.ema(batch["ulb"]["weak2"])
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]),
                          unsup=softmax_mse(logits_student, logits_teacher))
