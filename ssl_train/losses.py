"""Pure loss and schedule functions shared by the algorithms.

Everything here is a function of tensors and numbers only, so each piece can be
checked against a hand computation.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def confident_pseudo_labels(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and the 0/1 mask of samples whose max softmax reaches `threshold`."""
    return confident_labels(logits.detach().float().softmax(dim=-1), threshold)


def confident_labels(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Argmax labels of class probabilities and the 0/1 mask of rows whose maximum reaches `threshold`."""
    confidence, labels = probs.max(dim=-1)
    return labels, (confidence >= threshold).float()


def aligned_probs(probs: Tensor, log_weights: Tensor) -> Tensor:
    """Class probabilities reweighted per class by e^log_weights and renormalized."""
    return (probs.float().clamp_min(1e-12).log() + log_weights).softmax(dim=-1)


def balance_log_weights(probs: Tensor, target_marginal: Tensor, log_weights: Tensor, iterations: int) -> Tensor:
    """Per-class log-weights that move the mean of `aligned_probs(probs, ·)` towards `target_marginal`.

    Each iteration is one step of Sinkhorn's matrix scaling (the row step is the
    renormalization inside `aligned_probs`): w += log target − log aligned mean.
    From zero, one iteration is ReMixMatch's alignment, probs · target / mean(probs);
    warm-started and repeated, the aligned mean converges to the target exactly,
    which one step does not do when the predictions are confident. Centered,
    since a common shift of all weights changes nothing.
    """
    log_target = target_marginal.float().log()
    for _ in range(iterations):
        aligned_mean = aligned_probs(probs, log_weights).mean(dim=0)
        log_weights = log_weights + log_target - aligned_mean.clamp_min(1e-12).log()
    return log_weights - log_weights.mean()


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy averaged over *all* samples, masked ones counting as zero.

    Averaging over the whole unlabeled batch (not only the confident part) is
    what FixMatch does: the loss weight then grows with the mask ratio.
    """
    return (F.cross_entropy(logits, targets, reduction="none") * mask).mean()


def fixmatch_loss(probs_weak: Tensor, logits_strong: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """FixMatch unlabeled loss: CE(strong, hard label of weak) where the weak view's probabilities are confident.

    Returns (loss, mask, pseudo_labels); `probs_weak` is a target, so no gradient flows through it.
    """
    labels, mask = confident_labels(probs_weak.detach(), threshold)
    return masked_cross_entropy(logits_strong, labels, mask), mask, labels


def softmax_mse(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """Mean squared error between softmax outputs, averaged over samples and classes.

    The target side is detached: it is the teacher (Mean Teacher) or the other
    view (Π-model) and must not be pulled towards the student.
    """
    return F.mse_loss(student_logits.float().softmax(-1), target_logits.detach().float().softmax(-1))


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None,
                      temperature: float, alpha: float) -> Tensor:
    """Hinton distillation: α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE(student, targets).

    `batchmean` is the KL reduction that matches the mathematical definition
    (`mean` would also divide by the class count). Without targets the CE term is dropped.
    """
    kl = F.kl_div(F.log_softmax(student_logits / temperature, -1),
                  F.log_softmax(teacher_logits.detach() / temperature, -1),
                  log_target=True, reduction="batchmean")
    loss = alpha * temperature**2 * kl
    if targets is not None:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(−5(1−t)²) for t = step/length in [0, 1] (Laine & Aila; Mean Teacher); 1 after `length`."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(step: int, length: int) -> float:
    """t = step/length clipped to [0, 1]; 1 when `length` is 0."""
    if length <= 0:
        return 1.0
    return min(max(step, 0), length) / length


RAMPUPS = {"sigmoid": sigmoid_rampup, "linear": linear_rampup, "none": lambda step, length: 1.0}


def ema_decay(step: int, decay: float) -> float:
    """Mean Teacher's warm-up: min(1 − 1/(step+1), decay), so early EMA weights follow the model."""
    return min(1.0 - 1.0 / (step + 1), decay)


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """FixMatch's schedule cos(7πk/16K): a cosine that ends at ~0.2 of the base rate, not at zero."""
    return math.cos(7 * math.pi * min(step, total_steps) / (16 * max(total_steps, 1)))
