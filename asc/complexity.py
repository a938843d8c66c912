"""Model complexity as the DCASE low-complexity task (Task 1, 2022-2025) counts it.

The challenge limits two numbers: the memory the parameters take (128 kB, 1 kB = 1024 bytes, every
parameter counted, zeros included, at the precision it is stored in) and the multiply-accumulates of
one second of audio (30 M). A model is scored on 1-s clips there; for any other clip length the MACs
per second are the MACs of one clip divided by its duration. MACs are those of the convolutions and
linear layers, counted by `asc.models.common.model_size` (what dominates the count of the challenge's
tools too; equal to torch's own FLOP counter on every registered model, a test), parameters as the
trainable ones (BN moving statistics are buffers, not parameters, as in the challenge's counting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asc.errors import ConfigError, positive_seconds

#: bytes one parameter takes in each storage precision, widest first
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "int8": 1}

#: DCASE 2022-2025 Task 1: parameter memory and MACs per second of audio
DCASE_2022_LIMITS = {"param_bytes": 128 * 1024, "macs_per_second": 30_000_000,
                     "task": "DCASE 2022-2025 Task 1"}

#: TAU Urban Acoustic Scenes 2022 Mobile: 1-s clips; features/logmel128_deltas.yaml gives 3 x 128 x 36
TAU2022_INPUT_SHAPE = (3, 128, 36)
TAU2022_CLIP_SECONDS = 1.0

#: width multipliers searched for the presets (widths are rounded to multiples of 8, at least 8)
WIDTH_GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(46))  # 0.05 .. 0.50


def complexity(model: Any, input_shape: Sequence[int], clip_seconds: float,
               limits: Mapping[str, Any] = DCASE_2022_LIMITS) -> dict:
    """Parameters, parameter bytes per precision, MACs per clip and per second of audio, and whether the
    model fits the DCASE 2022 limits. `fits_in` lists the precisions whose parameter bytes fit (widest
    first); `fits_dcase_2022` is true when some precision fits and the MACs per second do."""
    from asc.models.common import model_size

    shape = tuple(int(v) for v in input_shape)
    return complexity_of_size(model_size(model, shape), clip_seconds, limits)


def complexity_of_size(size: Mapping[str, Any], clip_seconds: float,
                       limits: Mapping[str, Any] = DCASE_2022_LIMITS) -> dict:
    """`complexity` from a size `asc.models.common.model_size` has already measured (params, macs of
    one clip, input_shape), so a caller that has one does not run the counter twice."""
    seconds = _clip_seconds(clip_seconds)
    shape = tuple(int(v) for v in size["input_shape"])
    params, macs = int(size["params"]), int(size["macs"])
    per_second = macs / seconds
    param_bytes = {name: params * width for name, width in BYTES_PER_PARAM.items()}
    fits_in = [name for name, n in param_bytes.items() if n <= limits["param_bytes"]]
    macs_ok = per_second <= limits["macs_per_second"]
    return {
        "params": params,
        "macs_per_clip": macs,
        "macs_per_second": per_second,
        "clip_seconds": seconds,
        "input_shape": list(shape),
        "bytes": param_bytes,
        "fits_in": fits_in,
        "macs_fit": macs_ok,
        "fits_dcase_2022": bool(fits_in) and macs_ok,
        "limits": dict(limits),
    }


def describe(c: Mapping[str, Any]) -> str:
    """One line: the numbers and the verdict, naming the precision that makes the parameters fit."""
    limits = c["limits"]
    kib = {k: v / 1024 for k, v in c["bytes"].items()}
    head = (f"{c['params']:,} parameters ({kib['float32']:,.1f} KiB float32, {kib['float16']:,.1f} KiB "
            f"float16, {kib['int8']:,.1f} KiB int8), {c['macs_per_second'] / 1e6:,.2f} M MACs per second "
            "of audio")
    task = limits.get("task", "the limits")
    if c["fits_dcase_2022"]:
        return f"{head}: fits {task} with parameters in {c['fits_in'][0]}"
    over = []
    if not c["fits_in"]:
        over.append(f"parameters over {limits['param_bytes'] // 1024} KiB even in int8")
    if not c["macs_fit"]:
        over.append(f"over {limits['macs_per_second'] / 1e6:g} M MACs per second")
    return f"{head}: does not fit {task} ({'; '.join(over)})"


def largest_fitting_width(name: str, params: Mapping[str, Any] | None = None, *, norm: str = "bn",
                          grid: Sequence[float] = WIDTH_GRID, precision: str = "int8",
                          input_shape: Sequence[int] = TAU2022_INPUT_SHAPE,
                          clip_seconds: float = TAU2022_CLIP_SECONDS, num_classes: int = 10
                          ) -> tuple[float | None, dict | None]:
    """The largest `width_mult` of `grid` at which model `name` (with `params`) fits the DCASE 2022 limits
    with its parameters stored in `precision`, and its complexity; (None, None) when none fits. Size
    grows with the width, so the search stops at the first width that does not fit."""
    from asc.models import create_model

    if precision not in BYTES_PER_PARAM:
        raise ConfigError(f"precision must be one of {', '.join(BYTES_PER_PARAM)}, got {precision!r}")
    best: tuple[float | None, dict | None] = (None, None)
    seen: dict[tuple, dict] = {}
    for width in sorted(grid):
        model = create_model(name, num_classes=num_classes, in_channels=int(input_shape[0]), norm=norm,
                             **{**dict(params or {}), "width_mult": float(width)})
        key = tuple(tuple(p.shape) for p in model.parameters())  # widths are rounded: many repeat
        c = seen.get(key) or complexity(model, input_shape, clip_seconds)
        seen[key] = c
        if precision not in c["fits_in"] or not c["macs_fit"]:
            break
        best = (float(width), c)
    return best


def _clip_seconds(value: Any) -> float:
    return positive_seconds(value, "clip length")
