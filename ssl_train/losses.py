"""Pure loss and schedule functions shared by the algorithms.

Everything here is a function of tensors and numbers only, so each piece can be
checked against a hand computation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
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


def max_softmax_outlier_score(logits: Tensor) -> Tensor:
    """One minus the top softmax probability: the baseline outlier score every classifier has (Hendrycks &
    Gimpel, 2017); the higher, the likelier an image is of a class nobody labeled."""
    return 1 - logits.float().softmax(-1).max(-1).values


def label_shift_prior(confusion: Tensor, predicted_marginal: Tensor) -> Tensor:
    """The class mix π of a pool from the mean prediction on it, under label shift (BBSE, Lipton et al. 2018).

    `confusion[c, j]` is the mean probability of class j that the model gives held-out images of class c (a
    soft confusion matrix, rows summing to one); predictions on a pool of mix π then average to confusionᵀ π.
    π is the least-squares solution with π ≥ 0 and Σ π = 1 (non-negative least squares with the sum as a heavily
    weighted extra equation), so a noisy confusion matrix still gives a distribution.
    """
    from scipy.optimize import nnls

    c = confusion.double().cpu().numpy()
    k = len(c)
    a = np.vstack([c.T, np.full((1, k), 1e3)])
    b = np.concatenate([predicted_marginal.double().cpu().numpy(), [1e3]])
    prior, _ = nnls(a, b)
    return torch.as_tensor(prior / max(prior.sum(), 1e-12), dtype=torch.float32)


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy averaged over *all* samples, each weighted by `mask` (0/1 or a soft weight in [0, 1]).

    Averaging over the whole unlabeled batch (not only the confident part) is
    what FixMatch does: the loss weight then grows with the mask ratio.
    `targets` are class ids or, for soft targets (UDA), rows of class probabilities.
    """
    if targets.is_floating_point():  # soft targets: in float32, whatever precision the logits have
        logits = logits.float()
    return (F.cross_entropy(logits, targets, reduction="none") * mask).mean()


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """p^(1/T), renormalized (MixMatch, UDA): T < 1 makes a distribution more confident; T = 1 keeps it."""
    return (probs.float().clamp_min(1e-12).log() / temperature).softmax(dim=-1)


def curriculum_mask(confidence: Tensor, labels: Tensor, learning_effect: Tensor, threshold: float,
                    mapping: str) -> Tensor:
    """FlexMatch's mask: confidence ≥ τ·M(β_c) for the predicted class c (M: `CURRICULUM_MAPPINGS`)."""
    return (confidence >= threshold * CURRICULUM_MAPPINGS[mapping](learning_effect[labels])).float()


# FlexMatch's mapping functions of the learning effect β in [0, 1]; the paper's default is the convex one.
CURRICULUM_MAPPINGS = {"convex": lambda b: b / (2.0 - b), "linear": lambda b: b}


def learning_effect(selected: Tensor, num_classes: int, warmup: bool) -> Tensor:
    """FlexMatch's β_c: how many samples' last confident prediction is c (`selected`, −1 for none), over the
    largest class count, or with `warmup` over the largest of those and the count of samples still without one."""
    counts = torch.zeros(num_classes + 1, device=selected.device).scatter_add_(
        0, selected + 1, torch.ones_like(selected, dtype=torch.float32))
    largest = counts.max() if warmup else counts[1:].max()
    return counts[1:] / largest.clamp_min(1.0)


def label_histogram(labels: Tensor, num_classes: int, weights: Tensor | None = None) -> Tensor:
    """The (weighted) share of each class among `labels`; zeros when nothing counts."""
    weights = torch.ones_like(labels, dtype=torch.float32) if weights is None else weights.float()
    hist = torch.zeros(num_classes, device=labels.device).scatter_add_(0, labels, weights)
    return hist / hist.sum().clamp_min(1e-12)


def freematch_fairness(logits_strong: Tensor, mask: Tensor, class_probs: Tensor, label_hist: Tensor) -> Tensor:
    """FreeMatch's fairness term over the masked strong-view predictions, as the reference implementation has it:
    Σ_c a_c log b_c with a = SumNorm(p̃ / h̃) (EMA class probabilities over the EMA label histogram) and
    b = SumNorm(p̄ / h̄) (mean probability over the histogram of predicted labels, both over the masked samples).
    A class no masked sample predicts gets weight 0, not ∞; 0 when the mask is empty."""
    probs = logits_strong.float().softmax(dim=-1)
    mask = mask.float()
    count = mask.sum()
    mean_probs = (probs * mask[:, None]).sum(dim=0) / count.clamp_min(1e-12)
    hist = label_histogram(probs.argmax(dim=-1), probs.shape[-1], mask)
    a = class_probs * torch.where(label_hist > 0, 1.0 / label_hist.clamp_min(1e-12), 0.0).detach()
    b = mean_probs * torch.where(hist > 0, 1.0 / hist.clamp_min(1e-12), 0.0).detach()
    a, b = a / a.sum(), b / b.sum().clamp_min(1e-12)
    return torch.where(count > 0, (a * (b + 1e-12).log()).sum(), 0.0)


def truncated_gaussian_weight(confidence: Tensor, mean: Tensor, var: Tensor, n_sigma: float) -> Tensor:
    """SoftMatch's weight: 1 for confidence ≥ μ, exp(−(confidence − μ)² / (2σ²/n²)) below."""
    return torch.exp(-((confidence - mean).clamp(max=0.0) ** 2) / (2 * var.clamp_min(1e-12) / n_sigma**2))


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


def cosine_rampup(step: int, length: int) -> float:
    """1/2 − cos(π·t)/2 for t = step/length clipped to [0, 1] (AdaMatch's μ(t) over half of training)."""
    if length <= 0:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * min(max(step, 0), length) / length)


RAMPUPS = {"sigmoid": sigmoid_rampup, "linear": linear_rampup, "cosine": cosine_rampup,
           "none": lambda step, length: 1.0}


def ema_decay(step: int, decay: float) -> float:
    """Mean Teacher's warm-up: min(1 − 1/(step+1), decay), so early EMA weights follow the model."""
    return min(1.0 - 1.0 / (step + 1), decay)


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """FixMatch's schedule cos(7πk/16K): a cosine that ends at ~0.2 of the base rate, not at zero."""
    return math.cos(7 * math.pi * min(step, total_steps) / (16 * max(total_steps, 1)))


def mixup(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp (Zhang et al., 2018) of each sample with the one `perm` pairs it with: λ·a + (1−λ)·a[perm] for the
    inputs `x` and the targets `y` (class probabilities) alike."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def label_propagation(probs: Tensor, similarity: Tensor, bank_labels: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """SimMatch's interaction of class and instance pseudo-labels (Zheng et al., 2022, Sec. 3.3).

    `probs` (N × C) are the weak view's class probabilities, `similarity` (N × K) its softmax similarity to the K
    labeled bank entries and `bank_labels` (K) their labels. Returns (instance targets: each similarity scaled by
    the class probability of its entry's label, renormalized; class targets: α·probs + (1 − α)·the similarity
    summed per class).
    """
    labels = bank_labels.expand(len(probs), -1)
    scaled = similarity * probs.gather(1, labels)
    aggregated = torch.zeros_like(probs).scatter_add(1, labels, similarity)
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12), alpha * probs + (1 - alpha) * aggregated
