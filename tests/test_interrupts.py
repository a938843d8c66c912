"""Ctrl-C is quiet: one "interrupted" line, exit status 130, nothing half-written, whether it lands in
the extraction workers or while torch is still being imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ASC_PROGRESS="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "asc", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_ctrl_c_during_extraction_with_workers_is_one_line(tiny_dataset, tmp_path):
    features = str(ROOT / "features/logmel128_deltas.yaml")
    proc = _start(["extract", "--data", str(tiny_dataset), "--features", features,
                   "--out", str(tmp_path / "cache"), "--workers", "2", "--set", "storage.shard_size=8"])
    deadline = time.time() + 60
    line = ""
    while "to extract" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    time.sleep(0.5)  # the workers are decoding now
    code, err = _interrupt(proc)
    assert code == 130, err
    assert err.strip() == "asc extract: interrupted", err
    cache = next((tmp_path / "cache").iterdir())
    assert not list(cache.glob(".*.tmp")) and not (cache / "manifest.json").exists()


def test_ctrl_c_while_starting_up_is_one_line(tiny_run):
    proc = _start(["evaluate", str(tiny_run["run"]), "--device", "cpu", "--out", "/nonexistent/never"])
    time.sleep(0.4)  # importing torch
    code, err = _interrupt(proc)
    assert code == 130, err
    assert err.strip() == "asc evaluate: interrupted", err
