"""Which dataset folder a file lies in, so output can name it as the dataset's own lists do
(`audio/0.wav`, not `/data/tau/audio/0.wav`), whatever path it was given by.

A dataset root is recognized by its metadata, not by its reader: the nearest folder above the file that
holds `meta.csv` or `evaluation_setup/` (the TAU layout every fold file is relative to). Imports
nothing heavy, so callers on the `asc --help` path may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: what marks a folder as a dataset root: (name, is a folder)
ROOT_MARKERS = (("meta.csv", False), ("evaluation_setup", True))


def is_dataset_root(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return any((folder / name).is_dir() if is_dir else (folder / name).is_file()
               for name, is_dir in ROOT_MARKERS)


def dataset_root(path: str | os.PathLike, cache: dict[str, Path | None] | None = None) -> Path | None:
    """The nearest folder above `path` that is a dataset root, or None. `cache` (folder -> answer)
    spares the file-system checks when many files share folders."""
    here = Path(os.path.abspath(path)).parent
    walked: list[str] = []
    found: Path | None = None
    while True:
        key = str(here)
        if cache is not None and key in cache:
            found = cache[key]
            break
        walked.append(key)
        if is_dataset_root(here):
            found = here
            break
        if here.parent == here:
            break
        here = here.parent
    if cache is not None:
        for key in walked:
            cache[key] = found
    return found


def dataset_name(path: str | os.PathLike, cache: dict[str, Path | None] | None = None) -> str | None:
    """`path` relative to its dataset root in the lists' form (forward slashes), or None when it lies
    in no dataset folder."""
    root = dataset_root(path, cache)
    if root is None:
        return None
    return Path(os.path.abspath(path)).relative_to(root).as_posix()
