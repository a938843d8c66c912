"""RegNet-X / RegNet-Y for CIFAR, the configurations of kuangliu/pytorch-cifar.

RegNet (Radosavovic et al. 2020) blocks are residual bottlenecks with bottleneck ratio 1: 1x1 conv,
grouped 3x3 conv (groups of `group_width` channels), [squeeze-excitation for Y], 1x1 conv, each conv
followed by a norm; projection shortcut (1x1 conv + norm) where the shape changes. For 32x32 inputs the
stem is a stride-1 3x3 conv to 64 channels and the four stages have strides 1, 1, 2, 2.
    cifar_regnetx_200mf  depths 1, 1, 4, 7;   widths 24, 56, 152, 368;  group width 8
    cifar_regnety_400mf  depths 1, 2, 7, 12;  widths 32, 64, 160, 384;  group width 16; SE ratio 0.25
The second is kuangliu's "RegNetY_400MF" (the RegNetX-400MF stages plus SE), not pycls's RegNetY-400MF.
The SE width is round(0.25 * block input width), as in pycls.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from asc.models.cifar._base import CifarNet, conv1x1, conv3x3
from asc.models.registry import register_model
from asc.nn import make_norm

CONFIGS = {
    "x_200mf": dict(depths=(1, 1, 4, 7), widths=(24, 56, 152, 368), group_width=8, se_ratio=0.0),
    "y_400mf": dict(depths=(1, 2, 7, 12), widths=(32, 64, 160, 384), group_width=16, se_ratio=0.25),
}
STRIDES = (1, 1, 2, 2)
STEM_WIDTH = 64


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.relu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))
        return x * self.expand(s).sigmoid()


class RegNetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int, se_ratio: float, norm: str):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(c_in, c_out), make_norm(norm, c_out)
        self.conv2 = conv3x3(c_out, c_out, stride, groups=c_out // group_width)
        self.bn2 = make_norm(norm, c_out)
        self.se = SqueezeExcite(c_out, round(c_in * se_ratio)) if se_ratio > 0 else nn.Identity()
        self.conv3, self.bn3 = conv1x1(c_out, c_out), make_norm(norm, c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Sequential(conv1x1(c_in, c_out, stride), make_norm(norm, c_out)))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def regnet_body(cfg: dict, in_channels: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = [conv3x3(in_channels, STEM_WIDTH), make_norm(norm, STEM_WIDTH),
                               nn.ReLU(inplace=True)]
    c_in = STEM_WIDTH
    for depth, width, stride in zip(cfg["depths"], cfg["widths"], STRIDES):
        for j in range(depth):
            layers.append(RegNetBlock(c_in, width, stride if j == 0 else 1, cfg["group_width"],
                                      cfg["se_ratio"], norm))
            c_in = width
    return nn.Sequential(*layers)


class CifarRegNet(CifarNet):
    def __init__(self, config: str, num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                 head_norm: str | None = None) -> None:
        if config not in CONFIGS:
            raise ValueError(f"unknown RegNet config {config!r}; known: {', '.join(CONFIGS)}")
        cfg = CONFIGS[config]
        super().__init__(regnet_body(cfg, in_channels, norm), cfg["widths"][-1], num_classes,
                         head_norm=head_norm)


@register_model
def cifar_regnetx_200mf(num_classes: int = 100, in_channels: int = 3, norm: str = "bn", **kw) -> CifarRegNet:
    """RegNetX-200MF stages on a stride-1 stem (kuangliu/pytorch-cifar configuration)."""
    return CifarRegNet("x_200mf", num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)


@register_model
def cifar_regnety_400mf(num_classes: int = 100, in_channels: int = 3, norm: str = "bn", **kw) -> CifarRegNet:
    """RegNetX-400MF stages with squeeze-excitation (kuangliu/pytorch-cifar's RegNetY_400MF)."""
    return CifarRegNet("y_400mf", num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)
