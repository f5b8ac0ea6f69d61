"""Masking and weighting parts: which pseudo-labels count, and how much. Each returns a weight in [0, 1] per
unlabeled sample; the algorithm multiplies its per-sample unlabeled loss by it.

They differ only in the threshold (or weight curve) that turns a weak view's
confidence into a weight: fixed (FixMatch), class-wise by a curriculum of how
well each class is learned (FlexMatch), self-adaptive from running statistics
of confidence (FreeMatch), a soft truncated Gaussian of confidence (SoftMatch),
or relative to the confidence on labeled data (AdaMatch). The math is in
`ssl_train.losses`; here is the state each keeps.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from ssl_train import losses as L_
from ssl_train.algorithms.distributed import gather_all
from ssl_train.algorithms.part import Part, check_fraction
from ssl_train.errors import SSLTrainError


class Masking(Part, abc.ABC):
    """Base: `forward(probs, idx=, probs_lb=)` → weights. `probs` are the (aligned) weak-view class probabilities,
    detached; `idx` the samples' positions in the unlabeled pool; `probs_lb` the labeled batch's probabilities."""

    @abc.abstractmethod
    def forward(self, probs: Tensor, idx: Tensor | None = None, probs_lb: Tensor | None = None) -> Tensor:
        """The weights of the pseudo-labels `probs.argmax(-1)`, one per row."""

    def penalty(self, logits_strong: Tensor, weights: Tensor) -> dict[str, Tensor]:
        """Extra loss terms the part adds (named, already weighted); none by default."""
        return {}


class FixedThreshold(Masking):
    """FixMatch: weight 1 where the top probability reaches `threshold` (τ), else 0."""

    def __init__(self, num_classes: int, threshold: float = 0.95):
        super().__init__(threshold=check_fraction("algorithm.masking.threshold", threshold))
        self.threshold = threshold

    def forward(self, probs, idx=None, probs_lb=None):
        return (probs.max(dim=-1).values >= self.threshold).float()


class CurriculumThreshold(Masking):
    """FlexMatch's curriculum pseudo-labeling: class c's threshold is τ·M(β_c), where β_c is how many unlabeled
    samples were last predicted as c with confidence ≥ τ, relative to the most predicted class (with `warmup`, to
    the unused samples too while they are the most, so thresholds start low and rise as the model learns).

    `selected` holds each unlabeled sample's last confident prediction (−1: none yet); it is indexed by the
    sample's position in the unlabeled pool, so it is sized in `bind`.
    """

    def __init__(self, num_classes: int, threshold: float = 0.95, warmup: bool = True, mapping: str = "convex"):
        if mapping not in L_.CURRICULUM_MAPPINGS:
            raise SSLTrainError(f"algorithm.masking.mapping={mapping!r}: expected one of "
                                f"{sorted(L_.CURRICULUM_MAPPINGS)}")
        if not isinstance(warmup, bool):
            raise SSLTrainError(f"algorithm.masking.warmup={warmup!r}: expected true or false")
        super().__init__(threshold=check_fraction("algorithm.masking.threshold", threshold), warmup=warmup,
                         mapping=mapping)
        self.num_classes, self.threshold, self.warmup, self.mapping = num_classes, threshold, warmup, mapping
        self.register_buffer("selected", torch.full((0,), -1, dtype=torch.long))
        self.register_buffer("learning_effect", torch.zeros(num_classes))

    def bind(self, datamodule) -> None:
        size = len(datamodule.unlabeled)
        if len(self.selected) != size:
            self.selected = torch.full((size,), -1, dtype=torch.long, device=self.learning_effect.device)

    def forward(self, probs, idx=None, probs_lb=None):
        if idx is None or not len(self.selected):
            raise SSLTrainError("CurriculumThreshold needs the unlabeled samples' indices and a bound data module "
                                "(train through a Trainer with an SSLDataModule)")
        confidence, labels = probs.max(dim=-1)
        weights = L_.curriculum_mask(confidence, labels, self.learning_effect, self.threshold, self.mapping)
        all_idx, all_conf, all_labels = (gather_all(t) for t in (idx, confidence, labels))
        self.selected[all_idx] = torch.where(all_conf >= self.threshold, all_labels, self.selected[all_idx])
        self.learning_effect.copy_(L_.learning_effect(self.selected, self.num_classes, self.warmup))
        return weights


class SelfAdaptiveThreshold(Masking):
    """FreeMatch's self-adaptive thresholds: a global threshold τ_t (EMA of the mean top probability, from 1/C)
    scaled per class by the EMA class probabilities p̃ (τ_t·p̃_c / max p̃), plus the fairness term (weight
    `fairness_weight`) on the strong view's predictions, normalized by the EMA label histogram."""

    def __init__(self, num_classes: int, momentum: float = 0.999, fairness_weight: float = 0.001):
        super().__init__(momentum=check_fraction("algorithm.masking.momentum", momentum),
                         fairness_weight=check_fraction("algorithm.masking.fairness_weight", fairness_weight,
                                                        high=float("inf")))
        self.momentum, self.fairness_weight = momentum, fairness_weight
        self.register_buffer("global_threshold", torch.tensor(1.0 / num_classes))
        self.register_buffer("class_probs", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("label_hist", torch.full((num_classes,), 1.0 / num_classes))

    def forward(self, probs, idx=None, probs_lb=None):
        every = gather_all(probs)
        m, num_classes = self.momentum, probs.shape[-1]
        self.global_threshold.mul_(m).add_((1 - m) * every.max(dim=-1).values.mean())
        self.class_probs.mul_(m).add_((1 - m) * every.mean(dim=0))
        hist = L_.label_histogram(every.argmax(dim=-1), num_classes)
        self.label_hist.mul_(m).add_((1 - m) * hist)
        confidence, labels = probs.max(dim=-1)
        class_scale = self.class_probs / self.class_probs.max()
        return (confidence >= self.global_threshold * class_scale[labels]).float()

    def penalty(self, logits_strong, weights):
        if not self.fairness_weight:
            return {}
        fairness = L_.freematch_fairness(logits_strong, weights, self.class_probs, self.label_hist)
        return {"fairness": self.fairness_weight * fairness}


class TruncatedGaussian(Masking):
    """SoftMatch's soft weight: 1 above the EMA mean μ of the top probability, exp(−(p−μ)²/(2σ²/n²)) below it,
    with σ² the EMA of its (unbiased) batch variance; μ starts at 1/C and σ² at 1."""

    def __init__(self, num_classes: int, momentum: float = 0.999, n_sigma: float = 2.0):
        super().__init__(momentum=check_fraction("algorithm.masking.momentum", momentum),
                         n_sigma=check_fraction("algorithm.masking.n_sigma", n_sigma, low_open=True,
                                                high=float("inf")))
        self.momentum, self.n_sigma = momentum, n_sigma
        self.register_buffer("mean", torch.tensor(1.0 / num_classes))
        self.register_buffer("var", torch.tensor(1.0))

    def forward(self, probs, idx=None, probs_lb=None):
        top = gather_all(probs).max(dim=-1).values
        m = self.momentum
        self.mean.mul_(m).add_((1 - m) * top.mean())
        if len(top) > 1:
            self.var.mul_(m).add_((1 - m) * top.var(unbiased=True))
        return L_.truncated_gaussian_weight(probs.max(dim=-1).values, self.mean, self.var, self.n_sigma)


class RelativeThreshold(Masking):
    """AdaMatch's relative confidence threshold: τ times the mean top probability on the labeled batch's weak
    view, so the threshold follows how confident the model is on data it knows."""

    def __init__(self, num_classes: int, threshold: float = 0.9):
        super().__init__(threshold=check_fraction("algorithm.masking.threshold", threshold))
        self.threshold = threshold

    def forward(self, probs, idx=None, probs_lb=None):
        if probs_lb is None:
            raise SSLTrainError("RelativeThreshold needs the labeled batch's probabilities (probs_lb)")
        cutoff = self.threshold * gather_all(probs_lb).max(dim=-1).values.mean()
        return (probs.max(dim=-1).values >= cutoff).float()
