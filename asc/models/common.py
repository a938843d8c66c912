"""Pieces shared by the DCASE models: Keras-style 'same' padding, width scaling, initialization,
the classifier base with `embed()`, and the model-config loader.

The models are ports of Keras originals (channels-last there, (B, C, F, T) here). Keras 'same'
padding with stride 2 puts the odd padding element on the right, where PyTorch pads symmetrically;
`Conv2dSame` and `pool2d_same` reproduce the Keras window alignment, not only the output size.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from asc.config import Field, load_yaml, validate
from asc.errors import ConfigError
from asc.nn import make_norm

# Keras/TF draw he_normal from a normal truncated at 2 sigma, widened so the result keeps variance 2/fan_in.
_TRUNC_STD_CORRECTION = 0.87962566103423978


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TF 'same' padding (left, right) of one axis: output ceil(size / stride), odd pad on the right."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    return [same_padding(x.shape[-2 + i], kernel[i], stride[i]) for i in range(2)]


class Conv2dSame(nn.Conv2d):
    """Conv2d with Keras 'same' padding for any input size.

    Symmetric padding goes to the convolution itself; only where Keras pads one more element on the
    right (stride > 1, even remainder) is that one column/row added with F.pad.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        (top, bottom), (left, right) = _same_pads(x, self.kernel_size, self.stride)
        if bottom != top or right != left:
            x = F.pad(x, (0, right - left, 0, bottom - top))
        return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))


def pool2d_same(x: Tensor, mode: str, kernel: int | Sequence[int], stride: int | Sequence[int]) -> Tensor:
    """Keras 'same' max or average pooling; averages count only real elements, as TF does.

    Where Keras pads one more element on the right, `ceil_mode` lets the last window hang over the
    edge by that element instead of copying the input into a padded buffer.
    """
    kernel, stride = _pair(kernel), _pair(stride)
    pads = _same_pads(x, kernel, stride)
    padding = (pads[0][0], pads[1][0])
    ceil_mode = any(r != l for l, r in pads)
    if mode == "max":
        return F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
    if mode == "avg":
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=False)
    raise ValueError(f"unknown pooling mode {mode!r}; use 'max' or 'avg'")


class Pool2dSame(nn.Module):
    """Module form of `pool2d_same`."""

    def __init__(self, mode: str, kernel_size: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        if mode not in ("max", "avg"):
            raise ValueError(f"unknown pooling mode {mode!r}; use 'max' or 'avg'")
        self.mode, self.kernel_size, self.stride = mode, _pair(kernel_size), _pair(stride)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return pool2d_same(x, self.mode, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel_size={self.kernel_size}, stride={self.stride}, padding=same"


def scaled_width(width: int, width_mult: float) -> int:
    """`width` times `width_mult`; scaled widths are rounded to a multiple of 8 (at least 8) so that
    group-norm kinds (gn4, gn8) stay valid in small models. width_mult 1.0 keeps the width exactly."""
    if not width_mult > 0:
        raise ConfigError(f"width_mult must be > 0, got {width_mult!r}")
    if width_mult == 1.0:
        return int(width)
    return max(8, math.floor(width * width_mult / 8 + 0.5) * 8)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


NormMaker = Callable[..., nn.Module]


def norm_maker(model: str, kind: str, eps: float = 1e-5, momentum: float | None = 0.1) -> NormMaker:
    """A `make(channels, affine=True, where='')` closure over `asc.nn.make_norm(kind, ...)` whose
    errors name the model and the layer, e.g. group norms on a 3-channel input."""

    def make(channels: int, affine: bool = True, where: str = "layer") -> nn.Module:
        try:
            return make_norm(kind, channels, dim=2, affine=affine, eps=eps, momentum=momentum)
        except ValueError as exc:
            raise ConfigError(f"{model}: norm {kind!r} cannot normalize the {where} ({channels} channels): "
                              f"{exc}") from None

    return make


def relu_after(norm: nn.Module) -> nn.ReLU:
    """ReLU that works in place unless the norm is the identity (its output is then its input)."""
    return nn.ReLU(inplace=not isinstance(norm, nn.Identity))


def keras_he_normal_(weight: Tensor) -> Tensor:
    """Keras `he_normal`: truncated normal (2 sigma) with variance 2 / fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNC_STD_CORRECTION
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def init_keras_style(module: nn.Module) -> None:
    """he_normal for conv and dense kernels, zero biases, as the Keras originals; norms keep torch's 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            keras_he_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class EmbeddingClassifier(nn.Module, metaclass=abc.ABCMeta):
    """Base of the DCASE models: `forward_features` gives the feature map fed to the final classification
    layer (the last 1x1 conv to classes), `forward_head` maps it to logits.

    `embed(x)` is that feature map globally average-pooled, (B, D): the classification-layer feature
    used by the intra/inter-class angle metrics. `forward_with_embedding` gives both from one pass.
    """

    embed_dim: int

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map fed to the final classification layer, (B, D, F', T')."""

    @abc.abstractmethod
    def forward_head(self, features: Tensor) -> Tensor:
        """Logits (B, num_classes) from `forward_features`' output."""

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for input (B, C, F, T) of any time length."""
        return self.forward_head(self.forward_features(x))

    def embed(self, x: Tensor) -> Tensor:
        """Globally average-pooled input of the final classification layer, (B, embed_dim)."""
        return self.forward_features(x).mean(dim=(2, 3))

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, embedding) from a single pass."""
        features = self.forward_features(x)
        return self.forward_head(features), features.mean(dim=(2, 3))


_RESERVED = ("num_classes", "in_channels", "norm")

MODEL_CONFIG_SCHEMA = {
    "name": Field(str, help="registered model name (asc.models.list_models())"),
    "params": Field(dict, default={}, help="keyword arguments of the model builder"),
}


def load_model_config(path: str | os.PathLike) -> dict:
    """Read a model config (`name`, `params`) and check that the model is registered.

    num_classes, in_channels and norm come from the data and the recipe, so they are refused here.
    """
    from asc.models.registry import list_models

    source = str(path)
    cfg = validate(load_yaml(path), MODEL_CONFIG_SCHEMA, source)
    known = list_models()
    if cfg["name"] not in known:
        raise ConfigError(f"{source}: name: unknown model {cfg['name']!r}; known models: {', '.join(known)}")
    for key in cfg["params"]:
        if not isinstance(key, str):
            raise ConfigError(f"{source}: params: keys must be names, got {key!r}")
        if key in _RESERVED:
            raise ConfigError(f"{source}: params.{key}: set by the data/recipe, not by the model config "
                              f"(use --norm or the recipe for it)")
    return cfg


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm moving statistics are buffers and never counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Size as the DCASE challenge reports it: trainable parameters, their storage in float32 and
    float16, and multiply-accumulates of one forward pass on one input of `input_shape` (C, H, W)."""
    import torch

    params = count_parameters(model)
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            macs = count_macs(model, torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
    return {"params": params, "macs": macs, "bytes_fp32": 4 * params, "bytes_fp16": 2 * params,
            "input_shape": list(input_shape)}


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of `model(x)` in its convolutions and linear layers, the layers whose
    products the challenge counts: each output of a convolution takes in_channels / groups x kernel
    products, each output of a linear layer in_features. A test checks every registered model against
    torch's own FLOP counter (2 FLOPs a MAC), which is not used here because its first use imports
    torch._dynamo, over a second at the start of every `asc evaluate` and `asc export`."""
    total = 0

    def conv(m: nn.Module, inputs: Any, out: Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Module, inputs: Any, out: Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, _CONVS) else linear)
             for m in model.modules() if isinstance(m, (*_CONVS, nn.Linear))]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_input(x: Tensor, in_channels: int, model: str) -> None:
    """Clear error for inputs that are not (B, in_channels, F, T)."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{model}: expected input (batch, {in_channels}, mel bins, frames), "
                         f"got {tuple(x.shape)}")


__all__ = [
    "Conv2dSame",
    "EmbeddingClassifier",
    "Pool2dSame",
    "check_input",
    "check_positive_int",
    "count_macs",
    "count_parameters",
    "model_size",
    "init_keras_style",
    "keras_he_normal_",
    "load_model_config",
    "norm_maker",
    "pool2d_same",
    "relu_after",
    "same_padding",
    "scaled_width",
]
