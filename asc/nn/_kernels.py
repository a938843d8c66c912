"""Loader for the native L2BN passes (`csrc/l2bn_kernels.c`), compiled on first use.

The C file needs no torch headers, so it builds in well under a second with the system C compiler
into a per-user cache (keyed by source, compiler flags and CPU; `ASC_CACHE_DIR` moves it) and is called
through ctypes. It links against the same OpenMP runtime torch already loaded, so both share one thread
pool. Without a compiler, or with ASC_NATIVE=0, every caller falls back to torch ops (same results).

Loading a shared library runs its constructors, so only what this module built is loaded: the cache
folder is made 0700, each build's sha256 is recorded in a sidecar JSON, and a kernel file is refused
(torch ops, one warning) when its folder or itself is writable by others or owned by another user, when
it is not a regular file, or when its hash differs from the record. The checked file is loaded through
its open descriptor, so it cannot be swapped between the check and the load.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

_SRC = Path(__file__).with_name("csrc") / "l2bn_kernels.c"
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_lib: ctypes.CDLL | None = None
_tried = False


def _cpu_tag() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    """Where built kernels live: $ASC_CACHE_DIR/kernels, else $XDG_CACHE_HOME (~/.cache)/asc-l2bn/kernels."""
    base = os.environ.get("ASC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asc-l2bn")
    return Path(base) / "kernels"


class _Refused(Exception):
    """A kernel file or folder that is not certainly ours; the message says which and what to do."""


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _private_dir() -> Path:
    """The cache folder, created 0700; refused unless it is ours and nobody else can write to it."""
    d = cache_dir()
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        raise _Refused(f"{d} is not a folder; remove it so the kernel can be rebuilt") from None
    st = d.stat()
    if st.st_uid != os.getuid():
        raise _Refused(f"{d} belongs to another user; set ASC_CACHE_DIR to a folder of yours")
    if _writable_by_others(st):
        raise _Refused(f"{d} is writable by other users; run chmod 700 {d}")
    return d


def _record_path(so: Path) -> Path:
    return so.with_suffix(".json")


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        h.update(block)
    return h.hexdigest()


def _open_checked(path: Path) -> int:
    """An O_RDONLY descriptor of `path`, refused unless a regular file of ours that only we can write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise _Refused(f"{path} is a link, not a regular file; delete it to rebuild") from None
        raise _Refused(f"{path} cannot be opened ({exc.strerror}); delete it to rebuild") from None
    st = os.fstat(fd)
    why = ("is not a regular file" if not stat.S_ISREG(st.st_mode)
           else "belongs to another user" if st.st_uid != os.getuid()
           else "is writable by other users" if _writable_by_others(st) else None)
    if why:
        os.close(fd)
        raise _Refused(f"{path} {why}; delete it to rebuild")
    return fd


def _recorded_sha256(so: Path) -> str:
    record = _record_path(so)
    fd = _open_checked(record)
    try:
        with os.fdopen(fd, "rb") as fh:
            sha = json.loads(fh.read()).get("sha256")
    except (OSError, ValueError, AttributeError):
        sha = None
    if not isinstance(sha, str) or len(sha) != 64:
        raise _Refused(f"{record} is not a kernel record; delete it and {so.name} to rebuild")
    return sha


def _write_record(so: Path, sha: str, cc: str) -> None:
    """The sidecar, written atomically and private (temp file + rename)."""
    from asc.fileio import atomic_open

    with atomic_open(_record_path(so), "w", encoding="utf-8", permissions=0o600) as fh:
        json.dump({"file": so.name, "sha256": sha, "compiler": cc, "flags": _FLAGS}, fh, indent=2)


def _build(cc: str) -> Path:
    """The kernel for this source, compiler and CPU: built unless a recorded build is there.

    A kernel file without a record (an older cache, or anything else under that name) is replaced by a
    fresh build, never loaded. One builder at a time (a lock file): DataLoader workers and DDP ranks
    build once and never pair one build's record with another's file."""
    src = _SRC.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *_FLAGS, _cpu_tag(), sys.platform]).encode()).hexdigest()[:16]
    d = _private_dir()
    out, record = d / f"l2bn_{key}.so", _record_path(d / f"l2bn_{key}.so")

    def built() -> bool:
        return os.path.lexists(out) and os.path.lexists(record)

    if built():
        return out
    lock = os.open(d / f".l2bn_{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built():   # another process built it meanwhile
            return out
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record)   # a record without its file: readers wait for the lock until the new pair
        fd, tmp = tempfile.mkstemp(prefix=".l2bn_", suffix=".so", dir=d)
        os.close(fd)
        try:
            subprocess.run([cc, *_FLAGS, str(_SRC), "-o", tmp, "-lm"], check=True, capture_output=True,
                           text=True)
            os.chmod(tmp, 0o700)   # the linker gives 0777 & ~umask: group-writable under umask 002
            sha = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
            os.replace(tmp, out)   # atomic: a reader sees no file or a whole one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _write_record(out, sha, cc)
    finally:
        os.close(lock)
    return out


def _load_checked(path: Path) -> ctypes.CDLL:
    """dlopen `path` only if it passes the file checks and its sha256 is the one recorded at build."""
    expected = _recorded_sha256(path)
    fd = _open_checked(path)
    try:
        if _sha256_fd(fd) != expected:
            raise _Refused(f"{path} is not the kernel that was built here (sha256 differs from "
                           f"{_record_path(path).name}); delete both to rebuild")
        # Through the descriptor, not the name: what is loaded is exactly what was hashed. The descriptor
        # stays open after a load, so no later load reuses its /proc name, which the dynamic loader would
        # answer with the library it already holds under that name.
        lib = ctypes.CDLL(f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else str(path))
    except BaseException:
        os.close(fd)
        raise
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("ASC_NATIVE", "1") in ("0", "false", "no") or sys.platform != "linux":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    try:
        lib = _load_checked(_build(cc))
    except _Refused as exc:
        warnings.warn(f"asc: not loading the native L2BN kernels, using torch ops: {exc}", RuntimeWarning,
                      stacklevel=3)
        return None
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        detail = " ".join(detail.split())[:200]
        warnings.warn(f"asc: native L2BN kernels unavailable, using torch ops ({detail})",
                      RuntimeWarning, stacklevel=3)
        return None
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for suf in ("f32", "f64"):
        getattr(lib, f"row_moments_{suf}").argtypes = [ptr, i64, i64, ptr, ptr, cint]
        getattr(lib, f"affine_rows_{suf}").argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, cint]
        getattr(lib, f"row_grad_sums_{suf}").argtypes = [ptr, ptr, ptr, i64, i64, ptr, ptr, cint]
        getattr(lib, f"grad_combine_{suf}").argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, cint]
    _lib = lib
    return lib


def available() -> bool:
    """Whether the native passes are loaded (built, checked and loaded on the first call)."""
    return _load() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the torch-op fallback instead of the native passes (tests and benchmarks compare both)."""
    global _lib, _tried
    saved = (_lib, _tried)
    _lib, _tried = None, True
    try:
        yield
    finally:
        _lib, _tried = saved


def usable(x: Tensor) -> bool:
    """The native passes handle contiguous float32/float64 CPU tensors with spatial dims."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() >= 3
        and x.is_contiguous()
        and x.numel() > 0
        and _load() is not None
    )


def _suffix(x: Tensor) -> str:
    return "f32" if x.dtype == torch.float32 else "f64"


def _rows(x: Tensor) -> tuple[int, int]:
    rows = x.shape[0] * x.shape[1]
    return rows, x.numel() // rows


def _c(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.detach().to(dtype).contiguous()


def row_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    rows, m = _rows(x)
    mean = x.new_empty(x.shape[:2])
    var = x.new_empty(x.shape[:2])
    getattr(_lib, f"row_moments_{_suffix(x)}")(x.data_ptr(), rows, m, mean.data_ptr(), var.data_ptr(),
                                               torch.get_num_threads())
    return mean, var


def affine_rows(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    rows, m = _rows(x)
    scale, shift = _c(scale, x.dtype), _c(shift, x.dtype)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    getattr(_lib, f"affine_rows_{_suffix(x)}")(x.data_ptr(), rows, m, x.shape[1], scale.data_ptr(),
                                               shift.data_ptr(), y.data_ptr(), torch.get_num_threads())
    return y


def row_grad_sums(dy: Tensor, x: Tensor, center: Tensor) -> tuple[Tensor, Tensor]:
    rows, m = _rows(x)
    dy = dy.to(x.dtype).contiguous()
    center = _c(center, x.dtype)
    t1 = x.new_empty(x.shape[:2])
    tc = x.new_empty(x.shape[:2])
    getattr(_lib, f"row_grad_sums_{_suffix(x)}")(dy.data_ptr(), x.data_ptr(), center.data_ptr(), rows, m,
                                                 t1.data_ptr(), tc.data_ptr(), torch.get_num_threads())
    return t1, tc


def grad_combine(dy: Tensor, x: Tensor, p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    rows, m = _rows(x)
    dy = dy.to(x.dtype).contiguous()
    p, q, r = _c(p, x.dtype), _c(q, x.dtype), _c(r, x.dtype)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    getattr(_lib, f"grad_combine_{_suffix(x)}")(dy.data_ptr(), x.data_ptr(), rows, m, p.data_ptr(),
                                                q.data_ptr(), r.data_ptr(), dx.data_ptr(),
                                                torch.get_num_threads())
    return dx


# torch.compile cannot trace into ctypes calls; these custom ops make each pass one opaque graph node
# (CPU only: on other devices the compiled graph uses plain torch ops, which inductor fuses).
@torch.library.custom_op("asc::l2bn_row_moments", mutates_args=())
def op_row_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    return row_moments(x.contiguous())


@op_row_moments.register_fake
def _(x):
    return x.new_empty(x.shape[:2]), x.new_empty(x.shape[:2])


@torch.library.custom_op("asc::l2bn_affine_rows", mutates_args=())
def op_affine_rows(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return affine_rows(x.contiguous(), scale, shift)


@op_affine_rows.register_fake
def _(x, scale, shift):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("asc::l2bn_row_grad_sums", mutates_args=())
def op_row_grad_sums(dy: Tensor, x: Tensor, center: Tensor) -> tuple[Tensor, Tensor]:
    return row_grad_sums(dy, x.contiguous(), center)


@op_row_grad_sums.register_fake
def _(dy, x, center):
    return x.new_empty(x.shape[:2]), x.new_empty(x.shape[:2])


@torch.library.custom_op("asc::l2bn_grad_combine", mutates_args=())
def op_grad_combine(dy: Tensor, x: Tensor, p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    return grad_combine(dy, x.contiguous(), p, q, r)


@op_grad_combine.register_fake
def _(dy, x, p, q, r):
    return torch.empty_like(x, memory_format=torch.contiguous_format)
