"""The norm factory every model uses, and a converter for models built with BatchNorm.

Kinds (paper Tables 3 and 5):
    bn     BatchNorm
    l2bn   l2 normalization of each sample's whole feature map, then BN (the paper's method)
    lnbn   layer norm (over C, H, W; no affine) then BN
    inbn   instance norm (over H, W per channel; no affine) then BN
    pnbn   positional norm (over C at each position; no affine) then BN
    ln     layer norm as GroupNorm(1, C) with per-channel affine
    in     instance norm as GroupNorm(C, C) with per-channel affine
    gn4    GroupNorm with 4 channels per group;  gn8: 8 channels per group
    sn     Switchable Normalization (IN, LN and BN statistics mixed by learned softmax weights)
    bcn    Batch-Channel Normalization (BN, then group norm in min(32, C/4) groups)
    bin    Batch-Instance Normalization (per-channel gate between BN and IN)
    none   identity

Synchronized versions of bn and l2bn for several processes: `asc.nn.convert_sync_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from asc.nn.hybrid import BatchChannelNorm, BatchInstanceNorm, SwitchNorm
from asc.nn.kinds import norm_kind_of
from asc.nn.l2bn import L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d
from asc.norm_kinds import NORM_KINDS  # the names, importable without torch

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


_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_L2BN = {1: L2BatchNorm1d, 2: L2BatchNorm2d, 3: L2BatchNorm3d}
_PREBN = {1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d}
_HYBRID = {"sn": SwitchNorm, "bcn": BatchChannelNorm, "bin": BatchInstanceNorm}


def _groups(kind: str, num_features: int) -> int:
    if kind == "ln":
        return 1
    if kind == "in":
        return num_features
    per_group = int(kind[2:])
    if num_features % per_group:
        raise ValueError(f"{kind}: {num_features} channels are not divisible into groups of {per_group}")
    return num_features // per_group


def make_norm(kind: str, num_features: int, dim: int = 2, affine: bool = True, *, eps: float = 1e-5,
              momentum: float | None = 0.1, track_running_stats: bool = True) -> nn.Module:
    """Build one normalization layer of `kind` for `num_features` channels.

    `dim` is 1 for (N, C[, L]) inputs, 2 for (N, C, H, W), 3 for (N, C, D, H, W); group-norm
    kinds accept any.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; known kinds: {', '.join(NORM_KINDS)}")
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    bn_kw = dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    if kind == "bn":
        return _BN[dim](num_features, **bn_kw)
    if kind == "l2bn":
        return _L2BN[dim](num_features, **bn_kw)
    if kind in ("lnbn", "inbn", "pnbn"):
        return _PREBN[dim](num_features, pre=kind[:2], **bn_kw)
    if kind in _HYBRID:
        return _HYBRID[kind](num_features, **bn_kw)
    if kind == "none":
        return nn.Identity()
    norm = nn.GroupNorm(_groups(kind, num_features), num_features, eps=eps, affine=affine)
    norm.norm_kind = kind  # gn8 on 8 channels is one group, like ln: remember which was asked for
    return norm


def _replacement(old: _BatchNorm, kind: str) -> nn.Module:
    dim = 1 if isinstance(old, nn.BatchNorm1d) else 3 if isinstance(old, nn.BatchNorm3d) else 2
    new = make_norm(kind, old.num_features, dim=dim, affine=old.affine, eps=old.eps, momentum=old.momentum,
                    track_running_stats=old.track_running_stats)
    target = new.bn if isinstance(new, BatchChannelNorm) else new  # BCN's BN part takes BN's state
    own = target.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(kept, strict=False)
    new.train(old.training)
    param = next(old.parameters(), None)
    if param is None and old.running_mean is not None:
        param = old.running_mean
    return new.to(param.device) if param is not None else new


def convert_norm(module: nn.Module, kind: str) -> nn.Module:
    """Replace every BatchNorm in `module` (in place) by `kind`; returns the converted module.

    Keeps affine, eps, momentum and track_running_stats, and copies weight, bias and running
    statistics wherever the new layer has them with the same shape.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; known kinds: {', '.join(NORM_KINDS)}")
    if isinstance(module, _BatchNorm):
        return _replacement(module, kind)
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and not getattr(child, "part_of_norm", False):
            setattr(module, name, _replacement(child, kind))
        elif norm_kind_of(child) is None:  # not into other norm layers
            convert_norm(child, kind)
    return module
