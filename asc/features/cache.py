"""The feature cache: one folder per feature config, fixed-size shards of arrays, a JSON manifest.

Layout of `CACHE/<config-stem>-<hash12>/`:

    shard-00000-<digest>.npy    (clips, C, mels, frames) in the storage dtype; memory-mappable
    shard-00000-<digest>.json   sidecar: the clips (id, file, size, mtime) the shard holds, skipped rows
    manifest.json               written last: per-clip rows (id, file, labels, shard, offset, shape),
                                the resolved feature config, its hash, dtype, library versions,
                                source sizes/mtimes, the dataset root, `skipped`

Clips are sorted by id and cut into shards of `shard_size`, so the layout is a function of the clip
list alone. A shard's digest covers its clips' ids, sizes and mtimes (and the config hash and dtype),
so a shard file whose name exists is complete and current: a re-run skips it, a killed run resumes at
the first missing shard, and machines given disjoint shard indices (`num_shards`, `shard_index`)
produce the same files a single run would. Shards are written to a temp name and renamed; the
sidecar lands before its array, the manifest after every shard. Rows of a rebuilt shard whose audio
did not change are copied from any complete shard in the folder instead of recomputed.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import AscError, DataError
from asc.features.logmel import (
    feature_hash,
    feature_shape,
    load_feature_config,
    resolve_feature_config,
)
from asc.fileio import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS_DIR = "parts"
_SHARD_PREFIX = "shard-"


# ----------------------------------------------------------------------------------------- locating


def cache_path(cache_root: str | os.PathLike, feature_config: str | os.PathLike | Mapping,
               name: str | None = None) -> Path:
    """The folder holding the features of `feature_config` (a YAML path or a config mapping):
    `cache_root/<stem>-<hash12>`, stem = the YAML's file stem (or `name`, default "features")."""
    if isinstance(feature_config, Mapping):
        cfg = resolve_feature_config(feature_config, name or "feature config")
        stem = name or "features"
    else:
        path = Path(feature_config)
        cfg = load_feature_config(path)
        stem = name or path.stem
    return Path(cache_root) / f"{stem}-{feature_hash(cfg)}"


def read_manifest(cache_dir: str | os.PathLike) -> dict:
    """The manifest of a finished cache; DataError saying what to run when there is none."""
    path = Path(cache_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no feature manifest; run `asc extract` for this feature config "
                        "(or finish an interrupted or multi-part run)") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: corrupt manifest ({exc.msg}); re-run `asc extract`") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: manifest format {manifest.get('format')!r}, this version reads "
                        f"{FORMAT_VERSION}; re-run `asc extract`")
    return manifest


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

    @property
    def stamp(self) -> tuple:
        return (self.id, self.file, self.size, self.mtime_ns)


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

    def is_complete(self, cache_dir: Path) -> bool:
        return self.npy(cache_dir).is_file() and self.sidecar(cache_dir).is_file()


def plan_shards(clips: Sequence[SourceClip], cfg_hash: str, dtype: str, shape: Sequence[int],
                shard_size: int) -> list[Shard]:
    """Cut the (sorted) clips into shards named by index and a digest of what they hold."""
    ordered = sorted(clips, key=lambda c: c.id)
    shards = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        part = ordered[start:start + shard_size]
        key = json.dumps([FORMAT_VERSION, cfg_hash, dtype, list(shape), [list(c.stamp) for c in part]])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        shards.append(Shard(index, f"{_SHARD_PREFIX}{index:05d}-{digest}", part))
    return shards


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


def draft_manifest(cfg: Mapping, name: str, shards: Sequence[Shard], *, dataset_root: str,
                   synthetic: bool) -> dict:
    """Everything of the manifest that the plan decides (all clips, before skips are known)."""
    shape = list(feature_shape(cfg))
    rows, sources = [], {}
    for shard in shards:
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
        "versions": library_versions(),
        "dataset": {"root": str(dataset_root), "synthetic": bool(synthetic)},
        "shards": [{"file": f"{s.name}.npy", "count": len(s.clips)} for s in shards],
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


def _write_row(fd: int, data_offset: int, row: int, feature: np.ndarray) -> None:
    """Write one clip's feature into row `row` of an .npy file opened as `fd` (any process)."""
    buf = memoryview(np.ascontiguousarray(feature)).cast("B")
    os.pwrite(fd, buf, data_offset + row * buf.nbytes)


class _ShardWriter:
    """Fills one shard in a temp .npy file (header first, rows written in place, unwritten rows read
    as zeros); `commit` makes it durable and renames it into place."""

    def __init__(self, cache_dir: Path, shard: Shard, shape: tuple, dtype: str, cfg_hash: str):
        self.cache_dir, self.shard, self.cfg_hash = cache_dir, shard, cfg_hash
        self.dtype, self.shape = dtype, tuple(shape)
        self.tmp = cache_dir / f".{shard.name}.{os.getpid()}.npy.tmp"
        full = (len(shard.clips),) + self.shape
        row_bytes = int(np.prod(self.shape)) * np.dtype(dtype).itemsize
        with open(self.tmp, "wb") as fh:
            descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
            np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": full})
            self.data_offset = fh.tell()
            fh.truncate(self.data_offset + full[0] * row_bytes)
        self.fd = os.open(self.tmp, os.O_RDWR)
        self.skipped: list[dict] = []

    @property
    def target(self) -> tuple[str, int]:
        """Where pool workers write rows: (temp file, offset of row 0)."""
        return str(self.tmp), self.data_offset

    def put(self, offset: int, feature: np.ndarray) -> None:
        _write_row(self.fd, self.data_offset, offset, np.asarray(feature, dtype=self.dtype))

    def skip(self, offset: int, reason: str) -> None:
        c = self.shard.clips[offset]
        self.skipped.append({"id": c.id, "file": c.file, "reason": reason})

    def commit(self) -> None:
        os.fsync(self.fd)  # also the rows that workers wrote through their own descriptors
        os.close(self.fd)
        self.fd = -1
        atomic_write_json(self.shard.sidecar(self.cache_dir), {
            "format": FORMAT_VERSION, "config_hash": self.cfg_hash, "dtype": self.dtype,
            "shape": list(self.shape),
            "clips": [{"id": c.id, "file": c.file, "size": c.size, "mtime_ns": c.mtime_ns}
                      for c in self.shard.clips],
            "skipped": self.skipped,
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


def _reusable_rows(cache_dir: Path, cfg_hash: str, dtype: str, shape: Sequence[int]) -> dict:
    """stamp -> (npy path, offset) for every good row of every complete shard in the folder."""
    index: dict[tuple, tuple[Path, int]] = {}
    for sidecar in sorted(cache_dir.glob(f"{_SHARD_PREFIX}*.json")):
        npy = sidecar.with_suffix(".npy")
        if not npy.is_file():
            continue
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("config_hash"), meta.get("dtype"), meta.get("shape")) != (cfg_hash, dtype, list(shape)):
            continue
        bad = {s["id"] for s in meta.get("skipped", [])}
        for offset, c in enumerate(meta.get("clips", [])):
            if c["id"] not in bad and c.get("size") is not None:
                index.setdefault((c["id"], c["file"], c["size"], c["mtime_ns"]), (npy, offset))
    return index


# ------------------------------------------------------------------------------------------ compute

_WORKER: dict = {}


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed extraction (it would hold files and cores)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _keep_large_buffers() -> None:
    """glibc returns freed buffers above its mmap threshold to the OS, so each clip page-faults its
    ~10 MB of fresh STFT buffers again, which costs 3-4x the STFT itself. Keep them in the heap."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD: the largest value glibc accepts
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to this much free heap


def _setup(cfg: dict, compute: bool) -> None:
    """Per-process state: the config and (when this process computes) a CPU extractor."""
    from asc.features.logmel import LogMelExtractor

    _keep_large_buffers()
    _WORKER.clear()
    _WORKER["cfg"] = cfg
    _WORKER["extractor"] = LogMelExtractor(cfg) if compute else None
    _WORKER["target"] = (None, None)


def _init_worker(cfg: dict, compute: bool, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)  # one core per worker; also keeps the numbers independent of --workers
    _setup(cfg, compute)


def _work(job: tuple[str, tuple[str, int] | None, int]) -> tuple[bool, Any]:
    """Decode (and compute) one clip. With a target temp shard the feature is written straight into
    its row there (no copy through the pipe) and None returned; otherwise the array (the waveform
    when this process only decodes). A file that cannot be used gives (False, reason)."""
    from asc.features.logmel import load_clip

    audio, target, row = job
    cfg = _WORKER["cfg"]
    try:
        wave = load_clip(audio, cfg)
    except AscError as exc:
        return False, str(exc)
    extractor = _WORKER["extractor"]
    if extractor is None:
        return True, wave
    feature = extractor.numpy(wave, cfg["storage"]["dtype"])
    if target is None:
        return True, feature
    path, data_offset = target
    name, fd = _WORKER["target"]
    if name != path:
        if fd is not None:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY)
        _WORKER["target"] = (path, fd)
    _write_row(fd, data_offset, row, feature)
    return True, None


@contextlib.contextmanager
def _single_thread_torch() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Computer:
    """Turns audio paths into features, in order.

    compute_in="workers" (the CPU default): each process decodes and computes one clip at a time with
    single-threaded torch, so the numbers do not depend on --workers; pool workers write rows straight
    into the shard's temp file. compute_in="main" (the CUDA default): workers only decode and this
    process computes batches of `batch_size` on `device`.
    """

    def __init__(self, cfg: dict, workers: int, device: str, batch_size: int, compute_in: str = "auto"):
        import multiprocessing as mp

        if compute_in == "auto":
            compute_in = "workers" if device == "cpu" else "main"
        if compute_in not in ("workers", "main"):
            raise ValueError(f"compute_in must be auto, workers or main, got {compute_in!r}")
        self.cfg, self.device, self.batch_size = cfg, device, batch_size
        self.in_main = compute_in == "main"
        self.pool = None
        self._threads = contextlib.ExitStack()
        if workers > 1:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.pool = mp.get_context(method).Pool(workers, initializer=_init_worker,
                                                    initargs=(cfg, not self.in_main, os.getpid()))
        if self.in_main:
            from asc.features.logmel import LogMelExtractor

            self.extractor = LogMelExtractor(cfg, device=device)
            if self.pool is None:
                _setup(cfg, compute=False)
        else:
            self._threads.enter_context(_single_thread_torch())  # see _init_worker
            if self.pool is None:
                _setup(cfg, compute=True)

    def run(self, items: Sequence[tuple[str, int]], target: tuple[str, int]) -> Iterator[tuple[bool, Any]]:
        """For each (path, row): (True, feature, or None when a worker wrote it into that row of the
        temp shard file `target` = (path, offset of row 0)) or (False, reason)."""
        if not items:
            return
        if self.pool is None:
            decoded: Iterable = (_work((path, None, 0)) for path, _ in items)
        else:
            direct = None if self.in_main else target
            decoded = self.pool.imap(_work, [(path, direct, row) for path, row in items], chunksize=1)
        if not self.in_main:
            yield from decoded
            return
        batch: list[tuple[bool, Any]] = []
        for item in decoded:
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield from self._batch(batch)
                batch = []
        yield from self._batch(batch)

    def _batch(self, batch: list[tuple[bool, Any]]) -> Iterator[tuple[bool, Any]]:
        import torch

        good = [wave for ok, wave in batch if ok]
        feats = iter(())
        if good:
            dtype = getattr(torch, self.cfg["storage"]["dtype"])
            feats = iter(self.extractor(np.stack(good)).to(dtype).cpu().numpy())
        for ok, value in batch:
            yield (True, next(feats)) if ok else (False, value)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        self._threads.close()


# --------------------------------------------------------------------------------------------- runs


@dataclass
class ExtractResult:
    cache_dir: Path
    to_extract: int
    cached: int
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False
    missing_shards: int = 0


def extract(clips: Sequence[SourceClip], cfg: Mapping, cache_dir: str | os.PathLike, *, name: str,
            dataset_root: str, synthetic: bool = False, workers: int = 1, device: str = "cpu",
            skip_bad: bool = False, num_shards: int = 1, shard_index: int = 0, batch_size: int = 16,
            compute_in: str = "auto", log: Callable[[str], None] = print) -> ExtractResult:
    """Bring `cache_dir` up to date with `clips` under the resolved feature config `cfg`.

    Only this part's shards (index % num_shards == shard_index) are written; the manifest is written
    once every shard of the plan is present (by this run, an earlier one, or other parts).
    """
    from asc.progress import progress

    cfg = copy.deepcopy(dict(cfg))
    if not 0 <= shard_index < num_shards:
        raise AscError(f"--shard-index {shard_index} must be in 0..{num_shards - 1}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dtype, shard_size = cfg["storage"]["dtype"], cfg["storage"]["shard_size"]
    shape = feature_shape(cfg)
    cfg_hash = feature_hash(cfg)
    shards = plan_shards(clips, cfg_hash, dtype, shape, shard_size)
    draft = draft_manifest(cfg, name, shards, dataset_root=dataset_root, synthetic=synthetic)
    mine = [s for s in shards if s.index % num_shards == shard_index]
    todo = [s for s in mine if not s.is_complete(cache_dir)]
    reuse = _reusable_rows(cache_dir, cfg_hash, dtype, shape) if todo else {}
    jobs = [[(off, reuse.get(c.stamp)) for off, c in enumerate(s.clips)] for s in todo]
    paths = [s.clips[off].path for s, js in zip(todo, jobs) for off, src in js if src is None]
    total = sum(len(s.clips) for s in mine)
    part = f" (shards {shard_index} of {num_shards})" if num_shards > 1 else ""
    log(f"{len(paths)} to extract, {total - len(paths)} cached{part}")

    computer = _Computer(cfg, workers, device, batch_size, compute_in) if paths else None
    bar = progress(total=len(paths), desc="extract", unit="file")
    opened: dict[Path, np.ndarray] = {}
    skipped: list[dict] = []
    try:
        for shard, shard_jobs in zip(todo, jobs):
            writer = _ShardWriter(cache_dir, shard, shape, dtype, cfg_hash)
            try:
                compute = []
                for offset, src in shard_jobs:
                    if src is None:
                        compute.append(offset)
                        continue
                    npy, row = src
                    if npy not in opened:
                        opened[npy] = np.load(npy, mmap_mode="r")
                    writer.put(offset, opened[npy][row])
                if compute:
                    results = computer.run([(shard.clips[o].path, o) for o in compute], writer.target)
                    for offset, (ok, value) in zip(compute, results):
                        bar.update(1)
                        if ok:
                            if value is not None:
                                writer.put(offset, value)
                        elif skip_bad:
                            writer.skip(offset, value)
                            skipped.append(writer.skipped[-1])
                        else:
                            raise DataError(f"{value} (or pass --skip-bad to leave it out)")
                writer.commit()
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

    result = ExtractResult(cache_dir, len(paths), total - len(paths), skipped)
    if num_shards > 1:
        atomic_write_json(cache_dir / PARTS_DIR / f"part-{shard_index}-of-{num_shards}.json",
                          {"part": shard_index, "num_parts": num_shards, "draft": draft})
    missing = finalize(cache_dir, draft)
    result.complete = not missing
    result.missing_shards = len(missing)
    if missing and num_shards > 1:
        log(f"part {shard_index} of {num_shards} done; {len(missing)} shards of other parts missing. "
            "Once every part has run (into this folder, or copied here), run `asc extract --merge`.")
    return result


def finalize(cache_dir: Path, draft: Mapping) -> list[str]:
    """Write the manifest if every shard of `draft` is present; return the missing shard files.

    The manifest is rewritten only when its content (apart from `created`) changes; afterwards shard
    files no longer referenced, stale temp files and part notes are removed.
    """
    cache_dir = Path(cache_dir)
    missing, skipped = [], []
    for shard in draft["shards"]:
        npy = cache_dir / shard["file"]
        sidecar = npy.with_suffix(".json")
        if not (npy.is_file() and sidecar.is_file()):
            missing.append(shard["file"])
            continue
        skipped.extend(json.loads(sidecar.read_text(encoding="utf-8")).get("skipped", []))
    if missing:
        return missing
    bad = {s["id"] for s in skipped}
    manifest = dict(draft)
    manifest["clips"] = [r for r in draft["clips"] if r["id"] not in bad]
    manifest["num_clips"] = len(manifest["clips"])
    manifest["skipped"] = skipped
    path = cache_dir / MANIFEST
    old = None
    with contextlib.suppress(OSError, json.JSONDecodeError):
        old = json.loads(path.read_text(encoding="utf-8"))
    if old is None or {k: v for k, v in old.items() if k != "created"} != manifest:
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(path, manifest)
    _collect_garbage(cache_dir, {s["file"] for s in draft["shards"]})
    return []


def _collect_garbage(cache_dir: Path, keep: set[str]) -> None:
    keep_stems = {Path(f).stem for f in keep}
    for path in cache_dir.iterdir():
        name = path.name
        stale_shard = name.startswith(_SHARD_PREFIX) and path.suffix in (".npy", ".json") \
            and path.stem not in keep_stems
        stale_tmp = name.startswith(f".{_SHARD_PREFIX}") or (name.startswith(".") and name.endswith(".tmp"))
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


def merge_parts(cache_dir: str | os.PathLike) -> dict:
    """Write the manifest of a multi-part extraction from its part notes; DataError lists what is
    missing (parts not run or not copied in, shards not present)."""
    cache_dir = Path(cache_dir)
    if (cache_dir / MANIFEST).is_file() and not (cache_dir / PARTS_DIR).is_dir():
        return read_manifest(cache_dir)
    notes = sorted((cache_dir / PARTS_DIR).glob("part-*-of-*.json"))
    if not notes:
        raise DataError(f"{cache_dir}: no part notes in {PARTS_DIR}/; run `asc extract --num-shards K "
                        "--shard-index i` for each part (into this folder, or copy the parts here)")
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in notes]
    k = parts[0]["num_parts"]
    layouts = {json.dumps([s["file"] for s in p["draft"]["shards"]]) for p in parts}
    if len(layouts) > 1 or any(p["num_parts"] != k for p in parts):
        raise DataError(f"{cache_dir}: the parts were planned from different clip lists or part counts; "
                        "re-run the parts with the same dataset and --num-shards")
    have = {p["part"] for p in parts}
    absent = sorted(set(range(k)) - have)
    missing = finalize(cache_dir, parts[0]["draft"])
    if missing:
        hint = f"parts not yet run or copied in: {', '.join(map(str, absent))}; " if absent else ""
        raise DataError(f"{cache_dir}: {len(missing)} shards missing (first: {missing[0]}); {hint}"
                        "run them, then `asc extract --merge` again")
    return read_manifest(cache_dir)
