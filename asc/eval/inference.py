"""The one batched inference function: training validation, `asc evaluate` and `asc predict` all call it,
so the epoch that best.pt is picked on is scored exactly as the report and predictions score it.

Inference always runs in float32 (training may use bf16 autocast; scores must not depend on it), in
channels_last on GPUs and contiguous on CPUs, under torch.inference_mode, in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn


def memory_format(device: torch.device | str) -> torch.memory_format:
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


@torch.inference_mode()
def infer(model: nn.Module, batches: Iterable[Any], *, device: torch.device | str,
          transform: Callable[[Tensor], Tensor] | None = None, logits: bool = True, embed: bool = False,
          progress_desc: str | None = None, total: int | None = None
          ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(logits (N, K), classification-layer embeddings (N, D), labels (N,)) over `batches`, on the CPU.

    A batch is a tensor of inputs or an (inputs, labels) pair, as a DataLoader yields them; `transform`
    maps raw inputs to model inputs on the device (e.g. image normalization). Items not asked for are
    None; labels are None when the batches carry none. The model's train/eval mode is restored after.
    """
    from asc.progress import progress

    device = torch.device(device)
    fmt = memory_format(device)
    was_training = model.training
    model.eval()
    out_logits: list[Tensor] = []
    out_embed: list[Tensor] = []
    out_labels: list[Tensor] = []
    if progress_desc is not None:
        batches = progress(batches, desc=progress_desc, total=total, unit="batch")
    try:
        for batch in batches:
            x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
            x = x.to(device, non_blocking=True)
            x = transform(x) if transform is not None else x.float()
            if x.dim() == 4:
                x = x.contiguous(memory_format=fmt)
            if logits and embed:
                z, e = model.forward_with_embedding(x)
            elif logits:
                z, e = model(x), None
            else:
                z, e = None, model.embed(x)
            if z is not None:
                out_logits.append(z.float().cpu())
            if e is not None:
                out_embed.append(e.float().reshape(e.shape[0], -1).cpu())
            if y is not None:
                out_labels.append(torch.as_tensor(y).cpu())
    finally:
        model.train(was_training)
    cat = (lambda parts: torch.cat(parts) if parts else None)  # noqa: E731
    return cat(out_logits), cat(out_embed), cat(out_labels)
