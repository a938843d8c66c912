"""Tasks: what generic code asks of a kind of data, so the engine, evaluation, runs and predict never
branch on a task's name.

A task gives its training data (`training_data`: datasets, class names, the per-batch input
transform), one split ready for scoring (`split`), the word for one scored item (`unit`), and its
kind of input (`kind`, which picks the batch augmentation). Scene classification reads feature caches
of any audio dataset; images read CIFAR-100. One name -> task map, keyed by the recipe's `task`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asc.data.description import DatasetDescription
from asc.errors import AscError, DataError


@dataclass
class TaskData:
    """What the training loop needs to know about a task's data."""

    train: Any
    eval: Any
    num_classes: int
    in_channels: int
    class_names: list[str]
    kind: str  # "spectrogram" or "image": picks the batch augmentation
    description: DatasetDescription | None = None
    #: raw batch -> model input, on the batch's device (images arrive as uint8); None: as float32
    transform: Callable | None = None
    #: the feature config the inputs were computed with (spectrograms), recorded in the run folder
    feature_config: dict | None = None
    #: what training-time validation and the angle passes read (subsets when the recipe asks for them)
    val: Any = None
    angle_train: Any = None
    #: the recipe's augment section with its frame widths fitted to these clips (`clip_augment`)
    augment: dict | None = None


@dataclass
class EvalData:
    """One split ready for scoring: a torch Dataset plus what the report needs to know about it."""

    dataset: Any
    split: str
    labels: np.ndarray
    class_names: list[str]
    devices: list[str] | None
    filenames: list[str]
    description: DatasetDescription
    extra: dict = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.description.root or "?"

    @property
    def synthetic(self) -> bool:
        return self.description.synthetic


def recipe_value(recipe: Mapping, dotted: str, path: Path | str, default: Any = None) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node or node[part] is None:
            if default is not None:
                return default
            raise AscError(f"{path}: the recipe has no {dotted}; re-create the run with `asc train`")
        node = node[part]
    return node


# ------------------------------------------------------------------------------------ scenes (audio)


class SceneTask:
    """Clips of any labelled audio dataset, as extracted log-mel features; scored per clip, per
    device (when the data has devices) and per class."""

    name = "dcase"
    kind = "spectrogram"
    unit = "clips"

    @staticmethod
    def cache_dir(recipe: Mapping, where: Path | str) -> str:
        data = recipe.get("data") or {}
        if data.get("cache_dir"):
            return str(data["cache_dir"])
        if recipe.get("features") and data.get("cache"):
            from asc.features.cache import cache_path

            return str(cache_path(data["cache"], recipe["features"]))  # says why it cannot find one
        raise AscError(f"{where}: the recipe has no data.cache_dir; re-create the run with `asc train`")

    def training_data(self, recipe: Mapping) -> TaskData:
        from asc.features.dataset import FeatureDataset

        data = recipe["data"]
        cache_dir = Path(self.cache_dir(recipe, "recipe"))
        if not (cache_dir / "manifest.json").is_file():
            raise AscError(f"{cache_dir}: no feature cache for {recipe['features']}; run `asc extract "
                           f"--data DATA --features {recipe['features']} --out {data['cache']}` first")
        train = FeatureDataset(cache_dir, split=data["train_split"])
        evaluate = FeatureDataset(cache_dir, split=data["eval_split"])
        if len(train) == 0:
            raise AscError(f"{cache_dir}: the cache has no clips of split {data['train_split']!r}")
        empty = [c for i, c in enumerate(train.scenes) if not (train.labels == i).any()]
        if empty:
            raise DataError(f"{cache_dir}: class {empty[0]!r} has no clip in split {data['train_split']!r}"
                            f"{f' (nor {len(empty) - 1} more)' if len(empty) > 1 else ''}; a model cannot "
                            "learn a class it never sees: add its clips or remove the class from the data")
        return TaskData(train, evaluate, num_classes=len(train.scenes), in_channels=int(train.shape[0]),
                        class_names=list(train.scenes), kind=self.kind, description=train.description,
                        feature_config=train.feature_config)

    def split(self, recipe: Mapping, split: str, where: Path | str, cache_dir: str | None = None) -> EvalData:
        from asc.features.cache import read_manifest
        from asc.features.dataset import FeatureDataset

        if cache_dir is not None:
            _check_same_features(recipe, cache_dir, where, self.cache_dir)
        cache_dir = cache_dir or self.cache_dir(recipe, where)
        manifest = read_manifest(cache_dir)
        dataset = FeatureDataset(cache_dir, split)
        if len(dataset) == 0:
            present = sorted({str(r.get("split")) for r in manifest.get("clips", [])})
            raise DataError(f"{cache_dir}: the feature cache has no clips of split {split!r} (it has: "
                            f"{', '.join(present) or 'none'}); extract that split with `asc extract`")
        filenames = [str(r.get("file") or f"{r.get('id')}.wav") for r in dataset.records]
        # data without devices (the official evaluation set's anonymous clips, a folder of your own):
        # no per-device scores then
        devices = None
        if dataset.description.devices and any(d is not None for d in dataset.devices):
            devices = ["unknown" if d is None else str(d) for d in dataset.devices]
        return EvalData(
            dataset=dataset, split=split, labels=np.asarray(dataset.labels, dtype=np.int64),
            class_names=list(dataset.scenes), devices=devices, filenames=filenames,
            description=dataset.description,
            extra={"cache_dir": str(cache_dir), "features": recipe.get("features"),
                   "feature_hash": manifest.get("config_hash")},
        )


def _check_same_features(recipe: Mapping, cache_dir: str, where: Path | str,
                         own_cache: Callable[[Mapping, Path | str], str]) -> None:
    """A cache given with --cache must hold the features the run was trained on."""
    from asc.features.cache import read_manifest
    from asc.features.logmel import feature_hash, load_feature_config

    found = read_manifest(cache_dir).get("config_hash")
    try:
        expected = read_manifest(own_cache(recipe, where)).get("config_hash")
    except AscError:
        if not recipe.get("features"):
            return
        cfg = load_feature_config(recipe["features"])
        if cfg["duration"] is None:
            return  # the length came from the data: the run's features.yaml is checked by predict
        expected = feature_hash(cfg)
    if found != expected:
        raise AscError(f"{cache_dir}: features of another config (hash {found}) than the run's "
                       f"(hash {expected}); extract the data with the run's feature config "
                       f"{recipe.get('features')}")


# ------------------------------------------------------------------------------------------ images


class _ImageSet:
    """CIFAR images kept in memory as uint8 (N, 3, 32, 32); normalization happens per batch."""

    def __init__(self, images, labels) -> None:
        import torch

        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


class ImageTask:
    """CIFAR-100 images (the paper's image experiments); scored per image and class."""

    name = "cifar100"
    kind = "image"
    unit = "images"
    title = "CIFAR-100"

    def describe(self, classes, root: str, synthetic: bool) -> DatasetDescription:
        return DatasetDescription(name=self.name, title=self.title, classes=tuple(classes),
                                  splits=("train", "test"), synthetic=bool(synthetic), root=str(root))

    def training_data(self, recipe: Mapping) -> TaskData:
        import torch

        from asc.data.cifar import load_cifar100, normalize_images

        c = load_cifar100(recipe["data"]["root"])

        def to_t(imgs):
            return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()

        return TaskData(_ImageSet(to_t(c.train.images), c.train.labels),
                        _ImageSet(to_t(c.test.images), c.test.labels),
                        num_classes=len(c.classes), in_channels=3, class_names=list(c.classes),
                        kind=self.kind, transform=normalize_images,
                        description=self.describe(c.classes, str(c.root), c.synthetic))

    def split(self, recipe: Mapping, split: str, where: Path | str, cache_dir: str | None = None) -> EvalData:
        from asc.data.cifar import CifarDataset

        if cache_dir is not None:
            raise AscError("--cache applies to feature caches of audio runs only")
        root = recipe_value(recipe, "data.root", where)
        split = "test" if split == "evaluate" else split
        dataset = CifarDataset(root, split, train_augment=False)
        return EvalData(
            dataset=dataset, split=split, labels=np.asarray(dataset.labels, dtype=np.int64),
            class_names=list(dataset.classes), devices=None,
            filenames=[f"{split}-{i}" for i in range(len(dataset))],
            description=self.describe(dataset.classes, str(dataset.root), dataset.synthetic),
        )


TASKS: dict[str, SceneTask | ImageTask] = {"dcase": SceneTask(), "cifar100": ImageTask()}
DEFAULT_TASK = "dcase"


def task_of(recipe: Mapping, where: str | os.PathLike = "recipe") -> SceneTask | ImageTask:
    name = recipe.get("task", DEFAULT_TASK)
    if name not in TASKS:
        raise AscError(f"{where}: unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]
