"""FixMatch (Sohn et al., 2020) and the methods that are FixMatch with another masking or alignment part:
FlexMatch, FreeMatch, SoftMatch and UDA are configs of this class (conf/algorithm/)."""

from __future__ import annotations

import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.algorithms.part import build_part
from ssl_train.errors import SSLTrainError
from ssl_train.losses import masked_cross_entropy, sharpen


class FixMatch(SSLAlgorithm):
    """Cross-entropy of the strong view against pseudo-labels from the weak view, weighted per sample by `masking`.

    Args:
        masking: a `masking` part (conf/algorithm/masking/): which pseudo-labels count and how much; None is
            FixMatch's fixed threshold τ = 0.95.
        alignment: a distribution `alignment` part (conf/algorithm/alignment/) applied to the weak view's
            probabilities before masking and pseudo-labeling; None: none (the FixMatch paper).
        temperature: None gives hard pseudo-labels (the argmax); a number T gives soft targets, the weak view's
            probabilities sharpened by T (UDA: 0.4).
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, masking=None, alignment=None, temperature: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 < temperature <= 1):
            raise SSLTrainError(f"algorithm.temperature={temperature!r}: expected null (hard labels) or a number "
                                f"in (0, 1] (soft targets sharpened by it)")
        classes = self.hparams.num_classes
        self.masking = build_part(masking, classes, "masking") or FixedThreshold(classes)
        self.alignment = build_part(alignment, classes, "alignment")
        self.temperature = temperature

    def pseudo_targets(self, logits_lb, logits_weak, idx):
        """(targets, weights, hard labels) for the unlabeled batch: aligned, masked, hard or sharpened."""
        probs_lb = logits_lb.detach().float().softmax(-1)
        probs = logits_weak.detach().float().softmax(-1)
        if self.alignment is not None:
            probs = self.alignment(probs, probs_lb=probs_lb)
        weights = self.masking(probs, idx=idx, probs_lb=probs_lb)
        labels = probs.argmax(dim=-1)
        return (labels if self.temperature is None else sharpen(probs, self.temperature)), weights, labels

    def losses(self, batch: dict) -> StepLosses:
        logits_lb, logits_weak, logits_strong = self.forward_views(
            batch["lb"]["x"], batch["ulb"]["weak"], batch["ulb"]["strong"])
        targets, weights, labels = self.pseudo_targets(logits_lb, logits_weak, batch["ulb"].get("idx"))
        return StepLosses(sup=F.cross_entropy(logits_lb, batch["lb"]["y"]),
                          unsup=masked_cross_entropy(logits_strong, targets, weights), weights=weights,
                          pseudo_labels=labels, extra=self.masking.penalty(logits_strong, weights))
