"""Training-side readers of a feature cache: a torch Dataset over memory-mapped shards, and whole
splits as arrays for small sets and tests.

Shards are opened lazily, per process, on first access, so a FeatureDataset pickles cheaply into
DataLoader workers and each worker maps the files itself (the OS page cache is shared). Every shard
the rows need is checked against the manifest (header, shape, dtype, size) when the dataset is made
and again when a process maps it, so a shard cut short fails at once with its name and the command
that rebuilds it, not mid-epoch inside numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asc.data.description import DatasetDescription, description_of
from asc.errors import DataError
from asc.features.cache import MANIFEST, open_shard, read_manifest, require_shard


class FeatureDataset:
    """Clips of one split (or all, with split=None) of an extracted cache.

    `ds[i]` -> (torch.float32 tensor (C, mels, frames), label index into `scenes`, -1 if unknown).
    Attributes: labels (np.int64), devices, scenes (the dataset's class names, from the manifest's
    dataset description), description, ids, records (manifest rows), synthetic, feature_config,
    shape, cache_dir. A labelled clip whose label is not one of the classes is an error, never -1.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str | None = "train",
                 devices: Sequence[str] | None = None):
        self.cache_dir = Path(cache_dir)
        manifest = read_manifest(self.cache_dir)
        rows = manifest["clips"]
        if split is not None:
            rows = [r for r in rows if r.get("split") == split]
        if devices is not None:
            wanted = set(devices)
            rows = [r for r in rows if r.get("device") in wanted]
        self.split = split
        self.records: list[dict] = rows
        self.description: DatasetDescription = description_of(manifest["dataset"],
                                                               str(self.cache_dir / MANIFEST))
        self.scenes: list[str] = list(self.description.classes)
        index = {s: i for i, s in enumerate(self.scenes)}
        unknown = next((r for r in rows if r.get("scene") is not None and r.get("scene") not in index), None)
        if unknown is not None:
            raise DataError(f"{self.cache_dir / MANIFEST}: clip {unknown.get('file')} is labelled "
                            f"{unknown.get('scene')!r}, not one of the dataset's classes "
                            f"({', '.join(self.scenes[:12])}); re-extract the cache")
        self.labels = np.array([index.get(r.get("scene"), -1) for r in rows], dtype=np.int64)
        self.devices: list[str] = [r.get("device") for r in rows]
        self.ids: list[str] = [r["id"] for r in rows]
        self.synthetic: bool = bool(manifest["dataset"].get("synthetic"))
        self.feature_config: dict = manifest["feature_config"]
        self.shape: tuple[int, ...] = tuple(manifest["shape"])
        self.dtype: str = manifest["dtype"]
        self._manifest = {k: manifest[k] for k in ("shape", "dtype", "shards", "command") if k in manifest}
        self._shards: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(r["shard"] for r in rows):  # fail now, not in a loader worker
            require_shard(self.cache_dir, self._manifest, name)

    def __len__(self) -> int:
        return len(self.records)

    def _shard(self, name: str) -> np.ndarray:
        array = self._shards.get(name)
        if array is None:
            array = open_shard(self.cache_dir, self._manifest, name)
            self._shards[name] = array
        return array

    def array(self, i: int) -> np.ndarray:
        """Clip i's feature as float32 numpy (C, mels, frames)."""
        r = self.records[i]
        return np.array(self._shard(r["shard"])[r["offset"]], dtype=np.float32)  # a writable copy

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        return torch.from_numpy(self.array(i)), int(self.labels[i])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_shards"] = {}  # memory maps are reopened in each worker
        return state

    def __repr__(self) -> str:
        return (f"FeatureDataset({str(self.cache_dir)!r}, split={self.split!r}, clips={len(self)}, "
                f"shape={self.shape})")


def load_split_arrays(cache_dir: str | os.PathLike, split: str | None = "train",
                      devices: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A whole split in memory: (features float32 (N, C, mels, frames), labels int64 (N,), devices)."""
    ds = FeatureDataset(cache_dir, split=split, devices=devices)
    out = np.empty((len(ds),) + ds.shape, dtype=np.float32)
    for i in range(len(ds)):
        out[i] = ds.array(i)
    return out, ds.labels.copy(), list(ds.devices)
