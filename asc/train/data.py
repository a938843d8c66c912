"""Training inputs: datasets per task, a deterministic step sampler, and batch augmentation.

Every random choice is a function of (seed, epoch, step), drawn for the whole global batch and then
sliced per rank. So a run resumed mid-way, or split over several processes, sees exactly the inputs
a single uninterrupted process sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from asc.data.sampling import Subset, stratified_indices
from asc.errors import AscError
from asc.train import augment


@dataclass
class TaskData:
    """What the loop needs to know about a task's data."""

    train: Dataset
    eval: Dataset
    num_classes: int
    in_channels: int
    class_names: list[str]
    kind: str  # "spectrogram" or "image"
    #: raw batch -> model input, on the batch's device (images arrive as uint8); None: as float32
    transform: Callable[[Tensor], Tensor] | None = None
    #: the feature config the inputs were computed with (spectrograms), recorded in the run folder
    feature_config: dict | None = None
    #: what training-time validation and the angle passes read (subsets when the recipe asks for them)
    val: Dataset | None = None
    angle_train: Dataset | None = None


def subsets_for(task: TaskData, recipe: dict) -> TaskData:
    """Fill task.val and task.angle_train from the recipe's train.val_clips / train.angle_clips."""
    tr = recipe["train"]
    labels = _labels(task.eval)
    devices = list(getattr(task.eval, "devices", None) or [None] * len(labels))
    task.val = task.eval if tr["val_clips"] is None else \
        Subset(task.eval, stratified_indices(list(zip(devices, labels)), tr["val_clips"]))
    task.angle_train = task.train if tr["angle_clips"] is None else \
        Subset(task.train, stratified_indices(_labels(task.train), tr["angle_clips"]))
    return task


def _labels(dataset: Dataset) -> list[int]:
    return [int(v) for v in dataset.labels]


class _ImageSet(Dataset):
    """CIFAR images kept in memory as uint8 (N, 3, 32, 32); normalization happens per batch."""

    def __init__(self, images: Tensor, labels) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def load_task_data(recipe: dict) -> TaskData:
    data = recipe["data"]
    if recipe["task"] == "cifar100":
        from asc.data.cifar import load_cifar100, normalize_images

        c = load_cifar100(data["root"])
        to_t = lambda imgs: torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return TaskData(_ImageSet(to_t(c.train.images), c.train.labels),
                        _ImageSet(to_t(c.test.images), c.test.labels),
                        num_classes=len(c.classes), in_channels=3, class_names=list(c.classes),
                        kind="image", transform=normalize_images)
    from asc.features.dataset import FeatureDataset

    cache_dir = Path(data["cache_dir"])
    if not (cache_dir / "manifest.json").is_file():
        raise AscError(f"{cache_dir}: no feature cache for {recipe['features']}; run `asc extract "
                       f"--data DATA --features {recipe['features']} --out {data['cache']}` first")
    train = FeatureDataset(cache_dir, split=data["train_split"])
    evaluate = FeatureDataset(cache_dir, split=data["eval_split"])
    if len(train) == 0:
        raise AscError(f"{cache_dir}: the cache has no clips of split {data['train_split']!r}")
    return TaskData(train, evaluate, num_classes=len(train.scenes), in_channels=int(train.shape[0]),
                    class_names=list(train.scenes), kind="spectrogram", feature_config=train.feature_config)


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
    aug = recipe["augment"]
    tr = recipe["train"]
    g = augment.step_generator(recipe["seed"], epoch, step)
    gb = min(tr["batch_size"], len(task.train))  # global batch size
    local = gb // world
    sl = slice(rank * local, (rank + 1) * local)
    mix = aug["mixup_alpha"] > 0
    parts = 2 if mix else 1
    if task.kind == "image":
        from asc.data.cifar import normalize_images, random_crop_flip

        imgs = x
        if aug["crop_pad"] > 0 or aug["hflip"]:
            # draw for the whole global batch (and partner), then keep this rank's rows
            full = torch.zeros((gb * parts, *x.shape[1:]), dtype=x.dtype, device=x.device)
            rows = torch.cat([torch.arange(sl.start, sl.stop) + p * gb for p in range(parts)]).to(x.device)
            full[rows] = x
            full = random_crop_flip(full, pad=aug["crop_pad"], generator=g)
            imgs = full[rows]
        x = normalize_images(imgs)
    else:
        x = x.float()
        n_all, c, f, t = gb * parts, x.shape[1], x.shape[2], x.shape[3]
        rows = torch.cat([torch.arange(sl.start, sl.stop) + p * gb for p in range(parts)])
        if aug["freq_masks"]:
            start, width = augment.mask_params(n_all, c, f, aug["freq_mask_width"], aug["freq_masks"], g)
            x = augment.apply_masks(x, start[rows], width[rows], axis=2)
        if aug["time_masks"]:
            start, width = augment.mask_params(n_all, c, t, aug["time_mask_width"], aug["time_masks"], g)
            x = augment.apply_masks(x, start[rows], width[rows], axis=3)
        if aug["crop_frames"]:
            offsets = augment.random_crop_offsets(n_all, t, aug["crop_frames"], g)
            x = augment.crop_time(x, offsets[rows], aug["crop_frames"])
    targets = augment.soft_targets(y.to(x.device), task.num_classes, tr["label_smoothing"])
    if mix:
        lam = augment.mixup_weights(gb, aug["mixup_alpha"], g)[sl].to(x.device)
        half = x.shape[0] // 2
        lx = lam.view(-1, *([1] * (x.dim() - 1)))
        x = x[:half] * lx + x[half:] * (1 - lx)
        targets = targets[:half] * lam[:, None] + targets[half:] * (1 - lam[:, None])
    return x, targets
