"""The math of drift monitoring, as pure functions of arrays: two-sample tests, shift estimates, calibration.

Every test returns a p-value so that the detector can combine them under one
family-wise false-alarm rate (`bonferroni`); effect sizes (MMD², PSI, KS
distance) are returned beside the p-values for severity and reporting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor


# --- embeddings: MMD and per-component KS --------------------------------------------------------------------------
@dataclass(frozen=True)
class MMDResult:
    statistic: float  # unbiased MMD² estimate
    p_value: float
    bandwidth: float  # σ of the Gaussian kernel exp(-‖a-b‖² / 2σ²)
    permutations: int


def mmd_permutation_test(x: Tensor, y: Tensor, permutations: int = 1000, bandwidth: float | None = None,
                         generator: torch.Generator | None = None, chunk: int = 256) -> MMDResult:
    """Gaussian-kernel MMD² between samples `x` (m×d) and `y` (n×d) with a permutation-test p-value.

    The bandwidth defaults to the median pairwise distance of the pooled sample, which does not depend on
    which points are labelled x or y, so the permutation test stays exact. Each permutation's statistic is
    a quadratic form of the kernel matrix with a group-indicator vector, evaluated for a chunk of
    permutations per matrix product. p = (1 + #{permuted ≥ observed}) / (1 + permutations).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 samples per side, got {m} and {n}")
    z = torch.cat([x, y]).double()
    d2 = torch.cdist(z, z).square()
    if bandwidth is None:
        off = d2[torch.triu_indices(m + n, m + n, 1, device=d2.device).unbind()]
        bandwidth = float(off.median().sqrt()) if len(off) else 1.0
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    k = torch.exp(-d2 / (2 * bandwidth ** 2))
    k.fill_diagonal_(0.0)  # unbiased: no i == j terms
    total = k.sum()

    def statistic(groups: Tensor) -> Tensor:  # groups: P×N, 1 for the x side
        kg = groups @ k
        s_xx = (kg * groups).sum(1)
        s_xy = (kg * (1 - groups)).sum(1)
        s_yy = total - s_xx - 2 * s_xy
        return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2 * s_xy / (m * n)

    observed_groups = torch.zeros(1, m + n, dtype=torch.float64)
    observed_groups[0, :m] = 1
    observed = float(statistic(observed_groups)[0])
    exceed = 0
    for start in range(0, permutations, chunk):
        p = min(chunk, permutations - start)
        order = torch.rand(p, m + n, generator=generator).argsort(dim=1)[:, :m]
        groups = torch.zeros(p, m + n, dtype=torch.float64).scatter_(1, order, 1.0)
        exceed += int((statistic(groups) >= observed - 1e-12).sum())
    return MMDResult(observed, (1 + exceed) / (1 + permutations), bandwidth, permutations)


@dataclass(frozen=True)
class KSResult:
    statistics: np.ndarray  # KS distance per component
    p_values: np.ndarray  # raw, per component
    adjusted: np.ndarray  # Benjamini-Hochberg adjusted
    p_value: float  # min adjusted = Simes' global p-value: reject the family iff BH rejects any component


def ks_fdr(reference: np.ndarray, sample: np.ndarray) -> KSResult:
    """Two-sample Kolmogorov-Smirnov per column, with Benjamini-Hochberg false-discovery-rate control.

    Testing d components one by one would raise false alarms d-fold; the BH-adjusted p-values bound the
    expected share of false discoveries, and their minimum is a valid p-value for "some component moved".
    """
    reference, sample = np.atleast_2d(reference.T).T, np.atleast_2d(sample.T).T
    result = stats.ks_2samp(reference, sample, axis=0)
    p = np.atleast_1d(np.asarray(result.pvalue, dtype=float))
    adjusted = stats.false_discovery_control(p, method="bh")
    return KSResult(np.atleast_1d(np.asarray(result.statistic, dtype=float)), p, adjusted, float(adjusted.min()))


# --- predictions: PSI on confidences, chi-squared on predicted classes ---------------------------------------------
def psi(reference_counts: np.ndarray, sample_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index Σ (q − p)·ln(q / p) over bins; empty bins count as `eps`."""
    p = np.maximum(np.asarray(reference_counts, float) / max(np.sum(reference_counts), 1), eps)
    q = np.maximum(np.asarray(sample_counts, float) / max(np.sum(sample_counts), 1), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_test(reference_counts: np.ndarray, sample_counts: np.ndarray) -> tuple[float, float]:
    """(PSI, p-value). Under no shift PSI ≈ (1/n + 1/m)·χ²(bins − 1) (Yurdakul, 2018), which turns the
    usual fixed thresholds (0.1, 0.25), too strict or too loose depending on the sample sizes, into a test."""
    value = psi(reference_counts, sample_counts)
    m, n = float(np.sum(reference_counts)), float(np.sum(sample_counts))
    dof = max(int(np.count_nonzero(np.asarray(reference_counts) + np.asarray(sample_counts))) - 1, 1)
    return value, float(stats.chi2.sf(value / (1 / m + 1 / n), dof))


def psi_band(value: float) -> str:
    """The conventional reading of a PSI value."""
    return "stable" if value < 0.1 else "moderate" if value < 0.25 else "significant"


def class_shift_test(reference_counts: np.ndarray, sample_counts: np.ndarray) -> tuple[float, float, int]:
    """Pearson chi-squared test of homogeneity of two count vectors (statistic, p-value, dof).

    A 2×K contingency test rather than goodness of fit against the reference proportions: the reference
    counts are a sample too, and treating them as exact would inflate false alarms.
    """
    table = np.stack([np.asarray(reference_counts, float), np.asarray(sample_counts, float)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


# --- label shift and performance without labels --------------------------------------------------------------------
def bbse_priors(confusion: np.ndarray, predicted_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Black-box shift estimation (Lipton et al., 2018): new class priors from predictions alone.

    `confusion[y, ŷ]` counts the reference (validation) samples; under label shift P(ŷ | y) stays fixed, so
    the new predicted distribution μ = C·w with C[ŷ, y] = P_ref(ŷ, y) and w_y = q_y / p_y. Returns
    (q, w): priors on the simplex and the importance weights, negatives clipped to 0.
    """
    confusion = np.asarray(confusion, float)
    joint = confusion.T / max(confusion.sum(), 1)  # C[ŷ, y]
    mu = np.asarray(predicted_counts, float) / max(np.sum(predicted_counts), 1)
    w = np.clip(np.linalg.lstsq(joint, mu, rcond=None)[0], 0, None)
    p = joint.sum(0)
    q = w * p
    if q.sum() <= 0:
        return mu, np.where(p > 0, mu / np.maximum(p, 1e-12), 0.0)
    q = q / q.sum()
    return q, np.where(p > 0, q / np.maximum(p, 1e-12), 0.0)


def prior_shift_test(confusion: np.ndarray, predicted_counts: np.ndarray, priors: np.ndarray,
                     resamples: int = 500, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Are the class priors behind `predicted_counts` equal to `priors`? (BBSE priors, their total variation
    distance to `priors`, parametric-bootstrap p-value).

    The distance alone cannot be read against a fixed threshold: BBSE inherits the noise of a small
    validation confusion matrix and of the sample. Under the null the confusion rows are redrawn from their
    estimated P(ŷ | y) and the predictions from Σ_y P(ŷ | y)·priors_y, and the distance recomputed.
    """
    confusion = np.asarray(confusion, float)
    priors = np.asarray(priors, float) / np.sum(priors)
    estimated, _ = bbse_priors(confusion, predicted_counts)
    observed = 0.5 * float(np.abs(estimated - priors).sum())
    rows = confusion.sum(1)
    k = len(rows)
    conditional = np.where(rows[:, None] > 0, confusion / np.maximum(rows, 1)[:, None], np.eye(k))
    null_predicted = np.clip(conditional.T @ priors, 0, None)
    null_predicted /= null_predicted.sum()
    n = int(np.sum(predicted_counts))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(resamples):
        conf_b = np.stack([rng.multinomial(int(r), conditional[y]) for y, r in enumerate(rows)])
        q_b, _ = bbse_priors(conf_b, rng.multinomial(n, null_predicted))
        exceed += int(0.5 * np.abs(q_b - priors).sum() >= observed - 1e-12)
    return estimated, observed, (1 + exceed) / (1 + resamples)


def expected_accuracy(probs: np.ndarray, weights: np.ndarray | None = None) -> float:
    """CBPE: the mean probability the model gives its own prediction, from calibrated probabilities.

    With label-shift `weights` w_y = q_y / p_y the posteriors are first moved to the new priors
    (p'(y|x) ∝ w_y p(y|x), Saerens et al., 2002) while the prediction stays the model's own argmax.
    """
    probs = np.asarray(probs, float)
    predicted = probs.argmax(1)
    if weights is not None:
        adjusted = probs * np.asarray(weights, float)[None]
        norm = adjusted.sum(1, keepdims=True)
        probs = np.where(norm > 0, adjusted / np.where(norm > 0, norm, 1), probs)
    return float(probs[np.arange(len(probs)), predicted].mean())


def bonferroni(alpha: float, tests: int) -> float:
    """Per-test level that keeps the family-wise false-alarm rate of `tests` tests at `alpha`."""
    return alpha / max(tests, 1)
