"""The feature cache: where it lives, its manifest, and what of it can be trusted.

Layout of `CACHE/<config-stem>-<hash12>/`:

    shard-00000-<digest>.npy    (clips, C, mels, frames) in the storage dtype; memory-mappable
    shard-00000-<digest>.json   sidecar: the clips (id, file, size, mtime) the shard holds, skipped and
                                zero-padded rows, the file's size and a checksum of its data bytes
    manifest.json               written last: per-clip rows (id, file, labels, shard, offset, shape),
                                per-shard size and checksum, the resolved feature config, its hash, dtype,
                                library versions, source sizes/mtimes, the dataset root, `skipped`,
                                `padded`, and the `asc extract` command that rebuilds the cache

Nothing is trusted for its name alone: readers check each shard's size, shape and dtype against the
manifest when they open it (a stat and a header read), `asc extract` does the same before it skips a
shard, and `asc extract --verify` and `--merge` also re-hash the data. A shard that fails is named,
with the command that rebuilds it. Writing the cache is `asc.features.extract`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import DataError
from asc.features import shards
from asc.features.logmel import bind_duration, feature_hash, load_feature_config, resolve_feature_config
from asc.features.shards import SHARD_PREFIX, BadShard
from asc.fileio import atomic_write_json

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SOURCE_FILE = "source.json"
PARTS_DIR = "parts"
_REQUIRED = {"clips": list, "shards": list, "shape": list, "dtype": str, "feature_config": dict,
             "dataset": dict, "config_hash": str}


# ----------------------------------------------------------------------------------------- locating


def cache_path(cache_root: str | os.PathLike, feature_config: str | os.PathLike | Mapping,
               name: str | None = None, *, duration: float | None = None) -> Path:
    """The folder holding the features of `feature_config` (a YAML path or a config mapping):
    `cache_root/<stem>-<hash12>` of the config with its clip length bound (stem = the YAML's file
    stem, or `name`, default "features"). A config whose duration is the dataset's (null), with no
    `duration` given, is looked up among the caches extracted from it (`find_cache`)."""
    if isinstance(feature_config, Mapping):
        cfg = resolve_feature_config(feature_config, name or "feature config")
        stem = name or "features"
    else:
        path = Path(feature_config)
        cfg = load_feature_config(path)
        stem = name or path.stem
    if cfg["duration"] is None and duration is not None:
        cfg = bind_duration(cfg, duration)
    if cfg["duration"] is None:
        return find_cache(cache_root, cfg, stem)
    return Path(cache_root) / f"{stem}-{feature_hash(cfg)}"


def check_source(cache_dir: Path, dataset: Mapping) -> None:
    """Refuse a folder that holds another dataset's features: one cache folder never mixes two datasets
    (the same feature config on two datasets would otherwise replace one with the other)."""
    before = (_read_source(cache_dir) or {}).get("dataset") or {}
    if not before and (cache_dir / MANIFEST).is_file():
        with contextlib.suppress(DataError):
            before = dict(read_manifest(cache_dir)["dataset"])
            before.setdefault("name", (before.get("description") or {}).get("name", "tau2020"))
    if before.get("root") and (str(before.get("root")), before.get("name")) != \
            (str(dataset.get("root")), dataset.get("name")):
        raise DataError(f"{cache_dir}: holds the features of another dataset ({before.get('name')} at "
                        f"{before.get('root')}); extract {dataset.get('root')} into another --out, or remove "
                        "this folder first")


def write_source(cache_dir: Path, requested: Mapping, dataset: Mapping) -> None:
    """Record what a cache is extracted from, before its shards: the config as written (how a config
    that takes the clip length from the data finds its cache, also for --merge) and the dataset."""
    from asc import fileio

    entry = {"requested_hash": feature_hash(requested), "duration": requested.get("duration"),
             "dataset": dict(dataset)}
    if _read_source(cache_dir) != entry:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_json(cache_dir / SOURCE_FILE, entry)


def _read_source(cache_dir: Path) -> dict | None:
    try:
        data = json.loads((cache_dir / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_source(folder: Path) -> dict | None:
    """What source.json would say of a finished cache written without one: its manifest's config with
    the clip length left to the data, and its dataset."""
    if not (folder / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(folder)
    except DataError:
        return None
    requested = {**manifest["feature_config"], "duration": None}
    dataset = manifest["dataset"]
    return {"requested_hash": feature_hash(requested), "dataset": {
        "name": (dataset.get("description") or {}).get("name", "tau2020"), "root": dataset.get("root")}}


def find_cache(cache_root: str | os.PathLike, cfg: Mapping, stem: str) -> Path:
    """The one cache under `cache_root` extracted with the config `cfg` as written (clip length from
    the dataset); DataError naming the choices when there are none or several (several datasets)."""
    root = Path(cache_root)
    want = feature_hash(cfg)
    found = []
    for folder in sorted(root.glob(f"{stem}-*")) if root.is_dir() else []:
        source = _read_source(folder)
        if source is None:
            source = _legacy_source(folder)  # a cache written before source.json existed
        if source is not None and source.get("requested_hash") == want and (folder / MANIFEST).is_file():
            found.append((folder, source))
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise DataError(f"{root}: no feature cache of {stem} (clip length: the dataset's); run `asc extract "
                        f"--data DATA --features {stem}.yaml --out {root}` first")
    choices = "; ".join(f"{f} ({(s.get('dataset') or {}).get('name')} at "
                        f"{(s.get('dataset') or {}).get('root')})" for f, s in found)
    raise DataError(f"{root}: {len(found)} caches of {stem}, of different datasets: {choices}; choose one "
                    "with --set data.cache_dir=DIR, or keep each dataset's caches under its own root")


def repair_hint(manifest: Any = None) -> str:
    """What to run to rebuild a damaged cache: the `asc extract` command recorded in its manifest.

    A plain re-run rebuilds every shard that is missing or fails the cheap checks, reusing good rows."""
    command = manifest.get("command") if isinstance(manifest, Mapping) else None
    if isinstance(command, str) and command:
        return f"re-run `{command}` to rebuild it"
    return "re-run `asc extract` with the --data, --features and --out that built it to rebuild it"


# ----------------------------------------------------------------------------------------- manifest


def read_manifest(cache_dir: str | os.PathLike) -> dict:
    """The manifest of a finished cache, checked for internal consistency (each shard listed once,
    each clip once, every row inside a listed shard); DataError saying what to run otherwise."""
    path = Path(cache_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no feature manifest; run `asc extract` for this feature config "
                        "(or finish an interrupted or multi-part run)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); {repair_hint()}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: corrupt manifest ({exc.msg}); {repair_hint()}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a feature manifest (a JSON {type(manifest).__name__}); {repair_hint()}")
    if manifest.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: manifest format {manifest.get('format')!r}, this version reads "
                        f"{FORMAT_VERSION}; {repair_hint(manifest)} (good rows are reused)")
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path}: {problem}; the manifest is damaged, {repair_hint(manifest)}")
    return manifest


def _manifest_problem(manifest: Mapping) -> str | None:
    """The first internal inconsistency of a manifest, or None."""
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            return f"no {key!r} ({kind.__name__})"
    counts: dict[str, int] = {}
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not isinstance(entry.get("count"), int) or entry["count"] < 1:
            return f"shards[{i}] is not a shard entry (file, count)"
        if entry["file"] in counts:
            return f"shard {entry['file']} is listed twice"
        counts[entry["file"]] = entry["count"]
    seen_ids: set[str] = set()
    seen_rows: set[tuple[str, int]] = set()
    for i, row in enumerate(manifest["clips"]):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) \
                or not isinstance(row.get("offset"), int):
            return f"clips[{i}] is not a clip row (id, shard, offset)"
        clip_id, shard, offset = row["id"], row.get("shard"), row["offset"]
        if shard not in counts:
            return f"clip {clip_id} is in shard {shard}, which the manifest does not list"
        if not 0 <= offset < counts[shard]:
            return f"clip {clip_id} is row {offset} of {shard}, which has {counts[shard]} rows"
        if clip_id in seen_ids:
            return f"clip {clip_id} is listed twice"
        if (shard, offset) in seen_rows:
            return f"two clips are row {offset} of {shard}"
        seen_ids.add(clip_id)
        seen_rows.add((shard, offset))
    return None


def shard_entries(manifest: Mapping) -> dict[str, dict]:
    """file name -> the manifest's entry for that shard (count, bytes, checksum)."""
    return {s["file"]: s for s in manifest["shards"]}


def require_shard(cache_dir: str | os.PathLike, manifest: Mapping, name: str) -> Path:
    """The path of shard `name` of a read manifest after the cheap checks (header, shape, dtype and
    size against the manifest); DataError naming the file and the command that rebuilds it,
    instead of numpy's `mmap length is greater than file size` later."""
    npy = Path(cache_dir) / name
    entry = shard_entries(manifest)[name]
    try:
        shards.check_npy(npy, count=entry["count"], shape=manifest["shape"], dtype=manifest["dtype"],
                         size=entry.get("bytes"))
    except BadShard as bad:
        raise DataError(f"{bad}; the feature cache is damaged, {repair_hint(manifest)}") from None
    return npy


def open_shard(cache_dir: str | os.PathLike, manifest: Mapping, name: str) -> np.ndarray:
    """Shard `name` as a read-only memory map, once `require_shard` has checked it."""
    return shards.open_rows(require_shard(cache_dir, manifest, name))


# ------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    cache_dir: Path
    shards: int = 0
    clips: int = 0
    bad: list[BadShard] = field(default_factory=list)


def check_manifest_shard(cache_dir: Path, manifest: Mapping, entry: Mapping, *, deep: bool) -> None:
    """Shard `entry` of `manifest` against its sidecar and file (re-hashed when `deep`), and the
    manifest's rows against the clips the sidecar says the shard holds; BadShard if not."""
    npy = cache_dir / entry["file"]
    meta = shards.check(npy, shape=manifest["shape"], dtype=manifest["dtype"], count=entry["count"],
                        config_hash=manifest["config_hash"], size=entry.get("bytes"),
                        digest=entry.get("checksum"), deep=deep)
    held = [c.get("id") for c in meta["clips"]]
    for row in manifest["clips"]:
        if row["shard"] == entry["file"] and held[row["offset"]] != row["id"]:
            raise BadShard(npy.with_suffix(".json"), f"row {row['offset']} holds {held[row['offset']]}, "
                                                     f"the manifest says {row['id']}")


def verify_cache(cache_dir: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> VerifyReport:
    """Check every shard of a finished cache in full: sidecar, header, size and a re-hash of the data
    against the checksum written with it. Bad shards are collected (and logged), not raised."""
    from asc.progress import progress

    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    report = VerifyReport(cache_dir, shards=len(manifest["shards"]), clips=len(manifest["clips"]))
    for entry in progress(manifest["shards"], desc="verify", unit="shard"):
        try:
            check_manifest_shard(cache_dir, manifest, entry, deep=True)
        except BadShard as bad:
            report.bad.append(bad)
            if log is not None:
                log(f"bad: {bad}")
    return report


# ------------------------------------------------------------------------------ finishing the cache


def finalize(cache_dir: str | os.PathLike, draft: Mapping, *, deep: bool = False) -> list[BadShard]:
    """Write the manifest if every shard of `draft` is present and passes the checks (re-hashed when
    `deep`); otherwise write nothing and return what is missing or bad.

    The manifest is rewritten only when its content (apart from `created`) changes; afterwards shard
    files no longer referenced, stale temp files and part notes are removed.
    """
    cache_dir = Path(cache_dir)
    sources = draft["sources"]
    rows_of: dict[str, list[list]] = {}
    for row in draft["clips"]:
        src = sources.get(row["file"], {})
        rows_of.setdefault(row["shard"], []).append([row["id"], row["file"], src.get("size"),
                                                     src.get("mtime_ns")])
    problems: list[BadShard] = []
    entries, skipped, padded = [], [], []
    for entry in draft["shards"]:
        npy = cache_dir / entry["file"]
        try:
            meta = shards.check(npy, shape=draft["shape"], dtype=draft["dtype"], count=entry["count"],
                                config_hash=draft["config_hash"], clips=rows_of.get(entry["file"], []),
                                deep=deep)
        except BadShard as bad:
            problems.append(bad)
            continue
        entries.append({**entry, "bytes": meta.get("bytes"), "checksum": meta.get("checksum")})
        skipped.extend(meta.get("skipped", []))
        padded.extend(meta.get("padded", []))
    if problems:
        return problems
    bad = {s["id"] for s in skipped}
    manifest = dict(draft)
    manifest["shards"] = entries
    manifest["clips"] = [r for r in draft["clips"] if r["id"] not in bad]
    manifest["num_clips"] = len(manifest["clips"])
    manifest["skipped"] = skipped
    manifest["padded"] = padded
    path = cache_dir / MANIFEST
    old = None
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(old, dict) or {k: v for k, v in old.items() if k != "created"} != manifest:
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(path, manifest)
    _collect_garbage(cache_dir, {s["file"] for s in draft["shards"]})
    return []


def _collect_garbage(cache_dir: Path, keep: set[str]) -> None:
    keep_stems = {Path(f).stem for f in keep}
    for path in cache_dir.iterdir():
        name = path.name
        stale_shard = name.startswith(SHARD_PREFIX) and path.suffix in (".npy", ".json") \
            and path.stem not in keep_stems
        stale_tmp = name.startswith(f".{SHARD_PREFIX}") or (name.startswith(".") and name.endswith(".tmp"))
        if (stale_shard or stale_tmp) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    parts = cache_dir / PARTS_DIR
    if parts.is_dir():
        for path in parts.glob("part-*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            parts.rmdir()


def _read_part(path: Path) -> dict:
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: corrupt part note ({exc}); re-run that part's `asc extract --num-shards "
                        "K --shard-index i` into this folder, then `asc extract --merge` again") from None
    draft = note.get("draft") if isinstance(note, dict) else None
    if not isinstance(draft, dict) or not isinstance(note.get("num_parts"), int) \
            or not isinstance(note.get("part"), int) or _manifest_problem({**draft, "format": 0}):
        raise DataError(f"{path}: not a part note of this version; re-run that part's `asc extract "
                        "--num-shards K --shard-index i` into this folder, then `asc extract --merge` again")
    return note


def merge_parts(cache_dir: str | os.PathLike) -> dict:
    """Write the manifest of a multi-part extraction from its part notes, after re-hashing every
    shard; DataError naming what is missing or bad and which part's run rebuilds it."""
    cache_dir = Path(cache_dir)
    if (cache_dir / MANIFEST).is_file() and not (cache_dir / PARTS_DIR).is_dir():
        report = verify_cache(cache_dir)
        if report.bad:
            manifest = read_manifest(cache_dir)
            raise DataError(f"{_count(report.bad, report.shards)}{report.bad[0]}; "
                            f"{repair_hint(manifest)}")
        return read_manifest(cache_dir)
    notes = sorted((cache_dir / PARTS_DIR).glob("part-*-of-*.json"))
    if not notes:
        raise DataError(f"{cache_dir}: no part notes in {PARTS_DIR}/; run `asc extract --num-shards K "
                        "--shard-index i` for each part (into this folder, or copy the parts here)")
    parts = [_read_part(p) for p in notes]
    k = parts[0]["num_parts"]
    layouts = {json.dumps([s["file"] for s in p["draft"]["shards"]]) for p in parts}
    if len(layouts) > 1 or any(p["num_parts"] != k for p in parts):
        raise DataError(f"{cache_dir}: the parts were planned from different clip lists or part counts; "
                        "re-run the parts with the same dataset and --num-shards")
    absent = sorted(set(range(k)) - {p["part"] for p in parts})
    draft = parts[0]["draft"]
    problems = finalize(cache_dir, draft, deep=True)
    damaged = [b for b in problems if b.reason != shards.MISSING]
    if damaged:
        order = {s["file"]: i for i, s in enumerate(draft["shards"])}
        first = damaged[0]
        part = order.get(first.path.with_suffix(".npy").name, 0) % k
        command = next((p.get("command") for p in parts if p["part"] == part), None)
        rerun = f"`{command}`" if command else f"`asc extract ... --num-shards {k} --shard-index {part}`"
        raise DataError(f"{_count(damaged, len(draft['shards']))}{first}; re-run part {part} ({rerun}) "
                        "into this folder, then `asc extract --merge` again")
    if problems:
        hint = f"parts not yet run or copied in: {', '.join(map(str, absent))}; " if absent else ""
        raise DataError(f"{cache_dir}: {len(problems)} shards missing (first: {problems[0].path.name}); "
                        f"{hint}run them, then `asc extract --merge` again")
    return read_manifest(cache_dir)


def _count(bad: list, total: int) -> str:
    return f"{len(bad)} of {total} shards are bad, first: " if len(bad) > 1 else ""
