"""Float pixel batches of a data module split: what every tool feeds a model (pixels in [0, 1], labels)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch import Tensor


def float_batches(subset, scale: float, batch_size: int, limit: int | None = None,
                  seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(pixels in [0, 1], labels) batches of a data module subset; a seeded random `limit` of it when given."""
    order = np.arange(len(subset))
    if limit is not None:
        order = np.random.default_rng(seed).permutation(len(subset))[:limit]
    for start in range(0, len(order), batch_size):
        batch = subset[order[start:start + batch_size]]
        yield batch["x"].float() * scale, batch["y"]


def batch_of(x: Tensor, size: int) -> Tensor:
    """`size` samples from `x`, repeating it when it is shorter."""
    return x.repeat((size + len(x) - 1) // len(x), *([1] * (x.ndim - 1)))[:size].contiguous()
