"""VGG-16 / VGG-19 with norm layers, CIFAR variant.

Thirteen (sixteen) 3x3 conv-norm-ReLU layers in five max-pooled groups take 32x32 to a 1x1x512 map;
one linear layer classifies those 512 features (the CIFAR variant of kuangliu/pytorch-cifar and
bearpaw/pytorch-classification, not the three 4096-wide layers of the ImageNet VGG). The convolutions
keep their bias as in those models, so vgg19 has the 20.04 M parameters quoted for 10 classes.
"""

from __future__ import annotations

from torch import nn

from asc.models.cifar._base import CifarNet
from asc.models.registry import register_model
from asc.nn import make_norm

CONFIGS = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def vgg_body(depth: int, in_channels: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = in_channels
    for v in CONFIGS[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), make_norm(norm, v), nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(*layers)


class CifarVGG(CifarNet):
    def __init__(self, depth: int, num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                 head_norm: str | None = None) -> None:
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        super().__init__(vgg_body(depth, in_channels, norm), 512, num_classes, head_norm=head_norm)


@register_model
def cifar_vgg16(num_classes: int = 100, in_channels: int = 3, norm: str = "bn", **kw) -> CifarVGG:
    """VGG-16 with a norm after every conv, one linear classifier on 512 features."""
    return CifarVGG(16, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)


@register_model
def cifar_vgg19(num_classes: int = 100, in_channels: int = 3, norm: str = "bn", **kw) -> CifarVGG:
    """VGG-19 with a norm after every conv, one linear classifier on 512 features."""
    return CifarVGG(19, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)
