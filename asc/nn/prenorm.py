"""lnbn, inbn, pnbn: a parameter-free per-sample normalization followed by BN (the paper's Table 3);
ifnbn, rfnbn: IFN or RFN (asc.nn.freqnorm, relax 0.5) followed by BN, the frequency-wise norms plugged in
front of BN rather than replacing it, as the published RFN is added to networks that keep their BN.

Each is a subclass of the torch BatchNorm class of its dimension, so its state dict is BatchNorm's and
`convert_norm` carries weights and running statistics over; only the input to BN differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asc.nn.freqnorm import instance_freq_norm, relaxed_freq_norm

_PRE_EPS = 1e-5


def _pre_normalize(x: Tensor, mode: str) -> Tensor:
    if mode == "ln":
        return F.layer_norm(x, x.shape[1:], eps=_PRE_EPS)
    if mode == "in":
        if x.dim() < 3:
            raise ValueError("inbn needs spatial dimensions (N, C, ...): a vector has no instance norm")
        return F.instance_norm(x, eps=_PRE_EPS)
    if mode == "pn":
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        return (x - mean) * (var + _PRE_EPS).rsqrt()
    if mode == "ifn":
        return instance_freq_norm(x, _PRE_EPS)
    if mode == "rfn":
        return relaxed_freq_norm(x, 0.5, _PRE_EPS)
    raise ValueError(f"unknown pre-normalization {mode!r}")


class _PreNormBNMixin:
    """A parameter-free per-sample normalization followed by BN; state dict as BatchNorm."""

    pre: str = "ln"

    @property
    def norm_kind(self) -> str:
        return f"{self.pre}bn"

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's own argument name
        return super().forward(_pre_normalize(input, self.pre))

    def extra_repr(self) -> str:
        return f"pre={self.pre}, " + super().extra_repr()


class PreNormBatchNorm1d(_PreNormBNMixin, nn.BatchNorm1d):
    def __init__(self, num_features: int, pre: str, **kw) -> None:
        super().__init__(num_features, **kw)
        self.pre = pre


class PreNormBatchNorm2d(_PreNormBNMixin, nn.BatchNorm2d):
    def __init__(self, num_features: int, pre: str, **kw) -> None:
        super().__init__(num_features, **kw)
        self.pre = pre


class PreNormBatchNorm3d(_PreNormBNMixin, nn.BatchNorm3d):
    def __init__(self, num_features: int, pre: str, **kw) -> None:
        super().__init__(num_features, **kw)
        self.pre = pre
