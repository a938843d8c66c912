"""Learning-rate schedules as pure functions of the (fractional) epoch, so a resumed run recomputes
exactly the rate it would have had."""

from __future__ import annotations

import math
from collections.abc import Sequence


def sgdr_lr(epoch: float, lr_max: float, lr_min: float, first_cycle: float = 2, mult: float = 2) -> float:
    """Cosine annealing with warm restarts (SGDR), updated every step.

    Cycles last first_cycle, first_cycle·mult, … epochs (2, 4, 8, … by default: 126 epochs are six
    full cycles, 254 seven), each decaying from lr_max to lr_min.
    """
    start, length = 0.0, float(first_cycle)
    while epoch >= start + length:
        start += length
        length *= mult
    t = (epoch - start) / length
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t))


def sgdr_total_epochs(cycles: int, first_cycle: int = 2, mult: int = 2) -> int:
    """Epochs that end exactly at a restart: 6 cycles -> 126, 7 -> 254."""
    return sum(first_cycle * mult**i for i in range(cycles))


def keras_decay(lr: float, decay: float, iterations: int) -> float:
    """Keras SGD's `decay`: the rate the schedule set, times 1 / (1 + decay · iterations so far)."""
    return lr / (1.0 + decay * iterations)


def learning_rate(epoch: float, *, schedule: str, lr: float, min_lr: float, epochs: int,
                  warmup_epochs: float = 0.0, first_cycle: float = 2, mult: float = 2,
                  milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """The rate at fractional `epoch` for any supported schedule, with optional linear warm-up."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return lr * (epoch + 1e-12) / warmup_epochs
    if schedule == "sgdr":
        return sgdr_lr(epoch, lr, min_lr, first_cycle, mult)
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-12)
        t = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return lr * gamma ** sum(epoch >= m for m in milestones)
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}")
