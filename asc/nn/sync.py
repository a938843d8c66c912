"""BN and L2BN whose batch statistics span every process of a data-parallel run.

Under torchrun each process sees batch/N samples. Plain layers would normalize over that slice and
keep rank-local running statistics, so N processes would not train like one. These layers sum the
statistics over the process group: L2BN's per-sample norm is local, and the batch mean and variance
of x̂ follow from per-channel Σ x̂ and Σ x̂² (from per-(sample, channel) moments), so one all-reduce
of 2·C + 1 numbers forward and one of 2·C backward suffice. BN is the same layer with the l2 step
off, so one implementation serves both, on CPU (gloo) and GPU (nccl) alike.

A process whose local batch is empty (a global batch smaller than the number of processes) still
joins both all-reduces, adding nothing, so the others neither hang nor fail. As torch's SyncBatchNorm
does, the "more than 1 value per channel" check applies to the global count, on every process alike.

Do not use `torch.nn.SyncBatchNorm.convert_sync_batchnorm` on a model with L2BN: it turns every
L2BatchNorm into a plain SyncBatchNorm and silently drops the l2 step. `asc.nn.convert_sync_norm` keeps
it: the norm registry (`asc.nn.norms.NORMS`) names each kind's synchronized layer, and each layer here
names the classes whose forward it reproduces (`replaces`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from asc.nn.l2bn import L2_EPS, L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d, l2_batch_norm


class SyncBatchNorm(_BatchNorm):
    """BatchNorm with batch statistics over a process group; state dict as torch's BatchNorm."""

    l2 = False
    norm_kind = "bn"
    #: the layers this one stands in for; subclasses of them may change forward, so they are not swapped
    replaces: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group: Any = None,
                 l2_eps: float = L2_EPS, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group
        self.l2_eps = l2_eps

    def _check_input_dim(self, input: Tensor) -> None:  # noqa: A002 - torch's own argument name
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def _group(self) -> Any:
        """The group to sum over, or None when there is nothing to synchronize."""
        dist = torch.distributed
        if not self.training or not dist.is_available() or not dist.is_initialized():
            return None
        group = self.process_group or torch.distributed.group.WORLD
        return group if torch.distributed.get_world_size(group) > 1 else None

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_running = not self.training and self.track_running_stats
        stats = self.training or use_running
        return l2_batch_norm(input, self.running_mean if stats else None, self.running_var if stats else None,
                             self.weight, self.bias, training=self.training or not use_running,
                             momentum=momentum, eps=self.eps, l2_eps=self.l2_eps, l2=self.l2,
                             process_group=self._group())

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", l2_eps={self.l2_eps}" if self.l2 else "") + ", synchronized"

    @classmethod
    def from_layer(cls, old: _BatchNorm, process_group: Any = None) -> SyncBatchNorm:
        """The synchronized twin of `old`, sharing its parameters and buffers (same state dict)."""
        new = cls(old.num_features, eps=old.eps, momentum=old.momentum, affine=old.affine,
                  track_running_stats=old.track_running_stats, process_group=process_group,
                  l2_eps=getattr(old, "l2_eps", L2_EPS))
        with torch.no_grad():
            if old.affine:
                new.weight = old.weight
                new.bias = old.bias
            if old.track_running_stats:
                new.running_mean = old.running_mean
                new.running_var = old.running_var
                new.num_batches_tracked = old.num_batches_tracked
        new.train(old.training)
        return new


class SyncL2BatchNorm(SyncBatchNorm):
    """L2BN with batch statistics over a process group; state dict as torch's BatchNorm."""

    l2 = True
    norm_kind = "l2bn"
    replaces = (L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d)
