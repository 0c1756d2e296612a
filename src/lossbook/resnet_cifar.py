"""The CIFAR ResNets of He et al. (2016, §4.2): 3 stages of n basic blocks, 16/32/64 channels,
identity shortcuts with zero-padding ("option A"), global average pooling, one linear layer.

ResNet-32 (n = 5, 0.46 M parameters) is the backbone of the CIFAR-LT experiments of Cao et al.
(2019); this follows their `models/resnet_cifar.py` (itself after Y. Idelbayev's reference
implementation): Kaiming-normal initialisation of every convolution and linear layer, and the
cosine classifier `NormedLinear` instead of the linear layer when the loss is LDAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbook.margins import NormedLinear


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the channels (option A)."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 images; `cosine=True` puts `NormedLinear` as the last layer."""

    def __init__(self, blocks_per_stage: int = 5, num_classes: int = 10, cosine: bool = False,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlockA(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = NormedLinear(64, num_classes) if cosine else nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet32(num_classes: int = 10, cosine: bool = False) -> CifarResNet:
    return CifarResNet(5, num_classes, cosine)
