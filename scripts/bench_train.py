"""Training-step throughput of each DCASE model with BN and with L2BN, side by side; and, given a
feature cache, the input pipeline's throughput against the model step.

    python scripts/bench_train.py                                   # CPU, width 0.25, batch 16
    python scripts/bench_train.py --device cuda --width-mult 1 --batch 32 --amp bf16 --channels-last
    python scripts/bench_train.py --cache cache/logmel128_deltas-<hash> --workers 2

BN and L2BN steps alternate (median of the repeats), so their ratio is measured under the same load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from asc.models import create_model

MODELS = ("resnet17", "fcnn", "fsfcnn")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_time(model, opt, x, y, device, amp) -> float:
    _sync(device)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - t0


def bench_models(args) -> None:
    print(f"{'model':>9} {'bn samples/s':>13} {'l2bn samples/s':>15} {'l2bn/bn time':>13}")
    for name in args.models:
        x = torch.randn(args.batch, 3, 128, args.frames, device=args.device)
        y = torch.randint(0, 10, (args.batch,), device=args.device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        runs = {}
        for norm in ("bn", "l2bn"):
            torch.manual_seed(0)
            m = create_model(name, norm=norm, width_mult=args.width_mult).to(args.device).train()
            if args.channels_last:
                m = m.to(memory_format=torch.channels_last)
            if args.compile:
                m = torch.compile(m)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            runs[norm] = (m, opt, [])
        for _ in range(args.warmup):
            for m, opt, _t in runs.values():
                step_time(m, opt, x, y, args.device, args.amp)
        for _ in range(args.reps):
            for m, opt, times in runs.values():
                times.append(step_time(m, opt, x, y, args.device, args.amp))
        med = {k: statistics.median(v[2]) for k, v in runs.items()}
        print(f"{name:>9} {args.batch / med['bn']:13.1f} {args.batch / med['l2bn']:15.1f} "
              f"{med['l2bn'] / med['bn']:13.3f}", flush=True)


def bench_loader(args) -> None:
    from torch.utils.data import DataLoader

    from asc.features.dataset import FeatureDataset

    ds = FeatureDataset(args.cache, split="train")
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, generator=g, num_workers=args.workers,
                        drop_last=True)
    n, t0 = 0, time.perf_counter()
    for i, (x, _y) in enumerate(loader):
        n += len(x)
        if i == 0:
            n, t0 = 0, time.perf_counter()  # exclude worker start-up
    rate = n / (time.perf_counter() - t0)
    print(f"input pipeline: {rate:.0f} samples/s from {args.cache} ({len(ds)} clips, batch {args.batch}, "
          f"{args.workers} workers)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cache", help="feature cache directory: also time the input pipeline")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"width_mult {args.width_mult}, {args.frames} frames, amp {args.amp}, "
          f"channels_last {args.channels_last}, compile {args.compile}")
    if args.cache:
        from asc.features.cache import MANIFEST

        if not (Path(args.cache) / MANIFEST).is_file():
            raise SystemExit(f"--cache {args.cache}: no feature cache there; give the folder `asc extract` "
                             "printed (cache/logmel128_deltas-<hash>)")
        bench_loader(args)
    bench_models(args)


if __name__ == "__main__":
    main()
