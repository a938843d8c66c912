"""Readers for audio of your own: a folder with one subfolder per class (`folder`), or a manifest CSV
(`csv`, the SpeechBrain / lhotse habit).

folder:  DIR/<class>/<any/depth/>file.wav ...; an optional DIR/metadata.csv (columns `filename`, relative
         to DIR, and `device` and/or `split`) adds devices or splits.
csv:     a file with the columns `filename` (relative to the CSV's folder) and `label` (or `scene_label`),
         and optionally `device` and `split`; comma- or tab-separated, one header line.

Clips may have any sample rate and channel count the features accept; their lengths must agree
(within LENGTH_TOLERANCE_S), since a model trains on clips of one length. Without splits, a
deterministic stratified split is made (per class, a fixed share of files chosen by a hash of each
file name), so every re-run and every machine sees the same split, and it is written into the cache
and the run with the rule that made it.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asc.data.clips import SPLITS, AudioDataset, Clip, read_metadata_text, stratified_split
from asc.data.description import DatasetDescription
from asc.errors import DataError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})
FOLDER_METADATA = "metadata.csv"
EVALUATE_FRACTION = 0.2
LABEL_COLUMNS = ("label", "scene_label")
SYNTHETIC_MARKER = "SYNTHETIC.json"


@dataclass(frozen=True)
class _Entry:
    file: str                 # relative to the root, "/" separated
    label: str | None
    device: str | None
    split: str | None
    where: str                # "path:line" or the folder, for errors


# ---------------------------------------------------------------------------------------- tables


def read_csv_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and rows ((line, values)) of a comma- or tab-separated file with one header line."""
    text = read_metadata_text(path)
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError(f"{path}: empty file; expected a header line (filename, label, ...) and rows")
    delimiter = "\t" if "\t" in lines[first] else ","
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for number, values in enumerate(reader, start=1):
        values = [v.strip() for v in values]
        if not any(values):
            continue
        if header is None:
            header = [v.lower() for v in values]
            if "filename" not in header:
                raise DataError(f"{path}:{number}: expected a header line naming the columns, with "
                                f"`filename` among them; got {lines[number - 1][:120]!r}")
            if len(set(header)) != len(header):
                raise DataError(f"{path}:{number}: a column is named twice in {header}")
            continue
        if len(values) != len(header):
            raise DataError(f"{path}:{number}: {len(values)} field(s), the header has {len(header)} "
                            f"({', '.join(header)})")
        rows.append((number, dict(zip(header, values))))
    return header or [], rows


def _relative(path: Path, line: int, name: str) -> str:
    name = name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{path}:{line}: file name {name!r} must be a path inside the dataset folder "
                        "(relative, without ..)")
    return str(PurePosixPath(*parts))


def _split_value(path: Path, line: int, value: str) -> str | None:
    if not value:
        return None
    aliases = {"val": "evaluate", "valid": "evaluate", "validation": "evaluate", "dev": "evaluate",
               "eval": "evaluate"}
    split = aliases.get(value.lower(), value.lower())
    if split not in SPLITS:
        raise DataError(f"{path}:{line}: unknown split {value!r}; use one of {', '.join(SPLITS)} "
                        "(or val/validation for evaluate)")
    return split


# ---------------------------------------------------------------------------------------- readers


def _audio_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES:
                found.append(Path(dirpath) / name)
    return found


def folder_classes(root: Path) -> list[str]:
    """The class subfolders of a folder dataset (those holding audio files)."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and _audio_files(d))


def load_folder(root: str | os.PathLike, *, check_audio: bool = True, allow_missing: bool = False,
                **_: object) -> AudioDataset:
    """A folder with one subfolder per class (see the module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    classes = folder_classes(root)
    if not classes:
        raise DataError(f"{root}: no class subfolders with audio ({', '.join(sorted(AUDIO_SUFFIXES))}); a "
                        "folder dataset holds one subfolder per class, e.g. DIR/dog/1.wav, DIR/rain/2.wav")
    entries: dict[str, _Entry] = {}
    for label in classes:
        for path in _audio_files(root / label):
            rel = path.relative_to(root).as_posix()
            entries[rel] = _Entry(rel, label, None, None, str(path))
    meta = root / FOLDER_METADATA
    if meta.is_file():
        header, rows = read_csv_table(meta)
        extra = [c for c in header if c not in ("filename", "device", "split", *LABEL_COLUMNS)]
        if extra:
            raise DataError(f"{meta}:1: unknown column(s) {', '.join(extra)}; {FOLDER_METADATA} may give "
                            "filename, device and split")
        for line, row in rows:
            rel = _relative(meta, line, row["filename"])
            if rel not in entries:
                why = "missing" if not (root / rel).exists() else "not in a class subfolder"
                raise DataError(f"{meta}:{line}: {rel}: no such audio file in the dataset ({why})")
            label = next((row[c] for c in LABEL_COLUMNS if row.get(c)), None)
            old = entries[rel]
            if label and label != old.label:
                raise DataError(f"{meta}:{line}: {rel} is labelled {label!r} here but lies in the folder "
                                f"{old.label!r}")
            entries[rel] = _Entry(rel, old.label, row.get("device") or None,
                                  _split_value(meta, line, row.get("split", "")), f"{meta}:{line}")
    return _build(root, "folder", f"{root.resolve().name} (folder dataset)", list(entries.values()), classes,
                  check_audio=check_audio, allow_missing=allow_missing)


def load_csv(path: str | os.PathLike, *, check_audio: bool = True, allow_missing: bool = False,
             **_: object) -> AudioDataset:
    """A manifest CSV (see the module doc); file names are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest CSV")
    header, rows = read_csv_table(path)
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    if label_col is None:
        raise DataError(f"{path}:1: no `label` column (the class of each file); columns: {', '.join(header)}")
    entries: dict[str, _Entry] = {}
    for line, row in rows:
        rel = _relative(path, line, row["filename"])
        if rel in entries:
            raise DataError(f"{path}:{line}: {rel} is listed twice (first at {entries[rel].where})")
        label = row[label_col]
        split = _split_value(path, line, row.get("split", ""))
        if not label and split != "test":
            raise DataError(f"{path}:{line}: {rel} has no label")
        entries[rel] = _Entry(rel, label or None, row.get("device") or None, split, f"{path}:{line}")
    if not entries:
        raise DataError(f"{path}: no rows below the header")
    classes = sorted({e.label for e in entries.values() if e.label})
    return _build(path.parent, "csv", f"{path.stem} (CSV dataset)", list(entries.values()), classes,
                  check_audio=check_audio, allow_missing=allow_missing, source=path)


# ---------------------------------------------------------------------------------------- building


def _durations(root: Path, entries: Iterable[_Entry]) -> dict[str, tuple[float, int]]:
    """file -> (seconds, sample rate) from the headers (nothing is decoded)."""
    from asc.data.audio import audio_info
    from asc.progress import progress

    entries = list(entries)
    out = {}
    for e in progress(entries, desc="headers", unit="file", total=len(entries)):
        info = audio_info(root / e.file)
        if info.frames <= 0:
            raise DataError(f"{root / e.file}: holds no audio samples (listed at {e.where}); remove it")
        out[e.file] = (info.duration, info.samplerate)
    return out


def _build(root: Path, name: str, title: str, entries: list[_Entry], classes: list[str], *,
           check_audio: bool, allow_missing: bool, source: Path | None = None) -> AudioDataset:
    from asc.data.audio import LENGTH_TOLERANCE_S, file_problem

    where = source or root
    missing = [e.file for e in entries if file_problem(root / e.file) is not None]
    if missing and not allow_missing:
        e = next(x for x in entries if x.file == missing[0])
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{e.where}: {missing[0]}: {file_problem(root / missing[0])}{more}; restore the "
                        "file or remove its row")
    entries = [e for e in entries if e.file not in set(missing)]

    given = [e for e in entries if e.split]
    if given and len(given) != len(entries):
        lacking = next(e for e in entries if not e.split)
        raise DataError(f"{lacking.where}: {lacking.file} has no split while others have one; give every "
                        "file a split, or none (then a stratified split is made)")
    split_rule = None
    splits: dict[str, str]
    if given:
        splits = {e.file: e.split for e in entries}  # type: ignore[misc]
    else:
        by_class: dict[str, list[str]] = {}
        for e in entries:
            by_class.setdefault(e.label or "", []).append(e.file)
        splits = stratified_split(by_class, EVALUATE_FRACTION)
        split_rule = (f"stratified: per class, about {EVALUATE_FRACTION:.0%} of the files to evaluate, "
                      "chosen by the SHA-256 of each file name (the same split on every run)")
    train_counts = Counter(e.label for e in entries if splits[e.file] == "train")
    for label in classes:
        if not train_counts.get(label):
            first = next((e for e in entries if e.label == label), None)
            at = first.where if first else str(where)
            raise DataError(f"{at}: class {label!r} has no training clip; add training files of it or remove "
                            "the class")
    duration = rate = None
    if entries:  # the length is a property of the data: always measured (headers only)
        lengths = _durations(root, entries)
        values = sorted(lengths.items(), key=lambda kv: kv[1][0])
        (short_file, (lo, _)), (long_file, (hi, _)) = values[0], values[-1]
        if hi - lo > LENGTH_TOLERANCE_S:
            raise DataError(f"{root / short_file}: {lo:.3f} s long, but {long_file} is {hi:.3f} s: clips "
                            "of a dataset must have one length (within "
                            f"{LENGTH_TOLERANCE_S * 1000:.0f} ms); cut them to one length first")
        duration = round(hi, 3)
        rates = {r for _, r in lengths.values()}
        rate = rates.pop() if len(rates) == 1 else None
    devices = sorted({e.device for e in entries if e.device})
    synthetic_info = _synthetic_info(root)
    description = DatasetDescription(
        name=name, title=title, classes=tuple(classes), devices=tuple(devices), device_groups={},
        duration=duration, sample_rate=rate,
        splits=tuple(s for s in SPLITS if s in set(splits.values())), synthetic=synthetic_info is not None,
        root=str(where), version="synthetic" if synthetic_info is not None else "unknown",
        split_rule=split_rule)
    clips = [Clip(filename=e.file, scene=e.label, device=e.device, split=splits[e.file]) for e in entries]
    return AudioDataset(root=root, clips=clips, description=description, missing=missing,
                        synthetic_info=synthetic_info)


def _synthetic_info(root: Path) -> dict | None:
    import json

    marker = root / SYNTHETIC_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
