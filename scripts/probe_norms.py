"""Which cue can a norm kind learn from? A probe on two toy tasks, side by side.

    .venv/bin/python scripts/probe_norms.py                          # bn l2bn ln ifn rfn ifnbn rfnbn
    .venv/bin/python scripts/probe_norms.py --norms bn rfn --steps 200 --lr 0.01

Ten classes of (3, 128, 100) "log-mel" inputs with unit-variance noise (std 0.5), told apart by one cue:
- band: a +1 offset on 12 mel bins whose position is the class (a spectral-envelope cue, which the
  synthetic scenes carry as much as their temporal textures);
- texture: a sinusoidal modulation over time whose rate is the class, the same in every mel bin.

A 6-layer CNN (3x3 convs 24/24/48/48/96/96, strides 2/1/2/1/2/1, each followed by the norm kind
from the registry and ReLU, then a global average pool and a linear layer) trains for --steps SGD
steps (momentum 0.9, batches of 32), and the mean loss of the first and last 10 steps is printed
(ln 10 = 2.303 is chance). This is how the README's "Device shift" section tells a property of the
per-sample norms from a fault in the FCNN: torch's own GroupNorm(1, C) (`ln`) behaves there as here.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from asc.nn import make_norm

CLASSES = 10


def band(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = 0.5 * torch.randn(n, 3, 128, 100, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, :, 12 * c:12 * c + 12, :] += 1.0
    return x, y


def texture(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, CLASSES, (n,), generator=g)
    t = torch.arange(100, dtype=torch.float32)
    x = 0.5 * torch.randn(n, 3, 128, 100, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i] += torch.sin(2 * math.pi * t * (1 + c) / 40.0)
    return x, y


CUES = {"band": band, "texture": texture}


def network(kind: str, width: int = 24) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    plan = ((width, 2), (width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2), (4 * width, 1))
    for out, stride in plan:
        layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), make_norm(kind, out, dim=2, eps=1e-3),
                   nn.ReLU()]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASSES))


def probe(kind: str, cue: str, steps: int, lr: float, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = network(kind)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        x, y = CUES[cue](32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    k = min(10, steps)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--norms", nargs="+", default=["bn", "l2bn", "ln", "ifn", "rfn", "ifnbn", "rfnbn"])
    ap.add_argument("--cues", nargs="+", choices=tuple(CUES), default=list(CUES))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{args.steps} SGD steps, lr {args.lr}, batch 32, seed {args.seed}; mean loss of the first and "
          f"last 10 steps (chance: {math.log(CLASSES):.3f})")
    print(f"{'cue':8s} {'norm':6s} {'first':>7s} {'last':>7s}")
    for cue in args.cues:
        for kind in args.norms:
            first, last = probe(kind, cue, args.steps, args.lr, args.seed)
            print(f"{cue:8s} {kind:6s} {first:7.3f} {last:7.3f}", flush=True)


if __name__ == "__main__":
    main()
