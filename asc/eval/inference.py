"""The one batched inference function: training validation, `asc evaluate` and `asc predict` all call it,
so the epoch that best.pt is picked on is scored exactly as the report and predictions score it.

Inference always runs in float32 (training may use bf16 autocast; scores must not depend on it), under
torch.inference_mode, in eval mode, with 4-D inputs in channels_last on every device: cuDNN's and
oneDNN's convolutions are fastest on that layout (on the 2-core CPU the quick FCNN scores 1.2x to 1.6x
the clips per second of contiguous inputs, BENCHMARKS.md), and the logits differ from contiguous ones
only by float32 summation order (~4e-6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


@torch.inference_mode()
def infer(model: nn.Module, batches: Iterable[Any], *, device: torch.device | str,
          transform: Callable[[Tensor], Tensor] | None = None, logits: bool = True, embed: bool = False,
          progress_desc: str | None = None, total: int | None = None, names: Sequence[str] | None = None
          ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(logits (N, K), classification-layer embeddings (N, D), labels (N,)) over `batches`, on the CPU.

    A batch is a tensor of inputs or an (inputs, labels) pair, as a DataLoader yields them; `transform`
    maps raw inputs to model inputs on the device (e.g. image normalization). Items not asked for are
    None; labels are None when the batches carry none. The model's train/eval mode is restored after.
    A NaN/Inf logit or embedding raises AscError naming the item: `names[i]`, else the file of a
    DataLoader's dataset records in order, else its index; a NaN score must never become class 0.
    """
    from asc.progress import progress

    device = torch.device(device)
    was_training = model.training
    model.eval()
    out_logits: list[Tensor] = []
    out_embed: list[Tensor] = []
    out_labels: list[Tensor] = []
    if names is None:
        names = _record_names(batches)
    seen = 0
    if progress_desc is not None:
        batches = progress(batches, desc=progress_desc, total=total, unit="batch")
    try:
        for batch in batches:
            x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
            x = x.to(device, non_blocking=True)
            x = transform(x) if transform is not None else x.float()
            if x.dim() == 4 and isinstance(model, nn.Module):  # an onnxruntime graph takes NCHW as it is
                x = x.contiguous(memory_format=torch.channels_last)  # see the module doc
            if logits and embed:
                z, e = model.forward_with_embedding(x)
            elif logits:
                z, e = model(x), None
            else:
                z, e = None, model.embed(x)
            if z is not None:
                out_logits.append(z.float().cpu())
                _require_finite(out_logits[-1], "logits", seen, names)
            if e is not None:
                out_embed.append(e.float().reshape(e.shape[0], -1).cpu())
                _require_finite(out_embed[-1], "embeddings", seen, names)
            seen += x.shape[0]
            if y is not None:
                out_labels.append(torch.as_tensor(y).cpu())
    finally:
        model.train(was_training)
    cat = (lambda parts: torch.cat(parts) if parts else None)  # noqa: E731
    return cat(out_logits), cat(out_embed), cat(out_labels)


def _record_names(batches: Any) -> Sequence[str] | None:
    """The files of an in-order DataLoader over a dataset with manifest `records` (a feature cache)."""
    from torch.utils.data import DataLoader, SequentialSampler

    if not isinstance(batches, DataLoader) or not isinstance(batches.sampler, SequentialSampler):
        return None
    records = getattr(batches.dataset, "records", None)
    if not isinstance(records, list) or not all(isinstance(r, dict) and "file" in r for r in records):
        return None
    return [str(r["file"]) for r in records]


def _require_finite(values: Tensor, what: str, offset: int, names: Sequence[str] | None) -> None:
    finite = torch.isfinite(values).reshape(values.shape[0], -1).all(dim=1)
    if bool(finite.all()):
        return
    from asc.errors import AscError

    first = offset + int((~finite).nonzero()[0, 0])
    who = names[first] if names is not None and first < len(names) else f"input {first}"
    raise AscError(f"{who}: the model gave NaN/Inf {what} ({int((~finite).sum())} of {values.shape[0]} "
                   "inputs in its batch); check that input's features and the checkpoint's weights")
