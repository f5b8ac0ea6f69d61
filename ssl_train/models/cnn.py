from __future__ import annotations

import torch
from torch import nn

from ssl_train.errors import SSLTrainError
from ssl_train.models._checks import check_data, int_list


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small CNN for tiny images (sklearn's 8x8 digits): 94k parameters at the default widths.

    Exists so that end-to-end SSL runs and tests finish in seconds on a CPU; the
    single 2x2 max-pool and the global average pool let it take any H, W >= 8.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        widths: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        check_data("model=SmallCNN", input_shape, num_classes)
        in_ch, h, w = input_shape
        if h < 8 or w < 8:
            raise SSLTrainError(f"model=SmallCNN needs images of at least 8x8 pixels, got input_shape="
                                f"{tuple(input_shape)} from the data: use larger images or another model "
                                f"(e.g. model=mlp)")
        int_list("model.widths", widths, 3, " (the channels of the 3 conv stages), e.g. [32, 64, 128]")
        w1, w2, w3 = widths
        self.body = nn.Sequential(
            _conv_block(in_ch, w1),
            _conv_block(w1, w2),
            nn.MaxPool2d(2),
            _conv_block(w2, w3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = w3
        self.head = nn.Linear(w3, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
