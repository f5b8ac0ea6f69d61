"""What the ranks of a DDP run share: the one place that gathers per-sample tensors from all of them."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather_all(t: Tensor) -> Tensor:
    """`t` from every DDP rank, concatenated along the first dimension in rank order (`t` itself when the run has
    one process), so that state updated from it is the same on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
