"""The synthetic TAU-format set: layout, formats, splits, parallel recordings, determinism, resume."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.data import synth
from asc.data.audio import load_audio
from asc.data.tau2020 import DEVICES, SCENES, load_tau2020
from asc.errors import DataError


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    return load_tau2020(tiny_dataset)


def test_layout_and_marker(tiny_dataset, tiny):
    for rel in ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv",
                "evaluation_setup/fold1_test.csv", "SYNTHETIC.json"):
        assert (tiny_dataset / rel).is_file(), rel
    assert not (tiny_dataset / ".synth-in-progress.json").exists()
    info = json.loads((tiny_dataset / "SYNTHETIC.json").read_text())
    assert info["preset"] == "tiny" and info["seed"] == 0 and info["duration_s"] == 2.0
    assert tiny.synthetic and tiny.version == "synthetic" and tiny.missing == []
    header = (tiny_dataset / "meta.csv").read_text().splitlines()[0]
    assert header == "filename\tscene_label\tidentifier\tsource_label"
    wavs = sorted(p.name for p in (tiny_dataset / "audio").iterdir())
    assert wavs == sorted(c.filename.removeprefix("audio/") for c in tiny.clips)


def test_audio_format(tiny):
    for clip in tiny.clips[::7]:
        info = sf.info(str(tiny.path(clip)))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 88200, "PCM_24")
        x = load_audio(tiny.path(clip), duration=None)
        rms = float(np.sqrt(np.mean(x**2)))
        assert 10 ** (-60 / 20) < rms < 0.5 and np.max(np.abs(x)) < 1.0


def test_splits_follow_the_real_structure(tiny):
    plan = synth.PRESETS["tiny"]
    counts = tiny.counts()["device"]
    assert counts["train"] == plan.train
    assert counts["evaluate"] == plan.evaluate
    assert {d for d in counts["train"]} <= {"a", "b", "c", "s1", "s2", "s3"}
    assert {"s4", "s5", "s6"} <= set(counts["evaluate"])
    assert tiny.split("test") == []
    assert {c.scene for c in tiny.split("train")} == set(SCENES) == {c.scene for c in tiny.split("evaluate")}
    train_locs = {c.location for c in tiny.split("train")}
    assert train_locs.isdisjoint({c.location for c in tiny.split("evaluate")})
    assert len({c.city for c in tiny.clips}) >= 5


def test_every_device_clip_has_a_device_a_parallel(tiny):
    by_base = defaultdict(dict)
    for c in tiny.clips:
        by_base[c.base][c.device] = c
    assert all("a" in devs for devs in by_base.values())
    assert any(len(devs) > 1 for devs in by_base.values())


def test_parallel_clips_share_the_source(tiny):
    """A b/c/s* clip is its device-a parallel through another response: strongly correlated in a band
    both devices pass; two different recordings are not."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [600, 3000], btype="bandpass", fs=44100, output="sos")
    by_base = defaultdict(dict)
    for c in tiny.clips:
        by_base[c.base][c.device] = c
    pairs = [(d["a"], c) for d in by_base.values() for dev, c in d.items() if dev in ("s2", "s3", "c")]
    assert pairs

    def corr(c1, c2):
        x = sosfiltfilt(sos, load_audio(tiny.path(c1), duration=None))
        y = sosfiltfilt(sos, load_audio(tiny.path(c2), duration=None))
        return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))

    assert all(corr(a, other) > 0.5 for a, other in pairs[:4])
    strangers = [c for c in tiny.clips if c.device == "a"][:2]
    assert abs(corr(*strangers)) < 0.2


@pytest.mark.parametrize("device, lo, hi", [("s4", 300, 6000), ("s1", 250, 8000), ("b", 160, 11000)])
def test_device_band_limits(device, lo, hi):
    """White noise through a device: its pass band keeps its level relative to device a, while
    far outside the band (half an octave and more) it loses over 15 dB."""
    n = 44100
    rec = synth.plan_recordings("tiny", 0)[0]
    white = np.fft.rfft(0.05 * np.random.default_rng(0).standard_normal(n)).astype(np.complex64)
    freqs = np.fft.rfftfreq(n, 1 / 44100)

    def band_db(x, f1, f2):
        spec = np.abs(np.fft.rfft(x)) ** 2
        return 10 * np.log10(spec[(freqs >= f1) & (freqs < f2)].sum())

    a = synth.render_device(0, rec, "a", white, n)
    d = synth.render_device(0, rec, device, white, n)
    centre = np.sqrt(lo * hi)
    ref = band_db(d, centre / 1.2, centre * 1.2) - band_db(a, centre / 1.2, centre * 1.2)
    assert ref - (band_db(d, hi * 1.6, hi * 2.5) - band_db(a, hi * 1.6, hi * 2.5)) > 15
    assert ref - (band_db(d, lo / 4, lo / 2) - band_db(a, lo / 4, lo / 2)) > 15


def test_full_plan_has_the_real_counts(tau2020_meta_dir):
    real = load_tau2020(tau2020_meta_dir, check_audio=False).counts()["device"]
    recordings = synth.plan_recordings("full", seed=0)
    caps = Counter((split, dev) for r in recordings for dev, split in r.captures)
    for split in ("train", "evaluate", "unused"):
        assert {d: caps[(split, d)] for d in DEVICES if caps[(split, d)]} == real[split]
    assert len({r.base for r in recordings}) == len(recordings)


def test_plan_is_seeded():
    a, b = synth.plan_recordings("small", 0), synth.plan_recordings("small", 0)
    assert a == b and a != synth.plan_recordings("small", 1)


def test_deterministic_across_workers_and_seeds(tmp_path):
    one = synth.synthesize(tmp_path / "w1", preset="tiny", seed=3, duration=0.5, workers=1)
    two = synth.synthesize(tmp_path / "w2", preset="tiny", seed=3, duration=0.5, workers=2)
    assert one.files == two.files == one.written
    files1 = sorted(p.relative_to(one.root) for p in one.root.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(two.root) for p in two.root.rglob("*") if p.is_file())
    assert files1 == files2
    assert all((one.root / f).read_bytes() == (two.root / f).read_bytes() for f in files1)
    other = synth.synthesize(tmp_path / "s4", preset="tiny", seed=4, duration=0.5, workers=1)
    assert (other.root / "meta.csv").read_bytes() != (one.root / "meta.csv").read_bytes()


def test_resume_and_rerun(tmp_path):
    out = tmp_path / "set"
    synth.synthesize(out, preset="tiny", seed=0, duration=0.3, workers=1)
    reference = {p.name: p.read_bytes() for p in (out / "audio").iterdir()}
    again = synth.synthesize(out, preset="tiny", seed=0, duration=0.3, workers=1)
    assert again.written == 0
    # an interrupted build: marker not yet written, some clips missing
    (out / "SYNTHETIC.json").unlink()
    (out / ".synth-in-progress.json").write_text(json.dumps(synth._params("tiny", 0, 0.3)))
    victims = sorted(reference)[:5]
    for name in victims:
        (out / "audio" / name).unlink()
    resumed = synth.synthesize(out, preset="tiny", seed=0, duration=0.3, workers=1)
    assert 5 <= resumed.written < len(reference)
    assert {p.name: p.read_bytes() for p in (out / "audio").iterdir()} == reference
    assert (out / "SYNTHETIC.json").is_file() and not (out / ".synth-in-progress.json").exists()


def test_refuses_foreign_or_different_folders(tmp_path):
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "meta.csv").write_text("filename\n")
    with pytest.raises(DataError, match="holds no synthetic set"):
        synth.synthesize(foreign, preset="tiny", duration=0.2, workers=1)
    assert (foreign / "meta.csv").read_text() == "filename\n"
    out = tmp_path / "set"
    synth.synthesize(out, preset="tiny", seed=0, duration=0.2, workers=1)
    with pytest.raises(DataError, match="pass --force"):
        synth.synthesize(out, preset="tiny", seed=1, duration=0.2, workers=1)
    synth.synthesize(out, preset="tiny", seed=1, duration=0.2, workers=1, force=True)
    assert json.loads((out / "SYNTHETIC.json").read_text())["seed"] == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown preset"):
        synth.synthesize(tmp_path, preset="huge")
    with pytest.raises(DataError, match="duration"):
        synth.synthesize(tmp_path, preset="tiny", duration=0.0)


@pytest.mark.parametrize("scene", SCENES)
def test_every_scene_renders_finite_audio_at_its_level(scene):
    rec = next(r for r in synth.plan_recordings("tiny", 0) if r.scene == scene)
    n = 44100
    y = synth.render_device(0, rec, "a", synth.render_source(0, rec, n), n)
    assert y.shape == (n,) and np.isfinite(y).all()
    level = 20 * np.log10(np.sqrt(np.mean(y**2)))
    assert abs(level - synth.SCENE_RECIPES[scene].level_db) < 12


def test_recipes_use_known_components():
    for recipe in synth.SCENE_RECIPES.values():
        assert {name for name, _, _ in recipe.components} <= set(synth.COMPONENTS)
    assert set(synth.SCENE_RECIPES) == set(SCENES) and set(synth.DEVICE_MODELS) == set(DEVICES)


def test_synth_help_states_the_preset_counts():
    """The help's clip counts are the presets' (a stale text once said 1,360 clips and 30 per device)."""
    import re

    from asc.data.cli import _SYNTH_TEXT
    from asc.data.synth import _counts, plan_recordings

    for preset in ("tiny", "small", "full"):
        recordings = plan_recordings(preset, 0)
        total = sum(len(r.captures) for r in recordings)
        stated = re.search(rf"{preset}\s+([\d,]+) clips", _SYNTH_TEXT)
        assert stated and int(stated.group(1).replace(",", "")) == total, preset
    small = _counts(plan_recordings("small", 0))
    assert set(small["evaluate"].values()) == {100} and "evaluate 100 per device" in _SYNTH_TEXT
    assert small["train"]["a"] == 650 and "train a 650" in _SYNTH_TEXT


def test_scene_balance_is_as_the_documentation_says():
    from collections import Counter

    from asc.data.synth import plan_recordings

    text = (Path(__file__).resolve().parents[1] / "docs" / "synthetic-data.md").read_text()
    assert "85 train and 90 evaluate clips per scene" in text and "4-8 train and 2-3 evaluate" in text
    for preset, train, evaluate in (("small", {85}, {90}), ("tiny", set(range(4, 9)), {2, 3})):
        per = Counter((split, rec.scene) for rec in plan_recordings(preset, 0) for _, split in rec.captures)
        assert {n for (s, _), n in per.items() if s == "train"} <= train
        assert {n for (s, _), n in per.items() if s == "evaluate"} <= evaluate
