"""Loader for the native L2BN passes (`csrc/l2bn_kernels.c`), compiled on first use.

The C file needs no torch headers, so it builds in well under a second with the system C compiler
into a per-user cache (keyed by source, compiler flags and CPU) and is called through ctypes. It
links against the same OpenMP runtime torch already loaded, so both share one thread pool.
Without a compiler, or with ASC_NATIVE=0, every caller falls back to torch ops (same results).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
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
    base = os.environ.get("ASC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asc-l2bn")
    return Path(base) / "kernels"


def _build(cc: str) -> Path:
    src = _SRC.read_bytes()
    key = hashlib.sha256(src + " ".join([cc, *_FLAGS, _cpu_tag(), sys.platform]).encode()).hexdigest()[:16]
    out = cache_dir() / f"l2bn_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".l2bn_", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *_FLAGS, str(_SRC), "-o", tmp, "-lm"], check=True, capture_output=True, text=True)
        os.replace(tmp, out)  # atomic: concurrent builders (DataLoader workers, DDP ranks) are safe
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


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
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(f"asc: native L2BN kernels unavailable, using torch ops ({detail.strip()[:200]})",
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
