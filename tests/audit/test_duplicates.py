"""Exact groups, the aligned pixel check, nearest-neighbour candidates and leakage, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ssl_train.audit.duplicates import aligned_rms, components, exact_groups, leakage, near_candidates, shift
from ssl_train.audit.scan import SPLITS, content_hash, descriptors


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return torch.tensor(load_digits().images / 16, dtype=torch.float32)


def test_exact_groups_and_content_hash():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    hashes = np.array([content_hash(a), content_hash(a + 1), content_hash(a.copy()), content_hash(a.reshape(4, 3))])
    assert [g.tolist() for g in exact_groups(hashes)] == [[0, 2]]  # same bytes in another shape is not the same image


def test_aligned_rms_forgives_shift_brightness_and_small_noise_but_not_another_digit(digits):
    x = digits[:200]
    moved = torch.zeros_like(x)
    moved[:, :, 1:] = x[:, :, :-1]  # one pixel to the right, a black column shifted in
    brighter = (x * 1.25).clamp(0, 1)
    noisy = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for copy, limit in ((moved, 1e-6), (brighter, 1e-6), (noisy, 0.03)):
        rms, relative = aligned_rms(x, copy)
        assert rms.max() <= limit and relative.max() < 0.4
    others, _ = aligned_rms(x, digits[200:400])
    assert others.min() > 0.05


def test_flat_images_are_not_duplicates_of_each_other():
    gen = torch.Generator().manual_seed(0)
    a = 0.5 + 0.03 * torch.randn(50, 16, 16, generator=gen)
    b = 0.5 + 0.03 * torch.randn(50, 16, 16, generator=gen)
    rms, relative = aligned_rms(a, b)
    assert rms.max() < 0.05 and relative.min() > 0.4  # small in absolute terms, but unrelated


def test_candidates_include_shifted_copies_of_small_images(digits):
    x = (digits[:300] * 255)
    moved = shift(x[:50], 0, 1)
    thumbs = torch.cat([x, moved]).round().to(torch.uint8)
    descs = descriptors(thumbs.float()).numpy()

    def shifted(block):
        t = thumbs[block].float()
        return [descriptors(shift(t, dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    pairs = {tuple(p) for p in near_candidates(descs, np.arange(350), 5, 0.75, shifted)}
    assert all((i, 300 + i) in pairs for i in range(50))


def test_leakage_counts_eval_images_linked_to_earlier_splits_even_through_chains():
    split = np.array([SPLITS.index(s) for s in ["labeled", "unlabeled", "val", "test", "test", "val", "test"]])
    pairs = np.array([[0, 3],   # labeled - test: leaked test image 3
                      [1, 2],   # unlabeled - val: leaked val image 2
                      [2, 4],   # val - test: test image 4 leaked (via val, and through 2 to unlabeled)
                      [5, 6]])  # val - test only: test image 6 leaked into val, val image 5 not into training
    assert leakage(split, pairs, SPLITS) == {"val": 1, "test": 3}
    assert leakage(split, np.zeros((0, 2), int), SPLITS) == {"val": 0, "test": 0}
    assert components(5, np.array([[0, 1], [3, 4], [1, 3]])).tolist() == [0, 0, 2, 0, 0]
