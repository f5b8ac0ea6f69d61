"""Π-model (Laine & Aila, 2017): two stochastic views of a sample should get the same prediction."""

import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.losses import softmax_mse


class PiModel(SSLAlgorithm):
    """Softmax MSE between two independently augmented views; the second view is the (detached) target."""

    unlabeled_views = ("weak", "weak2")

    def losses(self, batch: dict) -> StepLosses:
        ulb = batch["ulb"]
        logits_lb, logits_a, logits_b = self.forward_views(batch["lb"]["x"], ulb["weak"], ulb["weak2"])
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]), unsup=softmax_mse(logits_a, logits_b))
