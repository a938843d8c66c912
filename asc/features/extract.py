"""The run of `asc extract`: plan the shards of a clip list, compute what is missing, write it.

Clips are sorted by id and cut into shards of `shard_size`, so the layout is a function of the clip
list alone. A shard's digest covers its clips' ids, sizes and mtimes (and the config hash, dtype and
short-clip policy), so a re-run skips a shard whose files are there and pass the cheap checks (sidecar,
header, size; `verify=True` also re-hashes the data), rebuilds one that fails them, and a killed or
failed run (a full disk) resumes at the first missing shard; machines given disjoint shard indices
(`num_shards`, `shard_index`) produce the same files a single run would. Shards are written to a
temp name and renamed; the sidecar lands before its array, the manifest (`cache.finalize`) after
every shard. Rows of a rebuilt shard whose audio did not change are copied from any good shard in
the folder instead of recomputed.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import AscError, DataError
from asc.features import shards
from asc.features.cache import FORMAT_VERSION, MANIFEST, PARTS_DIR, finalize
from asc.features.logmel import feature_hash, feature_shape
from asc.features.shards import SHARD_PREFIX, BadShard
from asc.fileio import atomic_write_json

# ------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class SourceClip:
    """One audio file to extract, with its labels and the stamp (size, mtime) that keys the cache."""

    id: str
    file: str
    path: str
    scene: str | None = None
    device: str | None = None
    city: str | None = None
    location: str | None = None
    split: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    content: str | None = None  # blake2b of the file's bytes, with --rehash only (not part of the stamp)

    @property
    def stamp(self) -> tuple:
        return (self.id, self.file, self.size, self.mtime_ns)


def content_hash(path: str | os.PathLike) -> str | None:
    """blake2b of a file's bytes (None when it cannot be read): what --rehash compares, for audio
    replaced by other content of the same size and modification time."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def with_content(clips: Sequence[SourceClip]) -> list[SourceClip]:
    """The clips with their content hashes (reads every file)."""
    import dataclasses

    from asc.progress import progress

    return [dataclasses.replace(c, content=content_hash(c.path))
            for c in progress(clips, desc="rehash", unit="file", total=len(clips))]


def stat_source(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """(size, mtime_ns) of a file, or (None, None) when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return int(st.st_size), int(st.st_mtime_ns)


def clips_from_dataset(dataset: Any, splits: Sequence[str] | None = None) -> list[SourceClip]:
    """SourceClips of a TAU-format dataset (asc.data.tau2020), optionally only some splits,
    sorted by id."""
    wanted = set(splits) if splits else None
    out: dict[str, SourceClip] = {}
    for clip in dataset.clips:
        if wanted is not None and clip.split not in wanted:
            continue
        path = str(dataset.path(clip))
        clip_id = clip.id
        if clip_id in out:
            raise DataError(f"{dataset.root}: two clips named {clip_id!r} ({out[clip_id].file}, "
                            f"{clip.filename}); clip ids must be unique")
        size, mtime = stat_source(path)
        out[clip_id] = SourceClip(id=clip_id, file=str(clip.filename), path=path, scene=clip.scene,
                                  device=clip.device, city=clip.city, location=clip.location,
                                  split=clip.split, size=size, mtime_ns=mtime)
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------------------------- plan


@dataclass
class Shard:
    index: int
    name: str
    clips: list[SourceClip]

    def npy(self, cache_dir: Path) -> Path:
        return cache_dir / f"{self.name}.npy"

    def sidecar(self, cache_dir: Path) -> Path:
        return cache_dir / f"{self.name}.json"


def plan_shards(clips: Sequence[SourceClip], cfg_hash: str, dtype: str, shape: Sequence[int],
                shard_size: int, pad_short: bool = False) -> list[Shard]:
    """Cut the (sorted) clips into shards named by index and a digest of what they hold. The
    short-clip policy is part of the digest: a shard built with --pad-short is not one without."""
    ordered = sorted(clips, key=lambda c: c.id)
    shards_ = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        part = ordered[start:start + shard_size]
        key = json.dumps([FORMAT_VERSION, cfg_hash, dtype, list(shape), bool(pad_short),
                          [list(c.stamp) for c in part]])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        shards_.append(Shard(index, f"{SHARD_PREFIX}{index:05d}-{digest}", part))
    return shards_


def library_versions() -> dict:
    """Versions of what computes the features (from package metadata: no heavy imports)."""
    import platform
    from importlib import metadata

    from asc import __version__

    out = {"asc": __version__, "python": platform.python_version()}
    for dist in ("numpy", "torch", "torchaudio", "soundfile", "soxr"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def draft_manifest(cfg: Mapping, name: str, shards_: Sequence[Shard], *, dataset_root: str,
                   synthetic: bool, pad_short: bool = False, command: str | None = None,
                   description: Mapping | None = None) -> dict:
    """Everything of the manifest that the plan decides (all clips, before skips are known)."""
    shape = list(feature_shape(cfg))
    rows, sources = [], {}
    for shard in shards_:
        for offset, c in enumerate(shard.clips):
            rows.append({"id": c.id, "file": c.file, "scene": c.scene, "device": c.device, "city": c.city,
                         "location": c.location, "split": c.split, "shard": f"{shard.name}.npy",
                         "offset": offset, "shape": shape})
            sources[c.file] = {"size": c.size, "mtime_ns": c.mtime_ns}
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "config_hash": feature_hash(cfg),
        "feature_config": copy.deepcopy(dict(cfg)),
        "dtype": cfg["storage"]["dtype"],
        "shard_size": cfg["storage"]["shard_size"],
        "shape": shape,
        "pad_short": bool(pad_short),
        "command": command,
        "versions": library_versions(),
        "dataset": {"root": str(dataset_root), "synthetic": bool(synthetic),
                    **({"name": description.get("name"), "description": dict(description)}
                       if description is not None else {})},
        "shards": [{"file": f"{s.name}.npy", "count": len(s.clips)} for s in shards_],
        "clips": rows,
        "sources": sources,
    }


# ------------------------------------------------------------------------------------ shard writing


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ShardWriter:
    """Fills one shard in a temp .npy file (created by numpy with its header, rows written in place,
    unwritten rows read as zeros); `commit` hashes it, writes the sidecar and renames it into place.
    On any failure `abort` leaves no temp file behind."""

    def __init__(self, cache_dir: Path, shard: Shard, shape: tuple, dtype: str, cfg_hash: str):
        self.cache_dir, self.shard, self.cfg_hash = cache_dir, shard, cfg_hash
        self.dtype, self.shape = dtype, tuple(shape)
        self.tmp = cache_dir / f".{shard.name}.{os.getpid()}.npy.tmp"
        self.fd = -1
        self.skipped: list[dict] = []
        self.padded: list[dict] = []
        try:
            self.data_offset = shards.create(self.tmp, len(shard.clips), self.shape, dtype)
            self.fd = os.open(self.tmp, os.O_RDWR)
        except BaseException:
            self.abort()
            raise

    @property
    def target(self) -> tuple[str, int]:
        """Where pool workers write rows: (temp file, offset of row 0)."""
        return str(self.tmp), self.data_offset

    def put(self, offset: int, feature: np.ndarray) -> None:
        shards.write_row(self.fd, self.data_offset, offset, np.asarray(feature, dtype=self.dtype))

    def skip(self, offset: int, reason: str) -> dict:
        c = self.shard.clips[offset]
        self.skipped.append({"id": c.id, "file": c.file, "reason": reason})
        return self.skipped[-1]

    def pad(self, offset: int, seconds: float) -> dict:
        c = self.shard.clips[offset]
        self.padded.append({"id": c.id, "file": c.file, "duration_s": round(float(seconds), 4)})
        return self.padded[-1]

    def commit(self) -> None:
        os.fsync(self.fd)  # also the rows that workers wrote through their own descriptors
        os.close(self.fd)
        self.fd = -1
        atomic_write_json(self.shard.sidecar(self.cache_dir), {
            "format": FORMAT_VERSION, "config_hash": self.cfg_hash, "dtype": self.dtype,
            "shape": list(self.shape), "count": len(self.shard.clips),
            "bytes": self.tmp.stat().st_size, "checksum": shards.checksum(self.tmp, self.data_offset),
            "clips": [{"id": c.id, "file": c.file, "size": c.size, "mtime_ns": c.mtime_ns,
                       **({"content": c.content} if c.content else {})} for c in self.shard.clips],
            "skipped": self.skipped,
            "padded": self.padded,
        })
        os.replace(self.tmp, self.shard.npy(self.cache_dir))
        _fsync_dir(self.cache_dir)

    def abort(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class _Trust:
    """Which shard files in the folder pass the checks (cheap, or re-hashed with `deep`), asked once
    per file: the skip decision and the reuse of rows must both rest on a checked shard."""

    def __init__(self, cache_dir: Path, cfg_hash: str, dtype: str, shape: Sequence[int], deep: bool):
        self.cache_dir, self.cfg_hash, self.dtype, self.shape = cache_dir, cfg_hash, dtype, shape
        self.deep = deep
        self._seen: dict[Path, dict | BadShard] = {}

    def check(self, npy: Path, clips: Sequence[Sequence] | None = None) -> dict:
        """The sidecar of a good shard; BadShard otherwise."""
        verdict = self._seen.get(npy)
        if verdict is None:
            try:
                verdict = shards.check(npy, shape=self.shape, dtype=self.dtype, config_hash=self.cfg_hash,
                                       deep=self.deep)
                if self.deep:
                    _require_finite_rows(npy, verdict)
            except BadShard as bad:
                verdict = bad
            self._seen[npy] = verdict
        if isinstance(verdict, BadShard):
            raise verdict
        if clips is not None:
            shards.require_clips(npy, verdict, clips)
        return verdict

    def reusable_rows(self, pad_short: bool) -> dict:
        """stamp -> (npy path, offset, padded entry or None, content hash or None) for every good row of
        every good shard in the folder (zero-padded rows only when short clips may be padded)."""
        index: dict[tuple, tuple[Path, int, dict | None]] = {}
        for sidecar in sorted(self.cache_dir.glob(f"{SHARD_PREFIX}*.json")):
            try:
                meta = self.check(sidecar.with_suffix(".npy"))
            except BadShard:
                continue
            bad = {s.get("id") for s in meta.get("skipped", [])}
            padded = {p.get("id"): p for p in meta.get("padded", [])}
            for offset, c in enumerate(meta["clips"]):
                if c.get("id") in bad or c.get("size") is None or (c.get("id") in padded and not pad_short):
                    continue
                index.setdefault((c["id"], c["file"], c["size"], c["mtime_ns"]),
                                 (sidecar.with_suffix(".npy"), offset, padded.get(c.get("id")),
                                  c.get("content")))
        return index


def _require_finite_rows(npy: Path, meta: Mapping, block: int = 64) -> None:
    """A shard whose checksum matches can still hold NaN/Inf features (written before features were
    checked): BadShard naming the first such clip, so that --verify rebuilds it."""
    rows = shards.open_rows(npy)
    try:
        for start in range(0, rows.shape[0], block):
            part = np.asarray(rows[start:start + block]).reshape(min(block, rows.shape[0] - start), -1)
            bad = np.flatnonzero(~np.isfinite(part).all(axis=1))
            if bad.size:
                clip = meta["clips"][start + int(bad[0])]
                raise BadShard(npy, f"row {start + int(bad[0])} ({clip.get('file')}) holds NaN/Inf features")
    finally:
        del rows


# --------------------------------------------------------------------------------------------- runs


@dataclass
class ExtractResult:
    cache_dir: Path
    to_extract: int
    cached: int
    skipped: list[dict] = field(default_factory=list)
    padded: list[dict] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    complete: bool = False
    missing_shards: int = 0


def write_error(exc: OSError, where: Path) -> AscError:
    """A failed write (full disk, quota, permissions) as one line naming the file and what to do;
    finished shards are complete files, so the same command resumes after the fix."""
    path = exc.filename or where
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"disk full ({exc.strerror})"
        fix = "free space or choose another --out"
    else:
        what = exc.strerror or str(exc)
        fix = "fix it or choose another --out"
    return AscError(f"{path}: {what} while writing features; {fix}, then re-run the same command "
                    "(finished shards are kept and it resumes)")


def extract(clips: Sequence[SourceClip], cfg: Mapping, cache_dir: str | os.PathLike, *, name: str,
            dataset_root: str, synthetic: bool = False, workers: int = 1, device: str = "cpu",
            skip_bad: bool = False, pad_short: bool = False, verify: bool = False, num_shards: int = 1,
            shard_index: int = 0, batch_size: int = 16, compute_in: str = "auto", command: str | None = None,
            description: Mapping | None = None, log: Callable[[str], None] = print) -> ExtractResult:
    """Bring `cache_dir` up to date with `clips` under the resolved feature config `cfg`.

    Only this part's shards (index % num_shards == shard_index) are written; a shard already there is
    kept only if it passes the checks (re-hashed with `verify`), else rebuilt. A clip shorter than the
    config's duration is an error (or skipped with `skip_bad`, or zero-padded and listed with
    `pad_short`). The manifest is written once every shard of the plan is present and good (by this
    run, an earlier one, or other parts); `command` is recorded in it as the way to rebuild the cache.
    A failed write (a full disk) raises AscError and leaves every finished shard in place.
    """
    cfg = copy.deepcopy(dict(cfg))
    if not 0 <= shard_index < num_shards:
        raise AscError(f"--shard-index {shard_index} must be in 0..{num_shards - 1}")
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return _extract(clips, cfg, cache_dir, name=name, dataset_root=dataset_root, synthetic=synthetic,
                        workers=workers, device=device, skip_bad=skip_bad, pad_short=pad_short, verify=verify,
                        num_shards=num_shards, shard_index=shard_index, batch_size=batch_size,
                        compute_in=compute_in, command=command, description=description, log=log)
    except OSError as exc:
        raise write_error(exc, cache_dir) from None


def _extract(clips: Sequence[SourceClip], cfg: dict, cache_dir: Path, *, name: str, dataset_root: str,
             synthetic: bool, workers: int, device: str, skip_bad: bool, pad_short: bool, verify: bool,
             num_shards: int, shard_index: int, batch_size: int, compute_in: str, command: str | None,
             description: Mapping | None, log: Callable[[str], None]) -> ExtractResult:
    from asc.features.compute import Computer
    from asc.progress import progress

    dtype, shard_size = cfg["storage"]["dtype"], cfg["storage"]["shard_size"]
    shape = feature_shape(cfg)
    cfg_hash = feature_hash(cfg)
    plan = plan_shards(clips, cfg_hash, dtype, shape, shard_size, pad_short)
    draft = draft_manifest(cfg, name, plan, dataset_root=dataset_root, synthetic=synthetic,
                           pad_short=pad_short, command=command, description=description)
    trust = _Trust(cache_dir, cfg_hash, dtype, shape, deep=verify)
    mine = [s for s in plan if s.index % num_shards == shard_index]
    todo, rebuilt = [], []
    rehash = any(c.content for c in clips)
    for s in mine:
        try:
            meta = trust.check(s.npy(cache_dir), [c.stamp for c in s.clips])
        except BadShard as bad:
            if bad.reason != shards.MISSING:
                log(f"{bad}; extracting it again")
                rebuilt.append(str(bad.path))
            todo.append(s)
            continue
        if rehash:
            recorded = [c.get("content") for c in meta.get("clips", [])]
            changed = [c.file for c, r in zip(s.clips, recorded) if r != c.content]
            if changed:
                log(f"{s.npy(cache_dir)}: {len(changed)} file(s) differ from what the shard was built from "
                    f"(first: {changed[0]}); extracting it again")
                rebuilt.append(str(s.npy(cache_dir)))
                todo.append(s)
    reuse = trust.reusable_rows(pad_short) if todo else {}
    if rehash:  # a row is reused only when its file's content is the one it was computed from
        contents = {c.stamp: c.content for c in clips}
        reuse = {k: v for k, v in reuse.items() if v[3] is not None and v[3] == contents.get(k)}
    reuse = {k: v[:3] for k, v in reuse.items()}
    jobs = [[(off, reuse.get(c.stamp)) for off, c in enumerate(s.clips)] for s in todo]
    paths = [s.clips[off].path for s, js in zip(todo, jobs) for off, src in js if src is None]
    total = sum(len(s.clips) for s in mine)
    part = f" (shards {shard_index} of {num_shards})" if num_shards > 1 else ""
    log(f"{len(paths)} to extract, {total - len(paths)} cached{part}")

    computer = Computer(cfg, workers, device, batch_size, compute_in, pad_short) if paths else None
    bar = progress(total=len(paths), desc="extract", unit="file")
    opened: dict[Path, np.ndarray] = {}
    skipped: list[dict] = []
    padded: list[dict] = []
    try:
        for shard, shard_jobs in zip(todo, jobs):
            try:
                writer = ShardWriter(cache_dir, shard, shape, dtype, cfg_hash)
            except OSError as exc:
                raise write_error(exc, shard.npy(cache_dir)) from None
            try:
                compute = []
                for offset, src in shard_jobs:
                    if src is None:
                        compute.append(offset)
                        continue
                    npy, row, was_padded = src
                    if npy not in opened:
                        opened[npy] = shards.open_rows(npy)
                    if not np.isfinite(opened[npy][row]).all():  # written before features were checked
                        compute.append(offset)
                        continue
                    writer.put(offset, opened[npy][row])
                    if was_padded is not None:  # a reused padded row stays listed as padded
                        writer.pad(offset, was_padded.get("duration_s", 0.0))
                if compute:
                    outcomes = computer.run([(shard.clips[o].path, o) for o in compute], writer.target)
                    for offset, outcome in zip(compute, outcomes):
                        bar.update(1)
                        if outcome.error is None:
                            if outcome.feature is not None:
                                writer.put(offset, outcome.feature)
                            if outcome.padded_s is not None:
                                padded.append(writer.pad(offset, outcome.padded_s))
                        elif skip_bad:
                            skipped.append(writer.skip(offset, outcome.error))
                        elif outcome.short:
                            raise DataError(f"{outcome.error}; re-download it, pass --pad-short to zero-pad "
                                            "short clips, or --skip-bad to leave it out")
                        else:
                            raise DataError(f"{outcome.error} (or pass --skip-bad to leave it out)")
                writer.commit()
            except OSError as exc:  # a full disk: this shard is dropped whole, the finished ones stay
                writer.abort()
                raise write_error(exc, shard.npy(cache_dir)) from None
            except BaseException:
                writer.abort()
                raise
    finally:
        bar.close()
        if computer is not None:
            computer.close()
        opened.clear()
    for item in skipped:
        log(f"skipped {item['file']}: {item['reason']}")
    for item in padded:
        log(f"padded {item['file']}: {item['duration_s']:g} s of audio zero-padded to {cfg['duration']:g} s")

    result = ExtractResult(cache_dir, len(paths), total - len(paths), skipped, padded, rebuilt)
    if num_shards > 1:
        part_command = f"{command} --num-shards {num_shards} --shard-index {shard_index}" if command else None
        atomic_write_json(cache_dir / PARTS_DIR / f"part-{shard_index}-of-{num_shards}.json",
                          {"part": shard_index, "num_parts": num_shards, "command": part_command,
                           "draft": draft})
    try:
        problems = finalize(cache_dir, draft)
    except OSError as exc:
        raise write_error(exc, cache_dir / MANIFEST) from None
    result.complete = not problems
    result.missing_shards = len(problems)
    if problems and num_shards > 1:
        damaged = [b for b in problems if b.reason != shards.MISSING]
        note = f" ({len(damaged)} bad, first: {damaged[0]})" if damaged else ""
        log(f"part {shard_index} of {num_shards} done; {len(problems)} shards of other parts missing{note}. "
            "Once every part has run (into this folder, or copied here), run `asc extract --merge`.")
    return result
