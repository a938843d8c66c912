"""Audio files -> features for `asc extract`: the worker pool and the per-clip work.

compute_in="workers" (the CPU default): each process decodes and computes one clip at a time with
single-threaded torch, so the numbers do not depend on --workers; pool workers write rows straight
into the shard's temp file. compute_in="main" (the CUDA default): workers only decode and the main
process computes batches of `batch_size` on `device`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asc.errors import AscError
from asc.features import shards


@dataclass(frozen=True)
class Outcome:
    """What became of one clip: a feature (None when a worker wrote it into the temp shard itself),
    or the one-line `error` that makes it unusable (`short`: the file is too short to fill a clip).
    `padded_s`: the seconds of audio a short clip held when --pad-short zero-padded it."""

    feature: Any = None
    error: str | None = None
    short: bool = False
    padded_s: float | None = None


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


def keep_large_buffers(every_size: bool = False) -> None:
    """glibc returns freed buffers above its mmap threshold to the OS, so each clip page-faults its
    ~10 MB of fresh STFT buffers again, which costs 3-4x the STFT itself. Keep them in the heap.

    The threshold cannot go above 32 MB; `every_size` stops glibc mapping buffers of its own at all, for
    a process whose buffers are larger (a model's activations in batches: a fresh 52 MB output took
    38 ms to write against 5 ms into reused memory). Freed memory then stays with the process (up to
    the trim threshold above its peak), so this is for processes that repeat one job: `asc predict`
    and `asc evaluate` (1.35x on a quick FCNN run's evaluation)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD: the largest value glibc accepts
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to this much free heap
        if every_size:
            libc.mallopt(-4, 0)      # M_MMAP_MAX: glibc still maps when the heap cannot grow


def _setup(cfg: dict, compute: bool, pad_short: bool) -> None:
    """Per-process state: the config, the short-clip policy and (when this process computes) a CPU
    extractor."""
    from asc.features.logmel import LogMelExtractor

    keep_large_buffers()
    _WORKER.clear()
    _WORKER["cfg"] = cfg
    _WORKER["pad_short"] = pad_short
    _WORKER["extractor"] = LogMelExtractor(cfg) if compute else None
    _WORKER["target"] = (None, None)


def _init_worker(cfg: dict, compute: bool, pad_short: bool, parent_pid: int) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent reports it in one line and stops the pool, so
    # a worker ignores it rather than print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)  # one core per worker; also keeps the numbers independent of --workers
    _setup(cfg, compute, pad_short)


def _work(job: tuple[str, tuple[str, int] | None, int]) -> Outcome:
    """Decode (and compute) one clip. With a target temp shard the feature is written straight into
    its row there (no copy through the pipe); otherwise the array is returned (the waveform when
    this process only decodes). A write error (a full disk) propagates: it is not the clip's fault."""
    from asc.data.audio import ShortAudioError
    from asc.features.logmel import load_clip

    audio, target, row = job
    cfg = _WORKER["cfg"]
    try:
        wave, padded = load_clip(audio, cfg, pad_short=_WORKER["pad_short"])
    except ShortAudioError as exc:
        return Outcome(error=str(exc), short=True)
    except AscError as exc:
        return Outcome(error=str(exc))
    extractor = _WORKER["extractor"]
    if extractor is None:
        return Outcome(feature=wave, padded_s=padded)
    feature = extractor.numpy(wave, cfg["storage"]["dtype"])
    problem = not_finite(audio, feature)
    if problem is not None:
        return Outcome(error=problem)
    if target is None:
        return Outcome(feature=feature, padded_s=padded)
    path, data_offset = target
    name, fd = _WORKER["target"]
    if name != path:
        if fd is not None:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY)
        _WORKER["target"] = (path, fd)
    shards.write_row(fd, data_offset, row, feature)
    return Outcome(padded_s=padded)


def not_finite(path: str, feature: np.ndarray) -> str | None:
    """Why a clip's feature (as stored) must not be written: NaN/Inf values, which would train and score
    as garbage without any error; None when every value is finite."""
    if np.isfinite(feature).all():
        return None
    bad = int(np.count_nonzero(~np.isfinite(feature)))
    return (f"{path}: {bad} of its {feature.size} feature values are NaN/Inf in {feature.dtype}; "
            "check the audio (extreme sample values?) and the feature config")


@contextlib.contextmanager
def _single_thread_torch() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Computer:
    """Turns audio paths into features, in order (see the module docstring for where they are
    computed)."""

    def __init__(self, cfg: dict, workers: int, device: str, batch_size: int, compute_in: str = "auto",
                 pad_short: bool = False):
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
            self.pool = mp.get_context(method).Pool(
                workers, initializer=_init_worker, initargs=(cfg, not self.in_main, pad_short, os.getpid()))
        if self.in_main:
            from asc.features.logmel import LogMelExtractor

            self.extractor = LogMelExtractor(cfg, device=device)
            if self.pool is None:
                _setup(cfg, compute=False, pad_short=pad_short)
        else:
            self._threads.enter_context(_single_thread_torch())  # see _init_worker
            if self.pool is None:
                _setup(cfg, compute=True, pad_short=pad_short)

    def run(self, items: Sequence[tuple[str, int]], target: tuple[str, int]) -> Iterator[Outcome]:
        """An Outcome for each (path, row), in order; pool workers that compute write the feature
        into that row of the temp shard `target` = (path, offset of row 0) and return none."""
        if not items:
            return
        if self.pool is None:
            decoded: Iterable[Outcome] = (_work((path, None, 0)) for path, _ in items)
        else:
            direct = None if self.in_main else target
            decoded = self.pool.imap(_work, [(path, direct, row) for path, row in items], chunksize=1)
        if not self.in_main:
            yield from decoded
            return
        batch: list[Outcome] = []
        paths: list[str] = []
        for (path, _), item in zip(items, decoded):
            batch.append(item)
            paths.append(path)
            if len(batch) >= self.batch_size:
                yield from self._batch(batch, paths)
                batch, paths = [], []
        yield from self._batch(batch, paths)

    def _batch(self, batch: list[Outcome], paths: list[str]) -> Iterator[Outcome]:
        import torch

        good = [o.feature for o in batch if o.error is None]
        feats = iter(())
        if good:
            dtype = getattr(torch, self.cfg["storage"]["dtype"])
            feats = iter(self.extractor(np.stack(good)).to(dtype).cpu().numpy())
        for o, path in zip(batch, paths):
            if o.error is not None:
                yield o
                continue
            feature = next(feats)
            problem = not_finite(path, feature)
            yield (Outcome(error=problem) if problem is not None
                   else Outcome(feature=feature, padded_s=o.padded_s))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        self._threads.close()
