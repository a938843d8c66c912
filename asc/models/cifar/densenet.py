"""DenseNets for CIFAR (Huang et al. 2017): DenseNet-40-12 and DenseNet-BC-100-12.

Three dense blocks on 32, 16 and 8 pixels. Layers are pre-activation: norm-ReLU-conv3x3 producing
`growth` new channels (BC: norm-ReLU-conv1x1 to 4*growth first). Transitions: norm-ReLU-conv1x1
(BC: halving the channels) then 2x2 average pooling. The stem is a 3x3 conv to 16 channels
(BC: 2*growth); the head is norm-ReLU, global average pooling and one linear layer.
Counts for 10 classes: 1.0 M (DenseNet paper, L=40 k=12) and 0.77 M (bearpaw/pytorch-classification;
0.8 M in the paper, L=100 k=12 BC). No dropout (the paper drops it when training with augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asc.models.cifar._base import CifarNet, conv1x1, conv3x3
from asc.models.registry import register_model
from asc.nn import make_norm


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int, bottleneck: bool, norm: str) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        if bottleneck:
            self.norm0 = make_norm(norm, c_in)
            self.conv0 = conv1x1(c_in, 4 * growth)
            c_in = 4 * growth
        self.norm1 = make_norm(norm, c_in)
        self.conv1 = conv3x3(c_in, growth)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv0(F.relu(self.norm0(x))) if self.bottleneck else x
        out = self.conv1(F.relu(self.norm1(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.norm = make_norm(norm, c_in)
        self.conv = conv1x1(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), 2)


class DenseNetBody(nn.Module):
    def __init__(self, depth: int, growth: int, bc: bool, in_channels: int, norm: str) -> None:
        super().__init__()
        per_block = (depth - 4) // (6 if bc else 3)
        c = 2 * growth if bc else 16
        layers: list[nn.Module] = [conv3x3(in_channels, c)]
        for block in range(3):
            for _ in range(per_block):
                layers.append(DenseLayer(c, growth, bc, norm))
                c += growth
            if block < 2:
                c_out = c // 2 if bc else c
                layers.append(Transition(c, c_out, norm))
                c = c_out
        layers += [make_norm(norm, c), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class CifarDenseNet(CifarNet):
    def __init__(self, depth: int, growth: int, bc: bool, num_classes: int = 100, in_channels: int = 3,
                 norm: str = "bn", head_norm: str | None = None) -> None:
        if (depth - 4) % (6 if bc else 3):
            raise ValueError(f"DenseNet{'-BC' if bc else ''} depth {depth} does not give equal dense blocks")
        body = DenseNetBody(depth, growth, bc, in_channels, norm)
        super().__init__(body, body.out_channels, num_classes, head_norm=head_norm)


@register_model
def cifar_densenet40_12(num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                        **kw) -> CifarDenseNet:
    """DenseNet (L=40, k=12): 3 blocks x 12 layers, no bottleneck or compression."""
    return CifarDenseNet(40, 12, False, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)


@register_model
def cifar_densenet_bc100_12(num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                            **kw) -> CifarDenseNet:
    """DenseNet-BC (L=100, k=12): 3 blocks x 16 bottleneck layers, compression 0.5."""
    return CifarDenseNet(100, 12, True, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)
