"""`Predictor` and `asc predict` at their edges: array layouts, bad files reported not raised, names
relative to a dataset folder, duplicates, silent files, range-checked options and bounded batches.
Tiny synthetic audio (8 kHz, 1-s windows) through the stored tiny run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from asc.cli import main
from asc.errors import AscError, ConfigError, DataError

from .tiny_tau import SR


def _tone(seconds: float = 1.0, sr: int = SR, freq: float = 500.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return y.astype(np.float32)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))[1:]


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from asc.predict import Predictor

    return Predictor.from_run(tiny_run["run"])


def _close(a, b, tol=1e-6):
    return max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < tol


# ------------------------------------------------------------------------------ array layouts


def test_every_layout_of_the_same_stereo_audio_scores_the_same(predictor):
    left, right = _tone(freq=500.0), _tone(freq=900.0, seed=1)
    frames_channels = np.stack([left, right], axis=1)  # soundfile's (frames, channels)
    channels_samples = frames_channels.T
    mono = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    a = predictor.predict_waveform(channels_samples, SR)
    b = predictor.predict_waveform(frames_channels, SR, channels_last=True)
    c = predictor.predict_waveform(mono, SR)
    d = predictor.predict_waveform(mono[None], SR)  # (1, samples)
    e = predictor.predict_waveform(mono[:, None], SR, channels_last=True)  # (frames, 1)
    for other in (b, c, d, e):
        assert _close(a, other)
    assert a.duration == pytest.approx(1.0) and len(a.windows) == 1


def test_a_frames_channels_array_without_channels_last_is_refused_naming_the_option(predictor):
    frames_channels = np.stack([_tone(), _tone(seed=1)], axis=1)  # (8000, 2)
    with pytest.raises(ConfigError, match=r"shape \(8000, 2\) would be 8000 channels.*channels_last=True"):
        predictor.predict_waveform(frames_channels, SR)
    with pytest.raises(ConfigError, match=r"drop channels_last=True"):
        predictor.predict_waveform(frames_channels.T, SR, channels_last=True)
    sixteen = np.zeros((16, SR), np.float32) + _tone()
    assert predictor.predict_waveform(sixteen, SR).windows  # 16 channels: fine
    with pytest.raises(ConfigError, match=r"got shape \(1, 2, 8000\)"):
        predictor.predict_waveform(_tone()[None, None].repeat(2, axis=1), SR)


@pytest.mark.parametrize("sr, error", [(float("nan"), ConfigError), (8000.5, ConfigError),
                                       ("8000", ConfigError), (1, DataError), (10_000_000, DataError)])
def test_waveform_rates_are_checked(predictor, sr, error):
    with pytest.raises(error, match="sr must be a whole number|sample rate"):
        predictor.predict_waveform(_tone(), sr)


def test_waveforms_with_nan_or_no_samples_are_refused(predictor):
    y = _tone()
    y[5] = np.nan
    with pytest.raises(DataError, match="mine: 1 NaN/Inf samples"):
        predictor.predict_waveform(y, SR, name="mine")
    with pytest.raises(DataError, match="empty audio"):
        predictor.predict_waveform(np.zeros(0, np.float32), SR)


# ------------------------------------------------------------------------------ many files


def _files(tmp_path):
    good = [tmp_path / "a.wav", tmp_path / "b.flac"]
    for i, p in enumerate(good):
        sf.write(p, _tone(seed=i), SR)
    empty, text = tmp_path / "empty.wav", tmp_path / "text.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    text.write_text("RIFF? no")
    return good, [empty, text]


def test_predict_many_reports_bad_files_instead_of_raising(predictor, tmp_path):
    good, bad = _files(tmp_path)
    order = [bad[0], good[0], bad[1], good[1]]
    results, skipped = predictor.predict_many(order, show_progress=False)
    assert [r.name for r in results] == [str(p) for p in good]
    assert [path for path, _ in skipped] == [str(p) for p in bad]
    assert all(str(path) in reason for path, reason in skipped)
    with pytest.raises(DataError, match="empty.wav"):  # for a command that must stop before writing
        predictor.predict_many(order, skip_bad=False, show_progress=False)


def test_duplicates_are_scored_once_with_one_row_each(predictor, tiny_run, tmp_path, monkeypatch, capsys):
    good, _ = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    heard = []
    predictor.warn, before = heard.append, predictor.warn
    try:
        results, _ = predictor.predict_many([str(good[0]), "a.wav", str(good[1]), str(good[0])],
                                            show_progress=False)
    finally:
        predictor.warn = before
    assert [r.name for r in results] == [str(good[0]), str(good[1])]
    assert heard == ["2 path(s) given more than once; each file is scored once"]
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(tiny_run["run"]), str(good[0]), str(good[0]), "--out", str(out)]) == 0
    assert [r[0] for r in _rows(out)] == [str(good[0])]
    assert "more than once" in capsys.readouterr().err


def test_results_keep_input_order_across_batches_of_windows(predictor, tmp_path):
    """Windows of several files share batches; files of many windows span several."""
    from asc.predict import Predictor

    paths = []
    for i, seconds in enumerate([3.5, 0.4, 1.0, 2.2, 1.0]):
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(paths[-1], _tone(seconds, seed=i, freq=300.0 + 150 * i), SR)
    small = Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, hop=0.5, batch_size=3)
    big = Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, hop=0.5, batch_size=64)
    a, _ = small.predict_many(paths, show_progress=False)
    b, _ = big.predict_many(paths, show_progress=False)
    assert [r.name for r in a] == [r.name for r in b] == [str(p) for p in paths]
    assert [len(r.windows) for r in a] == [6, 1, 1, 4, 1]  # 3.5 s: 0, 0.5 ... 2.5; 2.2 s: 0 ... 1, 1.2
    for x, y in zip(a, b):
        assert _close(x, y, 1e-5)
        for wx, wy in zip(x.windows, y.windows):
            assert wx.start == wy.start and wx.scene == wy.scene
    assert _close(a[3], small.predict(paths[3]), 1e-5)


def test_windows_are_made_and_scored_in_bounded_batches(predictor, tmp_path, monkeypatch):
    """A long file at a fine hop never has all its windows in memory: each forward pass sees at most
    batch_size windows, and each window is cut when its batch is made."""
    from asc.predict import Predictor

    path = tmp_path / "long.wav"
    sf.write(path, _tone(3.0), SR)
    p = Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, hop=0.1, batch_size=4)
    sizes = []
    original = Predictor._score

    def spy(self, segments, names):
        sizes.append(len(segments))
        return original(self, segments, names)

    monkeypatch.setattr(Predictor, "_score", spy)
    result = p.predict(path)
    assert len(result.windows) == 21 == sum(sizes)
    assert max(sizes) == 4 and len(sizes) == 6


# ------------------------------------------------------------------------------ names


def test_files_inside_a_dataset_folder_are_named_as_its_lists_name_them(predictor, tmp_path):
    from asc.predict import Predictor

    tau = tmp_path / "tau"
    (tau / "audio").mkdir(parents=True)
    (tau / "meta.csv").write_text("filename\tscene_label\n")
    eval_set = tmp_path / "eval"
    (eval_set / "audio").mkdir(parents=True)
    (eval_set / "evaluation_setup").mkdir()
    loose = tmp_path / "loose"
    loose.mkdir()
    paths = [tau / "audio" / "0.wav", eval_set / "audio" / "1.wav", loose / "2.wav"]
    for p in paths:
        sf.write(p, _tone(), SR)
    results, _ = predictor.predict_many(paths, show_progress=False)
    assert [r.name for r in results] == ["audio/0.wav", "audio/1.wav", str(paths[2])]
    assert predictor.predict(paths[0]).name == "audio/0.wav"
    given = Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, names="as-given")
    assert [r.name for r in given.predict_many(paths, show_progress=False)[0]] == [str(p) for p in paths]

    clash = tmp_path / "other"  # a second dataset with a file of the same relative name
    (clash / "audio").mkdir(parents=True)
    (clash / "meta.csv").write_text("filename\tscene_label\n")
    sf.write(clash / "audio" / "0.wav", _tone(), SR)
    with pytest.raises(AscError, match=r"named audio/0.wav like .*--names as-given"):
        predictor.predict_many([paths[0], clash / "audio" / "0.wav"], show_progress=False)


def test_cli_names_option(tmp_path, tiny_run):
    tau = tmp_path / "tau"
    (tau / "audio").mkdir(parents=True)
    (tau / "evaluation_setup").mkdir()
    sf.write(tau / "audio" / "0.wav", _tone(), SR)
    out = tmp_path / "p.csv"
    run = str(tiny_run["run"])
    assert main(["predict", run, str(tau / "audio"), "--out", str(out)]) == 0
    assert [r[0] for r in _rows(out)] == ["audio/0.wav"]
    assert main(["predict", run, str(tau / "audio"), "--out", str(out), "--names", "as-given"]) == 0
    assert [r[0] for r in _rows(out)] == [str(tau / "audio" / "0.wav")]


# ------------------------------------------------------------------------------ silence


@pytest.mark.parametrize("value", [0.0, 0.2])
def test_constant_files_are_scored_with_a_warning_naming_them(tmp_path, tiny_run, capsys, value):
    flat, tone = tmp_path / "flat.wav", tmp_path / "tone.wav"
    sf.write(flat, np.full(SR, value, np.float32), SR, subtype="FLOAT")
    sf.write(tone, _tone(), SR)
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(tiny_run["run"]), str(tone), str(flat), "--out", str(out)]) == 0
    assert [r[0] for r in _rows(out)] == [str(tone), str(flat)]
    err = capsys.readouterr().err.strip().splitlines()
    warned = [line for line in err if "warning" in line]
    assert len(warned) == 1 and str(flat) in warned[0] and "scored anyway" in warned[0], err


def test_a_constant_waveform_is_scored_with_a_warning(predictor):
    heard = []
    predictor.warn, before = heard.append, predictor.warn
    try:
        result = predictor.predict_waveform(np.zeros((2, SR), np.float32), SR, name="quiet")
    finally:
        predictor.warn = before
    assert result.windows and len(heard) == 1 and heard[0].startswith("quiet: every sample is 0 (silence)")


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize("args, option", [
    (["--hop", "nan"], "--hop"), (["--hop", "inf"], "--hop"), (["--hop", "-1"], "--hop"),
    (["--hop", "1e-9"], "--hop"), (["--hop", "1e9"], "--hop"),
    (["--window", "nan"], "--window"), (["--window", "inf"], "--window"), (["--window", "0"], "--window"),
    (["--window", "1e6"], "--window"), (["--window", "0.01"], "--window"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "1000000"], "--batch-size"),
    (["--top-k", "0"], "--top-k"), (["--top-k", "11"], "--top-k"),
])
def test_numeric_options_out_of_range_give_one_line(tmp_path, tiny_run, capsys, args, option):
    clip = tmp_path / "c.wav"
    sf.write(clip, _tone(), SR)
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(tiny_run["run"]), str(clip), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "Traceback" not in err[0], err
    assert not out.exists()


def test_option_limits_are_inclusive(predictor, tmp_path):
    from asc.predict import Predictor

    frame = predictor.extractor.cfg["hop_length"] / SR
    for kw in ({"hop": frame}, {"window": 600.0, "hop": 600.0}, {"batch_size": 1024}):
        Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, **kw)
    with pytest.raises(ConfigError, match="--hop"):
        Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, hop=frame * 0.99)
    with pytest.raises(ConfigError, match="--names"):
        Predictor(predictor.model, predictor.extractor.cfg, predictor.class_names, names="relative")


def test_a_header_rate_no_recording_has_is_a_bad_file(predictor, tmp_path):
    odd = tmp_path / "one_hz.wav"
    sf.write(odd, np.zeros(4000, np.int16), 1, subtype="PCM_16")  # a 4-KB file claiming 1 Hz
    good = tmp_path / "good.wav"
    sf.write(good, _tone(), SR)
    results, bad = predictor.predict_many([odd, good], show_progress=False)
    assert [r.name for r in results] == [str(good)]
    assert len(bad) == 1 and "one_hz.wav: sample rate 1 Hz" in bad[0][1]


def test_module_stays_light_at_import():
    import subprocess
    import sys

    code = "import sys, asc.predict; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    from asc.data.audio import LENGTH_TOLERANCE_S

    assert LENGTH_TOLERANCE_S == 0.05
