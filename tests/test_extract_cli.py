"""`asc extract` as a user runs it: help with an example, summary lines, splits, dtype, overrides,
multi-part runs and merge, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asc.cli import main
from asc.features.cache import cache_path, read_manifest
from tests.test_cache import CLIPS, make_tau_set, write_wav


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    data = make_tau_set(base / "tau")
    cfg = base / "short.yaml"
    cfg.write_text("duration: 0.5\nn_mels: 64\nstorage:\n  shard_size: 4\n")
    return base, data, cfg


def _extract(capsys, *args) -> tuple[int, list[str], str]:
    code = main(["extract", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def test_help_has_an_example():
    out = subprocess.run([sys.executable, "-m", "asc", "extract", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "example" in out and "asc extract --data" in out and "--merge" in out


def test_extract_then_noop_rerun(setup, capsys, tmp_path):
    _, data, cfg = setup
    out = tmp_path / "cache"
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", out, "--workers", 2)
    assert code == 0
    assert lines[0] == "8 to extract, 0 cached"
    cache_dir = cache_path(out, cfg)
    assert lines[-1] == str(cache_dir)
    assert "8 clips (0 skipped) in 2 shards, shape (3, 64, 14), float16" in lines
    m = read_manifest(cache_dir)
    assert m["name"] == "short" and m["dataset"]["root"] == str(data.resolve())
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", out)
    assert code == 0 and lines[0] == "0 to extract, 8 cached" and lines[-1] == str(cache_dir)


def test_splits_dtype_shard_size_and_set(setup, capsys, tmp_path):
    _, data, cfg = setup
    out = tmp_path / "cache"
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", out, "--workers", 1,
                              "--splits", "evaluate", "--dtype", "float32", "--shard-size", 2,
                              "--set", "n_mels=32")
    assert code == 0 and lines[0] == "3 to extract, 0 cached"
    cache_dir = Path(lines[-1])
    m = read_manifest(cache_dir)
    assert {r["split"] for r in m["clips"]} == {"evaluate"} and m["num_clips"] == 3
    assert m["dtype"] == "float32" and m["shard_size"] == 2 and m["shape"] == [3, 32, 14]
    assert np.load(cache_dir / m["clips"][0]["shard"]).dtype == np.float32
    assert cache_dir != cache_path(out, cfg)  # the override is part of the hash


def test_parts_and_merge_from_the_command_line(setup, capsys, tmp_path):
    _, data, cfg = setup
    out = tmp_path / "cache"
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", out, "--workers", 1,
                              "--num-shards", 2, "--shard-index", 1)
    assert code == 0 and lines[0] == "4 to extract, 0 cached (shards 1 of 2)"
    code, _, err = _extract(capsys, "--features", cfg, "--out", out, "--merge")
    assert code == 2 and "parts not yet run or copied in: 0" in err and len(err.strip().splitlines()) == 1
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", out, "--workers", 1,
                              "--num-shards", 2, "--shard-index", 0)
    assert code == 0 and "8 clips (0 skipped) in 2 shards" in lines[-2]  # the last part merged
    code, lines, _ = _extract(capsys, "--features", cfg, "--out", out, "--merge")
    assert code == 0 and lines == ["8 clips, 0 skipped, 2 shards", str(cache_path(out, cfg))]


@pytest.mark.parametrize("args, message", [
    (["--features", "{cfg}", "--out", "{out}"], "--data DIR is required"),
    (["--data", "{data}", "--features", "{cfg}", "--out", "{out}", "--splits", "trian"],
     "unknown split 'trian'"),
    (["--data", "{data}", "--features", "{cfg}", "--out", "{out}", "--num-shards", "2", "--shard-index", "2"],
     "--shard-index 2 must be in 0..1"),
    (["--data", "{data}", "--features", "{cfg}", "--out", "{out}", "--set", "fmax=30000"], "fmax"),
    (["--data", "{out}/nowhere", "--features", "{cfg}", "--out", "{out}"], "no such dataset folder"),
    (["--data", "{data}", "--features", "{out}/missing.yaml", "--out", "{out}"], "no such config file"),
    (["--data", "{data}", "--features", "{cfg}", "--out", "{out}", "--workers", "0"], "--workers 0"),
])
def test_errors_are_one_line(setup, capsys, tmp_path, args, message):
    _, data, cfg = setup
    args = [a.format(cfg=cfg, data=data, out=tmp_path) for a in args]
    code, lines, err = _extract(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cuda_without_a_gpu_is_a_clear_error(setup, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _, data, cfg = setup
    code, _, err = _extract(capsys, "--data", data, "--features", cfg, "--out", tmp_path, "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


def test_missing_audio_stops_or_is_skipped(setup, capsys, tmp_path):
    _, _, cfg = setup
    data = make_tau_set(tmp_path / "tau", CLIPS[:3])
    (data / "audio" / "bus-paris-2000-10-a.wav").unlink()
    code, _, err = _extract(capsys, "--data", data, "--features", cfg, "--out", tmp_path / "c")
    assert code == 2 and "missing" in err
    code, lines, _ = _extract(capsys, "--data", data, "--features", cfg, "--out", tmp_path / "c",
                              "--skip-bad", "--workers", 1)
    assert code == 0 and "skipped audio/bus-paris-2000-10-a.wav" in " ".join(lines)
    m = read_manifest(lines[-1])
    assert m["num_clips"] == 2 and m["skipped"][0]["file"] == "audio/bus-paris-2000-10-a.wav"


def _cut_wav(path: Path, keep: int = 200) -> None:
    """A WAV cut short by a bad copy: header and a few frames left (libsndfile reads what is there)."""
    path.write_bytes(path.read_bytes()[:keep])


def test_help_names_verify_and_pad_short():
    out = subprocess.run([sys.executable, "-m", "asc", "extract", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--verify" in out and "--pad-short" in out


def test_truncated_audio_is_an_error_unless_padded_or_skipped(setup, capsys, tmp_path):
    _, _, cfg = setup
    data = make_tau_set(tmp_path / "tau", CLIPS[:4])
    cut = data / "audio" / "airport-lisbon-1000-40000-b.wav"
    _cut_wav(cut)  # 200 bytes of 16-bit audio: 78 frames, 0.002 s
    write_wav(data / "audio" / "bus-paris-2000-10-a.wav", seed=2, seconds=0.47)  # within 0.05 s: fine
    args = ("--data", data, "--features", cfg, "--workers", 1)

    code, _, err = _extract(capsys, *args, "--out", tmp_path / "c")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{cut}: 0.002 s of audio, shorter than the 0.5 s" in err
    assert "--pad-short" in err and "--skip-bad" in err
    assert not list((tmp_path / "c").glob("*/manifest.json"))

    name = "audio/airport-lisbon-1000-40000-b.wav"
    code, lines, _ = _extract(capsys, *args, "--out", tmp_path / "c", "--pad-short")
    assert code == 0 and f"padded {name}: 0.0018 s of audio zero-padded to 0.5 s" in lines
    assert "4 clips (0 skipped, 1 zero-padded) in 1 shard, shape (3, 64, 14), float16" in lines
    m = read_manifest(lines[-1])
    assert m["pad_short"] is True and m["num_clips"] == 4
    assert m["padded"] == [{"id": "airport-lisbon-1000-40000-b", "file": name, "duration_s": 0.0018}]

    # the padded cache stays whole when a run without --pad-short refuses the clip again
    code, _, err = _extract(capsys, *args, "--out", tmp_path / "c")
    assert code == 2 and "0.002 s of audio" in err
    assert read_manifest(lines[-1])["padded"] == m["padded"]

    code, lines, _ = _extract(capsys, *args, "--out", tmp_path / "c", "--skip-bad")
    assert code == 0 and lines[0] == "1 to extract, 3 cached"  # the padded row is not reused
    m = read_manifest(lines[-1])
    assert m["num_clips"] == 3 and m["padded"] == [] and m["pad_short"] is False
    assert [s["file"] for s in m["skipped"]] == [name]
    assert "shorter than the 0.5 s" in m["skipped"][0]["reason"]


@pytest.mark.parametrize("link, reason", [("self", "symbolic link loop"),
                                          ("nowhere", "broken symbolic link")])
def test_unopenable_audio_names_the_real_cause(setup, capsys, tmp_path, link, reason):
    _, _, cfg = setup
    data = make_tau_set(tmp_path / "tau", CLIPS[:3])
    victim = data / "audio" / "bus-paris-2000-10-a.wav"
    victim.unlink()
    victim.symlink_to(victim.name if link == "self" else "elsewhere.wav")
    args = ("--data", data, "--features", cfg, "--out", tmp_path / "c", "--workers", 1)
    code, _, err = _extract(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"1 of 3 audio files listed in the metadata cannot be opened (audio/{victim.name}: {reason}" in err
    assert "--skip-bad" in err and "--allow-missing" not in err and "missing" not in err
    code, lines, _ = _extract(capsys, *args, "--skip-bad")
    assert code == 0
    m = read_manifest(lines[-1])
    assert m["num_clips"] == 2 and reason in m["skipped"][0]["reason"]
