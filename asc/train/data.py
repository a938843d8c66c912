"""Training inputs: datasets per task, a deterministic step sampler, and batch augmentation.

Every random choice is a function of (seed, epoch, step), drawn for the whole global batch and then
sliced per rank. So a run resumed mid-way, or split over several processes, sees exactly the inputs
a single uninterrupted process sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from asc.data.sampling import Subset, stratified_indices
from asc.errors import AscError
from asc.tasks import TaskData, task_of
from asc.train import augment


def clip_augment(aug: dict, frames: int | None, log: Callable[[str], None] | None = None) -> dict:
    """The augment section for inputs of `frames` time steps: crop and time-mask widths written for
    `reference_frames` scale with the clip (a 1-s clip has 36 frames where a 10-s one has 423), and a
    crop longer than the clip is an error naming the setting."""
    out = dict(aug)
    ref = aug.get("reference_frames")
    if frames is None or not ref or frames == ref:
        scaled = False
    else:
        scaled = True
        for key in ("crop_frames", "time_mask_width"):
            if out.get(key):
                out[key] = max(1, int(round(out[key] * frames / ref)))
        if log is not None:
            log(f"clips of {frames} frames (widths written for {ref}): crop_frames "
                f"{aug.get('crop_frames')} -> {out.get('crop_frames')}, time_mask_width "
                f"{aug.get('time_mask_width')} -> {out.get('time_mask_width')}")
    if frames is not None and out.get("crop_frames") and out["crop_frames"] > frames:
        how = "" if scaled else " (set augment.reference_frames to scale it with the clip)"
        raise AscError(f"augment.crop_frames {out['crop_frames']} is longer than the clips' {frames} "
                       f"frames{how}; lower it or set it to null")
    return out


def subsets_for(task: TaskData, recipe: dict, log: Callable[[str], None] | None = None) -> TaskData:
    """Fill task.val and task.angle_train from the recipe's train.val_clips / train.angle_clips, and
    task.augment with the augment section fitted to the clip length."""
    tr = recipe["train"]
    shape = getattr(task.train, "shape", None)
    frames = int(shape[-1]) if task.kind == "spectrogram" and shape else None
    task.augment = clip_augment(recipe["augment"], frames, log)
    labels = _labels(task.eval)
    devices = list(getattr(task.eval, "devices", None) or [None] * len(labels))
    task.val = task.eval if tr["val_clips"] is None else \
        Subset(task.eval, stratified_indices(list(zip(devices, labels)), tr["val_clips"]))
    task.angle_train = task.train if tr["angle_clips"] is None else \
        Subset(task.train, stratified_indices(_labels(task.train), tr["angle_clips"]))
    return task


def _labels(dataset: Dataset) -> list[int]:
    return [int(v) for v in dataset.labels]


def load_task_data(recipe: dict) -> TaskData:
    """The recipe's task's training data (`asc.tasks`)."""
    return task_of(recipe).training_data(recipe)


class StepSampler(Sampler[list[int]]):
    """Yields, per step, this rank's slice of the global batch (and of the mixup partner batch).

    The primary batches walk one seeded permutation of the training set (each clip once per epoch);
    partner batches walk a second, independent permutation, as in the DCASE recipes that mix two
    separately drawn batches.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 partner: bool = False, start_step: int = 0, max_steps: int | None = None) -> None:
        self.n, self.batch = n, min(batch_size, n)
        self.seed, self.epoch, self.rank, self.world = seed, epoch, rank, world
        self.partner, self.start_step = partner, start_step
        self.steps = max(1, n // self.batch)
        if max_steps is not None:
            self.steps = min(self.steps, max_steps)
        if self.batch % world:
            raise AscError(f"batch size {self.batch} is not divisible by the {world} processes")

    def _perm(self, which: int) -> Tensor:
        g = torch.Generator()
        g.manual_seed(self.seed * 7919 + self.epoch * 104729 + which)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self) -> Iterator[list[int]]:
        local = self.batch // self.world
        lo = self.rank * local
        primary = self._perm(1)
        second = self._perm(2) if self.partner else None
        for step in range(self.start_step, self.steps):
            idx = primary[step * self.batch:(step + 1) * self.batch][lo:lo + local].tolist()
            if second is not None:
                idx += second[step * self.batch:(step + 1) * self.batch][lo:lo + local].tolist()
            yield idx


def train_loader(task: TaskData, recipe: dict, epoch: int, rank: int, world: int, start_step: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    tr = recipe["train"]
    sampler = StepSampler(len(task.train), tr["batch_size"], seed=recipe["seed"], epoch=epoch, rank=rank,
                          world=world, partner=recipe["augment"]["mixup_alpha"] > 0, start_step=start_step,
                          max_steps=tr["max_steps_per_epoch"])
    workers = recipe["data"]["num_workers"] if task.kind == "spectrogram" else 0
    return DataLoader(task.train, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory)


def steps_per_epoch(n: int, recipe: dict) -> int:
    tr = recipe["train"]
    steps = max(1, n // min(tr["batch_size"], n))
    return min(steps, tr["max_steps_per_epoch"]) if tr["max_steps_per_epoch"] else steps


def prepare_batch(x: Tensor, y: Tensor, *, task: TaskData, recipe: dict, epoch: int, step: int,
                  rank: int, world: int) -> tuple[Tensor, Tensor]:
    """Augment this rank's slice of a global batch; returns inputs and soft targets."""
    aug = task.augment or recipe["augment"]
    tr = recipe["train"]
    g = augment.step_generator(recipe["seed"], epoch, step)
    gb = min(tr["batch_size"], len(task.train))  # global batch size
    local = gb // world
    sl = slice(rank * local, (rank + 1) * local)
    mix = aug["mixup_alpha"] > 0
    parts = 2 if mix else 1
    x = AUGMENT_BY_KIND[task.kind](x, aug, g, rows=_rows(sl, gb, parts), n_all=gb * parts)
    targets = augment.soft_targets(y.to(x.device), task.num_classes, tr["label_smoothing"])
    if mix:
        lam = augment.mixup_weights(gb, aug["mixup_alpha"], g)[sl].to(x.device)
        half = x.shape[0] // 2
        lx = lam.view(-1, *([1] * (x.dim() - 1)))
        x = x[:half] * lx + x[half:] * (1 - lx)
        targets = targets[:half] * lam[:, None] + targets[half:] * (1 - lam[:, None])
    return x, targets


def _rows(sl: slice, gb: int, parts: int) -> Tensor:
    """This rank's rows of the global batch (and of the mixup partner batch)."""
    return torch.cat([torch.arange(sl.start, sl.stop) + p * gb for p in range(parts)])


def _augment_images(x: Tensor, aug: dict, g: torch.Generator, *, rows: Tensor, n_all: int) -> Tensor:
    from asc.data.cifar import normalize_images, random_crop_flip

    imgs = x
    if aug["crop_pad"] > 0 or aug["hflip"]:
        # draw for the whole global batch (and partner), then keep this rank's rows
        full = torch.zeros((n_all, *x.shape[1:]), dtype=x.dtype, device=x.device)
        rows = rows.to(x.device)
        full[rows] = x
        full = random_crop_flip(full, pad=aug["crop_pad"], generator=g)
        imgs = full[rows]
    return normalize_images(imgs)


def _augment_spectrograms(x: Tensor, aug: dict, g: torch.Generator, *, rows: Tensor, n_all: int) -> Tensor:
    x = x.float()
    c, f, t = x.shape[1], x.shape[2], x.shape[3]
    if aug["freq_masks"]:
        start, width = augment.mask_params(n_all, c, f, aug["freq_mask_width"], aug["freq_masks"], g)
        x = augment.apply_masks(x, start[rows], width[rows], axis=2)
    if aug["time_masks"]:
        start, width = augment.mask_params(n_all, c, t, aug["time_mask_width"], aug["time_masks"], g)
        x = augment.apply_masks(x, start[rows], width[rows], axis=3)
    if aug["crop_frames"]:
        offsets = augment.random_crop_offsets(n_all, t, aug["crop_frames"], g)
        x = augment.crop_time(x, offsets[rows], aug["crop_frames"])
    return x


#: batch augmentation per kind of input (TaskData.kind)
AUGMENT_BY_KIND: dict[str, Callable[..., Tensor]] = {"image": _augment_images,
                                                     "spectrogram": _augment_spectrograms}
