"""Norms that mix batch statistics with per-sample ones, the rest of the paper's Table 5.

    SwitchNorm          SN, Luo et al. 2019: a learned softmax mixture of IN, LN and BN means and
                        (separately) variances; in evaluation the BN part uses running statistics.
    BatchChannelNorm    BCN, Qiao et al. 2020: BN (per-channel affine), then group norm without a
                        per-channel affine and a per-group affine; min(32, C/4) groups, as the L2BN
                        paper states (the largest divisor of C up to that when it does not divide C).
    BatchInstanceNorm   BIN, Nam & Kim 2018: y = γ (ρ x̂_BN + (1 - ρ) x̂_IN) + β with a per-channel
                        gate ρ kept in [0, 1] (clamped before every training forward, which equals the
                        authors' clamp after each optimizer step) and trained at 10x the learning rate.

All take (N, C, *spatial) input; SN and BIN need at least one spatial dimension (an instance norm of
a vector is undefined). Variances are biased (divide by the count), as in each paper's formulas.
Running statistics follow torch's BatchNorm convention (`momentum` = weight of the new batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _need_spatial(kind: str, x: Tensor) -> None:
    if x.dim() < 3:
        raise ValueError(f"{kind} needs spatial dimensions (N, C, ...): a vector has no instance statistics")


class _RunningStats(nn.Module):
    """Per-channel running mean/variance buffers with BatchNorm's names, so convert_norm carries them."""

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _momentum(self) -> float:
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _use_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _affine(self, y: Tensor) -> Tensor:
        if not self.affine:
            return y
        shape = (1, -1) + (1,) * (y.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class SwitchNorm(_RunningStats):
    """Switchable Normalization over IN, LN and BN statistics (order of `mean_weight`/`var_weight`)."""

    norm_kind = "sn"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))

    def forward(self, x: Tensor) -> Tensor:
        _need_spatial("sn", x)
        n, c = x.shape[:2]
        xf = x.reshape(n, c, -1)
        acc = torch.float32 if xf.dtype in (torch.float16, torch.bfloat16) else xf.dtype
        var_in, mean_in = torch.var_mean(xf.to(acc), dim=-1, correction=0)  # (N, C)
        second = var_in + mean_in.square()
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = (second.mean(1, keepdim=True) - mean_ln.square()).clamp_min(0)  # E[x²] - E[x]² may cancel
        if self._use_batch_stats():
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = (second.mean(0, keepdim=True) - mean_bn.square()).clamp_min(0)
            if self.training and self.track_running_stats:
                m = self._momentum()
                with torch.no_grad():
                    self.running_mean.lerp_(mean_bn[0].to(self.running_mean.dtype), m)
                    self.running_var.lerp_(var_bn[0].to(self.running_var.dtype), m)
        else:
            mean_bn = self.running_mean.to(acc)[None]
            var_bn = self.running_var.to(acc)[None]
        mw = torch.softmax(self.mean_weight.to(acc), 0)
        vw = torch.softmax(self.var_weight.to(acc), 0)
        mean = mw[0] * mean_in + mw[1] * mean_ln + mw[2] * mean_bn
        var = vw[0] * var_in + vw[1] * var_ln + vw[2] * var_bn
        y = (xf.to(acc) - mean[..., None]) * (var[..., None] + self.eps).rsqrt()
        return self._affine(y.reshape(x.shape).to(x.dtype))


class _PartBatchNorm(nn.BatchNorm1d):
    """The BN step inside a composite norm: not a norm layer of its own for norm_kind_of/convert_norm."""

    part_of_norm = True


def bcn_groups(num_features: int) -> int:
    """min(32, C/4) groups, or the largest divisor of C below that."""
    limit = max(1, min(32, num_features // 4))
    return next(g for g in range(limit, 0, -1) if num_features % g == 0)


class BatchChannelNorm(nn.Module):
    """BN, then group norm (no per-channel affine) with a per-group affine."""

    norm_kind = "bcn"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        self.groups = bcn_groups(num_features)
        self.bn = _PartBatchNorm(num_features, eps=eps, momentum=momentum, affine=affine,
                                 track_running_stats=track_running_stats)
        if affine:
            self.weight = nn.Parameter(torch.ones(self.groups))
            self.bias = nn.Parameter(torch.zeros(self.groups))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        y = self.bn(x.reshape(n, c, -1))  # (N, C, L): BatchNorm1d covers every spatial layout
        y = F.group_norm(y, self.groups, eps=self.eps).reshape(n, self.groups, -1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return y.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, affine={self.affine}"


class BatchInstanceNorm(_RunningStats):
    """Batch-Instance Normalization with a per-channel gate ρ in [0, 1] (1 = BN, 0 = IN)."""

    norm_kind = "bin"

    #: learning-rate multiplier of each parameter, read by the training engine (the authors use 10)
    param_lr_mult = {"gate": 10.0}

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.gate = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        _need_spatial("bin", x)
        if self.training:
            with torch.no_grad():
                self.gate.clamp_(0.0, 1.0)
        batch = self._use_batch_stats()
        m = self._momentum() if self.training and self.track_running_stats else 0.0
        x_bn = F.batch_norm(x, self.running_mean, self.running_var, None, None, batch, m, self.eps)
        x_in = F.instance_norm(x, eps=self.eps)
        rho = self.gate.clamp(0.0, 1.0).view((1, -1) + (1,) * (x.dim() - 2)).to(x.dtype)
        return self._affine(x_in + rho * (x_bn - x_in))
