"""Batch augmentation for spectrogram inputs (N, C, F, T), on whatever device the batch is on.

Random numbers come from an explicit torch.Generator seeded per (seed, epoch, step), so a resumed
or distributed run draws exactly what a single uninterrupted run draws.
"""

from __future__ import annotations

import torch
from torch import Tensor


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)
    return g


def random_crop_offsets(n: int, length: int, crop: int, g: torch.Generator) -> Tensor:
    """Start frames for cropping `crop` of `length` frames (0 when nothing to crop)."""
    if crop >= length:
        return torch.zeros(n, dtype=torch.long)
    return torch.randint(0, length - crop + 1, (n,), generator=g)


def crop_time(x: Tensor, offsets: Tensor, crop: int) -> Tensor:
    """Per-sample time crop with a gather (no Python loop over the batch)."""
    if crop >= x.shape[-1]:
        return x
    idx = offsets.to(x.device)[:, None] + torch.arange(crop, device=x.device)[None, :]
    idx = idx[:, None, None, :].expand(x.shape[0], x.shape[1], x.shape[2], crop)
    return torch.gather(x, 3, idx)


def mask_params(n: int, channels: int, size: int, width: int, count: int, g: torch.Generator):
    """Per sample, channel and mask: width w ~ U{0..width-1}, start ~ U{0..size-w-1}, as in the
    original SpecAugment code of the DCASE recipes (each input channel masked independently)."""
    w = torch.randint(0, width, (n, channels, count), generator=g)
    u = torch.rand((n, channels, count), generator=g)
    start = (u * (size - w).clamp_min(1)).long()
    return start, w


def apply_masks(x: Tensor, start: Tensor, width: Tensor, axis: int) -> Tensor:
    """Zero the bands [start, start+width) along `axis` (2 = frequency, 3 = time)."""
    size = x.shape[axis]
    pos = torch.arange(size, device=x.device)
    s = start.to(x.device)[..., None]
    e = s + width.to(x.device)[..., None]
    masked = ((pos >= s) & (pos < e)).any(dim=2)  # (N, C, size)
    shape = (x.shape[0], x.shape[1], size, 1) if axis == 2 else (x.shape[0], x.shape[1], 1, size)
    return x.masked_fill(masked.reshape(shape), 0.0)


def mixup_weights(n: int, alpha: float, g: torch.Generator) -> Tensor:
    """λ ~ Beta(alpha, alpha) per sample, drawn from `g` by inverse-CDF sampling."""
    from scipy.special import betaincinv

    u = torch.rand(n, generator=g, dtype=torch.float64)
    return torch.from_numpy(betaincinv(alpha, alpha, u.numpy())).float()


def soft_targets(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    y = torch.nn.functional.one_hot(labels, num_classes).float()
    if smoothing > 0:
        y = y * (1.0 - smoothing) + smoothing / num_classes
    return y
