"""Pseudo-Label (Lee, 2013): the model's own confident hard labels on a weak view become targets."""

import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.losses import confident_pseudo_labels, masked_cross_entropy


class PseudoLabel(SSLAlgorithm):
    unlabeled_views = ("weak",)

    def __init__(self, *args, threshold: float = 0.95, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_ulb = self.forward_views(batch["lb"]["x"], batch["ulb"]["weak"])
        pseudo, mask = confident_pseudo_labels(logits_ulb, self.threshold)
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]),
                          unsup=masked_cross_entropy(logits_ulb, pseudo, mask), weights=mask, pseudo_labels=pseudo)
