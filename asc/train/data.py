"""Training inputs: datasets per task, a deterministic step sampler, and batch augmentation.

Every random choice is a function of (seed, epoch, step), drawn for the whole global batch and then
sliced per rank. So a run resumed mid-way, or split over several processes, sees exactly the inputs
a single uninterrupted process sees (freq_mixstyle's partners aside: see `augment.freq_mixstyle`).
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
    """The augment section for inputs of `frames` time steps: widths in frames written for
    `reference_frames` (crop and time-mask widths, flat or in `transforms`) scale with the clip (a 1-s
    clip has 36 frames where a 10-s one has 423), and a crop longer than the clip is an error naming
    the setting. A `transforms` list comes back checked, with every parameter filled in."""
    out = dict(aug)
    ref = aug.get("reference_frames")
    scaled = not (frames is None or not ref or frames == ref)
    how = "" if scaled else " (set augment.reference_frames to scale it with the clip)"
    if aug.get("transforms") is not None:
        listed = augment.transform_list(aug)
        out["transforms"] = augment.scale_frames(listed, frames, ref) if scaled else listed
        changes = [f"augment.transforms.{i}.{k} {a[k]} -> {b[k]}" for i, (a, b) in
                   enumerate(zip(listed, out["transforms"])) for k in a if a[k] != b[k]]
        if changes and log is not None:
            log(f"clips of {frames} frames (widths written for {ref}): {', '.join(changes)}")
        for i, t in enumerate(out["transforms"]):
            for key in augment.TRANSFORMS[t["name"]].clip_params:
                if frames is not None and t[key] > frames:
                    raise AscError(f"augment.transforms.{i}.{key} {t[key]} is longer than the clips' "
                                   f"{frames} frames{how}; lower it")
        return out
    if scaled:
        for key in ("crop_frames", "time_mask_width"):
            if out.get(key):
                out[key] = max(1, int(round(out[key] * frames / ref)))
        if log is not None:
            log(f"clips of {frames} frames (widths written for {ref}): crop_frames "
                f"{aug.get('crop_frames')} -> {out.get('crop_frames')}, time_mask_width "
                f"{aug.get('time_mask_width')} -> {out.get('time_mask_width')}")
    if frames is not None and out.get("crop_frames") and out["crop_frames"] > frames:
        raise AscError(f"augment.crop_frames {out['crop_frames']} is longer than the clips' {frames} "
                       f"frames{how}; lower it or set it to null")
    return out


def _check_mel_widths(aug: dict, bins: int) -> None:
    """A frequency mask wider than the mel bins masks nothing sensible: refused, naming the key."""
    if aug.get("transforms") is not None:
        widths = [(f"augment.transforms.{i}.freq_mask_width", t.get("freq_mask_width"))
                  for i, t in enumerate(aug["transforms"]) if t.get("freq_masks")]
    else:
        widths = [("augment.freq_mask_width", aug.get("freq_mask_width"))] if aug.get("freq_masks") else []
    for key, width in widths:
        if width is not None and width > bins:
            raise AscError(f"{key} {width} is more than the features' {bins} mel bins; lower it")


def subsets_for(task: TaskData, recipe: dict, log: Callable[[str], None] | None = None) -> TaskData:
    """Fill task.val and task.angle_train from the recipe's train.val_clips / train.angle_clips, and
    task.augment with the augment section fitted to the clip length."""
    tr = recipe["train"]
    shape = getattr(task.train, "shape", None)
    frames = int(shape[-1]) if task.kind == "spectrogram" and shape else None
    task.augment = clip_augment(recipe["augment"], frames, log)
    if frames is not None:
        _check_mel_widths(task.augment, int(shape[-2]))
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


class WithTeacher(Dataset):
    """Training items with their clip's softened teacher distribution: (x, label, teacher). The row goes
    with the item, so every process gets the teacher rows of its own slice of the global batch."""

    def __init__(self, dataset: Dataset, teacher: Tensor) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if len(teacher) != n:
            raise AscError(f"{len(teacher)} teacher rows for {n} training clips; write the teacher logits of "
                           "this training split with `asc teacher`")
        self.dataset, self.teacher = dataset, teacher

    def __len__(self) -> int:
        return len(self.teacher)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        x, y = self.dataset[i]
        return x, y, self.teacher[i]


def train_loader(task: TaskData, recipe: dict, epoch: int, rank: int, world: int, start_step: int = 0,
                 pin_memory: bool = False, teacher: Tensor | None = None) -> DataLoader:
    """This rank's batches of one epoch; with `teacher` (rows in task.train's order) each item carries
    its teacher row too."""
    tr = recipe["train"]
    sampler = StepSampler(len(task.train), tr["batch_size"], seed=recipe["seed"], epoch=epoch, rank=rank,
                          world=world, partner=augment.needs_partner(recipe["augment"]),
                          start_step=start_step,
                          max_steps=tr["max_steps_per_epoch"])
    workers = recipe["data"]["num_workers"] if task.kind == "spectrogram" else 0
    dataset = task.train if teacher is None else WithTeacher(task.train, teacher)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
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
    """Run the recipe's transform list (`augment.transforms_for`) on this rank's slice of a global
    batch: the raw-input transforms, the task's input transform (images: normalized; spectrograms:
    float32), the rest. Returns inputs and soft targets."""
    x, targets, _ = prepare_batch_teacher(x, y, None, task=task, recipe=recipe, epoch=epoch, step=step,
                                          rank=rank, world=world)
    return x, targets


def prepare_batch_teacher(x: Tensor, y: Tensor, teacher: Tensor | None, *, task: TaskData, recipe: dict,
                          epoch: int, step: int, rank: int, world: int
                          ) -> tuple[Tensor, Tensor, Tensor | None]:
    """`prepare_batch` with the rows' teacher distributions carried along (None: no distillation):
    mixup mixes them with the labels' λ, the other transforms draw and act as without them."""
    aug = task.augment or recipe["augment"]
    tr = recipe["train"]
    transforms = augment.transforms_for(aug, task.kind)
    g = augment.step_generator(recipe["seed"], epoch, step)
    gb = min(tr["batch_size"], len(task.train))  # global batch size
    local = gb // world
    sl = slice(rank * local, (rank + 1) * local)
    parts = 2 if any(augment.TRANSFORMS[t["name"]].pairs for t in transforms) else 1
    targets = augment.soft_targets(y.to(x.device), task.num_classes, tr["label_smoothing"])
    batch = augment.Batch(x, targets, _rows(sl, gb, parts), gb * parts, partnered=parts == 2,
                          teacher=None if teacher is None else teacher.to(x.device).float())
    batch = augment.run_transforms(transforms, batch, g, to_input=task.transform or _as_float)
    return batch.x, batch.targets, batch.teacher


def _as_float(x: Tensor) -> Tensor:
    return x.float()


def _rows(sl: slice, gb: int, parts: int) -> Tensor:
    """This rank's rows of the global batch (and of the mixup partner batch)."""
    return torch.cat([torch.arange(sl.start, sl.stop) + p * gb for p in range(parts)])
