"""Outputs never overwrite what they should not: predict's outputs against its inputs and the run,
several outputs written as one, compare's figures, names from reports, cached splits, the report
folder, and a synthetic set rebuilt beside files of the user's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from asc.errors import AscError

ROOT = Path(__file__).resolve().parents[1]


def test_predict_refuses_outputs_that_would_destroy_inputs_or_the_run(tiny_run, tmp_path, capsys):
    from asc.cli import main

    clip = tmp_path / "in.wav"
    clip.write_bytes(b"not read: the outputs are checked first")
    run = str(tiny_run["run"])
    cases = [
        (["--out", str(clip)], "is one of the audio inputs"),
        (["--out", str(tmp_path / "p.csv"), "--json", str(tmp_path / "p.csv")], "name the same file"),
        (["--out", str(tiny_run["run"] / "checkpoints" / "best.pt")], "lies inside the run folder"),
    ]
    for args, message in cases:
        assert main(["predict", run, str(clip), *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert clip.read_bytes().startswith(b"not read")
    assert (tiny_run["run"] / "checkpoints" / "best.pt").stat().st_size > 1000


def test_several_outputs_are_written_all_or_none(tmp_path, monkeypatch):
    from asc import fileio

    first, second = tmp_path / "a.csv", tmp_path / "b.json"
    first.write_text("old a")
    second.write_text("old b")
    real, calls = os.fsync, {"n": 0}

    def failing(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", failing)
    with pytest.raises(OSError):
        fileio.write_all([(first, "new a"), (second, "new b")])
    assert first.read_text() == "old a" and second.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.json"]  # no temp file left
    monkeypatch.setattr(fileio.os, "fsync", real)
    fileio.write_all([(first, "new a"), (second, "new b")])
    assert first.read_text() == "new a" and second.read_text() == "new b"


def test_names_from_reports_cannot_leave_the_output_folder():
    from asc.eval.curves import safe_name

    for name in ("../../etc/passwd", "/abs/path", ".hidden", "a/b\\c", ""):
        cleaned = safe_name(name)
        assert "/" not in cleaned and "\\" not in cleaned and not cleaned.startswith(".") and cleaned
    assert safe_name("fcnn") == "fcnn" and safe_name("l2bn+freq_mixstyle") == "l2bn+freq_mixstyle"


def _write_report(run: Path, model: str, norm: str) -> None:
    report = {"run": {"model": model, "norm": norm, "seed": 0},
              "overall": {"accuracy": 0.5, "macro_accuracy": 0.5, "log_loss": 1.2, "n": 10},
              "per_device": {}, "device_groups": {}, "angles": {},
              "history": [{"epoch": 1, "val_acc": 0.4, "train_loss": 2.0},
                          {"epoch": 2, "val_acc": 0.5, "train_loss": 1.5}]}
    (run / "report").mkdir(parents=True, exist_ok=True)
    (run / "report" / "report.json").write_text(json.dumps(report))


def test_compare_deletes_only_the_figures_it_wrote(tmp_path):
    from asc.eval.compare import compare_runs

    out = tmp_path / "cmp"
    out.mkdir()
    (out / "curves_mine.png").write_bytes(b"the user's")
    runs = []
    for model in ("fcnn", "../escape"):
        for norm in ("bn", "l2bn"):
            run = tmp_path / f"{model.strip('./')}_{norm}"
            _write_report(run, model, norm)
            runs.append(run)
    summary, _, _ = compare_runs(runs, out)
    assert "curves__escape_accuracy_loss.png" in summary["figures"]  # "../escape", made a plain name
    assert all("/" not in f for f in summary["figures"]) and not list(tmp_path.glob("*.png"))
    escaped = [f for f in summary["figures"] if "escape" in f]
    compare_runs(runs[:2], out)  # fcnn only: the escape model's figures of the first comparison go
    assert (out / "curves_mine.png").read_bytes() == b"the user's"
    assert escaped and not any((out / f).exists() for f in escaped)
    assert (out / "curves_fcnn_accuracy_loss.png").exists()


def test_extract_splits_accumulate(tmp_path, capsys):
    from asc.cli import main
    from tests.tiny_tau import FEATURES, write_tau_folder

    data = write_tau_folder(tmp_path / "tau")
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(FEATURES))
    base = ["extract", "--data", str(data), "--features", str(tmp_path / "f.yaml"), "--out",
            str(tmp_path / "cache"), "--workers", "1"]
    assert main([*base, "--splits", "evaluate"]) == 0
    assert main([*base, "--splits", "train"]) == 0
    out = capsys.readouterr().out
    assert "keeping the split(s) already in the cache: evaluate" in out
    cache_dir = Path(out.strip().splitlines()[-1])
    splits = {r["split"] for r in json.loads((cache_dir / "manifest.json").read_text())["clips"]}
    assert splits == {"train", "evaluate"}


def test_an_interrupted_evaluation_leaves_the_old_report(tiny_run, tmp_path, monkeypatch):
    import shutil

    from asc.eval import evaluate as ev
    from asc.eval import report as rep

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run, ignore=shutil.ignore_patterns("report*"))
    result = ev.evaluate_run(run, device="cpu", angles=False)
    before = {p.name: p.read_bytes() for p in result.out_dir.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "write_predictions", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_run(run, device="cpu", angles=False)
    assert {p.name: p.read_bytes() for p in result.out_dir.iterdir()} == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".report")) == []


def test_synth_force_deletes_only_what_synthesis_wrote(tmp_path):
    from asc.data.synth import synthesize

    out = tmp_path / "set"
    synthesize(out, preset="tiny", duration=1.0, workers=1)
    mine = out / "audio" / "my_recording.wav"
    mine.write_bytes(b"the user's")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(AscError, match="pass --force"):
        synthesize(out, preset="tiny", duration=1.5, workers=1)
    synthesize(out, preset="tiny", duration=1.5, workers=1, force=True)
    assert mine.read_bytes() == b"the user's" and (out / "notes.txt").read_text() == "the user's"
    import soundfile as sf

    assert sf.info(str(next(p for p in (out / "audio").glob("*-a.wav")))).duration == pytest.approx(1.5)


def test_smaller_refusals(tmp_path, capsys):
    """A second extraction of one cache at once, a config too large to be one, a text file in place of
    a checkpoint, and stage ranges that would run nothing: one line each."""
    import subprocess

    from asc.config import load_yaml
    from asc.errors import ConfigError
    from asc.features.cli import lock_cache
    from asc.runs import load_checkpoint

    cache = tmp_path / "cache" / "f-abc"
    cache.mkdir(parents=True)
    held = lock_cache(cache)
    with pytest.raises(AscError, match=r"another asc extract is writing this cache"):
        lock_cache(cache)
    held.close()
    lock_cache(cache).close()  # free again once the first has ended
    assert [p.name for p in cache.parent.iterdir()] == ["f-abc"] and not list(cache.iterdir())  # no lock file

    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" + "# padding\n" * 120_000)
    with pytest.raises(ConfigError, match=r"big.yaml: 1.1 MiB is not a config \(at most 1 MiB\)"):
        load_yaml(big)

    text = tmp_path / "best.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(AscError, match=r"best.pt: not a torch file \(text or other data\)"):
        load_checkpoint(text)
    text.write_bytes(b"")
    with pytest.raises(AscError, match=r"best.pt: an empty file"):
        load_checkpoint(text)

    for args, message in ((["--stage", "9"], "--stage 9 comes after --stop-stage 4: nothing to run"),
                          (["--stage", "4", "--stop-stage", "1"], "--stage 4 comes after --stop-stage 1"),
                          (["--stop-stage", "7"], "--stop-stage 7: the stages are 0 to 4")):
        res = subprocess.run(["bash", "recipes/run_dcase.sh", "--synth", str(tmp_path / "none"), *args],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert not (tmp_path / "none").exists()


def test_rehash_finds_audio_replaced_with_the_same_size_and_time(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from asc.cli import main
    from asc.features.dataset import FeatureDataset
    from tests.tiny_tau import FEATURES, write_tau_folder

    data = write_tau_folder(tmp_path / "tau")
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(FEATURES))
    base = ["extract", "--data", str(data), "--features", str(tmp_path / "f.yaml"), "--out",
            str(tmp_path / "cache"), "--workers", "1"]
    assert main([*base, "--rehash"]) == 0
    cache_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    target = sorted((data / "audio").glob("*-a.wav"))[0]
    clip_id = target.stem
    ds = FeatureDataset(cache_dir, split=None)
    before = ds.array(ds.ids.index(clip_id))
    stat = target.stat()
    info = sf.info(str(target))
    sf.write(target, np.zeros(info.frames, dtype=np.float32) + 0.01, info.samplerate, subtype=info.subtype)
    assert target.stat().st_size == stat.st_size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time: other content
    assert main(base) == 0
    assert "0 to extract" in capsys.readouterr().out  # size and time alone cannot see it
    assert main([*base, "--rehash"]) == 0
    out = capsys.readouterr().out
    assert "1 file(s) differ from what the shard was built from" in out and "1 to extract" in out
    ds = FeatureDataset(cache_dir, split=None)
    assert not np.allclose(ds.array(ds.ids.index(clip_id)), before)
