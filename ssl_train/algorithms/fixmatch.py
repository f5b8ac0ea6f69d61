"""FixMatch (Sohn et al., 2020): confident hard labels from a weak view train the strong view."""

import torch.nn.functional as F

from ssl_train.algorithms.alignment import DistributionAlignment
from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.losses import fixmatch_loss


class FixMatch(SSLAlgorithm):
    """Cross-entropy on the strong view against the weak view's argmax where its confidence ≥ `threshold` (τ).

    `distribution_alignment` (off in the paper) reweights the weak view's
    probabilities per class before thresholding, so that the last `alignment_window`
    unlabeled predictions follow the labeled set's class frequencies (see
    `DistributionAlignment`); `alignment_iterations` are its Sinkhorn steps per training step.
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, threshold: float = 0.95, distribution_alignment: bool = False,
                 alignment_window: int = 8192, alignment_iterations: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold
        self.alignment = (DistributionAlignment(self.hparams.num_classes, alignment_window, alignment_iterations)
                          if distribution_alignment else None)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.alignment is not None and hasattr(datamodule, "labeled_class_prior"):
            self.alignment.set_target(datamodule.labeled_class_prior())

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_weak, logits_strong = self.forward_views(
            batch["lb"]["x"], batch["ulb"]["weak"], batch["ulb"]["strong"])
        probs_weak = logits_weak.detach().float().softmax(-1)
        if self.alignment is not None:
            probs_weak = self.alignment(probs_weak)
        unsup, mask, pseudo = fixmatch_loss(probs_weak, logits_strong, self.threshold)
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]), unsup=unsup, mask=mask,
                          pseudo_labels=pseudo)
