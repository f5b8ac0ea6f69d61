"""Mean Teacher (Tarvainen & Valpola, 2017): an EMA teacher's prediction on one view targets the student's on
another."""

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

    def __init__(self, *args, student_view: str = "weak", **kwargs):
        """`student_view="strong"` gives the student the strong view (the teacher keeps a weak one): on tiny
        images two weak views barely differ, and the consistency target then carries little signal."""
        super().__init__(*args, **kwargs)
        if self.ema is None:
            raise SSLTrainError("mean_teacher needs algorithm.ema_decay > 0: the EMA copy is the teacher")
        if student_view not in ("weak", "strong"):
            raise SSLTrainError(f"algorithm.student_view={student_view!r}: expected 'weak' or 'strong'")
        self.unlabeled_views = ("weak", "weak2") if student_view == "weak" else ("strong", "weak")

    def losses(self, batch: dict) -> StepLosses:
        student_view, teacher_view = self.unlabeled_views
        logits_lb, logits_student = self.forward_views(batch["lb"]["x"], batch["ulb"][student_view])
        with torch.no_grad():
            logits_teacher = self.ema(self._input(batch["ulb"][teacher_view]))
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]),
                          unsup=softmax_mse(logits_student, logits_teacher))
