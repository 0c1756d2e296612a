"""The CIFAR-100 teacher and student networks of the knowledge-distillation literature.

The CRD/RepDistiller model zoo (Tian, Krishnan & Isola, ICLR 2020), which DHKD's official code
reuses (`models/resnet.py`, `models/wrn.py`), reimplemented as backbones without their last
linear layer, so that `lossbook.distill.Student` can put one or two heads on top:

- `resnet{8,14,20,32,44,56,110}`: CIFAR ResNets of depth 6n + 2 with stage widths
  16/16/32/64 (`resnet8x4`, `resnet32x4`: 32/64/128/256), post-activation basic blocks, a 1×1
  convolution + BN projection shortcut where the shape changes, 8×8 average pooling; Kaiming
  normal (fan-out) convolutions, BN weight 1 and bias 0.
- `wrn_{16,40}_{1,2}`: wide ResNets of depth 6n + 4, widths 16/16k/32k/64k, pre-activation
  blocks, no dropout, a final BN + ReLU before pooling; convolutions N(0, 2/(k²·out)) and every
  linear bias 0 (`zero_linear_bias`).

Teacher → student pairs this covers (of those in the research note): resnet32x4 → resnet8x4,
WRN-40-2 → WRN-16-2, resnet56 → resnet20, resnet110 → resnet32. Not implemented: VGG,
MobileNetV2, ShuffleNetV1/V2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lossbook.models import BasicBlock  # post-activation block, projection shortcut


class CifarResNetFeatures(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs up to the pooled feature vector (width `feature_dim`)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


class WideBlock(nn.Module):
    """Pre-activation wide-ResNet block (BN-ReLU-conv ×2), 1×1 conv shortcut on a shape change."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal = in_planes == planes and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # as the reference: the identity path carries x, the projection path the activated x
        return out + (x if self.equal else self.shortcut(pre))


class WideResNetFeatures(nn.Module):
    """WRN-depth-k (depth 6n+4) up to the pooled feature vector."""

    def __init__(self, depth: int, widen: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(WideBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.feature_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


RESNETS = {"resnet8": (8, (16, 16, 32, 64)), "resnet14": (14, (16, 16, 32, 64)),
           "resnet20": (20, (16, 16, 32, 64)), "resnet32": (32, (16, 16, 32, 64)),
           "resnet44": (44, (16, 16, 32, 64)), "resnet56": (56, (16, 16, 32, 64)),
           "resnet110": (110, (16, 16, 32, 64)), "resnet8x4": (8, (32, 64, 128, 256)),
           "resnet32x4": (32, (32, 64, 128, 256))}
WRNS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}
NAMES = tuple(RESNETS) + tuple(WRNS)


def backbone(name: str, in_channels: int = 3) -> nn.Module:
    """The feature extractor of a model-zoo network by name (it has `.feature_dim`)."""
    if name in RESNETS:
        depth, widths = RESNETS[name]
        return CifarResNetFeatures(depth, widths, in_channels)
    if name in WRNS:
        depth, widen = WRNS[name]
        return WideResNetFeatures(depth, widen, in_channels)
    raise ValueError(f"unknown CIFAR network {name!r}; valid: {', '.join(NAMES)}")


def zero_linear_bias(model: nn.Module) -> nn.Module:
    """The WRN reference initialisation of every linear layer's bias (heads included)."""
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
