"""`asc data augment`: device simulation on waveforms written as extra training clips (asc.data.devicesim),
and the synthetic devices' impulse responses (`asc data synth --write-irs`)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.data.devicesim import TRANSFORMS, augment_dataset, convolve_aligned, linear_phase_fir, rms
from asc.errors import DataError

SR = 16000


def _parser() -> argparse.ArgumentParser:
    """`asc data ...` and `asc extract ...` as the command line parses them."""
    import asc.data.cli
    import asc.features.cli

    parser = argparse.ArgumentParser(prog="asc")
    sub = parser.add_subparsers(dest="command")
    asc.data.cli.register(sub)
    asc.features.cli.register(sub)
    return parser


def _asc(*argv: object) -> int:
    args = _parser().parse_args([str(a) for a in argv])
    return args.func(args)


def _noise_clip(seed: int, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(2 * np.pi * (150 + 40 * seed) * t)).astype(
        np.float32)


def _csv_set(root: Path, n_per_class: int = 3, sr: int = SR) -> Path:
    """A csv dataset without devices: two classes, train and evaluate rows, 1-s float WAVs."""
    rows = ["filename,label,split"]
    for ci, label in enumerate(("rain", "wind")):
        for i in range(n_per_class):
            name = f"clips/{label}_{i}.wav"
            (root / "clips").mkdir(parents=True, exist_ok=True)
            sf.write(root / name, _noise_clip(10 * ci + i, sr=sr), sr, subtype="FLOAT")
            rows.append(f"{name},{label},{'evaluate' if i == 0 else 'train'}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root / "list.csv"


def _tau_set(root: Path, clips: dict[str, np.ndarray], splits: dict[str, str] | None = None) -> Path:
    """A TAU 2020 layout from {file name: samples at SR} (names scene-city-location-segment-device)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "evaluation_setup").mkdir(exist_ok=True)
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    folds = {"train": ["filename\tscene_label"], "evaluate": ["filename\tscene_label"]}
    for name, x in clips.items():
        scene, city, loc, _, device = name.split("-")
        sf.write(root / "audio" / f"{name}.wav", x, SR, subtype="FLOAT")
        meta.append(f"audio/{name}.wav\t{scene}\t{city}-{loc}\t{device}")
        folds[(splits or {}).get(name, "train")].append(f"audio/{name}.wav\t{scene}")
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    for split, lines in folds.items():
        (root / "evaluation_setup" / f"fold1_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def _read_list(aug: Path) -> list[dict[str, str]]:
    with open(aug / "list.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _augmented(aug: Path) -> dict[str, dict]:
    return json.loads((aug / "augment.json").read_text())["files"]


def _load(path: Path) -> np.ndarray:
    x, _ = sf.read(path, dtype="float64")
    return x


# ------------------------------------------------------------------------------------- transforms


def test_dir_with_a_unit_impulse_leaves_the_clip_unchanged(tmp_path):
    data = _csv_set(tmp_path / "set")
    irs = tmp_path / "irs"
    irs.mkdir()
    sf.write(irs / "unit.wav", np.array([0.0, 0.0, 1.0, 0.0, 0.0], np.float32), SR, subtype="FLOAT")
    aug = tmp_path / "aug"
    result = augment_dataset(data, aug, "dir", k=2, ir_folder=irs)
    assert result.counts == {"dir": 8}  # 4 training clips, 2 copies
    for rel, info in _augmented(aug).items():
        x, y = _load(data.parent / info["source"]), _load(aug / rel)
        assert info["params"] == {"ir": "unit.wav"} and info["transform"] == "dir"
        np.testing.assert_allclose(y, x, atol=1e-6)
        assert rms(y) == pytest.approx(rms(x), rel=1e-6)


def test_dir_keeps_the_level_and_length():
    x = _noise_clip(3)
    ir = np.zeros(400)
    ir[10], ir[11:] = 3.0, np.random.default_rng(0).standard_normal(389) * 0.2
    y = convolve_aligned(x.astype(np.float64), ir)
    assert y.shape == x.shape and rms(y) == pytest.approx(rms(x), rel=1e-9)


def test_spectrum_correction_reproduces_a_known_device_gain(tmp_path):
    gain = 10 ** (-6 / 20)  # device b: the a recording 6 dB down
    f = np.fft.rfftfreq(SR, 1 / SR)
    curve = 1 / np.sqrt(1 + (f / 1500.0) ** 4) * (1 + 0.5 * np.exp(-0.5 * (np.log2(np.maximum(f, 1) / 400) /
                                                                         0.5) ** 2))
    clips, evaluate = {}, {}
    for i, scene in enumerate(("airport", "bus", "park", "tram")):
        a = _noise_clip(i)
        base = f"{scene}-lisbon-{100 + i}-{i}"
        clips[f"{base}-a"] = a
        clips[f"{base}-b"] = (gain * a).astype(np.float32)
        filtered = np.fft.irfft(np.fft.rfft(a.astype(np.float64)) * curve, len(a))
        clips[f"{base}-c"] = filtered.astype(np.float32)
    evaluate["tram-lisbon-103-3-c"] = "evaluate"  # not a training recording: not used for the spectra
    data = _tau_set(tmp_path / "tau", clips, evaluate)
    aug = tmp_path / "aug"
    result = augment_dataset(data, aug, "spectrum_correction")
    assert result.counts == {"spectrum_correction": 8}  # 4 a clips x devices b, c
    record = json.loads((aug / "augment.json").read_text())
    assert record["spectrum_correction"] == {"b": {"recordings": 4}, "c": {"recordings": 3}}
    devices = {row["device"] for row in _read_list(aug) if row["filename"].startswith("augmented/")}
    assert devices == {"a+spectrum_correction:b", "a+spectrum_correction:c"}
    for rel, info in _augmented(aug).items():
        x = _load(data / info["source"])
        y = _load(aug / rel)
        target = clips[Path(info["source"]).stem[:-1] + info["params"]["target_device"]].astype(np.float64)
        if info["params"]["target_device"] == "b":  # a broadband gain: reproduced to float precision
            np.testing.assert_allclose(y, gain * x, atol=1e-6)
        else:  # a frequency response: within 1 dB from 50 Hz to 6 kHz, and close in time
            spec = np.abs(np.fft.rfft(y)) / np.maximum(np.abs(np.fft.rfft(x)), 1e-12)
            band = (f > 50) & (f < 6000)
            smooth = np.convolve(spec, np.ones(64) / 64, mode="same")
            assert np.max(np.abs(20 * np.log10(smooth[band] / curve[band]))) < 1.0
            assert rms(y - target) < 0.1 * rms(target)


def test_noise_snr_is_the_recorded_one(tmp_path):
    data = _csv_set(tmp_path / "set")
    aug = tmp_path / "aug"
    augment_dataset(data, aug, "noise", k=3, seed=5)
    snrs = []
    for rel, info in _augmented(aug).items():
        x, y = _load(data.parent / info["source"]), _load(aug / rel)
        measured = 10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2))
        assert measured == pytest.approx(info["params"]["snr_db"], abs=0.5)
        assert 20 <= info["params"]["snr_db"] <= 40
        snrs.append(info["params"]["snr_db"])
    assert len(set(snrs)) == len(snrs) == 12  # every copy draws its own


def test_every_transform_runs_and_keeps_the_length(tmp_path):
    data = _csv_set(tmp_path / "set", sr=8000)
    irs = tmp_path / "irs"
    irs.mkdir()
    sf.write(irs / "room.wav", np.r_[1.0, np.zeros(50), 0.3, np.zeros(30), -0.2], 8000)
    names = [n for n in TRANSFORMS if n != "spectrum_correction"]  # needs devices (tested above)
    aug = tmp_path / "aug"
    result = augment_dataset(data, aug, ",".join(names), ir_folder=irs)
    assert result.counts == dict.fromkeys(names, 4) and result.skipped == dict.fromkeys(names, 0)
    for rel, info in _augmented(aug).items():
        y, sr = sf.read(aug / rel)
        assert sr == 8000 and len(y) == 8000 and np.all(np.isfinite(y)) and rms(y) > 0
        if info["transform"] == "mix":
            source, partner = info["source"], info["params"]["partner"]
            assert partner != source and Path(partner).name.split("_")[0] == Path(source).name.split("_")[0]
            assert 0.3 <= info["params"]["weight"] <= 0.7
    rows = _read_list(aug)
    assert {r["split"] for r in rows if r["filename"].startswith("augmented/")} == {"train"}
    assert all(r["device"] == "" for r in rows)  # the data has no devices: none are invented


def test_same_seed_same_bytes(tmp_path):
    data = _csv_set(tmp_path / "set")
    irs = tmp_path / "irs"
    irs.mkdir()
    sf.write(irs / "ir.wav", np.r_[0.2, 1.0, np.random.default_rng(1).standard_normal(60) * 0.1], SR)
    names = "dir,noise,pitch_shift,reverb_drc,mix"
    first, second, other = (tmp_path / n for n in ("one", "two", "other"))
    augment_dataset(data, first, names, k=2, ir_folder=irs, seed=3)
    augment_dataset(data, second, names, k=2, ir_folder=irs, seed=3)
    augment_dataset(data, other, names, k=2, ir_folder=irs, seed=4)
    files = sorted(_augmented(first))
    assert files == sorted(_augmented(second)) and len(files) == 5 * 2 * 4
    assert (first / "list.csv").read_bytes() == (second / "list.csv").read_bytes()
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files if "/noise/" in f)


def test_workers_give_the_same_files(tmp_path):
    data = _csv_set(tmp_path / "set")
    one, two = tmp_path / "one", tmp_path / "two"
    augment_dataset(data, one, "noise,mix", k=2, seed=1)
    augment_dataset(data, two, "noise,mix", k=2, seed=1, workers=2)
    files = sorted(_augmented(one))
    assert (one / "list.csv").read_bytes() == (two / "list.csv").read_bytes()
    assert (one / "augment.json").read_text() == (two / "augment.json").read_text()
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_spectrum_correction_is_a_linear_phase_fir():
    h = linear_phase_fir(np.full(1025, 0.25))
    assert len(h) == 2049 and np.argmax(np.abs(h)) == 1024
    np.testing.assert_allclose(h, 0.25 * np.eye(2049)[1024], atol=1e-12)


# ------------------------------------------------------------------------------------- the dataset


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from asc.data.synth import synthesize

    base = tmp_path_factory.mktemp("synth")
    synthesize(base / "syn", preset="tiny", duration=1, workers=1)
    return base


def test_synth_writes_device_irs(synth_set, tmp_path):
    from asc.data.synth import IR_TAPS, SEEN_DEVICES, _device_response
    from asc.data.synth import SR as SYNTH_SR

    irs = tmp_path / "irs"
    assert _asc("data", "synth", "--out", synth_set / "syn", "--preset", "tiny", "--duration", 1,
                "--workers", 1, "--write-irs", irs) == 0
    assert sorted(p.stem for p in irs.iterdir()) == sorted(SEEN_DEVICES)
    for device in SEEN_DEVICES:
        h, sr = sf.read(irs / f"{device}.wav")
        assert sr == SYNTH_SR and len(h) == IR_TAPS and np.argmax(np.abs(h)) == IR_TAPS // 2
        n = 1 << 16
        f = np.fft.rfftfreq(n, 1 / sr)
        band = (f > 500) & (f < 7000)
        response = np.abs(np.fft.rfft(h, n))[band]
        assert np.max(np.abs(20 * np.log10(response / _device_response(device, n)[band]))) < 0.1


def test_augmented_folder_extracts_with_the_original_evaluate_rows(synth_set, tmp_path, capsys):
    from asc.data.readers import load_dataset
    from asc.data.synth import write_device_irs
    from asc.features.cache import read_manifest

    data = synth_set / "syn"
    irs = write_device_irs(tmp_path / "irs")[0].parent
    aug = tmp_path / "aug"
    assert _asc("data", "augment", "--data", data, "--out", aug, "--transforms", "dir,noise",
                "--ir-folder", irs, "--k", 1) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(aug / "list.csv")
    source = load_dataset(data)
    a_train = [c for c in source.clips if c.split == "train" and c.device == "a"]
    rows = _read_list(aug)
    assert len(rows) == len(source.clips) + 2 * len(a_train)
    assert (aug / "audio").is_dir() and (aug / source.clips[0].filename).is_symlink()

    cfg = tmp_path / "small.yaml"
    cfg.write_text("duration: null\nn_mels: 32\nstorage:\n  shard_size: 64\n")
    assert _asc("extract", "--data", aug / "list.csv", "--features", cfg, "--out", tmp_path / "cache",
                "--workers", 1) == 0
    aug_cache = Path(capsys.readouterr().out.strip().splitlines()[-1])  # the last line: the cache folder
    assert _asc("extract", "--data", data, "--features", cfg, "--out", tmp_path / "plain", "--workers", 1,
                "--splits", "evaluate") == 0
    cache_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = read_manifest(aug_cache)
    plain = read_manifest(cache_dir)
    evaluate = sorted((r["id"], r["file"], r["scene"], r["device"]) for r in manifest["clips"]
                      if r["split"] == "evaluate")
    assert evaluate == sorted((c.id, c.filename, c.scene, c.device) for c in source.split("evaluate"))
    assert evaluate == sorted((r["id"], r["file"], r["scene"], r["device"]) for r in plain["clips"])
    augmented = [r for r in manifest["clips"] if r["file"].startswith("augmented/")]
    assert len(augmented) == 2 * len(a_train) and {r["split"] for r in augmented} == {"train"}
    assert {r["device"] for r in augmented} == {"a+dir", "a+noise"}
    assert manifest["dataset"]["synthetic"] is True

    def features(cache: Path, row: dict) -> np.ndarray:
        return np.load(cache / row["shard"], mmap_mode="r")[row["offset"]]

    by_id = {r["id"]: r for r in plain["clips"]}
    for row in manifest["clips"]:
        if row["split"] == "evaluate":  # the same audio, so the same features
            np.testing.assert_array_equal(features(aug_cache, row), features(cache_dir, by_id[row["id"]]))


# ------------------------------------------------------------------------------------- errors


def test_empty_ir_folder_is_one_line(tmp_path):
    data = _csv_set(tmp_path / "set")
    (tmp_path / "irs").mkdir()
    with pytest.raises(DataError) as exc:
        augment_dataset(data, tmp_path / "aug", "dir", ir_folder=tmp_path / "irs")
    message = str(exc.value)
    assert "\n" not in message and str(tmp_path / "irs") in message and "--write-irs" in message
    assert not (tmp_path / "aug").exists()  # nothing written before the inputs are known to be good


def test_unknown_transform_is_one_line(tmp_path):
    data = _csv_set(tmp_path / "set")
    with pytest.raises(DataError) as exc:
        augment_dataset(data, tmp_path / "aug", "noise,echo")
    message = str(exc.value)
    assert "\n" not in message and "'echo'" in message and "spectrum_correction" in message


def test_dataset_without_a_train_split_is_one_line(tmp_path):
    clips = {"airport-lisbon-1-1-a": _noise_clip(0), "bus-lisbon-1-2-a": _noise_clip(1)}
    data = _tau_set(tmp_path / "tau", clips, dict.fromkeys(clips, "evaluate"))
    with pytest.raises(DataError) as exc:
        augment_dataset(data, tmp_path / "aug", "noise")
    message = str(exc.value)
    assert "\n" not in message and str(data.resolve()) in message and "train" in message


def test_other_refusals(tmp_path):
    data = _csv_set(tmp_path / "set")
    with pytest.raises(DataError, match="--ir-folder"):
        augment_dataset(data, tmp_path / "aug", "dir")
    with pytest.raises(DataError, match="parallel recordings"):
        augment_dataset(data, tmp_path / "aug", "spectrum_correction")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(DataError, match="not an empty folder"):
        augment_dataset(data, tmp_path / "used", "noise")
