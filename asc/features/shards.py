"""One feature shard on disk, and whether it can be trusted.

A shard is `shard-NNNNN-<digest>.npy`, a plain memory-mappable `.npy` array (clips, C, mels, frames),
plus its sidecar `shard-NNNNN-<digest>.json`: the clips it holds, the rows left out (`skipped`) or
zero-padded (`padded`), the file's size and a checksum of its data bytes.

A file cut short (full disk, bad copy) or damaged must never be read as features, so every open
checks it cheaply (header, shape, dtype, size against what was written: a stat and a few hundred
bytes), and `verify` also re-hashes the data (`asc extract --verify`, `--merge`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SHARD_PREFIX = "shard-"
MISSING = "missing"  # the reason of a BadShard whose .npy is not there at all
_HASH = "blake2b"
_CHUNK = 8 << 20
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class BadShard(Exception):
    """A shard (or its sidecar) that must not be trusted; `path` names the file, `reason` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# ------------------------------------------------------------------------------------------ writing


def create(path: Path, count: int, shape: Sequence[int], dtype: str) -> int:
    """Create `path` as an .npy of `count` rows of `shape` (header written by numpy, rows unwritten
    and reading as zeros) and return the byte offset of row 0, where `write_row` puts rows."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(count, *shape))
    try:
        return int(array.offset)
    finally:
        del array


def write_row(fd: int, data_offset: int, row: int, feature: np.ndarray) -> None:
    """Write one clip's feature into row `row` of an .npy file opened as `fd` (from any process:
    pool workers write straight into the temp shard, no copy through a pipe)."""
    buf = memoryview(np.ascontiguousarray(feature)).cast("B")
    done = 0
    while done < buf.nbytes:  # pwrite may write less than asked (signals, some file systems)
        n = os.pwrite(fd, buf[done:], data_offset + row * buf.nbytes + done)
        if n <= 0:
            raise OSError(errno.EIO, "the file system accepted no bytes")
        done += n


def checksum(path: Path, data_offset: int) -> str:
    """`blake2b:<hex>` of the data bytes of an .npy file (everything after its header)."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        fh.seek(data_offset)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return f"{_HASH}:{digest.hexdigest()}"


# ------------------------------------------------------------------------------------------ reading


def read_header(path: Path) -> tuple[tuple[int, ...], str, int]:
    """(shape, dtype name, data offset) from an .npy header; BadShard when it is not one."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version}")
            shape, fortran, dtype = _HEADER_READERS[version](fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise BadShard(path, MISSING) from None
    except (OSError, ValueError, SyntaxError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadShard(path, f"not a readable .npy file ({detail})") from None
    if fortran:
        raise BadShard(path, "stored in Fortran order, which this cache never writes")
    return tuple(int(n) for n in shape), np.dtype(dtype).name, offset


def read_sidecar(npy: Path) -> dict:
    """The sidecar of shard `npy` as a dict; BadShard naming the sidecar when it is missing, cut short
    or not the shape of a sidecar."""
    path = npy.with_suffix(".json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadShard(path, "sidecar missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadShard(path, f"unreadable sidecar ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadShard(path, f"sidecar is cut short or corrupt (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("clips"), list) \
            or not isinstance(meta.get("shape"), list) \
            or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in meta["clips"]) \
            or not all(isinstance(meta.get(k, []), list) and all(isinstance(e, dict) for e in meta.get(k, []))
                       for k in ("skipped", "padded")):
        raise BadShard(path, "not a shard sidecar (no clips with ids, no shape, or odd skipped/padded lists)")
    return meta


def check(npy: Path, *, shape: Sequence[int], dtype: str, count: int | None = None,
          config_hash: str | None = None, clips: Sequence[Sequence] | None = None,
          size: int | None = None, digest: str | None = None, deep: bool = False) -> dict:
    """Check shard `npy` and its sidecar against what the caller expects and return the sidecar.

    Always (cheap): the sidecar parses and agrees with `config_hash`, `dtype`, `shape` and the clip
    stamps `clips` [(id, file, size, mtime_ns)]; the .npy header holds (count, *shape) of `dtype`; the
    file's size is header + data (a cut-short file fails here) and equals `size` if given. With `deep`,
    the data bytes are hashed and compared with the sidecar's checksum (and `digest`, if given).
    Raises BadShard naming the file and what is wrong.
    """
    if not npy.is_file():
        raise BadShard(npy, MISSING)
    meta = read_sidecar(npy)
    if config_hash is not None and meta.get("config_hash") != config_hash:
        raise BadShard(npy.with_suffix(".json"), "sidecar is of another feature config")
    if meta.get("dtype") != dtype or list(meta["shape"]) != list(shape):
        raise BadShard(npy.with_suffix(".json"), f"sidecar says {meta.get('dtype')} rows of "
                       f"{tuple(meta['shape'])}, expected {dtype} rows of {tuple(shape)}")
    if clips is not None:
        require_clips(npy, meta, clips)
    rows = len(meta["clips"]) if count is None else count
    if rows != len(meta["clips"]) or ("count" in meta and meta["count"] != rows):
        raise BadShard(npy.with_suffix(".json"), f"sidecar lists {len(meta['clips'])} clips, expected {rows}")
    offset = check_npy(npy, count=rows, shape=shape, dtype=dtype, size=size)
    if meta.get("bytes") is not None and meta["bytes"] != npy.stat().st_size:
        raise BadShard(npy, f"{npy.stat().st_size} bytes, but its sidecar says {meta['bytes']} were written")
    if deep:
        recorded = meta.get("checksum")
        if recorded is None:
            raise BadShard(npy, "no checksum recorded (written by an older version)")
        if digest is not None and digest != recorded:
            raise BadShard(npy, "sidecar and manifest record different checksums")
        if checksum(npy, offset) != recorded:
            raise BadShard(npy, "content does not match its checksum (the data is corrupt)")
    return meta


def require_clips(npy: Path, meta: Mapping, clips: Sequence[Sequence]) -> None:
    """The sidecar `meta` of `npy` must list exactly the clip stamps [(id, file, size, mtime_ns)]
    that the shard's name was made from."""
    held = [[c.get("id"), c.get("file"), c.get("size"), c.get("mtime_ns")] for c in meta["clips"]]
    if held != [list(c) for c in clips]:
        raise BadShard(npy.with_suffix(".json"), "sidecar lists other clips than the shard's name says")


def check_npy(npy: Path, *, count: int, shape: Sequence[int], dtype: str, size: int | None = None) -> int:
    """The cheap check every reader makes before mapping a shard: the header holds (count, *shape) of
    `dtype`, and the file is exactly header + data bytes (and `size`, when the manifest recorded it),
    so a shard cut short is named here instead of failing inside numpy. Returns the data offset."""
    have_shape, have_dtype, offset = read_header(npy)
    want = (count, *(int(n) for n in shape))
    if have_shape != want or have_dtype != np.dtype(dtype).name:
        raise BadShard(npy, f"holds {have_dtype} {have_shape}, expected {np.dtype(dtype).name} {want}")
    expected = offset + int(np.prod(want)) * np.dtype(dtype).itemsize
    actual = npy.stat().st_size
    if actual != expected:
        what = "truncated" if actual < expected else "too long"
        raise BadShard(npy, f"{what}: {actual} bytes, expected {expected}")
    if size is not None and size != actual:
        raise BadShard(npy, f"{actual} bytes, but {size} were written")
    return offset


def open_rows(npy: Path) -> np.ndarray:
    """The shard's rows as a read-only memory map (call `check` first: it knows what to expect)."""
    return np.load(npy, mmap_mode="r")
