"""The deployable network: input normalization baked in front of a backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError
from ssl_train.models._checks import shown


class Classifier(nn.Module):
    """Takes pixels in [0, 1] and returns logits, so exported models need no outside preprocessing.

    The backbone is any model of `ssl_train.models` (it has `features` and `head`).
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if not (isinstance(backbone, nn.Module) and hasattr(backbone, "features") and hasattr(backbone, "head")):
            raise SSLTrainError(f"model: {type(backbone).__name__} is not a backbone of ssl_train.models "
                                f"(expected an nn.Module with `features` and `head`)")
        try:
            mean_t = torch.tensor(mean, dtype=torch.float32)
            std_t = torch.tensor(std, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            mean_t = std_t = None
        if (mean_t is None or max(mean_t.dim(), std_t.dim()) > 1 or not (mean_t.numel() and std_t.numel())
                or (mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()))
                or not bool(torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all())):
            raise SSLTrainError(f"input normalization mean={shown(mean)!r}, std={shown(std)!r}: expected one finite "
                                f"value per image channel in each, std > 0")
        self.backbone = backbone
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer embedding (for drift monitoring and audits)."""
        return self.backbone.features((x - self.mean) / self.std)


def input_stats(backbone: nn.Module, datamodule) -> tuple[list[float], list[float]]:
    """The (mean, std) that normalize a backbone's inputs: its own when it has them (pretrained weights expect the
    statistics they were trained with, `TimmBackbone.normalization`), else the data's channel statistics."""
    return getattr(backbone, "normalization", None) or datamodule.channel_stats()
