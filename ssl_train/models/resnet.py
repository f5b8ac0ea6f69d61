from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from ssl_train.errors import SSLTrainError
from ssl_train.models._checks import check_data


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (randomly initialised) with a stem chosen for the input size.

    The ImageNet stem (7x7 stride-2 conv + max-pool) shrinks a 32x32 image to 8x8
    before the first residual stage, which costs several points of accuracy on
    CIFAR-sized data; for small inputs the CIFAR stem (3x3 stride-1 conv, no
    pool) is used instead. Module names follow torchvision, except ``fc`` -> ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        small_input: bool | None = None,
    ) -> None:
        super().__init__()
        check_data("model=ResNet18", input_shape, num_classes)
        if small_input is not None and not isinstance(small_input, bool):
            raise SSLTrainError(f"model.small_input={small_input!r}: expected true (CIFAR stem), false (ImageNet stem) "
                                f"or null (CIFAR stem for images up to 64 px)")
        in_ch, h, w = input_shape
        if small_input is None:
            small_input = min(h, w) <= 64
        net = resnet18(weights=None, num_classes=num_classes)
        if small_input:
            net.conv1 = nn.Conv2d(in_ch, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_ch != 3:
            net.conv1 = nn.Conv2d(in_ch, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Same init torchvision applies to its own convs.
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")

        self.small_input = small_input
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = net.avgpool
        self.feature_dim = net.fc.in_features
        self.head = net.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
