"""Frequency-wise instance norms against device shift: IFN and RFN (Kim et al., Interspeech 2022).

Kim, Yang, Kim, Park, Lee and Chang, "Domain Generalization with Relaxed Instance Frequency-wise
Normalization for Multi-device Acoustic Scene Classification" (Interspeech 2022; the extended form of
their DCASE 2021 Task 1A winning report, whose residual normalization adds IFN to the input instead):
the recording device shows in each sample's per-frequency statistics more than in its per-channel
ones, so normalizing each frequency bin of each sample removes it, and mixing in layer norm gives back
part of the discriminative information that full IFN throws away.

On a feature map x of shape (N, C, F, T), frequency being axis 2, the reading implemented here is

    IFN(x)[n, c, f, t] = (x[n, c, f, t] - μ[n, f]) / sqrt(σ²[n, f] + eps)   μ, σ² over (C, T), biased
    LN(x)[n, c, f, t]  = (x[n, c, f, t] - μ[n])    / sqrt(σ²[n] + eps)      μ, σ² over (C, F, T), biased
    RFN(x) = λ · LN(x) + (1 - λ) · IFN(x),   λ = 0.5 as published (`relax`)

with eps = 1e-5 inside the square root, as torch's layer norm. Other layouts follow the same rule:
axis 2 is the frequency axis and every axis after it counts as time, so (N, C, L) normalizes each
position over channels; a (N, C) vector has no frequency axis and is refused.

Affine: the published module has no parameters of its own, because it sits beside BN layers that keep
theirs. Here a kind replaces every norm layer of a model, so, like `ln` and `in`, it ends in a
per-channel γ, β when `affine` (make_norm's default); `affine=False` is exactly the published module.

No running statistics: training and evaluation compute the same thing, a batch of one is normalized
as it would be in any batch, and several processes need no synchronization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _accumulate(x: Tensor) -> Tensor:
    """x in float32 when it is half precision, so the statistics do not lose digits."""
    return x.float() if x.dtype in _LOW_PRECISION else x


def _need_frequency(kind: str, x: Tensor) -> None:
    if x.dim() < 3:
        raise ValueError(f"{kind} needs a frequency axis: input (N, C, F[, T]), got {x.dim()}-D")


def instance_freq_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """IFN: each sample's each frequency bin (axis 2) normalized over channels and time."""
    _need_frequency("ifn", x)
    xa = _accumulate(x)
    dims = (1, *range(3, x.dim()))
    var, mean = torch.var_mean(xa, dim=dims, keepdim=True, correction=0)
    return ((xa - mean) * torch.rsqrt(var + eps)).to(x.dtype)


def relaxed_freq_norm(x: Tensor, relax: float = 0.5, eps: float = 1e-5) -> Tensor:
    """RFN: relax · LN(x) + (1 - relax) · IFN(x)."""
    _need_frequency("rfn", x)
    xa = _accumulate(x)
    mixed = relax * F.layer_norm(xa, xa.shape[1:], eps=eps) + (1.0 - relax) * instance_freq_norm(xa, eps)
    return mixed.to(x.dtype)


class _FreqNorm(nn.Module):
    """Shared parts: the optional per-channel affine with GroupNorm's parameter names."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _affine(self, y: Tensor) -> Tensor:
        if not self.affine:
            return y
        shape = (1, -1) + (1,) * (y.dim() - 2)
        return y * self.weight.view(shape).to(y.dtype) + self.bias.view(shape).to(y.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class InstanceFreqNorm(_FreqNorm):
    """IFN alone: every frequency bin of every sample normalized over (C, T); see the module doc."""

    norm_kind = "ifn"

    def forward(self, x: Tensor) -> Tensor:
        return self._affine(instance_freq_norm(x, self.eps))


class RelaxedFreqNorm(_FreqNorm):
    """RFN = relax · LN + (1 - relax) · IFN (relax = λ, 0.5 as published); see the module doc."""

    norm_kind = "rfn"

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, relax: float = 0.5) -> None:
        if not 0.0 <= relax <= 1.0:
            raise ValueError(f"rfn: relax must be in [0, 1] (1 is layer norm, 0 is IFN), got {relax!r}")
        super().__init__(num_features, eps, affine)
        self.relax = float(relax)

    def forward(self, x: Tensor) -> Tensor:
        return self._affine(relaxed_freq_norm(x, self.relax, self.eps))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relax={self.relax}"
