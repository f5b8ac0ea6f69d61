"""The deployable network: input normalization baked in front of a backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Classifier(nn.Module):
    """Takes pixels in [0, 1] and returns logits, so exported models need no outside preprocessing.

    The backbone is any model of `ssl_train.models` (it has `features` and `head`).
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer embedding (for drift monitoring and audits)."""
        return self.backbone.features((x - self.mean) / self.std)
