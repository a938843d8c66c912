"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True.

Layout: {"format", "epoch", "model", "model_spec", "optimizer", "recipe", "metrics", "best", "rng"}.
`model_spec` ({name, num_classes, in_channels, norm, params}) is enough to rebuild the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asc.errors import AscError
from asc.fileio import atomic_torch_save

FORMAT = "asc-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AscError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        detail = f"{type(exc).__name__}: {str(exc)[:120]}"
        raise AscError(f"{path}: not a readable checkpoint ({detail})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise AscError(f"{path}: not an asc-l2bn checkpoint (format {FORMAT} expected)")
    return ckpt


def build_model(spec: dict[str, Any]) -> nn.Module:
    from asc.models import create_model

    return create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        norm=spec["norm"], **spec.get("params", {}))


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the network of a checkpoint, load its weights, and put it in eval mode."""
    model = build_model(ckpt["model_spec"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
