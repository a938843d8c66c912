"""Batch augmentation as an ordered list of registered transforms, on whatever device the batch is on.

A recipe names the list (`augment.transforms`), e.g.

    augment:
      transforms:
        - {name: specaugment, freq_masks: 1, freq_mask_width: 13, time_masks: 1, time_mask_width: 40}
        - {name: crop, frames: 400}
        - {name: freq_mixstyle, p: 0.4, alpha: 0.3}
        - {name: mixup, alpha: 0.4}

or leaves it null, and the flat keys (crop_frames, mixup_alpha, freq_masks, ..., crop_pad, hflip) give
the list they always meant (`transform_list`), so older recipes and saved runs train as before.

Random numbers come from an explicit torch.Generator seeded per (seed, epoch, step). Every transform
draws for the whole global batch (mixup partners included) and keeps this process's rows (`Batch.rows`),
so a resumed or distributed run draws exactly what a single uninterrupted run draws; freq_mixstyle's
partners are the one exception (see `freq_mixstyle`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from asc.config import Field, validate
from asc.errors import ConfigError


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)
    return g


# ------------------------------------------------------------------------------ drawing and applying


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


#: freq_mixstyle's floor under each variance, as the DCASE baseline code
MIXSTYLE_EPS = 1e-6


def mix_freq_statistics(x: Tensor, lam: Tensor, perm: Tensor, eps: float = MIXSTYLE_EPS) -> Tensor:
    """Frequency-wise MixStyle with given draws on (B, C, F, T): each sample's per-frequency mean and
    standard deviation over (C, T) are replaced by λ·own + (1 - λ)·partner's, partner = perm[i].

    The variance is the unbiased one (torch.var's default, which the DCASE 2023-2024 Task 1 baseline
    code uses) and σ = sqrt(var + eps).
    """
    var, mu = torch.var_mean(x, dim=(1, 3), keepdim=True)
    sig = (var + eps).sqrt()
    lam = lam.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    perm = perm.to(x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    return (x - mu) / sig * sig_mix + mu_mix


# ------------------------------------------------------------------------------ the transforms


@dataclass
class Batch:
    """This process's rows of the global batch, as the transforms see and return it.

    `rows` holds each row's index in the global batch of `size` rows; while mixup partners are attached
    (`partnered`), the second half of `x` holds them, at global rows `size // 2` and on. `teacher`: the
    rows' softened teacher distributions when the run distills (`asc.train.distill`); mixup mixes them
    as it mixes `targets`, and the other transforms leave them be (the teacher saw the whole clip).
    """

    x: Tensor
    targets: Tensor
    rows: Tensor
    size: int
    partnered: bool = False
    teacher: Tensor | None = None


def specaugment(batch: Batch, g: torch.Generator, *, freq_masks: int, freq_mask_width: int, time_masks: int,
                time_mask_width: int) -> Batch:
    """Zeroed frequency bands, then time bands, drawn anew for each sample and input channel."""
    x, rows = batch.x, batch.rows
    c, f, t = x.shape[1], x.shape[2], x.shape[3]
    if freq_masks:
        start, width = mask_params(batch.size, c, f, freq_mask_width, freq_masks, g)
        x = apply_masks(x, start[rows], width[rows], axis=2)
    if time_masks:
        start, width = mask_params(batch.size, c, t, time_mask_width, time_masks, g)
        x = apply_masks(x, start[rows], width[rows], axis=3)
    batch.x = x
    return batch


def crop(batch: Batch, g: torch.Generator, *, frames: int) -> Batch:
    """A random window of `frames` time steps per sample (all of a shorter clip). Teacher targets stay
    the whole clip's, as in the published distillation systems."""
    offsets = random_crop_offsets(batch.size, batch.x.shape[-1], frames, g)
    batch.x = crop_time(batch.x, offsets[batch.rows], frames)
    return batch


def crop_flip(batch: Batch, g: torch.Generator, *, pad: int) -> Batch:
    """Images: zero-pad by `pad`, random crop back to size, random horizontal flip (on raw pixels, so
    the padding is black)."""
    from asc.data.cifar import random_crop_flip

    x = batch.x
    full = torch.zeros((batch.size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    rows = batch.rows.to(x.device)
    full[rows] = x
    batch.x = random_crop_flip(full, pad=pad, generator=g)[rows]
    return batch


def mixup(batch: Batch, g: torch.Generator, *, alpha: float) -> Batch:
    """Each sample mixed with its partner (from a second, independently shuffled batch) as
    λ·x + (1 - λ)·partner, targets and softened teacher distributions alike, λ ~ Beta(alpha, alpha)
    per sample."""
    if not batch.partnered:
        raise RuntimeError("mixup needs the partner rows the sampler loads when the list holds a mixup")
    half = batch.x.shape[0] // 2
    primary = batch.rows[:half]
    lam = mixup_weights(batch.size // 2, alpha, g)[primary].to(batch.x.device)
    lx = lam.view(-1, *([1] * (batch.x.dim() - 1)))
    x, t, p = batch.x, batch.targets, batch.teacher
    teacher = None if p is None else p[:half] * lam[:, None] + p[half:] * (1 - lam[:, None])
    return Batch(x[:half] * lx + x[half:] * (1 - lx), t[:half] * lam[:, None] + t[half:] * (1 - lam[:, None]),
                 primary, batch.size // 2, teacher=teacher)


def freq_mixstyle(batch: Batch, g: torch.Generator, *, p: float, alpha: float) -> Batch:
    """Frequency-wise MixStyle (Schmid et al., the DCASE 2023-2024 Task 1 baselines): with probability
    `p` per batch, every sample takes λ·own + (1 - λ)·partner's per-frequency statistics
    (`mix_freq_statistics`), λ ~ Beta(alpha, alpha) per sample, the partner from a permutation.

    The coin, λ and a random key per row are drawn for the whole global batch, the coin always, so the
    transforms after this one draw the same whether it fires or not. Partners: each process orders
    its own rows by their keys, a uniform permutation of them. A single process thus permutes the whole
    batch; under several processes a partner comes from the same process, so those partners (only they)
    differ from a single process's.
    """
    fire = float(torch.rand((), generator=g, dtype=torch.float64)) < p
    lam = mixup_weights(batch.size, alpha, g)[batch.rows]
    keys = torch.rand(batch.size, generator=g, dtype=torch.float64)[batch.rows]
    if fire:
        batch.x = mix_freq_statistics(batch.x, lam, torch.argsort(keys, stable=True))
    return batch


@dataclass(frozen=True)
class TransformSpec:
    """One registered transform: apply(batch, g, **params) -> batch, and what the list needs to know.

    `kinds`: the inputs it applies to (TaskData.kind); `pairs`: it mixes each row with a partner row, so
    the sampler loads partners (mixup); `raw`: it works on raw inputs, before the task's input
    transform (crop_flip on uint8 images), so it must come before the others; `frame_params`: widths in
    time frames, scaled with the clip length (augment.reference_frames); `clip_params`: lengths that
    must fit in the clip.
    """

    apply: Callable[..., Batch]
    params: dict[str, Field]
    kinds: tuple[str, ...]
    help: str
    pairs: bool = False
    raw: bool = False
    frame_params: tuple[str, ...] = ()
    clip_params: tuple[str, ...] = ()


TRANSFORMS: dict[str, TransformSpec] = {
    "specaugment": TransformSpec(
        specaugment, {"freq_masks": Field(int, 1, min=0), "freq_mask_width": Field(int, 13, min=1),
                      "time_masks": Field(int, 1, min=0), "time_mask_width": Field(int, 40, min=1)},
        kinds=("spectrogram",), frame_params=("time_mask_width",),
        help="zeroed bands: masks of width 0..width-1 each, per sample and input channel"),
    "crop": TransformSpec(crop, {"frames": Field(int, min=1)}, kinds=("spectrogram",),
                          frame_params=("frames",), clip_params=("frames",),
                          help="random time window of `frames` frames"),
    "crop_flip": TransformSpec(crop_flip, {"pad": Field(int, 4, min=0)}, kinds=("image",), raw=True,
                               help="zero-padded random crop and random horizontal flip"),
    "freq_mixstyle": TransformSpec(
        freq_mixstyle, {"p": Field(float, 0.4, min=0.0, max=1.0),
                        "alpha": Field(float, 0.3, min=0.0, min_exclusive=True)},
        kinds=("spectrogram",), help="per-frequency statistics mixed between samples, with probability p"),
    "mixup": TransformSpec(mixup, {"alpha": Field(float, min=0.0, min_exclusive=True)},
                           kinds=("spectrogram", "image"), pairs=True,
                           help="inputs and targets mixed with a partner, λ ~ Beta(alpha, alpha)"),
}

#: the keys of the augment section that describe the list when augment.transforms is null
FLAT_KEYS = ("crop_frames", "mixup_alpha", "freq_masks", "freq_mask_width", "time_masks", "time_mask_width",
             "crop_pad", "hflip")


def _flat_list(aug: Mapping) -> list[dict]:
    """The list the flat keys have always meant, in the order the batch code applied them (crop_flip
    for images, the masks and the crop for spectrograms, then mixup)."""
    out: list[dict] = []
    if aug.get("crop_pad") or aug.get("hflip"):  # the flip comes with the crop, as it always did
        out.append({"name": "crop_flip", "pad": aug.get("crop_pad") or 0})
    if aug.get("freq_masks") or aug.get("time_masks"):
        out.append({"name": "specaugment", "freq_masks": aug.get("freq_masks") or 0,
                    "freq_mask_width": aug.get("freq_mask_width", 13),
                    "time_masks": aug.get("time_masks") or 0,
                    "time_mask_width": aug.get("time_mask_width", 40)})
    if aug.get("crop_frames"):
        out.append({"name": "crop", "frames": aug["crop_frames"]})
    if (aug.get("mixup_alpha") or 0) > 0:
        out.append({"name": "mixup", "alpha": float(aug["mixup_alpha"])})
    return out


def transform_list(aug: Mapping, source: str = "recipe") -> list[dict]:
    """The augment section's transforms in order, each {"name": ..., every parameter}, checked.

    `augment.transforms` when given (the flat keys must then keep their defaults), else the list the
    flat keys describe. Errors are one line naming the key, e.g. "recipe: augment.transforms.2.alpha".
    """
    given = aug.get("transforms")
    if given is None:
        items = _flat_list(aug)
    else:
        from asc.train.recipe import SCHEMA

        for key in FLAT_KEYS:
            if key in aug and aug[key] != SCHEMA["augment"][key].default:
                raise ConfigError(f"{source}: augment.{key} is set beside augment.transforms; give it as a "
                                  "parameter of a transform in the list (or drop the list)")
        if not isinstance(given, list):
            raise ConfigError(f"{source}: augment.transforms: expected a list of transforms, e.g. "
                              "[{name: crop, frames: 400}, {name: mixup, alpha: 0.4}]")
        items = given
    out: list[dict] = []
    for i, item in enumerate(items):
        key = f"augment.transforms.{i}"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{source}: {key}: expected a mapping with a name, e.g. "
                              "{name: mixup, alpha: 0.4}")
        spec = TRANSFORMS.get(item["name"])
        if spec is None:
            raise ConfigError(f"{source}: {key}.name: unknown transform {item['name']!r} "
                              f"(known: {', '.join(TRANSFORMS)})")
        params = validate({k: v for k, v in item.items() if k != "name"}, spec.params, source=source,
                          prefix=key)
        if spec.raw and any(not TRANSFORMS[t["name"]].raw for t in out):
            raise ConfigError(f"{source}: {key}: {item['name']} works on raw inputs and must come before "
                              f"{', '.join(t['name'] for t in out)}")
        if spec.pairs and any(TRANSFORMS[t["name"]].pairs for t in out):
            raise ConfigError(f"{source}: {key}: {item['name']} may appear once in the list")
        out.append({"name": item["name"], **params})
    return out


def needs_partner(aug: Mapping) -> bool:
    """Whether the list mixes each row with a partner row, so the sampler must load partner rows."""
    return any(TRANSFORMS[t["name"]].pairs for t in transform_list(aug))


def transforms_for(aug: Mapping, kind: str, source: str = "recipe") -> list[dict]:
    """The list for inputs of `kind` (TaskData.kind). A listed transform for another kind (SpecAugment
    on images) is an error naming its place; the flat keys' list leaves such transforms out, as the
    batch code always ignored the other kind's keys."""
    transforms = transform_list(aug, source)
    if aug.get("transforms") is None:
        return [t for t in transforms if kind in TRANSFORMS[t["name"]].kinds]
    for i, t in enumerate(transforms):
        kinds = TRANSFORMS[t["name"]].kinds
        if kind not in kinds:
            raise ConfigError(f"{source}: augment.transforms.{i}: {t['name']} applies to "
                              f"{' and '.join(kinds)} inputs; this task's are {kind}")
    return transforms


def scale_frames(transforms: list[dict], frames: int, reference: int) -> list[dict]:
    """The list with every width in frames written for `reference` frames scaled to `frames`."""
    out = copy.deepcopy(transforms)
    for t in out:
        for key in TRANSFORMS[t["name"]].frame_params:
            if t.get(key):
                t[key] = max(1, int(round(t[key] * frames / reference)))
    return out


def run_transforms(transforms: list[dict], batch: Batch, g: torch.Generator,
                   to_input: Callable[[Tensor], Tensor]) -> Batch:
    """Apply the list in order: the raw-input transforms, then `to_input` (the task's input transform),
    then the rest."""
    converted = False
    for t in transforms:
        spec = TRANSFORMS[t["name"]]
        if not spec.raw and not converted:
            batch.x, converted = to_input(batch.x), True
        batch = spec.apply(batch, g, **{k: v for k, v in t.items() if k != "name"})
    if not converted:
        batch.x = to_input(batch.x)
    return batch
