"""NaN/Inf never passes silently: loud but finite audio gives finite features and scores, and a feature,
logit or score that is not finite stops extraction, inference and scoring with one line naming the
file (or is skipped with --skip-bad)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from asc.cli import main
from asc.errors import AscError

from .tiny_tau import FEATURES, SR, write_tau_folder

LOUD = 1e20  # |X|^2 of such samples overflows float32 (3.4e38)


def _tone(seconds: float = 1.0, peak: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    y = np.sin(2 * np.pi * 500.0 * t) + 0.1 * np.random.default_rng(0).standard_normal(t.size)
    return (y * (peak / np.abs(y).max())).astype(np.float32)


@pytest.fixture()
def small_set(tmp_path):
    """20 clips of 1 s (one device per split) and the tiny feature config; its own copy per test."""
    data = write_tau_folder(tmp_path / "tau", train_devices=("a",), eval_devices=("a",))
    features = tmp_path / "f.yaml"
    features.write_text(yaml.safe_dump(FEATURES))
    first = sorted((data / "audio").glob("*.wav"))[0]
    return {"data": data, "features": features, "cache": tmp_path / "cache", "first": first}


def _extract(s, *extra):
    return main(["extract", "--data", str(s["data"]), "--features", str(s["features"]), "--out",
                 str(s["cache"]), "--workers", "1", *extra])


def _nan_for_loud_inputs(monkeypatch):
    """Features of inputs above 100 come out NaN: stands for any computation that goes wrong."""
    from asc.features.logmel import LogMelExtractor

    original = LogMelExtractor.__call__

    def call(self, waves):
        out = original(self, waves)
        x = torch.as_tensor(waves)
        loud = x.reshape(-1, x.shape[-1]).abs().amax(dim=1) > 100
        out[loud] = float("nan")
        return out

    monkeypatch.setattr(LogMelExtractor, "__call__", call)


def _shard(s):
    from asc.features.cache import cache_path

    return sorted(cache_path(s["cache"], s["features"]).glob("shard-*.npy"))


# ------------------------------------------------------------------------------------- features


def test_loud_float_wav_extracts_finite_features(small_set):
    sf.write(small_set["first"], _tone(peak=LOUD), SR, subtype="FLOAT")
    assert _extract(small_set) == 0
    (npy,) = _shard(small_set)
    assert np.isfinite(np.load(npy)).all()


def test_a_clip_whose_features_are_not_finite_stops_extract_naming_it(small_set, monkeypatch, capsys):
    _nan_for_loud_inputs(monkeypatch)
    sf.write(small_set["first"], _tone(peak=1000.0), SR, subtype="FLOAT")
    capsys.readouterr()
    assert _extract(small_set) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and small_set["first"].name in err[0] and "NaN/Inf" in err[0], err
    assert "--skip-bad" in err[0]
    assert not _shard(small_set)  # nothing half-written

    assert _extract(small_set, "--skip-bad") == 0
    out = capsys.readouterr().out
    assert f"skipped audio/{small_set['first'].name}" in out
    from asc.features.cache import cache_path
    from asc.features.dataset import FeatureDataset

    ds = FeatureDataset(cache_path(small_set["cache"], small_set["features"]), split=None)
    assert len(ds) == 19 and all(np.isfinite(ds.array(i)).all() for i in range(len(ds)))


def test_features_computed_in_the_main_process_are_checked_too(small_set, monkeypatch):
    """compute_in="main" (the CUDA default) computes batches in the parent: the same check there."""
    from asc.features.compute import Computer
    from asc.features.logmel import bind_duration, resolve_feature_config

    _nan_for_loud_inputs(monkeypatch)
    loud = small_set["first"]
    sf.write(loud, _tone(peak=1000.0), SR, subtype="FLOAT")
    cfg = bind_duration(resolve_feature_config(FEATURES), 1.0)
    quiet = sorted((small_set["data"] / "audio").glob("*.wav"))[1:4]
    computer = Computer(cfg, workers=1, device="cpu", batch_size=2, compute_in="main")
    try:
        outcomes = list(computer.run([(str(p), i) for i, p in enumerate([quiet[0], loud, *quiet[1:]])],
                                     ("unused", 0)))
    finally:
        computer.close()
    assert [o.error is None for o in outcomes] == [True, False, True, True]
    assert str(loud) in outcomes[1].error and "NaN/Inf" in outcomes[1].error


def _poison_row(npy, row: int, fix_checksum: bool) -> None:
    """Write NaN into one row of a finished shard, as a version that did not check features would
    have (with its checksum recorded over the NaN when `fix_checksum`)."""
    from asc.features import shards

    rows = np.load(npy, mmap_mode="r+")
    rows[row] = np.nan
    rows.flush()
    del rows
    if fix_checksum:
        sidecar = npy.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        meta["checksum"] = shards.checksum(npy, shards.read_header(npy)[2])
        sidecar.write_text(json.dumps(meta))


def test_verify_rebuilds_a_shard_that_holds_nan_features(small_set, capsys):
    assert _extract(small_set) == 0
    (npy,) = _shard(small_set)
    _poison_row(npy, 3, fix_checksum=True)
    capsys.readouterr()
    assert _extract(small_set) == 0  # the cheap checks cannot see it
    assert not np.isfinite(np.load(npy)).all()
    assert _extract(small_set, "--verify") == 0
    out = capsys.readouterr().out
    assert "row 3 (audio/" in out and "holds NaN/Inf features; extracting it again" in out, out
    (npy,) = _shard(small_set)
    assert np.isfinite(np.load(npy)).all()


def test_rows_reused_from_an_older_shard_are_recomputed_when_not_finite(small_set):
    """A shard rebuilt because one clip changed copies its other rows from the old shard; a NaN row
    written by an older version is computed again instead of copied."""
    assert _extract(small_set) == 0
    (old,) = _shard(small_set)
    good = np.load(old)[3].copy()
    _poison_row(old, 3, fix_checksum=False)
    changed = sorted((small_set["data"] / "audio").glob("*.wav"))[7]
    sf.write(changed, _tone(), SR, subtype="PCM_16")  # new mtime and content: the shard's name changes
    assert _extract(small_set) == 0
    (new,) = _shard(small_set)
    assert new != old
    rows = np.load(new)
    assert np.isfinite(rows).all() and np.array_equal(rows[3], good)


# ------------------------------------------------------------------------------------ inference


class _NanFor(torch.nn.Module):
    """Logits NaN for inputs whose sum is above `limit` (as an overflowing layer would give)."""

    def __init__(self, limit: float = 100.0):
        super().__init__()
        self.limit = limit
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        z = torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], dim=1) * self.scale
        z[x.flatten(1).sum(1) > self.limit] = float("nan")
        return z


def test_infer_refuses_nan_logits_naming_the_input():
    from asc.eval.inference import infer

    batches = [torch.zeros(3, 4), torch.tensor([[0.0] * 4, [1e3] * 4])]
    with pytest.raises(AscError, match=r"^b.wav: the model gave NaN/Inf logits \(1 of 2 inputs"):
        infer(_NanFor(), batches, device="cpu", names=["x", "y", "z", "a.wav", "b.wav"])
    with pytest.raises(AscError, match=r"^input 4: the model gave NaN/Inf logits"):
        infer(_NanFor(), batches, device="cpu")
    z, _, _ = infer(_NanFor(), [torch.zeros(2, 4)], device="cpu")
    assert torch.isfinite(z).all()


def test_infer_names_the_file_of_a_feature_cache_loader():
    """Through a DataLoader over a dataset with manifest records (as evaluate and validation use),
    the error names the clip's file as its dataset lists it."""
    from torch.utils.data import DataLoader

    from asc.eval.inference import infer

    class Clips:
        records = [{"file": f"audio/{i}.wav"} for i in range(5)]

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((4,), 1e3 if i == 3 else 0.0), 0

    with pytest.raises(AscError, match=r"^audio/3.wav: the model gave NaN/Inf logits"):
        infer(_NanFor(), DataLoader(Clips(), batch_size=2), device="cpu")
    with pytest.raises(AscError, match=r"^input \d: "):  # shuffled: positions are not records
        infer(_NanFor(), DataLoader(Clips(), batch_size=2, shuffle=True), device="cpu")


def test_predict_stops_on_nan_logits_naming_the_file(tmp_path):
    from asc.features.logmel import resolve_feature_config
    from asc.predict import Predictor

    cfg = resolve_feature_config({**FEATURES, "duration": 1.0})
    predictor = Predictor(_NanFor(limit=-1e30), cfg, ["p", "q"])
    sf.write(tmp_path / "clip.wav", _tone(), SR)
    with pytest.raises(AscError, match=r"clip.wav: the model gave NaN/Inf logits"):
        predictor.predict(tmp_path / "clip.wav")


def test_asc_predict_on_a_loud_float_wav_gives_finite_probabilities(tiny_run, tmp_path, capsys):
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    sf.write(loud, _tone(peak=LOUD), SR, subtype="FLOAT")
    sf.write(quiet, _tone(), SR, subtype="FLOAT")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_run["run"]), str(loud), str(quiet), "--out", str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    prob = np.array([[float(v) for v in r[2:]] for r in rows])
    assert np.isfinite(prob).all() and np.allclose(prob.sum(axis=1), 1.0)


def test_data_check_names_a_header_rate_no_recording_has(small_set, capsys):
    sf.write(small_set["first"], np.zeros(2000, np.float32), 1, subtype="PCM_16")
    loud = sorted((small_set["data"] / "audio").glob("*.wav"))[1]
    sf.write(loud, _tone(peak=LOUD), SR, subtype="FLOAT")  # finite: usable, so not a problem
    capsys.readouterr()
    assert main(["data", "check", str(small_set["data"]), "--audio", "all"]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert small_set["first"].name in text and "1 Hz" in text
    assert loud.name not in text
