"""The native L2BN kernel is loaded only if it is the file this process's loader built and recorded.

A shared library runs its constructor when loaded, so a file planted under the kernel's name must never
be loaded: these tests plant one whose constructor leaves a marker, and check the refusals (hash, mode,
link, folder) each fall back to torch ops with one warning while the layer still computes correctly.
One real build per module, in a cache folder of its own (ASC_CACHE_DIR); each test copies it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from asc.nn import L2_EPS, L2BatchNorm2d, _kernels

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(sys.platform != "linux" or CC is None, reason="needs Linux and a C compiler")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fresh_loader(mp: pytest.MonkeyPatch, cache: Path) -> Path:
    """Point the loader at `cache` and forget any earlier load; returns the kernels folder."""
    mp.setenv("ASC_CACHE_DIR", str(cache))
    mp.delenv("ASC_NATIVE", raising=False)
    mp.setattr(_kernels, "_lib", None)
    mp.setattr(_kernels, "_tried", False)
    return cache / "kernels"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """One fresh build: (kernel file, record), in a folder no test changes."""
    cache = tmp_path_factory.mktemp("asc-cache")
    with pytest.MonkeyPatch.context() as mp:
        folder = _fresh_loader(mp, cache)
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # a fresh build loads without a warning
            assert _kernels._load() is not None
    (so,) = folder.glob("l2bn_*.so")
    return so, so.with_suffix(".json")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    """A library whose constructor creates a marker file: (library, marker that must never appear)."""
    d = tmp_path_factory.mktemp("planted")
    marker = d / "constructor-ran"
    src = d / "planted.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {\n'
                   f'    FILE *f = fopen("{marker}", "w");\n    if (f) fclose(f);\n}}\n')
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(d / "planted.so")], check=True,
                   capture_output=True)
    return d / "planted.so", marker


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh loader on an empty kernels folder of its own (0700); returns the folder."""
    folder = _fresh_loader(monkeypatch, tmp_path / "cache")
    folder.mkdir(parents=True, mode=0o700)
    return folder


def _copy_build(built: tuple[Path, Path], folder: Path) -> tuple[Path, Path]:
    so, record = built
    shutil.copy2(so, folder / so.name)
    shutil.copy2(record, folder / record.name)
    return folder / so.name, folder / record.name


def _refused(match: str) -> None:
    """Load: one one-line warning matching `match`, no library, the torch-op path."""
    with pytest.warns(RuntimeWarning, match=match) as caught:
        assert _kernels._load() is None
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert not _kernels.available()


def _layer_matches_reference() -> None:
    """L2BN training forward against the formula in float64: x̂ = sqrt(n)·x/‖x‖, then batch norm."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 7, dtype=torch.float64) * 3 + 1
    layer = L2BatchNorm2d(4).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    norms = x.reshape(len(x), -1).norm(dim=1).clamp_min(L2_EPS)
    x_hat = math.sqrt(x[0].numel()) * x / norms[:, None, None, None]
    want = F.batch_norm(x_hat, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
    torch.testing.assert_close(layer(x), want, atol=1e-10, rtol=1e-10)


def test_fresh_build_loads_and_records_its_hash(built, cache):
    so, record = built
    assert stat.S_IMODE(so.parent.stat().st_mode) == 0o700  # the loader made the folder, private
    assert not so.stat().st_mode & 0o022 and not record.stat().st_mode & 0o022
    assert json.loads(record.read_text())["sha256"] == _sha256(so)
    copy, _ = _copy_build(built, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _kernels.available()                 # a recorded build is loaded, not rebuilt
    assert copy.stat().st_mtime == so.stat().st_mtime
    assert _kernels.usable(torch.zeros(2, 3, 4))
    _layer_matches_reference()                      # through the native passes


def test_planted_library_is_not_loaded_and_the_layer_falls_back(built, planted, cache):
    so, record = _copy_build(built, cache)
    library, marker = planted
    shutil.copy2(library, so)                       # someone else's library under the kernel's name
    _refused(r"l2bn_\w+\.so is not the kernel that was built here \(sha256 differs")
    assert not marker.exists()                      # its constructor never ran
    assert not _kernels.usable(torch.zeros(2, 3, 4))
    _layer_matches_reference()


def test_planted_library_without_a_record_is_replaced_by_a_build(built, planted, cache):
    so, record = built
    library, marker = planted
    shutil.copy2(library, cache / so.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _kernels.available()
    assert not marker.exists()
    assert json.loads((cache / record.name).read_text())["sha256"] == _sha256(cache / so.name)
    assert _sha256(cache / so.name) != _sha256(library)


def test_group_writable_kernel_is_refused(built, cache):
    so, _ = _copy_build(built, cache)
    so.chmod(0o760)
    _refused(r"l2bn_\w+\.so is writable by other users; delete it to rebuild")
    _layer_matches_reference()


def test_folder_writable_by_others_is_refused(built, cache):
    _copy_build(built, cache)
    cache.chmod(0o777)
    _refused(r"kernels is writable by other users; run chmod 700 ")


def test_link_under_the_kernel_name_is_refused(built, cache):
    so, _ = _copy_build(built, cache)
    so.unlink()
    so.symlink_to(built[0])                         # even to the genuine build: not a regular file
    _refused(r"l2bn_\w+\.so is a link, not a regular file")


def test_record_writable_by_others_is_refused(built, cache):
    _, record = _copy_build(built, cache)
    record.chmod(0o666)
    _refused(r"l2bn_\w+\.json is writable by other users")
