"""ResNet-17: McDonnell & Gao's two-path residual network (DCASE 2019), as used by Hu et al. (2020).

The mel axis is split into its lower and upper halves, each processed by its own path:
    norm (affine) -> conv 3x3, stride (1, 2)
    4 stacks x 2 pre-activation blocks [norm -> ReLU -> conv 3x3] x 2, widths w, 2w, 4w, 8w;
    the first block of stacks 2-4 has stride (1, 2) and an average-pool + zero-channel shortcut.
Strides (1, 2) sub-sample time only: the network keeps every mel bin until the global pooling.
The two paths are concatenated along frequency, then the head (all norms without affine):
    norm -> ReLU -> conv 1x1 to 4 * 8w -> norm -> conv 1x1 to classes -> norm -> global average pool.
Convolutions have no bias and Keras 'same' padding. Every norm comes from `asc.nn.make_norm(norm, ...)`.

Sizes for 3 input channels and 10 classes (trainable parameters, as Keras counts them):
base_width 48 (Hu et al.) 12,966,444; base_width 24 (the 2019 original) 3,246,108.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asc.models.common import (
    Conv2dSame,
    EmbeddingClassifier,
    NormMaker,
    check_input,
    check_positive_int,
    init_keras_style,
    norm_maker,
    pool2d_same,
    relu_after,
    scaled_width,
)
from asc.models.registry import register_model

_DOWN = (1, 2)  # (frequency, time) stride of every down-sampling step


class PreActBlock(nn.Module):
    """Two [norm (no affine) -> ReLU -> conv 3x3] units plus the identity, or, when down-sampling, a
    3x3 'same' average pool (stride (1, 2)) with zero channels appended as the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, make: NormMaker) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("a residual block cannot reduce the channel count")
        if not downsample and out_channels != in_channels:
            raise ValueError("a block that keeps the resolution must keep the channel count")
        self.downsample = downsample
        self.norm1 = make(in_channels, affine=False, where="block input")
        self.act1 = relu_after(self.norm1)
        self.conv1 = Conv2dSame(in_channels, out_channels, 3, stride=_DOWN if downsample else 1)
        self.norm2 = make(out_channels, affine=False, where="block middle")
        self.act2 = relu_after(self.norm2)
        self.conv2 = Conv2dSame(out_channels, out_channels, 3)
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = self.conv2(self.act2(self.norm2(h)))
        if self.downsample:
            x = pool2d_same(x, "avg", 3, _DOWN)
            if self.extra_channels:
                x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return h + x


class FrequencyPath(nn.Module):
    """One frequency band's stem and 4 x 2 residual blocks."""

    def __init__(self, in_channels: int, widths: list[int], make: NormMaker) -> None:
        super().__init__()
        self.stem_norm = make(in_channels, affine=True, where="input")
        self.stem_conv = Conv2dSame(in_channels, widths[0], 3, stride=_DOWN)
        blocks = []
        channels = widths[0]
        for stack, width in enumerate(widths):
            for index in range(2):
                blocks.append(PreActBlock(channels, width, stack > 0 and index == 0, make))
                channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem_conv(self.stem_norm(x)))


class ResNet17(EmbeddingClassifier):
    """Two-path ResNet-17 for (B, C, F, T) log-mel input; see the module docstring for the layout.

    `embed(x)` is the globally average-pooled input of the final 1x1 classification conv: the
    normalized (no ReLU) 4 * 8w-channel head features, (B, 32 * base_width) at width_mult 1.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, norm: str = "bn", base_width: int = 48,
                 width_mult: float = 1.0, norm_eps: float = 1e-5, norm_momentum: float | None = 0.1) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        check_positive_int("base_width", base_width)
        make = norm_maker("resnet17", norm, norm_eps, norm_momentum)
        first = scaled_width(base_width, width_mult)
        widths = [first * 2**stack for stack in range(4)]
        self.in_channels = in_channels
        self.widths = widths
        self.paths = nn.ModuleList([FrequencyPath(in_channels, widths, make) for _ in range(2)])
        head = 4 * widths[-1]
        self.embed_dim = head
        self.head_norm = make(widths[-1], affine=False, where="head input")
        self.head_act = relu_after(self.head_norm)
        self.head_conv = nn.Conv2d(widths[-1], head, 1, bias=False)
        self.classifier_norm = make(head, affine=False, where="classifier input")
        self.classifier = nn.Conv2d(head, num_classes, 1, bias=False)
        self.output_norm = make(num_classes, affine=False, where="output")
        init_keras_style(self)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, "resnet17")
        split = x.shape[2] // 2
        low = self.paths[0](x[:, :, :split])
        high = self.paths[1](x[:, :, split:])
        h = torch.cat((low, high), dim=2)
        h = self.head_conv(self.head_act(self.head_norm(h)))
        return self.classifier_norm(h)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.output_norm(self.classifier(features)).mean(dim=(2, 3))


@register_model
def resnet17(num_classes: int = 10, in_channels: int = 3, norm: str = "bn", base_width: int = 48,
             width_mult: float = 1.0, norm_eps: float = 1e-5, norm_momentum: float | None = 0.1) -> ResNet17:
    """ResNet-17 with `base_width` filters in the first stack (48 as Hu et al. 2020; 24 as the 2019
    original); `width_mult` scales every width (rounded to multiples of 8) for small test models."""
    return ResNet17(num_classes, in_channels, norm, base_width, width_mult, norm_eps, norm_momentum)
