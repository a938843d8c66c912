"""What a dataset is, as data: the description every reader returns beside its clips.

The description travels with the data: `asc extract` writes it into the cache manifest, `asc train`
copies it into the run (`RUN/dataset.json`), and evaluate, report, compare, predict and analyze read it
from there. Generic code learns the class names, the devices and their groups, the clip length and
whether the data is synthetic from it, never from a dataset module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from asc.errors import DataError

DESCRIPTION_FORMAT = 1


@dataclass(frozen=True)
class DatasetDescription:
    """name: the reader ("tau2020", "folder", ...); title: what reports call the data; classes: label
    names in the order of the model's outputs; devices: recording devices in report order (empty: the
    data has none, and reports have no device tables); device_groups: named groups of devices
    (e.g. devices never heard in training); duration: seconds per clip (None: not fixed);
    sample_rate, channels: of the files (None: mixed); split_rule: how splits were made, when the data
    gave none."""

    name: str
    title: str
    classes: tuple[str, ...]
    devices: tuple[str, ...] = ()
    device_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    splits: tuple[str, ...] = ("train", "evaluate")
    synthetic: bool = False
    root: str = ""
    version: str = "unknown"
    split_rule: str | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise DataError(f"{self.root or self.name}: the dataset has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"{self.root or self.name}: class names repeat: {list(self.classes)}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise DataError(f"{self.root or self.name}: clip duration {self.duration!r} is not a positive "
                            "number of seconds")

    @property
    def label_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def display_name(self) -> str:
        return f"synthetic {self.title}" if self.synthetic else self.title

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = DESCRIPTION_FORMAT
        out["classes"] = list(self.classes)
        out["devices"] = list(self.devices)
        out["splits"] = list(self.splits)
        out["device_groups"] = {k: list(v) for k, v in self.device_groups.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dataset description") -> DatasetDescription:
        if not isinstance(data, Mapping):
            raise DataError(f"{source}: the dataset description is not a mapping")
        try:
            classes = tuple(str(c) for c in data["classes"])
            groups = {str(k): tuple(str(d) for d in v) for k, v in (data.get("device_groups") or {}).items()}
            duration = data.get("duration")
            rate = data.get("sample_rate")
            return cls(name=str(data["name"]), title=str(data.get("title") or data["name"]), classes=classes,
                       devices=tuple(str(d) for d in data.get("devices") or ()), device_groups=groups,
                       duration=None if duration is None else float(duration),
                       sample_rate=None if rate is None else int(rate),
                       channels=None if data.get("channels") is None else int(data["channels"]),
                       splits=tuple(str(s) for s in data.get("splits") or ()),
                       synthetic=bool(data.get("synthetic", False)), root=str(data.get("root") or ""),
                       version=str(data.get("version") or "unknown"), split_rule=data.get("split_rule"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: malformed dataset description ({exc})") from None

    def same_classes(self, other: DatasetDescription) -> bool:
        return tuple(self.classes) == tuple(other.classes)


def class_mismatch(trained: Sequence[str], scored: Sequence[str]) -> str | None:
    """How two class lists differ, in words, or None when they are the same list in the same order."""
    trained, scored = list(trained), list(scored)
    if trained == scored:
        return None
    only_t = [c for c in trained if c not in scored]
    only_s = [c for c in scored if c not in trained]
    if not only_t and not only_s:
        return "the same classes in another order"
    parts = []
    if only_t:
        more = " …" if len(only_t) > 4 else ""
        parts.append(f"trained on {', '.join(only_t[:4])}{more} that the data lacks")
    if only_s:
        parts.append(f"the data has {', '.join(only_s[:4])}{' …' if len(only_s) > 4 else ''} that the run "
                     "never saw")
    return "; ".join(parts)


def legacy_description(dataset: Mapping[str, Any] | None) -> DatasetDescription:
    """The description of a cache or run written before descriptions existed: they were all TAU 2020
    Mobile (development, evaluation or synthetic), so that reader's description, with the stored root
    and synthetic flag."""
    from asc.data.tau2020 import describe_tau2020

    info = dict(dataset or {})
    return describe_tau2020(root=str(info.get("root") or ""), synthetic=bool(info.get("synthetic")),
                            version="unknown")


def description_of(dataset_entry: Mapping[str, Any] | None, source: str) -> DatasetDescription:
    """The description stored in a manifest's or run's `dataset` entry (legacy entries: TAU 2020)."""
    entry = dict(dataset_entry or {})
    if isinstance(entry.get("description"), Mapping):
        return DatasetDescription.from_dict(entry["description"], source)
    return legacy_description(entry)
