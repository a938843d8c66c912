"""The dataset readers, one name -> loader map: `--dataset NAME`, or detected from what `--data` points at.

Each loader takes the path and keyword options (`check_audio`, `allow_missing`, `train_subset`) and
returns an `AudioDataset`: clips plus a `DatasetDescription`. A new reader is one module and one entry
here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from asc.data.clips import AudioDataset
from asc.errors import DataError


def _tau2020(root, *, train_subset=None, **kw) -> AudioDataset:
    from asc.data.tau2020 import load_tau2020

    if train_subset is not None:
        raise DataError(f"--train-subset {train_subset}: training subsets belong to TAU 2022 Mobile "
                        "(--dataset tau2022)")
    return load_tau2020(root, **kw)


def _tau2022(root, **kw) -> AudioDataset:
    from asc.data.tau2022 import load_tau2022

    return load_tau2022(root, **kw)


def _folder(root, *, train_subset=None, **kw) -> AudioDataset:
    from asc.data.labelled import load_folder

    _no_subset("folder", train_subset)
    return load_folder(root, **kw)


def _csv(path, *, train_subset=None, **kw) -> AudioDataset:
    from asc.data.labelled import load_csv

    _no_subset("csv", train_subset)
    return load_csv(path, **kw)


def _no_subset(name: str, train_subset) -> None:
    if train_subset is not None:
        raise DataError(f"--train-subset {train_subset}: not for a {name} dataset; give the split column "
                        "of your files instead (train, evaluate, unused)")


READERS: dict[str, Callable[..., AudioDataset]] = {
    "tau2020": _tau2020,
    "tau2022": _tau2022,
    "folder": _folder,
    "csv": _csv,
}
READER_HELP = {
    "tau2020": "TAU Urban Acoustic Scenes 2020 Mobile (audio/, meta.csv, evaluation_setup/)",
    "tau2022": "TAU Urban Acoustic Scenes 2022 Mobile, 1-s clips (same layout; --train-subset splitN.csv)",
    "folder": "one subfolder per class of audio files (+ optional metadata.csv: filename, device, split)",
    "csv": "a manifest CSV: filename, label[, device, split]",
}


def detect_reader(path: str | os.PathLike) -> str:
    """Which reader a path is for: a .csv file -> csv; a TAU layout -> tau2020/tau2022 by its clip
    names; a folder of class subfolders -> folder."""
    from asc.data.labelled import folder_classes
    from asc.data.tau2020 import FOLD_FILES, META_FILE
    from asc.data.tau2022 import looks_like

    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return "csv"
        raise DataError(f"{path}: a file that is not a manifest CSV; give a dataset folder or a .csv")
    if not path.is_dir():
        raise DataError(f"{path}: no such dataset folder or CSV; build one with "
                        f"`asc data synth --out {path}`")
    if (path / META_FILE).is_file() or any((path / rel).is_file() for rel in FOLD_FILES.values()):
        return "tau2022" if looks_like(path) else "tau2020"
    if folder_classes(path):
        return "folder"
    raise DataError(f"{path}: not a dataset: no meta.csv or evaluation_setup/ (TAU layout) and no class "
                    "subfolders with audio (folder layout); see README \"Your own data\"")


def load_dataset(path: str | os.PathLike, reader: str | None = None, **options) -> AudioDataset:
    """Read a dataset with the named reader, or the one `detect_reader` picks."""
    name = reader or detect_reader(path)
    if name not in READERS:
        raise DataError(f"--dataset {name}: unknown dataset reader; choose one of {', '.join(READERS)}")
    dataset = READERS[name](path, **options)
    if dataset.description.root:  # reports name where the data is, from any folder
        dataset.description = replace(dataset.description, root=str(Path(dataset.description.root).resolve()))
    return dataset
