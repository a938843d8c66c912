"""scripts/gpu_check.sh: the CPU rehearsal runs every step and passes every check; without CUDA the
command prints one line and exits 0; without soundfile the extraction check is skipped, not a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
CHECKS = {"l2bn", "amp_step", "sync", "extract"}
TIMINGS = {"l2bn_layer_eager", "l2bn_layer_compiled", "train_step", "extract_throughput"}
TARGETS = {"l2bn_eager_vs_bn", "l2bn_compiled_vs_bn", "train_step_l2bn_vs_bn", "extract_gpu_vs_2core_cpu"}


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: float, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=_env(**extra), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_rehearsal_runs_every_step_and_passes_every_check(tmp_path):
    out = tmp_path / "tmp"
    proc = _run(["--rehearse", "--out", "tmp"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu-check.json").read_text())
    assert {"schema", "mode", "started", "elapsed_s", "environment", "checks", "timings", "targets",
            "all_checks_passed"} <= set(report)
    assert report["mode"] == "rehearse"
    assert set(report["checks"]) == CHECKS
    for name, res in report["checks"].items():
        assert res["status"] == "passed", (name, res)
    assert report["all_checks_passed"] is True
    assert set(report["timings"]) == TIMINGS
    for name, res in report["timings"].items():
        assert res["status"] == "measured", (name, res)
    assert {r["target"] for r in report["targets"]} == TARGETS
    assert all(r["measured"] is not None for r in report["targets"])
    assert {(r["model"], r["precision"]) for r in report["timings"]["train_step"]["rows"]} == {
        (m, p) for m in ("fcnn", "resnet17") for p in ("float32", "bf16")}
    assert len(report["timings"]["l2bn_layer_eager"]["rows"]) == 3
    assert len(report["timings"]["l2bn_layer_compiled"]["rows"]) == 3
    assert {(r["model"], r["norm"]) for r in report["checks"]["amp_step"]["rows"]} == {
        (m, n) for m in ("fcnn", "fsfcnn", "resnet17") for n in ("bn", "l2bn")}
    assert all(r["all_reduces"] >= 2 for r in report["checks"]["sync"]["rows"])
    md = (out / "gpu-check.md").read_text()
    assert md.startswith("# GPU check") and "Rehearsal" in md and "## Targets" in md
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.md"]
    # progress: one line per step with the elapsed seconds
    for name in CHECKS | TIMINGS:
        assert any(line.startswith("[") and f"] {name}: " in line for line in proc.stdout.splitlines()), name


def test_without_cuda_one_line_and_exit_0(tmp_path):
    proc = _run([], tmp_path, timeout=120, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0
    assert proc.stdout + proc.stderr == "no CUDA device: nothing to check\n"
    assert not (tmp_path / "gpu-check").exists()


def test_without_soundfile_the_extraction_check_is_skipped(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "soundfile.py").write_text('raise ImportError("soundfile blocked by the test")\n')
    site = tmp_path / "site"
    proc = _run(["--rehearse", "--only", "extract", "--out", str(tmp_path / "out")], tmp_path, timeout=300,
                PYTHONPATH=str(blocker), GPU_CHECK_SITE=str(site))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    extract = report["checks"]["extract"]
    if report["environment"]["soundfile"].startswith("carried wheels"):  # a checkout with .whl/ wheels
        assert extract["status"] == "passed", extract
    else:
        assert extract["status"] == "skipped"
        assert extract["reason"] == "skipped: soundfile missing"
        assert report["environment"]["soundfile"].startswith("missing")
    assert report["all_checks_passed"] is True


def test_python_entry_point_refuses_an_unknown_step(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--only", "nope"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown step 'nope'" in proc.stderr
