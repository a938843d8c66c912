"""ResNeXt-29 for CIFAR (Xie et al. 2017): cardinality 8, bottleneck width 64 ("8x64d").

A 3x3 stem to 64 channels, then three stages of three bottleneck blocks with outputs 256, 512 and 1024
channels (stride 2 at the start of stages 2 and 3). A block: 1x1 conv to D, grouped 3x3 conv
(cardinality groups), 1x1 conv to the output, each followed by a norm; D = cardinality * width * out/256
(512, 1024, 2048). Projection shortcut (1x1 conv + norm) where the shape changes. 34.4 M parameters for
10 classes (ResNeXt paper, Table 7; 34.43 M in bearpaw/pytorch-classification).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from asc.models.cifar._base import CifarNet, conv1x1, conv3x3
from asc.models.registry import register_model
from asc.nn import make_norm


class ResNeXtBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, cardinality: int, width: int, norm: str) -> None:
        super().__init__()
        d = cardinality * width * c_out // 256
        self.conv1, self.bn1 = conv1x1(c_in, d), make_norm(norm, d)
        self.conv2, self.bn2 = conv3x3(d, d, stride, groups=cardinality), make_norm(norm, d)
        self.conv3, self.bn3 = conv1x1(d, c_out), make_norm(norm, c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Sequential(conv1x1(c_in, c_out, stride), make_norm(norm, c_out)))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def resnext_body(depth: int, cardinality: int, width: int, in_channels: int, norm: str) -> nn.Sequential:
    if (depth - 2) % 9:
        raise ValueError(f"ResNeXt depth must be 9n+2 (29, ...), got {depth}")
    n = (depth - 2) // 9
    layers: list[nn.Module] = [conv3x3(in_channels, 64), make_norm(norm, 64), nn.ReLU(inplace=True)]
    c_in = 64
    for i, c_out in enumerate((256, 512, 1024)):
        for j in range(n):
            layers.append(ResNeXtBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1, cardinality, width, norm))
            c_in = c_out
    return nn.Sequential(*layers)


class CifarResNeXt(CifarNet):
    def __init__(self, depth: int = 29, cardinality: int = 8, width: int = 64, num_classes: int = 100,
                 in_channels: int = 3, norm: str = "bn", head_norm: str | None = None) -> None:
        super().__init__(resnext_body(depth, cardinality, width, in_channels, norm), 1024, num_classes,
                         head_norm=head_norm)


@register_model
def cifar_resnext29_8x64d(num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                          **kw) -> CifarResNeXt:
    """ResNeXt-29, cardinality 8, bottleneck width 64."""
    return CifarResNeXt(29, 8, 64, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)
