"""Dropout whose masks are drawn for the global batch and sliced per process.

Every other random choice of training is a function of (seed, epoch, step) drawn for the whole global
batch and then sliced per rank. Dropout is too: inside `global_batch_rows`, each GlobalDropout call
draws the mask of the whole global batch from a generator keyed by (the step's key, the call's index in
this forward) and keeps this process's rows, so N processes drop exactly the units one process with the
same global batch drops. Outside that context (evaluation, a model used on its own) it is plain dropout.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class _Rows:
    key: int
    rows: Tensor          # this process's rows of the global batch
    size: int             # rows of the global batch
    calls: list[int] = field(default_factory=lambda: [0])


_CURRENT: contextvars.ContextVar[_Rows | None] = contextvars.ContextVar("global_batch_rows", default=None)


@contextlib.contextmanager
def global_batch_rows(key: int, rows: Tensor, size: int) -> Iterator[None]:
    """Within this block, GlobalDropout masks are drawn for `size` rows keyed by `key`, and `rows`
    (this process's part, in the order of its batch) are kept."""
    token = _CURRENT.set(_Rows(int(key) % 2**62, rows, int(size)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


class GlobalDropout(nn.Dropout):
    """nn.Dropout (same state and repr) whose training masks follow `global_batch_rows`."""

    def forward(self, x: Tensor) -> Tensor:
        ctx = _CURRENT.get()
        if not self.training or self.p == 0 or ctx is None:
            return super().forward(x)
        call = ctx.calls[0]
        ctx.calls[0] += 1
        gen = torch.Generator(device=x.device)
        gen.manual_seed((ctx.key * 1_000_003 + call) % 2**62)
        keep = 1.0 - self.p
        mask = torch.empty((ctx.size, *x.shape[1:]), device=x.device, dtype=x.dtype)
        mask.bernoulli_(keep, generator=gen)
        mask = mask[ctx.rows.to(x.device)]
        return x * mask / keep
