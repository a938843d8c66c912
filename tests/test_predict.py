"""`asc predict` and `Predictor` on a stored tiny run (1-s windows at 8 kHz): the same probabilities as
`asc evaluate`, any rate/channels/bit depth/length, folders and lists, and broken files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from asc.cli import main

from .tiny_tau import SR


def _rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    return rows[0], rows[1:]


def _tone(seconds: float, sr: int, channels: int = 1, freq: float = 500.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return np.stack([y] * channels, axis=1).astype(np.float32) if channels > 1 else y.astype(np.float32)


def test_predict_gives_the_probabilities_evaluate_wrote(tiny_run, tmp_path):
    """The wav files of the evaluate split, through asc predict, against RUN/report/predictions.csv."""
    run, data = tiny_run["run"], tiny_run["base"] / "tau"
    assert main(["evaluate", str(run), "--device", "cpu", "--no-angles"]) == 0
    header, evaluated = _rows(run / "report" / "predictions.csv")
    files = [r[0] for r in evaluated]
    out = tmp_path / "p.csv"
    paths = [str(data / f) for f in files]
    assert main(["predict", str(run), *paths, "--out", str(out), "--device", "cpu"]) == 0
    header2, predicted = _rows(out)
    assert header2 == header
    assert [r[0] for r in predicted] == files  # named as the dataset's lists name them, like evaluate
    assert main(["predict", str(run), *paths[:2], "--out", str(out), "--names", "as-given"]) == 0
    assert [r[0] for r in _rows(out)[1]] == paths[:2]
    a = np.array([[float(v) for v in r[2:]] for r in evaluated])
    b = np.array([[float(v) for v in r[2:]] for r in predicted])
    assert np.abs(a - b).max() < 1e-4, np.abs(a - b).max()  # measured: 1e-16 (a float32 cache)
    assert [r[1] for r in predicted] == [r[1] for r in evaluated]


@pytest.mark.parametrize("sr, channels, subtype, seconds", [
    (16000, 2, "PCM_16", 1.0),    # 16-kHz stereo
    (48000, 1, "PCM_16", 1.0),    # 48-kHz 16-bit
    (44100, 1, "PCM_24", 1.0),    # 44.1-kHz 24-bit mono
    (SR, 1, "FLOAT", 1.0),
])
def test_any_rate_channels_and_bit_depth(tiny_run, tmp_path, sr, channels, subtype, seconds):
    from asc.predict import Predictor

    path = tmp_path / "clip.wav"
    sf.write(path, _tone(seconds, sr, channels), sr, subtype=subtype)
    predictor = Predictor.from_run(tiny_run["run"])
    result = predictor.predict(path)
    assert len(result.windows) == 1 and not result.padded
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-9
    assert result.duration == pytest.approx(seconds, abs=1e-3)
    # the same tone at the model's own rate, in memory, scores nearly the same (resampling differs a little)
    same = predictor.predict_waveform(_tone(seconds, SR), SR)
    assert same.scene == result.scene


def test_short_and_long_clips_windows_and_json(tiny_run, tmp_path):
    short, long_ = tmp_path / "short.wav", tmp_path / "long.flac"
    sf.write(short, _tone(0.4, SR), SR)
    sf.write(long_, _tone(3.5, SR), SR)
    out, js = tmp_path / "p.csv", tmp_path / "p.json"
    assert main(["predict", str(tiny_run["run"]), str(short), str(long_), "--out", str(out),
                 "--json", str(js), "--hop", "1"]) == 0
    doc = json.loads(js.read_text())
    by_name = {f["file"]: f for f in doc["files"]}
    s, lg = by_name[str(short)], by_name[str(long_)]
    assert s["padded"] is True and len(s["windows"]) == 1
    # 3.5 s in 1-s windows every 1 s: 0, 1, 2, and one more ending at the end (2.5)
    assert [w["start"] for w in lg["windows"]] == [0.0, 1.0, 2.0, 2.5] and lg["padded"] is False
    mean = {k: np.mean([w["probabilities"][k] for w in lg["windows"]]) for k in lg["probabilities"]}
    assert all(abs(mean[k] - v) < 1e-12 for k, v in lg["probabilities"].items())
    _, rows = _rows(out)
    assert [r[0] for r in rows] == [str(short), str(long_)]


def test_folders_lists_and_broken_files(tiny_run, tmp_path, capsys):
    folder = tmp_path / "rec"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.flac"):
        sf.write(folder / name, _tone(1.0, SR), SR)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "p.csv"
    run = str(tiny_run["run"])
    assert main(["predict", run, str(folder), "--out", str(out)]) == 0
    assert [r[0] for r in _rows(out)[1]] == [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two files\n{folder / 'a.wav'}\nrec/sub/b.flac\n")
    assert main(["predict", run, f"@{listing}", "--out", str(out)]) == 0
    assert len(_rows(out)[1]) == 2

    # broken inputs: one line naming the file, non-zero exit, nothing written
    bad_empty, bad_text, bad_nan = tmp_path / "empty.wav", tmp_path / "text.wav", tmp_path / "nan.wav"
    sf.write(bad_empty, np.zeros(0, np.float32), SR)
    bad_text.write_text("RIFF? no")
    y = _tone(1.0, SR)
    y[100] = np.nan
    sf.write(bad_nan, y, SR, subtype="FLOAT")
    fresh = tmp_path / "fresh.csv"
    capsys.readouterr()
    for bad in (bad_empty, bad_text, bad_nan):
        assert main(["predict", run, str(folder / "a.wav"), str(bad), "--out", str(fresh)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0], err
        assert not fresh.exists()
    # --skip-bad: the others are written, the bad ones listed at the end
    assert main(["predict", run, str(bad_nan), str(folder / "a.wav"), str(bad_text), "--out", str(fresh),
                 "--skip-bad"]) == 0
    assert [r[0] for r in _rows(fresh)[1]] == [str(folder / "a.wav")]
    err = capsys.readouterr().err
    assert "skipped" in err and str(bad_nan) in err and str(bad_text) in err


def test_predict_refuses_what_it_cannot_score(tiny_run, tmp_path, capsys):
    run = str(tiny_run["run"])
    clip = tmp_path / "c.wav"
    sf.write(clip, _tone(1.0, SR), SR)
    assert main(["predict", str(tmp_path / "nope"), str(clip)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["predict", run, str(clip), "--window", "0.01"]) == 2  # too short for the deltas
    assert "--window" in capsys.readouterr().err
    assert main(["predict", run, str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main(["predict", run, str(empty)]) == 2
    assert "no audio files" in capsys.readouterr().err
    listing = tmp_path / "nothing.txt"
    listing.write_text("# nothing here\n\n")
    assert main(["predict", run, f"@{listing}"]) == 2
    assert "lists no paths" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "examples:" in capsys.readouterr().out
