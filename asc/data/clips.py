"""Clips and the dataset object every reader returns (TAU layouts, a folder per class, a CSV manifest).

A reader gives a list of `Clip`s (file, label, device, split, ...) and a `DatasetDescription`; the
rest of the pipeline reads only these two.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from asc.data.description import DatasetDescription

SPLITS: tuple[str, ...] = ("train", "evaluate", "test", "unused")


@dataclass(frozen=True)
class Clip:
    """One audio file of a dataset. `scene` is the class label (named for the scenes of acoustic scene
    classification; any label of a folder or CSV dataset); None where unknown (an evaluation set)."""

    filename: str                 # relative to the dataset root, as in the metadata: "audio/x.wav"
    scene: str | None
    city: str | None = None
    location: str | None = None   # recording location, e.g. "lisbon-1000" (keeps splits apart)
    segment: str | None = None
    device: str | None = None
    split: str = "train"          # train / evaluate / test / unused

    @property
    def id(self) -> str:
        """The file name without extension; for nested folders the folders too ("dog/x")."""
        path = PurePosixPath(self.filename)
        parts = path.parts
        if len(parts) > 2 or (len(parts) == 2 and parts[0] not in ("audio",)):
            return str(path.with_suffix(""))
        return path.stem

    @property
    def base(self) -> str | None:
        """The recording shared by parallel clips of all devices: "scene-city-location-segment"."""
        if None in (self.scene, self.location, self.segment):
            return None
        return f"{self.scene}-{self.location}-{self.segment}"


@dataclass
class AudioDataset:
    """Clips of one dataset with their split and its description; `.missing` lists audio dropped as
    absent."""

    root: Path
    clips: list[Clip]
    description: DatasetDescription
    missing: list[str] = field(default_factory=list)
    synthetic_info: dict | None = None
    #: clips a test fold lists again from evaluate (the development sets' fold1_test.csv)
    test_repeats_evaluate: int = 0

    @property
    def version(self) -> str:
        return self.description.version

    @property
    def synthetic(self) -> bool:
        return self.description.synthetic

    def split(self, name: str) -> list[Clip]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [c for c in self.clips if c.split == name]

    def path(self, clip: Clip) -> Path:
        return self.root / clip.filename

    def label(self, clip: Clip) -> int:
        """Index of the clip's class in the description, -1 if unknown."""
        return self.description.label_index.get(clip.scene, -1) if clip.scene is not None else -1

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{"device": {split: {device: n}}, "scene": {split: {class: n}}}; None counts as "unknown"."""
        by_device: dict[str, Counter] = {}
        by_scene: dict[str, Counter] = {}
        for c in self.clips:
            by_device.setdefault(c.split, Counter())[c.device or "unknown"] += 1
            by_scene.setdefault(c.split, Counter())[c.scene or "unknown"] += 1

        def ordered(counter: Counter, names: tuple[str, ...]) -> dict[str, int]:
            keys = [k for k in names if k in counter] + sorted(k for k in counter if k not in names)
            return {k: counter[k] for k in keys}

        splits = [s for s in SPLITS if s in by_device]
        return {
            "device": {s: ordered(by_device[s], self.description.devices) for s in splits},
            "scene": {s: ordered(by_scene[s], self.description.classes) for s in splits},
        }

    def __len__(self) -> int:
        return len(self.clips)


def read_metadata_text(path: Path) -> str:
    """A metadata file's text (a BOM dropped); one-line DataErrors naming the file otherwise."""
    from asc.errors import DataError

    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone: the same file lands in the same split on every machine
    and in every re-run, and adding files never moves the others."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def stratified_split(keys_by_class: dict[str, list[str]], evaluate_fraction: float) -> dict[str, str]:
    """key -> "train" / "evaluate": a key goes to evaluate when its `stable_fraction` is below the
    fraction, so adding files never moves another; a class of two or more clips keeps at least one in
    each split (its lowest key to evaluate, its highest to train)."""
    out: dict[str, str] = {}
    for keys in keys_by_class.values():
        ordered = sorted(keys, key=lambda k: (stable_fraction(k), k))
        for key in ordered:
            out[key] = "evaluate" if stable_fraction(key) < evaluate_fraction else "train"
        if len(ordered) >= 2:
            out[ordered[0]] = "evaluate"
            out[ordered[-1]] = "train"
        elif ordered:
            out[ordered[0]] = "train"
    return out
