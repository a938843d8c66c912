"""Reader for TAU Urban Acoustic Scenes 2020 Mobile folders (development, evaluation, or synthetic).

A folder holds `audio/*.wav`, `meta.csv` (filename, scene_label, identifier, source_label) and
`evaluation_setup/fold1_{train,evaluate,test}.csv`, all tab-separated with one header line. The
reader is lenient about text encoding details (BOM, CRLF, trailing blanks) and strict about content:
an unknown label, a malformed or duplicate row, or folds that contradict `meta.csv` is a DataError
naming the file and line, because a silently wrong split invalidates every number downstream.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asc.data.clips import SPLITS, AudioDataset, Clip, read_metadata_text
from asc.data.description import DatasetDescription
from asc.errors import DataError

log = logging.getLogger(__name__)

SCENES: tuple[str, ...] = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)
REAL_DEVICES: tuple[str, ...] = ("a", "b", "c")
SEEN_SIMULATED: tuple[str, ...] = ("s1", "s2", "s3")
UNSEEN: tuple[str, ...] = ("s4", "s5", "s6")
DEVICES: tuple[str, ...] = REAL_DEVICES + SEEN_SIMULATED + UNSEEN
DEVICE_GROUPS: dict[str, tuple[str, ...]] = {
    "real": REAL_DEVICES, "seen_simulated": SEEN_SIMULATED, "unseen": UNSEEN,
}

META_FILE = "meta.csv"
SETUP_DIR = "evaluation_setup"
FOLD_FILES: dict[str, str] = {
    "train": f"{SETUP_DIR}/fold1_train.csv",
    "evaluate": f"{SETUP_DIR}/fold1_evaluate.csv",
    "test": f"{SETUP_DIR}/fold1_test.csv",
}
# Written by `asc data synth`; its presence makes every report say the data is synthetic.
SYNTHETIC_MARKER = "SYNTHETIC.json"

# (train, evaluate) rows of the published development-set versions.
KNOWN_VERSIONS: dict[tuple[int, int], str] = {(13962, 2968): "v2", (13965, 2970): "v1"}

_SCENE_INDEX = {s: i for i, s in enumerate(SCENES)}
_DEVICE_INDEX = {d: i for i, d in enumerate(DEVICES)}


TITLE = "TAU Urban Acoustic Scenes 2020 Mobile"
TauDataset = AudioDataset  # the name of earlier versions


def describe_tau2020(*, root: str = "", synthetic: bool = False, version: str = "unknown",
                     title: str = TITLE, name: str = "tau2020", duration: float = 10.0) -> DatasetDescription:
    """The description of a TAU Urban Acoustic Scenes Mobile folder (2020; 2022 with its own title)."""
    return DatasetDescription(name=name, title=title, classes=SCENES, devices=DEVICES,
                              device_groups=dict(DEVICE_GROUPS), duration=duration, sample_rate=44100,
                              channels=1,
                              splits=("train", "evaluate", "test"), synthetic=synthetic, root=root,
                              version=version)


def parse_clip_name(filename: str) -> dict[str, str] | None:
    """Fields of a TAU-style name "audio/scene-city-location-segment-device.wav", or None if not one."""
    parts = PurePosixPath(filename).stem.split("-")
    if len(parts) != 5 or parts[0] not in _SCENE_INDEX or parts[4] not in _DEVICE_INDEX:
        return None
    scene, city, loc, segment, device = parts
    if not (city and loc and segment):
        return None
    return {"scene": scene, "city": city, "location": f"{city}-{loc}", "segment": segment, "device": device}


# ---------------------------------------------------------------- CSV reading


@dataclass(frozen=True)
class _Row:
    line: int
    values: dict[str, str]


def _read_table(path: Path, columns: tuple[str, ...], required: tuple[str, ...]) -> list[_Row]:
    """Rows of a tab-separated file as dicts; header optional (then `columns` in order)."""
    text = read_metadata_text(path)
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise DataError(f"{path}: empty file; expected a header line {chr(9).join(columns)!r} and rows")
    first_no, first = lines[0]
    head = [h.strip() for h in first.split("\t")]
    if head[0] == "filename":
        unknown = [h for h in head if h not in columns]
        if unknown or len(set(head)) != len(head):
            raise DataError(f"{path}:{first_no}: unexpected header {first!r}; expected the columns "
                            f"{', '.join(columns)} separated by tabs")
        header, body = head, lines[1:]
    elif head[0].lower().endswith((".wav", ".flac")):
        header, body = list(columns[: len(head)]), lines
    else:
        hint = " (the files are tab-separated, not comma-separated)" if "," in first else ""
        raise DataError(f"{path}:{first_no}: expected a header line starting with 'filename'{hint}")
    lacking = [c for c in required if c not in header]
    if lacking:
        raise DataError(f"{path}:{first_no}: missing column(s) {', '.join(lacking)}")
    rows = []
    for n, line in body:
        values = [v.strip() for v in line.split("\t")]
        if len(values) != len(header) or not values[0]:
            raise DataError(f"{path}:{n}: malformed row {line[:120]!r}: expected {len(header)} "
                            f"tab-separated field(s) ({', '.join(header)}), got {len(values)}")
        rows.append(_Row(n, dict(zip(header, values))))
    return rows


def _check_filename(path: Path, row: _Row) -> str:
    name = row.values["filename"].replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{path}:{row.line}: file name {name!r} points outside the dataset folder")
    return name


def _check_scene(path: Path, row: _Row, scene: str) -> str:
    if scene not in _SCENE_INDEX:
        raise DataError(f"{path}:{row.line}: unknown scene {scene!r}; expected one of {', '.join(SCENES)}")
    return scene


def _check_device(path: Path, row: _Row, device: str) -> str:
    if device not in _DEVICE_INDEX:
        raise DataError(f"{path}:{row.line}: unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    return device


def _read_meta(path: Path, parse: Callable[[str], dict | None] = parse_clip_name
               ) -> dict[str, tuple[int, dict[str, str | None]]]:
    """filename -> (line, fields) from meta.csv, fields checked against each other and the name."""
    rows = _read_table(path, ("filename", "scene_label", "identifier", "source_label"), ("filename",))
    meta: dict[str, tuple[int, dict[str, str | None]]] = {}
    for row in rows:
        name = _check_filename(path, row)
        if name in meta:
            raise DataError(f"{path}:{row.line}: duplicate row for {name} (first at line {meta[name][0]})")
        parsed = parse(name)
        fields: dict[str, str | None] = dict(parsed) if parsed else dict.fromkeys(
            ("scene", "city", "location", "segment", "device"))
        scene = row.values.get("scene_label")
        if scene:
            fields["scene"] = _check_scene(path, row, scene)
        ident = row.values.get("identifier")
        if ident:
            city, sep, loc = ident.partition("-")
            if not (sep and city and loc):
                raise DataError(f"{path}:{row.line}: malformed identifier {ident!r}; expected city-location")
            fields["location"], fields["city"] = ident, city
        device = row.values.get("source_label")
        if device:
            fields["device"] = _check_device(path, row, device)
        if parsed:
            for key in ("scene", "location", "device"):
                if fields[key] != parsed[key]:
                    raise DataError(f"{path}:{row.line}: {key} {fields[key]!r} contradicts the file name "
                                    f"{name} ({parsed[key]!r})")
        meta[name] = (row.line, fields)
    return meta


def _read_fold(path: Path, split: str) -> list[tuple[_Row, str]]:
    required = ("filename",) if split in ("test", "subset") else ("filename", "scene_label")
    rows = _read_table(path, ("filename", "scene_label"), required)
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        name = _check_filename(path, row)
        if name in seen:
            raise DataError(f"{path}:{row.line}: duplicate row for {name} (first at line {seen[name]})")
        seen[name] = row.line
        scene = row.values.get("scene_label")
        if scene:
            _check_scene(path, row, scene)
        out.append((row, name))
    return out


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class TauLayout:
    """What tells the TAU Mobile sets apart: the clip name, the clip length, the known versions."""

    name: str
    title: str
    parse: Callable[[str], dict | None]
    duration: float
    versions: dict[tuple[int, int], str]


TAU2020 = TauLayout("tau2020", TITLE, parse_clip_name, 10.0, KNOWN_VERSIONS)


def _detect_version(splits: dict[str, list[str]], synthetic: bool,
                    versions: dict[tuple[int, int], str] = KNOWN_VERSIONS) -> str:
    if synthetic:
        return "synthetic"
    n_train, n_eval = len(splits.get("train", [])), len(splits.get("evaluate", []))
    if (n_train, n_eval) in versions:
        return versions[(n_train, n_eval)]
    if not n_train and not n_eval and splits.get("test"):
        return "eval"
    return "unknown"


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link that loops: not a usable file, and not a reason to give up the folder
        return False


def _existing(root: Path, names: list[str]) -> set[str]:
    """Which of `names` exist as files, listing each folder once (fast on 23k files)."""
    listing: dict[str, set[str] | None] = {}
    found = set()
    for name in names:
        folder, _, base = name.rpartition("/")
        if folder not in listing:
            try:
                with os.scandir(root / folder if folder else root) as it:
                    listing[folder] = {e.name for e in it if _is_file(e)}
            except OSError:
                listing[folder] = None
        entries = listing[folder]
        if entries is not None and base in entries:
            found.add(name)
    return found


def load_tau2020(root: str | os.PathLike, *, allow_missing: bool = False,
                 check_audio: bool = True) -> AudioDataset:
    """Read a TAU 2020 Mobile folder (see `load_tau_layout`)."""
    return load_tau_layout(root, TAU2020, allow_missing=allow_missing, check_audio=check_audio)


def load_tau_layout(root: str | os.PathLike, layout: TauLayout, *, allow_missing: bool = False,
                    check_audio: bool = True, train_subset: str | os.PathLike | None = None) -> AudioDataset:
    """Read a TAU Mobile folder (2020 or 2022 layout) into an AudioDataset.

    Splits: fold1_train -> train; fold1_evaluate -> evaluate (fold1_test repeats it in the development
    set); in fold1_test only -> test; in meta.csv but no fold -> unused. Without meta.csv, labels come
    from the file names; anonymous names (the evaluation set) load with unknown labels.
    Missing audio raises a DataError unless `allow_missing` (then they are dropped and listed in
    `.missing`); `check_audio=False` skips the check for metadata-only use. `train_subset` names a
    file of training clips (the DCASE 2024 `split5.csv` ... `split100.csv`): the other training clips
    become unused.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder; build one with `asc data synth --out {root}` "
                        f"or fetch the real set with `asc data download --to {root}`")
    meta_path = root / META_FILE
    meta = _read_meta(meta_path, layout.parse) if meta_path.is_file() else None
    folds = {split: root / rel for split, rel in FOLD_FILES.items() if (root / rel).is_file()}
    if not folds:
        raise DataError(f"{root}: not a {layout.title} folder: no {SETUP_DIR}/fold1_train.csv, "
                        f"fold1_evaluate.csv or fold1_test.csv")

    repeats = 0
    split_of: dict[str, str] = {}
    fields_of: dict[str, dict[str, str | None]] = {}
    order: dict[str, list[str]] = {s: [] for s in SPLITS}
    where: dict[str, str] = {}
    for split in ("train", "evaluate", "test"):
        if split not in folds:
            continue
        path = folds[split]
        for row, name in _read_fold(path, split):
            if meta is not None:
                if name not in meta:
                    raise DataError(f"{path}:{row.line}: {name} is not listed in {meta_path}")
                fields = meta[name][1]
            else:
                fields = fields_of.get(name) or layout.parse(name) or dict.fromkeys(
                    ("scene", "city", "location", "segment", "device"))
            scene = row.values.get("scene_label")
            if scene and fields["scene"] is not None and scene != fields["scene"]:
                src = f"{meta_path}:{meta[name][0]}" if meta is not None else "its file name"
                raise DataError(f"{path}:{row.line}: {name} is labelled {scene!r} here but "
                                f"{fields['scene']!r} in {src}")
            if scene and fields["scene"] is None:
                fields = {**fields, "scene": scene}
            previous = split_of.get(name)
            if previous is not None:
                if split == "test" and previous == "evaluate":
                    repeats += 1
                    continue  # the development set repeats evaluate as test
                raise DataError(f"{path}:{row.line}: {name} is also in {where[name]} ({previous}); "
                                f"a clip belongs to one split")
            split_of[name], fields_of[name], where[name] = split, fields, f"{path}:{row.line}"
            order[split].append(name)
    if meta is not None:
        for name, (_, fields) in meta.items():
            if name not in split_of:
                split_of[name], fields_of[name] = "unused", fields
                order["unused"].append(name)

    if train_subset is not None:
        _apply_train_subset(Path(train_subset), split_of, order)

    names = [n for s in SPLITS for n in order[s]]
    missing: list[str] = []
    if check_audio and names:
        present = _existing(root, names)
        missing = [n for n in names if n not in present]
        if missing and not allow_missing:
            from asc.data.audio import file_problem

            first = f"{missing[0]}: {file_problem(root / missing[0]) or 'missing'}"
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(f"{root}: {len(missing)} of {len(names)} audio files listed in the metadata "
                            f"cannot be opened ({first}{more}); complete the download or restore them "
                            "(`asc extract --skip-bad` leaves them out)")
        if missing:
            log.warning("%s: %d of %d audio files are missing and were dropped (first: %s)",
                        root, len(missing), len(names), missing[0])
    dropped = set(missing)
    clips = [Clip(filename=n, split=split_of[n], **fields_of[n]) for n in names if n not in dropped]

    marker = root / SYNTHETIC_MARKER
    synthetic = marker.is_file()
    info = None
    if synthetic:
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    version = _detect_version(order, synthetic, layout.versions)
    if train_subset is not None:
        version = f"{version}, training subset {Path(train_subset).name}"
    duration = layout.duration
    if synthetic and info:  # a synthetic set may be built with clips of another length (--duration)
        stated = info.get("clip_s") or info.get("duration_s")
        if isinstance(stated, (int, float)) and not isinstance(stated, bool) and stated > 0:
            duration = float(stated)
    description = describe_tau2020(root=str(root), synthetic=synthetic, version=version, title=layout.title,
                                   name=layout.name, duration=duration)
    return AudioDataset(root=root, clips=clips, description=description, missing=missing,
                        synthetic_info=info, test_repeats_evaluate=repeats)


def _apply_train_subset(path: Path, split_of: dict[str, str], order: dict[str, list[str]]) -> None:
    """Keep only the training clips `path` lists; the rest of train becomes unused."""
    if not path.is_file():
        raise DataError(f"{path}: no such training-subset file (e.g. split25.csv of the DCASE 2024 task)")
    keep: set[str] = set()
    for row, name in _read_fold(path, "subset"):
        if split_of.get(name) != "train":
            where = split_of.get(name)
            found = f" (it is in {where})" if where else ""
            raise DataError(f"{path}:{row.line}: {name} is not a training clip of the dataset{found}; a "
                            "training subset lists train clips only")
        keep.add(name)
    dropped = [n for n in order["train"] if n not in keep]
    order["train"] = [n for n in order["train"] if n in keep]
    order["unused"].extend(dropped)
    for name in dropped:
        split_of[name] = "unused"
