"""Forward+backward time of L2BN against BatchNorm2d and a naive "l2-normalize then BN".

    python scripts/bench_l2bn.py [--device cpu|cuda] [--compile] [--reps 10] [--shapes 32x64x128x108 ...]

Each shape's variants run interleaved in the same process (round-robin, median of the repeats), so
the printed ratios compare like with like even on a busy machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from asc.nn import L2BatchNorm2d, _kernels

DEFAULT_SHAPES = ["32x64x128x108", "128x64x32x32", "32x256x32x27"]


class NaiveL2BN(nn.BatchNorm2d):
    """The textbook form: normalize with autograd ops, then call BatchNorm."""

    def forward(self, x):
        scale = math.sqrt(x[0].numel()) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        return super().forward(x * scale.view(-1, 1, 1, 1))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    y = module(x)
    y.backward(grad)
    _sync(device)
    return time.perf_counter() - t0


def bench_shape(shape, device, reps, compile_, dtype=torch.float32):
    c = shape[1]
    x = torch.randn(*shape, device=device, dtype=dtype).mul_(2).add_(0.5).requires_grad_(True)
    grad = torch.randn(*shape, device=device, dtype=dtype)
    variants = {
        "bn": nn.BatchNorm2d(c),
        "naive": NaiveL2BN(c),
        "l2bn": L2BatchNorm2d(c),
    }
    for m in variants.values():
        m.to(device).train()
    if compile_:
        variants = {k: torch.compile(m) for k, m in variants.items()}
    times = {k: [] for k in variants}
    for _ in range(2):  # warm-up (and compilation)
        for m in variants.values():
            time_step(m, x, grad, device)
    for _ in range(reps):
        for k, m in variants.items():
            x.grad = None
            times[k].append(time_step(m, x, grad, device))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="wrap every variant in torch.compile")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES)
    args = ap.parse_args()
    native = _kernels.available() and args.device == "cpu"
    how = "off" if not native else "on, as custom ops in the compiled graph" if args.compile else "on"
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"compile {args.compile}, native kernels {how}")
    print(f"{'shape':>16} {'bn ms':>8} {'naive ms':>9} {'l2bn ms':>8} {'naive/bn':>9} {'l2bn/bn':>8}")
    ratios = []
    for s in args.shapes:
        shape = tuple(int(v) for v in s.split("x"))
        t = bench_shape(shape, args.device, args.reps, args.compile)
        ratios.append(t["l2bn"] / t["bn"])
        print(f"{s:>16} {t['bn']:8.2f} {t['naive']:9.2f} {t['l2bn']:8.2f} "
              f"{t['naive'] / t['bn']:9.2f} {t['l2bn'] / t['bn']:8.2f}")
    print(f"geometric mean l2bn/bn: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")


if __name__ == "__main__":
    main()
