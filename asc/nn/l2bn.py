"""L2BN: l2-normalize each sample's whole feature map, then batch-normalize (paper eq. 3, second form).

    x̂_i = sqrt(n) · x_i / max(‖x_i‖₂, l2_eps),   n = C·H·W (4-D), C·L (3-D), C (2-D)
    y   = γ · (x̂ - μ_B) / sqrt(σ²_B + eps) + β

Both steps need only per-(sample, channel) moments of x: the sample norm is their sum over
channels, and the batch mean/variance of x̂ follow from them by the law of total variance. So the
training forward is one statistics pass plus one fused affine pass, y = x·A[i,c] + B[c], as cheap
as BatchNorm; the backward is likewise one reduction pass (Σdy, Σdy·x per sample and channel) and
one fused pass dx = dy·P + x·Q + R. A small native kernel does each pass in one sweep over memory
for contiguous CPU tensors; elsewhere (CUDA, channels_last, torch.compile) the same algebra runs
in torch ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asc.nn import _kernels

#: default floor of the per-sample norm: a zero sample stays zero instead of NaN
L2_EPS = 1e-12

_LOW_PRECISION = (torch.float16, torch.bfloat16)

_as_rms_norm = False


@contextlib.contextmanager
def traced_as_rms_norm() -> Iterator[None]:
    """Trace eval-mode L2BN as an RMS normalization (ONNX RMSNormalization, opset 23) plus a shift:
    onnxruntime computes that in one fused kernel, where the ReduceL2 form costs a slow reduction and
    two broadcast passes (the quick FCNN: 113 -> 129 clips/s on one core, BENCHMARKS.md). It is the same
    algebra: sqrt(n) / sqrt(‖x‖² + l2_eps²) = 1 / sqrt(mean(x²) + l2_eps² / n), which differs from
    sqrt(n) / max(‖x‖, l2_eps) only for norms within a few l2_eps of zero, and a zero sample stays zero."""
    global _as_rms_norm
    saved, _as_rms_norm = _as_rms_norm, True
    try:
        yield
    finally:
        _as_rms_norm = saved


def _native(x: Tensor) -> bool:
    return _kernels.usable(x)


def _row_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and biased variance, float32 or float64."""
    if _native(x):
        if torch.compiler.is_compiling():
            return _kernels.op_row_moments(x)
        return _kernels.row_moments(x)
    dims = tuple(range(2, x.dim()))
    if not dims:
        return x.clone(), torch.zeros_like(x)
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean, var


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """(N, C) or (C,) -> broadcastable against x of shape (N, C, *spatial)."""
    lead = t.shape if t.dim() == 2 else (1, t.shape[0])
    return t.reshape(lead + (1,) * (x.dim() - 2))


def _affine_rows(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """y = x · scale[i, c] + shift[c] in one pass."""
    if _native(x):
        if torch.compiler.is_compiling():
            return _kernels.op_affine_rows(x, scale, shift)
        return _kernels.affine_rows(x, scale, shift)
    return torch.addcmul(_expand(shift, x), x, _expand(scale, x))


class _L2BNTrain(torch.autograd.Function):
    """Training-mode L2BN with batch statistics and an analytic backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, l2_eps: float, eps: float, l2: bool = True, group=None, shift=None):
        shape = x.shape
        n_per_row = math.prod(shape[2:])  # M: elements per (sample, channel)
        n = shape[1] * n_per_row
        mean_ic, var_ic = _row_moments(x)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        mean_ic, var_ic = mean_ic.to(acc), var_ic.to(acc)
        sq_norm = n_per_row * (var_ic + mean_ic * mean_ic).sum(1)  # ‖x_i‖²
        if l2:
            norm = sq_norm.sqrt()
            clamped = norm <= l2_eps
            r = math.sqrt(n) / norm.clamp_min(l2_eps)  # (N,)
        else:  # plain BN: the same passes with the l2 step off
            clamped = torch.ones_like(sq_norm, dtype=torch.bool)
            r = torch.ones_like(sq_norm)
        mu_hat = r[:, None] * mean_ic  # per-(i, c) means of x̂
        if group is None:
            count = shape[0] * n_per_row
            mean_c = mu_hat.mean(0)
            var_c = (r * r)[:, None].mul(var_ic).mean(0) + (mu_hat - mean_c).square().mean(0)
        else:
            # one all-reduce of 2C + 1 numbers: Σ (x̂ - K) and Σ (x̂ - K)² per channel and the element
            # count, taken about a shift K that every process shares (the running mean) and in float64,
            # so that E[(x̂ - K)²] - E[x̂ - K]² does not cancel
            c = shape[1]
            k = torch.zeros(c, dtype=torch.float64, device=x.device) if shift is None else shift.double()
            r64, d64 = r.double()[:, None], mu_hat.double() - k
            sums = torch.cat([d64.sum(0) * n_per_row,
                              (r64.square() * var_ic.double() + d64.square()).sum(0) * n_per_row,
                              d64.new_full((1,), float(shape[0] * n_per_row))])
            torch.distributed.all_reduce(sums, group=group)  # a process with no samples adds zeros
            count = int(round(float(sums[-1])))
            if count == 1:  # every process sees the same sums, so every process raises here
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got {count} over "
                    f"{torch.distributed.get_world_size(group)} processes (local input size {shape})")
            total = sums[-1].clamp_min(1)  # no samples anywhere: finite statistics that nothing uses
            offset = sums[:c] / total
            mean_c = (k + offset).to(acc)
            var_c = (sums[c:2 * c] / total - offset.square()).clamp_min(0).to(acc)
        invstd = (var_c + eps).rsqrt()
        g = invstd if weight is None else weight.to(acc) * invstd
        scale = r[:, None] * g  # A[i, c]
        shift = -mean_c * g
        if bias is not None:
            shift = shift + bias.to(acc)
        y = _affine_rows(x, scale.to(x.dtype), shift.to(x.dtype))
        ctx.save_for_backward(x, weight, mean_ic, var_ic, r, sq_norm, clamped, mean_c, invstd, g)
        ctx.has_bias = bias is not None
        ctx.group, ctx.count = group, count
        return y, mean_c, var_c, torch.tensor(float(count))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _dmean, _dvar, _dcount):
        x, weight, mean_ic, var_ic, r, sq_norm, clamped, mean_c, invstd, g = ctx.saved_tensors
        n_per_row = math.prod(x.shape[2:])
        count = max(ctx.count, 1)
        dy = dy.contiguous() if x.is_contiguous() else dy
        # per-(i, c): t1 = Σ dy, tc = Σ dy·(x - mean_ic)   (centred for accuracy)
        t1, tc = _grad_sums(dy, x, mean_ic)
        t1, tc = t1.to(r.dtype), tc.to(r.dtype)
        t2 = tc + mean_ic * t1  # Σ dy·x
        s1 = n_per_row * mean_ic  # Σ x
        s2 = n_per_row * (var_ic + mean_ic * mean_ic)  # Σ x²
        d_beta = t1.sum(0)
        # Σ dy · x̂n with x̂n = (r_i x - μ_c) invstd_c; computed from centred sums
        d_gamma = invstd * ((r[:, None] * tc).sum(0) + ((r[:, None] * mean_ic - mean_c) * t1).sum(0))
        if ctx.group is None:
            a, b = d_beta / count, d_gamma / count
        else:
            # the statistics saw every process's samples, so their gradient needs every process's
            # Σ dy and Σ dy·x̂ (2C numbers); the parameter gradients stay local (DDP averages them)
            both = torch.cat([d_beta, d_gamma])
            torch.distributed.all_reduce(both, group=ctx.group)
            a, b = both[:len(d_beta)] / count, both[len(d_beta):] / count
        # x_i · dx̂_i per sample, with dx̂ = g (dy - a - b x̂n)
        bi = b * invstd
        x_dxhat = (g * (t2 - a * s1 - bi * (r[:, None] * s2 - mean_c * s1))).sum(1)
        k = torch.where(clamped, torch.zeros_like(sq_norm), x_dxhat / sq_norm.clamp_min(1e-300))
        p = r[:, None] * g
        q = -r[:, None] * (g * bi * r[:, None] + k[:, None])
        rr = p * (bi * mean_c - a)
        dx = _grad_combine(dy, x, p.to(x.dtype), q.to(x.dtype), rr.to(x.dtype))
        dw = (d_gamma).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = d_beta.to(weight.dtype if weight is not None else dy.dtype) if ctx.has_bias and \
            ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None, None, None


def _grad_sums(dy: Tensor, x: Tensor, mean_ic: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(i, c) Σ dy and Σ dy·(x - mean_ic)."""
    if _native(x):
        if torch.compiler.is_compiling():
            return _kernels.op_row_grad_sums(dy, x, mean_ic)
        return _kernels.row_grad_sums(dy, x, mean_ic)
    dims = tuple(range(2, x.dim()))
    if not dims:
        return dy.clone(), dy * (x - mean_ic.to(x.dtype))
    t1 = dy.sum(dims)
    if x.numel() and x.is_contiguous() and dy.is_contiguous():  # (an empty x cannot reshape to -1)
        # Σ dy·x per row as a batched dot product: one read of each tensor, no temporaries
        rows = x.shape[0] * x.shape[1]
        dot = torch.bmm(dy.reshape(rows, 1, -1), x.reshape(rows, -1, 1)).reshape(x.shape[:2])
        return t1, dot - mean_ic.to(dot.dtype) * t1
    tc = (dy * (x - _expand(mean_ic.to(x.dtype), x))).sum(dims)
    return t1, tc


def _grad_combine(dy: Tensor, x: Tensor, p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    """dx = dy·P[i,c] + x·Q[i,c] + R[i,c]."""
    if _native(x):
        if torch.compiler.is_compiling():
            return _kernels.op_grad_combine(dy, x, p, q, r)
        return _kernels.grad_combine(dy, x, p, q, r)
    dx = torch.addcmul(_expand(r, x), dy, _expand(p, x))
    return dx.addcmul_(x, _expand(q, x))


def l2_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    l2_eps: float = L2_EPS,
    *,
    l2: bool = True,
    process_group: Any = None,
) -> Tensor:
    """Functional L2BN; the same contract as `torch.nn.functional.batch_norm`.

    `l2=False` turns the l2 step off (plain BN through the same passes); with a `process_group`,
    training-mode batch statistics (and their gradients) are summed over its processes.
    """
    if x.dim() < 2:
        raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")
    if training and process_group is None:  # synchronized: the count that matters is the global one
        size = x.shape[0] * math.prod(x.shape[2:])
        if size == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}")
    in_dtype = x.dtype
    xc = x.float() if in_dtype in _LOW_PRECISION else x
    w = weight.to(xc.dtype) if weight is not None else None
    b = bias.to(xc.dtype) if bias is not None else None
    use_batch_stats = training or running_mean is None
    with torch.autocast(device_type=x.device.type, enabled=False):
        if xc.numel() == 0 and process_group is None:
            y = _empty_batch_norm(xc, w, b)
        elif use_batch_stats:
            if process_group is None and torch.compiler.is_compiling() and not _native(xc):
                y, mean_c, var_c = _l2bn_train_composite(xc, w, b, l2_eps, eps, l2)
                count = x.numel() // x.shape[1]
            else:
                shift = None if process_group is None or running_mean is None else running_mean.detach()
                y, mean_c, var_c, count_t = _L2BNTrain.apply(xc, w, b, l2_eps, eps, l2, process_group, shift)
                count = int(count_t)
            if training and running_mean is not None and running_var is not None and count > 0:
                with torch.no_grad():
                    running_mean.lerp_(mean_c.to(running_mean.dtype), momentum)
                    unbiased = var_c * (count / max(count - 1, 1))
                    running_var.lerp_(unbiased.to(running_var.dtype), momentum)
        else:
            y = _l2bn_eval(xc, running_mean, running_var, w, b, l2_eps, eps, l2)
    return y.to(in_dtype) if y.dtype != in_dtype else y


def _empty_batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """An input with no elements, as torch's batch_norm treats it: no statistics (running ones stay
    as they are), and an empty output that still depends on x, weight and bias, so that backward
    runs and gives an empty dx and zero parameter gradients."""
    y = x.clone() if weight is None else x * _expand(weight, x)
    return y if bias is None else y + _expand(bias, x)


def _sample_scale(x: Tensor, l2_eps: float) -> Tensor:
    """sqrt(n) / max(‖x_i‖, l2_eps), shape (N,), differentiable."""
    n = math.prod(x.shape[1:])
    # over the dims, not x.flatten(1): flattening a channels_last tensor copies it, which cost a
    # fifth of CPU inference (predict feeds channels_last)
    norm = torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())))
    return math.sqrt(n) / norm.clamp_min(l2_eps)


def _l2bn_eval(x, running_mean, running_var, weight, bias, l2_eps, eps, l2=True) -> Tensor:
    g = (running_var.to(x.dtype) + eps).rsqrt()
    if weight is not None:
        g = g * weight
    shift = -running_mean.to(x.dtype) * g
    if bias is not None:
        shift = shift + bias
    if not torch.is_grad_enabled() and _native(x) and not torch.compiler.is_compiling():
        # inference: the sample norms from the native row moments, then one fused affine pass
        if l2:
            mean_ic, var_ic = _row_moments(x)
            sq_norm = math.prod(x.shape[2:]) * (var_ic + mean_ic * mean_ic).sum(1)
            r = math.sqrt(math.prod(x.shape[1:])) / sq_norm.sqrt().clamp_min(l2_eps)
        else:
            r = x.new_ones(x.shape[0])
        return _affine_rows(x, (r[:, None] * g).to(x.dtype), shift.to(x.dtype))
    floor = l2_eps * l2_eps / math.prod(x.shape[1:])
    if l2 and _as_rms_norm and floor >= torch.finfo(x.dtype).tiny:
        gain = g.reshape(g.shape + (1,) * (x.dim() - 2)).expand(x.shape[1:])
        return F.rms_norm(x, x.shape[1:], gain, eps=floor) + _expand(shift, x)
    r = _sample_scale(x, l2_eps) if l2 else x.new_ones(x.shape[0])
    return torch.addcmul(_expand(shift, x), x, _expand(r[:, None] * g, x))


def _l2bn_train_composite(x, weight, bias, l2_eps, eps, l2=True):
    """Plain differentiable ops, for torch.compile to fuse and differentiate itself."""
    x_hat = x * _expand(_sample_scale(x, l2_eps)[:, None], x) if l2 else x
    dims = [0] + list(range(2, x.dim()))
    var_c, mean_c = torch.var_mean(x_hat.detach(), dim=dims, correction=0)
    y = F.batch_norm(x_hat, None, None, weight, bias, True, 0.0, eps)
    return y, mean_c, var_c


class _L2BatchNormMixin:
    """Shared forward for the 1-D and 2-D classes; only the input check differs."""

    norm_kind = "l2bn"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, l2_eps: float = L2_EPS,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.l2_eps = l2_eps
        _kernels.available()  # build/load the native passes now, outside any torch.compile region

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's own argument name
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        use_running = not self.training and self.track_running_stats
        return l2_batch_norm(
            input,
            self.running_mean if (self.training or use_running) else None,
            self.running_var if (self.training or use_running) else None,
            self.weight,
            self.bias,
            training=self.training or not use_running,
            momentum=momentum,
            eps=self.eps,
            l2_eps=self.l2_eps,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", l2_eps={self.l2_eps}"


class L2BatchNorm1d(_L2BatchNormMixin, nn.BatchNorm1d):
    """L2BN for (N, C) or (N, C, L) input; the norm runs over C (or C·L). State dict as BatchNorm1d."""


class L2BatchNorm2d(_L2BatchNormMixin, nn.BatchNorm2d):
    """L2BN for (N, C, H, W) input; the norm runs over the whole C·H·W map. State dict as BatchNorm2d."""


class L2BatchNorm3d(_L2BatchNormMixin, nn.BatchNorm3d):
    """L2BN for (N, C, D, H, W) input; the norm runs over C·D·H·W. State dict as BatchNorm3d."""
