"""Each statistic against scipy or a hand computation, and the tests' false-alarm rates under no shift."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ssl_train.monitor import statistics as S
from ssl_train.run.profile import bin_counts, quantile_edges


def naive_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD² written out pair by pair."""
    k = lambda a, b: math.exp(-np.sum((a - b) ** 2) / (2 * sigma ** 2))  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_statistic_matches_the_pairwise_formula_and_the_median_heuristic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1, size=(9, 3))
    pooled = np.vstack([x, y])
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(pooled, 2)]
    result = S.mmd_permutation_test(torch.tensor(x), torch.tensor(y), permutations=10)
    assert result.bandwidth == pytest.approx(float(torch.tensor(distances).median()), rel=1e-6)
    assert result.statistic == pytest.approx(naive_mmd2(x, y, result.bandwidth), rel=1e-9)
    fixed = S.mmd_permutation_test(torch.tensor(x), torch.tensor(y), permutations=10, bandwidth=0.7)
    assert fixed.statistic == pytest.approx(naive_mmd2(x, y, 0.7), rel=1e-9)


def test_mmd_permutation_p_value_matches_exhaustive_enumeration():
    """4 + 4 points have 70 splits: the Monte Carlo p-value must approach the exact permutation p-value."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 2)), rng.normal(1.0, 1, size=(4, 2))
    pooled = np.vstack([x, y])
    sigma = S.mmd_permutation_test(torch.tensor(x), torch.tensor(y), permutations=1).bandwidth
    observed = naive_mmd2(x, y, sigma)
    splits = [naive_mmd2(pooled[list(a)], pooled[[i for i in range(8) if i not in a]], sigma)
              for a in itertools.combinations(range(8), 4)]
    exact = np.mean([s >= observed - 1e-12 for s in splits])
    result = S.mmd_permutation_test(torch.tensor(x), torch.tensor(y), permutations=20000,
                                    generator=torch.Generator().manual_seed(0))
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_mmd_false_alarms_near_alpha_and_detects_a_shift():
    gen = torch.Generator().manual_seed(0)
    alarms = [S.mmd_permutation_test(torch.randn(30, 4, generator=gen), torch.randn(40, 4, generator=gen),
                                     permutations=200, generator=gen).p_value <= 0.05 for _ in range(200)]
    assert np.mean(alarms) <= 0.09  # 5% expected; binomial sd over 200 runs is 1.5%
    shifted = S.mmd_permutation_test(torch.randn(50, 4, generator=gen), torch.randn(50, 4, generator=gen) + 0.8,
                                     permutations=200, generator=gen)
    assert shifted.p_value <= 1 / 201 + 1e-12


def test_ks_fdr_matches_scipy_per_column_and_benjamini_hochberg_by_hand():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(80, 4))
    new = rng.normal(size=(60, 4)) + np.array([0.0, 0.0, 0.6, 1.2])
    result = S.ks_fdr(ref, new)
    for j in range(4):
        expected = stats.ks_2samp(ref[:, j], new[:, j])
        assert result.statistics[j] == pytest.approx(expected.statistic)
        assert result.p_values[j] == pytest.approx(expected.pvalue)
    # BH by hand: sort, scale by m / rank, take the running minimum from the largest down, cap at 1.
    p = result.p_values
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1)
    assert result.adjusted[order] == pytest.approx(adjusted)
    assert result.p_value == pytest.approx(adjusted.min())


def test_psi_by_hand_and_its_chi_squared_p_value():
    ref, new = np.array([50, 30, 20]), np.array([30, 30, 40])
    p, q = ref / 100, new / 100
    expected = float(np.sum((q - p) * np.log(q / p)))
    value, p_value = S.psi_test(ref, new)
    assert value == pytest.approx(expected)
    assert p_value == pytest.approx(stats.chi2.sf(expected / (1 / 100 + 1 / 100), 2))
    assert S.psi(ref, ref) == 0.0
    assert S.psi_band(0.05) == "stable" and S.psi_band(0.2) == "moderate" and S.psi_band(0.3) == "significant"


def test_psi_test_holds_its_level_under_no_shift():
    """The point of the p-value: a fixed PSI threshold would fire at rates that depend on the sample sizes.
    The level holds over draws of both samples (for one fixed reference the rate varies around it)."""
    rng = np.random.default_rng(3)
    alarms, fixed_threshold = [], []
    for _ in range(400):
        reference = rng.beta(5, 1, size=150)
        edges = quantile_edges(reference, 10)
        value, p_value = S.psi_test(bin_counts(reference, edges), bin_counts(rng.beta(5, 1, size=200), edges))
        alarms.append(p_value <= 0.05)
        fixed_threshold.append(value >= 0.1)
    assert 0.02 <= np.mean(alarms) <= 0.08
    assert np.mean(fixed_threshold) > 0.15  # the conventional 0.1 "moderate" threshold at these sizes
    edges = quantile_edges(rng.beta(5, 1, size=150), 10)
    shifted = S.psi_test(np.full(10, 15), bin_counts(rng.beta(2, 1, size=200), edges))
    assert shifted[1] <= 1e-3


def test_class_shift_test_is_pearsons_homogeneity_test():
    ref, new = np.array([30, 20, 0, 50]), np.array([10, 40, 0, 50])
    statistic, p_value, dof = S.class_shift_test(ref, new)
    table = np.array([[30, 20, 50], [10, 40, 50]], float)  # the empty class is dropped
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    by_hand = float(((table - expected) ** 2 / expected).sum())
    assert statistic == pytest.approx(by_hand) and dof == 2
    assert p_value == pytest.approx(stats.chi2.sf(by_hand, 2))
    assert S.class_shift_test(np.array([5, 0]), np.array([7, 0])) == (0.0, 1.0, 0)


def test_bbse_recovers_priors_exactly_when_predictions_follow_the_confusion_matrix():
    confusion = np.array([[80, 15, 5], [10, 85, 5], [0, 10, 90]])  # rows: true class; columns: predicted
    new_priors = np.array([0.6, 0.1, 0.3])
    conditional = confusion / confusion.sum(1, keepdims=True)  # P(ŷ | y)
    predicted = conditional.T @ new_priors * 1000
    q, w = S.bbse_priors(confusion, predicted)
    assert q == pytest.approx(new_priors, abs=1e-9)
    assert w == pytest.approx(new_priors / (confusion.sum(1) / confusion.sum()), abs=1e-9)


def test_prior_shift_test_calm_on_equal_priors_and_firing_on_missing_classes():
    rng = np.random.default_rng(4)
    conditional = np.full((5, 5), 0.02) + np.eye(5) * 0.9
    confusion = np.stack([rng.multinomial(40, row) for row in conditional])
    priors = np.full(5, 0.2)
    same = rng.multinomial(500, conditional.T @ priors)
    _, distance, p_value = S.prior_shift_test(confusion, same, priors, resamples=200)
    assert p_value > 0.05 and distance < 0.1
    skewed = rng.multinomial(500, conditional.T @ np.array([0.5, 0.5, 0, 0, 0]))
    estimated, distance, p_value = S.prior_shift_test(confusion, skewed, priors, resamples=200)
    assert p_value <= 0.01 and distance > 0.4 and estimated[:2].sum() > 0.9


def test_expected_accuracy_by_hand_with_and_without_prior_weights():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    assert S.expected_accuracy(probs) == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    # Class 1 absent in the new data (w = 0): every prediction of class 0 is sure, every one of class 1 wrong.
    assert S.expected_accuracy(probs, np.array([2.0, 0.0])) == pytest.approx((1 + 0 + 1) / 3)


def test_bonferroni():
    assert S.bonferroni(0.05, 4) == pytest.approx(0.0125)
