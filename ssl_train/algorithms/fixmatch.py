"""FixMatch (Sohn et al., 2020): confident hard labels from a weak view train the strong view."""

import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.losses import fixmatch_loss


class FixMatch(SSLAlgorithm):
    """Cross-entropy on the strong view against the weak view's argmax where its confidence ≥ `threshold` (τ)."""

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, threshold: float = 0.95, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_weak, logits_strong = self.forward_views(
            batch["lb"]["x"], batch["ulb"]["weak"], batch["ulb"]["strong"])
        unsup, mask, pseudo = fixmatch_loss(logits_weak, logits_strong, self.threshold)
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]), unsup=unsup, mask=mask,
                          pseudo_labels=pseudo)
