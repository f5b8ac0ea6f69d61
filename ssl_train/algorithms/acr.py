"""ACR (Wei & Gan, CVPR 2023) for long-tailed labels whose unlabeled pool may follow another class mix: the same
long tail, a uniform mix or the tail reversed. Two heads share the features: a standard one, and a balanced one
trained with logit adjustment, which is the one evaluated and exported (the network's own head). Each head learns
the other's debiased pseudo-labels, and the strength of the debiasing of the standard head's labels follows the
pool's class mix, estimated from the balanced head's confident predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.algorithms.distributed import gather_all
from ssl_train.algorithms.part import check_fraction
from ssl_train.losses import masked_cross_entropy


def symmetric_kl(p: Tensor, q: Tensor) -> Tensor:
    """½ KL(p‖q) + ½ KL(q‖p) of two class distributions."""
    p, q = p.clamp_min(1e-12), q.clamp_min(1e-12)
    return 0.5 * (p * (p / q).log()).sum() + 0.5 * (q * (q / p).log()).sum()


def adaptive_tau(distances: Tensor, tau_max: float) -> Tensor:
    """ACR's debiasing strength from the summed distances of the pool's estimated mix to the three anchors
    (labeled mix, uniform, reversed): tau_max · softmax(distances)[0], so a pool near the labeled mix gets little
    debiasing and one far from it (uniform, reversed) more."""
    return tau_max * distances.softmax(dim=0)[0]


class ACR(SSLAlgorithm):
    """Losses (π the labeled set's class frequencies, τ₁ adaptive, τ₂ fixed):
    - labeled: cross-entropy of the standard head, and of the balanced head's logits + τ₂·log π (logit adjustment);
    - standard head, strong view: the weak view's standard logits − τ₁·log π as hard pseudo-labels, counted once
      per confident version (adjusted, unadjusted: a weight of 0, 1 or 2);
    - balanced head, strong view: the weak view's standard logits − τ₂·log π, counted once per confident
      version (those, the balanced head's own).
    The balanced head's confident weak-view predictions give the pool's mix (an EMA, `mix_momentum`); from
    `estimate_start` of training on, τ₁ is re-chosen every `estimate_every` of training from its distances to the
    anchors, before that it is `tau_max`.

    Args:
        threshold: the pseudo-labels' confidence threshold.
        tau_max, tau_balanced: τ₁'s largest value, and τ₂ (ACR: both 2).
        estimate_start, estimate_every: fractions of training (ACR: 5 of 500 epochs, one epoch).
        mix_momentum: the pool mix's EMA momentum per step (ACR: 0.9).
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, threshold: float = 0.95, tau_max: float = 2.0, tau_balanced: float = 2.0,
                 estimate_start: float = 0.01, estimate_every: float = 0.002, mix_momentum: float = 0.9, **kwargs):
        super().__init__(*args, **kwargs)
        check_fraction("algorithm.threshold", threshold)
        for key, value in (("tau_max", tau_max), ("tau_balanced", tau_balanced)):
            check_fraction(f"algorithm.{key}", value, high=float("inf"))
        check_fraction("algorithm.estimate_start", estimate_start)
        check_fraction("algorithm.estimate_every", estimate_every, low_open=True)
        check_fraction("algorithm.mix_momentum", mix_momentum)
        classes = self.hparams.num_classes
        self.standard_head = nn.Linear(self.head_width("acr"), classes)
        uniform = torch.full((classes,), 1.0 / classes)
        self.register_buffer("labeled_prior", uniform.clone())
        self.register_buffer("pool_mix", uniform.clone())
        self.register_buffer("distances", torch.zeros(3))
        self.register_buffer("tau", torch.tensor(float(tau_max)))

    def extra_modules(self) -> list[nn.Module]:
        return [self.standard_head]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "labeled_class_prior"):
            self.bind(datamodule)

    def bind(self, datamodule) -> None:
        """The labeled set's class frequencies: the anchor the pool's mix is compared with, and π of the losses."""
        prior = datamodule.labeled_class_prior().to(self.labeled_prior).clamp_min(1e-6)
        self.labeled_prior.copy_(prior / prior.sum())

    def anchors(self) -> Tensor:
        return torch.stack([self.labeled_prior, torch.full_like(self.labeled_prior, 1 / len(self.labeled_prior)),
                            self.labeled_prior.flip(0)])

    def _steps(self, fraction: float) -> int:
        return max(int(fraction * max(self.trainer.max_steps, 0)), 1) if self._trainer is not None else 1

    def losses(self, batch: dict) -> StepLosses:
        lb, ulb, hp = batch["lb"], batch["ulb"], self.hparams
        features = self.net.features(self._input(torch.cat([lb["x"], ulb["weak"], ulb["strong"]])))
        sizes = [len(lb["x"]), len(ulb["weak"]), len(ulb["strong"])]
        balanced_lb, balanced_weak, balanced_strong = self.net.backbone.head(features).split(sizes)
        standard_lb, standard_weak, standard_strong = self.standard_head(features).split(sizes)
        log_prior = self.labeled_prior.log()
        with torch.no_grad():
            self._update_tau()
            if self._trainer is not None:
                self.log("train/acr_tau", self.tau, on_step=True, on_epoch=False, batch_size=len(lb["y"]))
            weak = standard_weak.detach().float()
            adjusted = (weak - self.tau * log_prior).softmax(-1).max(-1)
            fixed = (weak - hp.tau_balanced * log_prior).softmax(-1).max(-1)
            raw_confident = weak.softmax(-1).max(-1).values >= hp.threshold
            own = balanced_weak.detach().float().softmax(-1).max(-1)
            own_confident = own.values >= hp.threshold
            standard_weights = (adjusted.values >= hp.threshold).float() + raw_confident.float()
            balanced_weights = (fixed.values >= hp.threshold).float() + own_confident.float()
            if self._trainer is None or self.global_step >= self._steps(hp.estimate_start):
                self._estimate_mix(own.indices, own_confident)
        sup = (F.cross_entropy(standard_lb, lb["y"])
               + F.cross_entropy(balanced_lb + hp.tau_balanced * log_prior, lb["y"]))
        extra = {"balanced": masked_cross_entropy(balanced_strong, fixed.indices, balanced_weights)}
        return StepLosses(sup=sup, unsup=masked_cross_entropy(standard_strong, adjusted.indices, standard_weights),
                          weights=(standard_weights > 0).float(), pseudo_labels=adjusted.indices, extra=extra)

    def _estimate_mix(self, labels: Tensor, confident: Tensor) -> None:
        """The pool mix's EMA from the global batch's confident balanced predictions; their distances summed."""
        counts = torch.zeros_like(self.pool_mix).index_add_(0, gather_all(labels),
                                                            gather_all(confident.float()).to(self.pool_mix))
        total = counts.sum()
        m = self.hparams.mix_momentum
        mixed = torch.where(total > 0, m * self.pool_mix + (1 - m) * counts / total.clamp_min(1), self.pool_mix)
        self.pool_mix.copy_(mixed)
        self.distances += torch.where(total > 0, torch.stack([symmetric_kl(a, mixed) for a in self.anchors()]), 0.0)

    def _update_tau(self) -> None:
        """At each estimation boundary after the start: τ₁ from the distances summed since the last one."""
        every = self._steps(self.hparams.estimate_every)
        if self._trainer is None or self.global_step % every or self.global_step < self._steps(
                self.hparams.estimate_start) + every:
            return
        self.tau.copy_(adaptive_tau(self.distances / every, self.hparams.tau_max))
        self.distances.zero_()
