from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ssl_train.models._checks import check_data, check_dropout, int_list


class MLP(nn.Module):
    """Fully connected baseline that ignores spatial structure.

    Useful as a sanity check for SSL methods on tiny inputs: if a method only
    helps a CNN, the gain may come from augmentation invariances, not from the
    unlabeled data itself.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_data("model=MLP", input_shape, num_classes)
        int_list("model.hidden", hidden, None, " (the widths of the hidden layers; [] for none), e.g. [256, 256]")
        check_dropout("model.dropout", dropout)
        in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = in_features
        self.head = nn.Linear(in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
