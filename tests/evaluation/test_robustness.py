"""Corruptions keep images valid, grow with severity and are reproducible."""

from __future__ import annotations

import pytest
import torch

from ssl_train.evaluation.robustness import SEVERITIES, corrupt, robustness


@pytest.mark.parametrize("kind", sorted(SEVERITIES))
def test_corruptions_stay_in_range_and_grow_with_severity(kind):
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    change = []
    for value in SEVERITIES[kind]:
        y = corrupt(x, kind, value, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
        torch.testing.assert_close(y, corrupt(x, kind, value, torch.Generator().manual_seed(1)))
        change.append(float((y - x).abs().mean()))
    assert change == sorted(change) and change[0] > 0


def test_blur_works_on_8x8_digits_and_rejects_unknown_kinds():
    assert corrupt(torch.rand(2, 1, 8, 8), "blur", 1.5, torch.Generator()).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(torch.rand(2, 1, 8, 8), "fog", 1.0, torch.Generator())


def test_robustness_counts_accuracy_per_severity():
    x = torch.rand(20, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    # a "model" that ignores its input and always says class 0 has the same accuracy everywhere
    constant = lambda batch: torch.tensor([[1.0, 0.0]]).repeat(len(batch), 1)  # noqa: E731
    result = robustness(constant, [(x, y)])
    assert set(result) == set(SEVERITIES)
    assert all(r["acc"] == pytest.approx(float((y == 0).float().mean())) for rows in result.values() for r in rows)
    assert [r["severity"] for r in result["blur"]] == [1, 2, 3]
