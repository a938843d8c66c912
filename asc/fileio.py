"""Atomic writes: a temp file in the same folder, fsync, then rename, so a reader (or a rerun after
a crash) sees either the old file or the complete new one, never a torn one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                permissions: int | None = None) -> Iterator[IO]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed.
    `permissions` (e.g. 0o600 for a private record) instead of the usual ones under the umask."""
    path = Path(path)
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask() if permissions is None else permissions)  # mkstemp makes 0600 files
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def refuse_special(path: Path) -> None:
    """A write target that exists must be a regular file: renaming over a device node, a FIFO or a
    socket would replace it with a regular file (and a folder cannot be replaced)."""
    import stat

    from asc.errors import AscError

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AscError(f"{path}: cannot write there ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        mode = os.stat(path).st_mode if path.exists() else stat.S_IFREG
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise AscError(f"{path}: is {kind}, not a file to write; choose another output path")


def try_exclusive_lock(path: str | os.PathLike, *, create: bool = False) -> int | None:
    """A descriptor holding an exclusive advisory lock (flock) on `path` (a file, created when `create`,
    or a folder), or None when another process holds it. The system drops the lock when the process
    ends, so a crashed holder never leaves a stale lock, and two processes can never both hold it."""
    import fcntl

    fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_all(items: list[tuple[str | os.PathLike, str]]) -> None:
    """Write several text files as one: every file goes to a temp file first, and only when all are
    written are they renamed into place, so a failure (a full disk) leaves every old file as it was."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in items:
            path = Path(path)
            refuse_special(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            os.chmod(tmp, 0o666 & ~_umask())
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
