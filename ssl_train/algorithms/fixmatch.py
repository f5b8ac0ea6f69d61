"""FixMatch (Sohn et al., 2020): confident hard labels from a weak view train the strong view."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.losses import align_distribution, fixmatch_loss


class FixMatch(SSLAlgorithm):
    """Cross-entropy on the strong view against the weak view's argmax where its confidence ≥ `threshold` (τ).

    `distribution_alignment` (off in the paper) rescales the weak view's probabilities
    by uniform / (running mean of the model's unlabeled predictions) before
    thresholding, as ReMixMatch does; `alignment_momentum` sets that running mean's
    memory (0.99 ≈ the last hundred steps, like ReMixMatch's 128-batch window).
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, threshold: float = 0.95, distribution_alignment: bool = False,
                 alignment_momentum: float = 0.99, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold
        self.distribution_alignment = distribution_alignment
        self.alignment_momentum = alignment_momentum
        num_classes = self.hparams.num_classes
        # A buffer, so that it is checkpointed and a resumed run aligns exactly as before.
        self.register_buffer("prediction_marginal", torch.full((num_classes,), 1.0 / num_classes))

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_weak, logits_strong = self.forward_views(
            batch["lb"]["x"], batch["ulb"]["weak"], batch["ulb"]["strong"])
        probs_weak = logits_weak.detach().float().softmax(-1)
        if self.distribution_alignment:
            probs_weak = self._align(probs_weak)
        unsup, mask, pseudo = fixmatch_loss(probs_weak, logits_strong, self.threshold)
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]), unsup=unsup, mask=mask,
                          pseudo_labels=pseudo)

    def _align(self, probs: torch.Tensor) -> torch.Tensor:
        batch_mean = probs.mean(0)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_mean)
            batch_mean /= dist.get_world_size()
        m = self.alignment_momentum
        self.prediction_marginal.mul_(m).add_(batch_mean, alpha=1.0 - m)
        uniform = torch.full_like(batch_mean, 1.0 / len(batch_mean))
        return align_distribution(probs, self.prediction_marginal, uniform)
