"""`asc data ...` end to end through the real entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.cli import main


def test_help_has_examples(capsys):
    for argv in (["data", "--help"], ["data", "synth", "--help"], ["data", "download", "--help"],
                 ["data", "check", "--help"], ["data", "synth-cifar", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and "asc data" in out


def test_top_level_help_does_not_import_the_work():
    code = ("import sys; from asc.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('numpy', 'soundfile', 'scipy', 'asc.data.synth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_synth_then_check(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny", "--duration", "0.5", "--workers",
                 "1"]) == 0
    printed = capsys.readouterr().out
    assert "train    a 40" in printed and f"to {out}" in printed
    assert main(["data", "synth", "--out", str(out), "--preset", "tiny", "--duration", "0.5"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["data", "check", str(out), "--audio", "all"]) == 0
    report = capsys.readouterr().out
    assert "SYNTHETIC" in report and "problems: none" in report
    assert "evaluate" in report and "s6" in report and "street_traffic" in report
    assert "0.5 s PCM_24" in report


def test_check_fails_on_bad_audio(tiny_dataset, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    victim = sorted((root / "audio").iterdir())[0]
    sf.write(victim, np.zeros((44100, 2), dtype=np.float32), 22050, subtype="PCM_16")
    assert main(["data", "check", str(root), "--audio", "all"]) == 1
    report = capsys.readouterr().out
    assert "problem: 1 of" in report and victim.name in report and "22050 Hz, 2 channels" in report


def test_check_missing_audio(tiny_dataset, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    victim = sorted((root / "audio").iterdir())[3]
    victim.unlink()
    assert main(["data", "check", str(root), "--audio", "all"]) == 1
    out = capsys.readouterr().out
    assert f"problem: 1 of 116 audio files listed in the metadata are missing (audio/{victim.name})" in out
    assert "audio: 115 file(s) checked (all)" in out


def test_check_broken_metadata_is_one_line(tmp_path, capsys):
    (tmp_path / "evaluation_setup").mkdir()
    (tmp_path / "evaluation_setup/fold1_train.csv").write_text("filename\tscene_label\naudio/x.wav\tbeach\n")
    assert main(["data", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold1_train.csv:2" in err and "unknown scene 'beach'" in err


def test_check_real_metadata_without_audio(tau2020_meta_dir, capsys):
    assert main(["data", "check", str(tau2020_meta_dir), "--audio", "none"]) == 1
    out = capsys.readouterr().out
    assert "TAU Urban Acoustic Scenes 2020 Mobile (v2)" in out
    assert "test 0, unused 6105; fold1_test.csv lists the 2968 evaluate clips again" in out
    assert "problem: 23035 of 23035 audio files" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["train"] == ["10215", "749", "748", "750", "750", "750", "0", "0", "0", "13962"]
    assert lines["evaluate"][-1] == "2968"


def test_synth_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(tmp_path), "--preset", "tiny"]) == 2
    assert "holds no synthetic set" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_synth_cifar_is_wired(tmp_path, capsys):
    pytest.importorskip("asc.data.cifar")
    assert main(["data", "synth-cifar", "--out", str(tmp_path), "--preset", "tiny", "--seed", "1"]) == 0
    assert "synthetic CIFAR-100" in capsys.readouterr().out
    assert any(tmp_path.rglob("*"))


def test_check_and_extract_agree_on_broken_audio(tiny_dataset, tmp_path, capsys):
    """One verdict for both commands: a file cut short, NaN samples past the first 2 s, a link loop."""
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    files = sorted((root / "audio").iterdir())
    cut, nan, loop = files[0], files[10], files[20]
    cut.write_bytes(cut.read_bytes()[:200])  # 52 frames of 24-bit audio
    x = np.full(3 * 44100, 0.1, dtype=np.float32)
    x[int(2.5 * 44100)] = np.nan  # beyond the 2 s a clip uses: still a corrupt file
    sf.write(nan, x, 44100, subtype="FLOAT")
    loop.unlink()
    loop.symlink_to(loop.name)

    assert main(["data", "check", str(root), "--audio", "all"]) == 1
    report = capsys.readouterr().out
    assert f"problem: 1 of 116 audio files listed in the metadata cannot be opened (audio/{loop.name}: " \
           f"symbolic link loop" in report
    assert "problem: 2 of 115 checked audio file(s) are unusable (`asc extract` refuses them too); " in report
    assert f"{cut}: 0.001 s of audio, shorter than the 2 s" in report or f"{nan}: 1 NaN/Inf samples" in report
    assert "missing" not in report

    features = tmp_path / "f.yaml"
    features.write_text("sample_rate: 8000\nduration: 2\nn_fft: 256\nhop_length: 128\nn_mels: 16\n"
                        "fmax: 4000\nstorage:\n  shard_size: 64\n")
    args = ["extract", "--data", str(root), "--features", str(features), "--out", str(tmp_path / "c"),
            "--workers", "1"]
    assert main(args) == 2
    assert "symbolic link loop" in capsys.readouterr().err
    assert main([*args, "--skip-bad"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    skipped = json.loads((Path(lines[-1]) / "manifest.json").read_text())["skipped"]
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert sorted(reasons) == sorted(f"audio/{p.name}" for p in (cut, nan, loop))
    assert "1 NaN/Inf samples" in reasons[f"audio/{nan.name}"]


def test_every_command_prints_its_help_with_an_example(capsys):
    """`asc --help` and each subcommand's --help render (a stray % in a help text would crash them)."""
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    listing = capsys.readouterr().out
    commands = ("data", "extract", "train", "evaluate", "compare", "analyze", "predict")
    assert all(f"    {c} " in listing for c in commands)
    for command in commands:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "example" in capsys.readouterr().out, command
