"""FCNN and fsFCNN: Hu et al.'s (DCASE 2020) fully convolutional networks with channel attention.

Both are a norm (affine) on the input, stages of [conv -> norm -> ReLU (-> dropout)] units with
pooling between them, and the same head:
    conv 1x1 to classes -> norm (no affine) -> ReLU -> norm (no affine)
    -> channel attention (shared 2-layer MLP, ratio 2, on average- and max-pooled features)
    -> global average pool.
Every norm comes from `asc.nn.make_norm(norm, ...)`; convolutions have no bias.

FCNN (widths 48/96/192 times `channel_mult`, by default the number of input channels as in the
published code: 144/288/576 for 3 channels): conv 5x5 stride 2, conv 3x3, max-pool 2x2; two 3x3
convs, max-pool 2x2; four 3x3 convs, dropout 0.3 after the first three, max-pool 2x2. Symmetric
zero padding (Keras ZeroPadding2D + 'valid'). 11,780,329 trainable parameters for 3 x 128 input.

fsFCNN (frequency sub-sampled less): all 'same' padding (Keras alignment); conv 5x5 stride (1, 2),
conv 3x3, max-pool 3x3 stride 2; two convs, max-pool 3x3 stride 2; two convs, max-pool 3x3 stride
(1, 2), two convs, max-pool 3x3 stride (1, 2); two convs each followed by dropout 0.5. Widths
48/96/512/768 times `channel_mult`. The published code (fsfcnn_att.py) resets its channel
multiplier to 1 inside every stage, so its widths are 48/96/512/768 whatever the input: the
default here, 16,531,913 parameters. channel_mult=3 gives 144/288/1536/2304, 148,672,105 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from asc.errors import ConfigError
from asc.models.common import (
    Conv2dSame,
    EmbeddingClassifier,
    NormMaker,
    Pool2dSame,
    check_input,
    check_positive_int,
    init_keras_style,
    norm_maker,
    relu_after,
    scaled_width,
)
from asc.models.dropout import GlobalDropout
from asc.models.registry import register_model


@dataclass(frozen=True)
class Conv:
    """A conv -> norm -> ReLU unit; stage index selects the width; padding 'same' or symmetric k // 2."""

    stage: int
    kernel: int = 3
    stride: int | tuple[int, int] = 1
    same: bool = False
    dropout: bool = False


@dataclass(frozen=True)
class Pool:
    """Max pooling: 'valid' (floor) or Keras 'same'."""

    kernel: int
    stride: int | tuple[int, int]
    same: bool = False


FCNN_LAYOUT = (
    Conv(0, kernel=5, stride=2), Conv(0), Pool(2, 2),
    Conv(1), Conv(1), Pool(2, 2),
    Conv(2, dropout=True), Conv(2, dropout=True), Conv(2, dropout=True), Conv(2), Pool(2, 2),
)

FSFCNN_LAYOUT = (
    Conv(0, kernel=5, stride=(1, 2), same=True), Conv(0, same=True), Pool(3, 2, same=True),
    Conv(1, same=True), Conv(1, same=True), Pool(3, 2, same=True),
    Conv(2, same=True), Conv(2, same=True), Pool(3, (1, 2), same=True),
    Conv(2, same=True), Conv(2, same=True), Pool(3, (1, 2), same=True),
    Conv(3, same=True, dropout=True), Conv(3, same=True, dropout=True),
)


class AttentionPool(nn.Module):
    """Channel attention (CBAM's channel branch) fused with the global average pool that follows it.

    w = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) with MLP = Linear(C, C // ratio) -> ReLU -> Linear;
    avgpool(x * w) equals w * avgpool(x), so the weighted map itself is never built.
    """

    def __init__(self, channels: int, ratio: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        # pooled in float32: under bf16 autocast, inductor's max-pool gradient turned NaN (CPU, torch 2.14)
        x = x.float()
        avg = x.mean(dim=(2, 3))
        peak = x.amax(dim=(2, 3))
        both = self.mlp(torch.cat((avg, peak), dim=0))
        weights = torch.sigmoid(both[: avg.shape[0]] + both[avg.shape[0]:])
        return weights * avg


class ConvNormAct(nn.Sequential):
    def __init__(self, conv: nn.Conv2d, norm: nn.Module, dropout: float) -> None:
        layers = [conv, norm, relu_after(norm)]
        if dropout > 0:
            layers.append(GlobalDropout(dropout))
        super().__init__(*layers)


class FullyConvNet(EmbeddingClassifier):
    """FCNN / fsFCNN body from a layout of `Conv` and `Pool` steps, plus the attention head.

    `embed(x)` is the globally average-pooled input of the 1x1 classification conv: the last
    stage's features, (B, widths[-1]).
    """

    def __init__(self, name: str, layout: Sequence[Conv | Pool], widths: Sequence[int], num_classes: int,
                 in_channels: int, make: NormMaker, dropout: float) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{name}: dropout must be in [0, 1), got {dropout!r}")
        self.name = name
        self.in_channels = in_channels
        self.widths = list(widths)
        self.input_norm = make(in_channels, affine=True, where="input")
        layers: list[nn.Module] = []
        channels = in_channels
        for step in layout:
            if isinstance(step, Pool):
                layers.append(Pool2dSame("max", step.kernel, step.stride) if step.same
                              else nn.MaxPool2d(step.kernel, step.stride))
                continue
            width = widths[step.stage]
            if step.same:
                conv = Conv2dSame(channels, width, step.kernel, step.stride)
            else:
                conv = nn.Conv2d(channels, width, step.kernel, step.stride, padding=step.kernel // 2,
                                 bias=False)
            norm = make(width, affine=True, where=f"stage {step.stage + 1} output")
            layers.append(ConvNormAct(conv, norm, dropout if step.dropout else 0.0))
            channels = width
        self.body = nn.Sequential(*layers)
        self.embed_dim = channels
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        self.classifier_norm = make(num_classes, affine=False, where="classifier output")
        self.classifier_act = relu_after(self.classifier_norm)
        self.output_norm = make(num_classes, affine=False, where="output")
        self.attention = AttentionPool(num_classes, ratio=2)
        init_keras_style(self)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, self.name)
        return self.body(self.input_norm(x))

    def forward_head(self, features: Tensor) -> Tensor:
        h = self.classifier_act(self.classifier_norm(self.classifier(features)))
        return self.attention(self.output_norm(h))


def _widths(name: str, base: Sequence[int], stages: int, mult: int, width_mult: float) -> list[int]:
    if len(base) != stages:
        raise ConfigError(f"{name}: base_widths needs {stages} values, got {list(base)!r}")
    for w in base:
        check_positive_int(f"{name}: base_widths entry", w)
    check_positive_int(f"{name}: channel_mult", mult)
    return [scaled_width(w * mult, width_mult) for w in base]


def _build(name: str, layout, base_widths, num_classes, in_channels, norm, channel_mult, width_mult, dropout,
           norm_eps, norm_momentum) -> FullyConvNet:
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    stages = 1 + max(step.stage for step in layout if isinstance(step, Conv))
    mult = in_channels if channel_mult is None else channel_mult
    widths = _widths(name, base_widths, stages, mult, width_mult)
    make = norm_maker(name, norm, norm_eps, norm_momentum)
    return FullyConvNet(name, layout, widths, num_classes, in_channels, make, dropout)


@register_model
def fcnn(num_classes: int = 10, in_channels: int = 3, norm: str = "bn",
         base_widths: Sequence[int] = (48, 96, 192), channel_mult: int | None = None, width_mult: float = 1.0,
         dropout: float = 0.3, norm_eps: float = 1e-5, norm_momentum: float | None = 0.1) -> FullyConvNet:
    """FCNN; widths are base_widths x channel_mult (None: in_channels, as published) x width_mult."""
    return _build("fcnn", FCNN_LAYOUT, base_widths, num_classes, in_channels, norm, channel_mult, width_mult,
                  dropout, norm_eps, norm_momentum)


@register_model
def fsfcnn(num_classes: int = 10, in_channels: int = 3, norm: str = "bn",
           base_widths: Sequence[int] = (48, 96, 512, 768), channel_mult: int | None = 1,
           width_mult: float = 1.0, dropout: float = 0.5, norm_eps: float = 1e-5,
           norm_momentum: float | None = 0.1) -> FullyConvNet:
    """fsFCNN; widths are base_widths x channel_mult x width_mult. channel_mult 1 is the published
    network (16.5 M parameters); channel_mult=None multiplies by in_channels like FCNN (148.7 M for 3)."""
    return _build("fsfcnn", FSFCNN_LAYOUT, base_widths, num_classes, in_channels, norm, channel_mult,
                  width_mult, dropout, norm_eps, norm_momentum)
