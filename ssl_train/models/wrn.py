from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_train.errors import SSLTrainError
from ssl_train.models._checks import check_data, check_dropout, is_int

_BN_MOMENTUM = 0.001  # PyTorch convention; TF's decay 0.999


class _BasicBlock(nn.Module):
    """Pre-activation basic block; the 1x1 shortcut conv appears only where the width changes."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        drop_rate: float = 0.0,
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=_BN_MOMENTUM)
        self.relu1 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=_BN_MOMENTUM)
        self.relu2 = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.activate_before_residual = activate_before_residual
        self.conv_shortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        if self.conv_shortcut is None:
            shortcut = x
        elif self.activate_before_residual:
            shortcut = self.conv_shortcut(act)
        else:
            shortcut = self.conv_shortcut(x)
        return shortcut + out


class WideResNet(nn.Module):
    """WideResNet-depth-k as used by FixMatch, so results are comparable with the literature.

    Layout, widths [16, 16k, 32k, 64k], BN momentum 0.001, LeakyReLU(0.1), init and
    parameter count match kekmodel/FixMatch-pytorch (and TorchSSL/USB). One
    deliberate difference: in the first block of groups 2 and 3 that port feeds the
    *raw* input to ``conv1``, leaving that block's ``bn1`` without gradient; here
    ``conv1`` always sees the pre-activated input, as in google-research/fixmatch.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int = 28,
        widen_factor: int = 2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_data("model=WideResNet", input_shape, num_classes)
        if not is_int(depth) or depth < 10 or (depth - 4) % 6 != 0:
            raise SSLTrainError(f"model.depth={depth!r}: WideResNet depth must be 6n+4 (10, 16, 22, 28, ...)")
        if not is_int(widen_factor) or widen_factor < 1:
            raise SSLTrainError(f"model.widen_factor={widen_factor!r}: expected a positive integer (WRN-depth-k's k)")
        check_dropout("model.drop_rate", drop_rate)
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(input_shape[0], channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = self._group(n, channels[0], channels[1], 1, drop_rate, activate_before_residual=True)
        self.block2 = self._group(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = self._group(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3], momentum=_BN_MOMENTUM)
        self.relu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.feature_dim = channels[3]
        self.head = nn.Linear(channels[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.constant_(m.bias, 0.0)

    @staticmethod
    def _group(
        n: int,
        in_planes: int,
        out_planes: int,
        stride: int,
        drop_rate: float,
        activate_before_residual: bool = False,
    ) -> nn.Sequential:
        return nn.Sequential(
            *[
                _BasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                    activate_before_residual,
                )
                for i in range(n)
            ]
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def wrn_28_2(input_shape: tuple[int, int, int], num_classes: int, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-2 (~1.47M parameters for 10 classes): FixMatch's CIFAR-10/SVHN backbone."""
    return WideResNet(input_shape, num_classes, depth=28, widen_factor=2, drop_rate=drop_rate)


def wrn_28_8(input_shape: tuple[int, int, int], num_classes: int, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-8 (~23.4M parameters): FixMatch's CIFAR-100 backbone."""
    return WideResNet(input_shape, num_classes, depth=28, widen_factor=8, drop_rate=drop_rate)
