"""IOMatch (Li et al., ICCV 2023) for open-set semi-supervised learning: the unlabeled pool holds images of classes
nobody labeled. FixMatch's pseudo-labels train the classifier only on the pool images that one-vs-all heads take
for inliers; every image, outliers included, trains a (K+1)-way open-set head whose last class is "none of them"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.algorithms.ema import EMA
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.algorithms.part import build_part, check_fraction
from ssl_train.errors import SSLTrainError
from ssl_train.losses import masked_cross_entropy


class OpenSetHeads(nn.Module):
    """On the backbone's features: a projection, K one-vs-all binary classifiers (logits N × 2 × K: row 0 "not
    class k", row 1 "class k") and a (K+1)-way open-set classifier."""

    def __init__(self, width: int, num_classes: int, proj_size: int):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, proj_size))
        self.one_vs_all = nn.Linear(proj_size, 2 * num_classes, bias=False)
        self.open_set = nn.Linear(proj_size, num_classes + 1)
        nn.init.xavier_normal_(self.one_vs_all.weight)
        nn.init.xavier_normal_(self.open_set.weight)
        nn.init.zeros_(self.open_set.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        z = self.projection(features)
        return self.one_vs_all(z).view(len(z), 2, -1), self.open_set(z)


def one_vs_all_loss(logits_ova: Tensor, labels: Tensor) -> Tensor:
    """OpenMatch's supervised one-vs-all loss: −log p(class y) for the true class's head plus the largest
    −log p(not class k) over the other heads (the hardest negative), averaged over the batch."""
    log_p = F.log_softmax(logits_ova.float(), dim=1)
    positive = F.one_hot(labels, logits_ova.shape[-1]).bool()
    pos = -log_p[:, 1][positive]
    neg = (-log_p[:, 0]).masked_fill(positive, float("-inf")).max(dim=1).values
    return (pos + neg).mean()


def open_set_targets(probs: Tensor, logits_ova: Tensor) -> tuple[Tensor, Tensor]:
    """(K+1)-way targets and outlier scores from closed-set probabilities p and one-vs-all heads: target k is
    p_k · P(class k | head k), target K is Σ_k p_k · P(not class k | head k), the outlier score."""
    ova = logits_ova.float().softmax(dim=1)
    outlier = (probs * ova[:, 0]).sum(dim=-1)
    return torch.cat([probs * ova[:, 1], outlier[:, None]], dim=-1), outlier


class IOMatch(SSLAlgorithm):
    """FixMatch whose pseudo-label loss counts an unlabeled image only when its one-vs-all outlier score is below
    one half, plus the open-set loss: the strong view's (K+1)-way logits against the weak view's fused targets,
    where their top probability reaches `open_threshold`. The heads' EMA copy scores outliers at test time (the
    open-set head's "none" probability, `outlier_scores`).

    Args:
        masking: a `masking` part for the closed-set pseudo-labels; None is the fixed threshold τ = 0.95.
        alignment: an `alignment` part for the weak view's probabilities; None: none.
        open_threshold: the open-set targets' confidence threshold (q cutoff, 0.5).
        lambda_ova, lambda_open: weights of the supervised one-vs-all loss and of the open-set loss.
        proj_size: the projection's width.
        warmup_fraction: share of training without the open-set loss (the paper: its first epoch, 1024 of
            2^20 steps), while the one-vs-all heads learn from the labels.
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, masking=None, alignment=None, open_threshold: float = 0.5, lambda_ova: float = 1.0,
                 lambda_open: float = 1.0, proj_size: int = 128, warmup_fraction: float = 1 / 1024, **kwargs):
        super().__init__(*args, **kwargs)
        check_fraction("algorithm.open_threshold", open_threshold)
        for key, value in (("lambda_ova", lambda_ova), ("lambda_open", lambda_open)):
            check_fraction(f"algorithm.{key}", value, high=float("inf"))
        check_fraction("algorithm.warmup_fraction", warmup_fraction)
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 1:
            raise SSLTrainError(f"algorithm.proj_size={proj_size!r}: expected an integer >= 1")
        width = self.head_width("iomatch")
        classes = self.hparams.num_classes
        self.masking = build_part(masking, classes, "masking") or FixedThreshold(classes)
        self.alignment = build_part(alignment, classes, "alignment")
        self.heads = OpenSetHeads(width, classes, proj_size)
        self.heads_ema = EMA(self.heads, self.hparams.ema_decay) if self.ema is not None else None

    def extra_modules(self) -> list[nn.Module]:
        return [self.heads]

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.heads_ema is not None:
            self.heads_ema.update_parameters(self.heads)

    def losses(self, batch: dict) -> StepLosses:
        lb, ulb, hp = batch["lb"], batch["ulb"], self.hparams
        features = self.net.features(self._input(torch.cat([lb["x"], ulb["weak"], ulb["strong"]])))
        sizes = [len(lb["x"]), len(ulb["weak"]), len(ulb["strong"])]
        logits_lb, logits_weak, logits_strong = self.net.backbone.head(features).split(sizes)
        ova, open_logits = self.heads(features)
        ova_lb, ova_weak, _ = ova.split(sizes)
        _, _, open_strong = open_logits.split(sizes)
        with torch.no_grad():
            probs_lb = logits_lb.float().softmax(-1)
            probs = logits_weak.float().softmax(-1)
            if self.alignment is not None:
                probs = self.alignment(probs, probs_lb=probs_lb)
            targets_open, outlier = open_set_targets(probs, ova_weak)
            inlier = (outlier < 0.5).float()
            weights = self.masking(probs, idx=ulb.get("idx"), probs_lb=probs_lb) * inlier
            open_mask = (targets_open.max(dim=-1).values >= hp.open_threshold).float()
        warm = self._trainer is not None and self.global_step < int(hp.warmup_fraction * max(self.trainer.max_steps, 0))
        extra = {"ova": hp.lambda_ova * one_vs_all_loss(ova_lb, lb["y"]),
                 "open": (0.0 if warm else hp.lambda_open) * masked_cross_entropy(open_strong, targets_open, open_mask)}
        labels = probs.argmax(dim=-1)
        return StepLosses(sup=F.cross_entropy(logits_lb, lb["y"]),
                          unsup=masked_cross_entropy(logits_strong, labels, weights), weights=weights,
                          pseudo_labels=labels, extra=extra | self.masking.penalty(logits_strong, weights))

    def outlier_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The evaluated network's logits and the open-set head's probability of "none of the labeled classes"."""
        net = self.eval_net
        heads = self.heads_ema.module if self.hparams.eval_ema and self.heads_ema is not None else self.heads
        features = net.features(self._input(x))
        _, open_logits = heads(features)
        return net.backbone.head(features).float(), open_logits.float().softmax(-1)[:, -1]
