"""Log-mel extraction against librosa and float64 formulas; feature config validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asc.errors import ConfigError
from asc.features.logmel import (
    LogMelExtractor,
    bind_duration,
    deltas,
    feature_hash,
    feature_shape,
    load_feature_config,
    resolve_feature_config,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "features" / "logmel128_deltas.yaml"


def _scene_like(seconds: float, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """Noise, two tones (one starting half-way) and a silent start: real-shaped, with quiet bins."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440.0 * t)
    y += 0.1 * np.sin(2 * np.pi * 3000.5 * t) * (t > seconds / 2)
    y[: sr // 2] = 0.0
    return y.astype(np.float32)


def _noisy(seconds: float, sr: int) -> np.ndarray:
    """Noise and a tone throughout: every mel band well above the log offset."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.1 * np.random.default_rng(1).standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440.0 * t)
    return y.astype(np.float32)


def _librosa_reference(y: np.ndarray, cfg: dict) -> np.ndarray:
    """float64 librosa log-mel (padding and per-clip min-max as the config says), deltas by the
    regression formula, stacked as the paper's recipe."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=cfg["sample_rate"], n_fft=cfg["n_fft"], hop_length=cfg["hop_length"],
        n_mels=cfg["n_mels"], fmin=cfg["fmin"], fmax=cfg["fmax"], htk=True, norm=None, center=True,
        pad_mode=cfg["pad_mode"], power=2.0)
    logmel = np.log(mel + 1e-8)
    if cfg["scaling"] == "minmax":
        logmel = (logmel - logmel.min()) / (logmel.max() - logmel.min())
    # regression deltas, N = 2, valid frames only (written out, independent of asc.features.deltas)
    def d(x):
        return ((x[:, 3:-1] - x[:, 1:-3]) + 2 * (x[:, 4:] - x[:, :-4])) / 10.0
    d1 = d(logmel)
    d2 = d(d1)
    return np.stack([logmel[:, 4:-4], d1[:, 2:-2], d2])


def test_unscaled_config_matches_librosa_on_a_10s_clip():
    cfg = bind_duration(load_feature_config(ROOT / "features" / "logmel128_deltas_unscaled.yaml"), 10.0)
    assert cfg["pad_mode"] == "constant" and cfg["scaling"] == "none"
    y = _scene_like(10.0)
    ours = LogMelExtractor(cfg).numpy(y)
    ref = _librosa_reference(y, cfg)
    assert ours.shape == ref.shape == (3, 128, 423) == feature_shape(cfg)
    err = np.abs(ours - ref).max(axis=(1, 2))
    # measured: log-mel 2.4e-5, delta 5.5e-6, delta-delta 2.5e-6 (float32 STFT vs float64 librosa)
    assert err[0] < 1e-4, err
    assert err[1] < 3e-5 and err[2] < 3e-5, err


def test_published_features_match_librosa_reflect_minmax_on_every_clip_of_a_tiny_set(tiny_dataset, tmp_path):
    """The default (published) config through `asc extract` and the cache, against librosa with
    pad_mode="reflect" and each clip's own min-max, on every clip of the tiny synthetic set."""
    import soundfile as sf
    import yaml

    from asc.cli import main
    from asc.features.cache import cache_path
    from asc.features.dataset import FeatureDataset

    raw = yaml.safe_load(PAPER_CONFIG.read_text())
    assert raw["pad_mode"] == "reflect" and raw["scaling"] == "minmax"
    raw["duration"] = 2.0  # the tiny set's clips; everything else as published
    raw["storage"] = {"dtype": "float32", "shard_size": 64}
    features = tmp_path / "published_2s.yaml"
    features.write_text(yaml.safe_dump(raw))
    assert main(["extract", "--data", str(tiny_dataset), "--features", str(features), "--out",
                 str(tmp_path / "cache"), "--workers", "1"]) == 0
    cfg = load_feature_config(features)
    ds = FeatureDataset(cache_path(tmp_path / "cache", features), split=None)
    assert len(ds) > 100
    worst = np.zeros(3)
    for i, record in enumerate(ds.records):
        y, sr = sf.read(tiny_dataset / record["file"], dtype="float32")
        assert sr == 44100 and y.ndim == 1
        ref = _librosa_reference(y, cfg)
        worst = np.maximum(worst, np.abs(ds.array(i) - ref).max(axis=(1, 2)))
    # measured on the 116 clips: log-mel 2.0e-4, delta 4.0e-5, delta-delta 1.9e-5 in the scaled log
    # domain (range 1), all from float32 STFT rounding in the quietest mel bins of a frame
    assert worst[0] < 1e-3 and worst[1] < 2e-4 and worst[2] < 2e-4, worst


def test_deltas_equal_librosa_delta_away_from_the_edges():
    import librosa

    x = np.random.default_rng(1).standard_normal((6, 50))
    for width in (3, 5, 9):
        n = (width - 1) // 2
        ours = deltas(x, n)
        ref = librosa.feature.delta(x, width=width)[:, n:-n]
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_deltas_by_hand():
    x = np.array([[0.0, 1.0, 4.0, 9.0, 16.0, 25.0]])  # t^2: slope 2t, second difference 2
    # d[t] = ((x[t+1]-x[t-1]) + 2 (x[t+2]-x[t-2])) / 10 at t = 2, 3
    np.testing.assert_allclose(deltas(x, 2), [[(9 - 1 + 2 * (16 - 0)) / 10, (16 - 4 + 2 * (25 - 1)) / 10]])


def test_torch_and_numpy_deltas_agree():
    import torch

    x = np.random.default_rng(2).standard_normal((2, 4, 30))
    np.testing.assert_allclose(deltas(torch.from_numpy(x), 2).numpy(), deltas(x, 2), atol=1e-12)


def test_batch_equals_one_at_a_time():
    cfg = resolve_feature_config({"duration": 1.0})
    ex = LogMelExtractor(cfg)
    waves = np.stack([_scene_like(1.0, seed=s) for s in range(3)])
    waves[:, :1000] += 0.01
    batch = ex(waves).numpy()
    for i in range(3):
        np.testing.assert_allclose(batch[i], ex.numpy(waves[i]), atol=2e-5)


def test_minmax_scaling_and_no_deltas_and_slaney_against_librosa():
    import librosa

    cfg = resolve_feature_config({"duration": 2.0, "n_mels": 64, "deltas": False, "pad_mode": "constant",
                                  "mel_scale": "slaney", "mel_norm": "slaney", "fmax": 16000.0})
    y = _scene_like(2.0, seed=3)
    ours = LogMelExtractor(cfg).numpy(y)
    mel = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=44100, n_fft=2048, hop_length=1024,
                                         n_mels=64, fmin=0.0, fmax=16000.0, htk=False, norm="slaney",
                                         center=True, pad_mode="constant")
    logmel = np.log(mel + 1e-8)
    ref = (logmel - logmel.min()) / (logmel.max() - logmel.min())
    assert ours.shape == (1, 64, 87) == feature_shape(cfg)
    assert ours.min() == 0.0 and ours.max() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(ours[0] - ref).max() < 1e-5


def test_silent_clip_is_finite():
    cfg = resolve_feature_config({"duration": 1.0, "scaling": "minmax"})
    out = LogMelExtractor(cfg).numpy(np.zeros(44100, np.float32))
    assert np.isfinite(out).all()


def test_shipped_configs_load_with_distinct_hashes():
    configs = sorted((ROOT / "features").glob("*.yaml"))
    assert len(configs) >= 2
    hashes = {feature_hash(load_feature_config(p)) for p in configs}
    assert len(hashes) == len(configs)
    assert all(load_feature_config(p)["duration"] is None for p in configs)  # the data's clip length
    assert feature_shape(bind_duration(load_feature_config(ROOT / "features" / "logmel256.yaml"), 10.0)) \
        == (1, 256, 431)
    one_second = bind_duration(load_feature_config(ROOT / "features" / "logmel128_deltas.yaml"), 1.0)
    assert feature_shape(one_second) == (3, 128, 36)  # TAU 2022: 44 frames, 36 after the deltas' edges


def test_hash_ignores_spelling_and_storage_but_not_values():
    base = resolve_feature_config({})
    assert feature_hash(base) == feature_hash(resolve_feature_config({"fmax": 22050, "win_length": 2048}))
    assert feature_hash(base) == feature_hash(resolve_feature_config({"storage": {"dtype": "float32"}}))
    assert feature_hash(base) != feature_hash(resolve_feature_config({"hop_length": 512}))


@pytest.mark.parametrize("text, key", [
    ("fmax: 30000.0\n", "fmax"),
    ("n_mels: 0\n", "n_mels"),
    ("hop_length: 4096\n", "hop_length"),
    ("n_fft: 2048\nwin_length: 4096\n", "win_length"),
    ("fmin: 9000.0\nfmax: 8000.0\n", "fmin"),
    ("delta_width: 4\n", "delta_width"),
    ("duration: 0.05\n", "duration"),
    ("n_mels: 400\n", "n_mels"),
    ("mel_scale: bark\n", "mel_scale"),
    ("nmels: 64\n", "nmels"),
    ("storage:\n  dtype: int8\n", "storage.dtype"),
    ("storage:\n  shards: 3\n", "storage.shards"),
    ("deltas: 1\n", "deltas"),
    ("n_fft: 1048576\n", "n_fft"),                                    # beyond any scene feature
    ("sample_rate: 1\n", "sample_rate"),                              # no recording has it
    ("sample_rate: 2000000\n", "sample_rate"),
    ("n_fft: 64\nn_mels: 40\n", "n_mels"),                             # more bands than bins
    ("duration: 1.0e6\n", "duration"),                                # beyond the longest clip
    ("duration: 0.5\nn_fft: 32768\n", "n_fft"),                        # longer than the clip
    ("duration: 600.0\nhop_length: 1\nn_fft: 2048\n", "hop_length"),   # 26 M frames per clip
])
def test_bad_configs_name_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_feature_config(path)
    message = str(err.value)
    assert str(path) in message and key in message, message


def test_reflect_padding_option_matches_librosa_and_padding_matters():
    import librosa

    y = _scene_like(2.0, seed=4)
    y = y[::-1].copy()  # loud at the start: the first frames depend on the padding
    kw = dict(sr=44100, n_fft=2048, hop_length=1024, n_mels=128, htk=True, norm=None, center=True)
    ours = {}
    for mode in ("constant", "reflect"):
        cfg = resolve_feature_config({"duration": 2.0, "deltas": False, "pad_mode": mode, "scaling": "none"})
        ours[mode] = LogMelExtractor(cfg).numpy(y)[0]
        ref = np.log(librosa.feature.melspectrogram(y=y.astype(np.float64), pad_mode=mode, **kw) + 1e-8)
        assert np.abs(ours[mode] - ref).max() < 1e-4, mode
    assert np.abs(ours["constant"] - ours["reflect"]).max() > 1.0


def test_bind_duration_checks_n_fft_against_the_datasets_clips():
    cfg = resolve_feature_config({"n_fft": 16384, "hop_length": 8192, "n_mels": 64})
    assert cfg["duration"] is None  # no clip length yet: nothing to compare with
    with pytest.raises(ConfigError, match=r"recipe: n_fft: 16384 is longer than the clip \(duration 0.2 s"):
        bind_duration(cfg, 0.2, source="recipe")
    assert bind_duration(cfg, 3.0)["duration"] == 3.0


@pytest.mark.parametrize("peak", [1e5, 1e20, 3e38])
@pytest.mark.parametrize("power", [1.0, 2.0])
def test_loud_finite_audio_gives_finite_features_shifted_by_the_gain(peak, power):
    """|X|^2 of samples near 1e20 overflows float32; the extractor scales such rows by a power of two
    and puts the gain back in the log domain, so the log-mel is the quiet clip's plus power*log(gain)."""
    cfg = resolve_feature_config({"duration": 0.5, "sample_rate": 16000, "n_fft": 512, "hop_length": 256,
                                  "n_mels": 40, "scaling": "none", "power": power})
    y = _noisy(0.5, 16000)  # no silence: log(mel + 1e-8) is dominated by mel at every gain
    gain = peak / float(np.abs(y).max())
    loud = (y.astype(np.float64) * gain).astype(np.float32)
    assert np.isfinite(loud).all()
    extractor = LogMelExtractor(cfg)
    quiet_out, loud_out = extractor(np.stack([y, loud])).numpy()  # one normal and one loud row together
    assert np.isfinite(loud_out).all()
    shift = power * np.log(float(gain))
    assert np.abs(loud_out[0] - quiet_out[0] - shift).max() < 1e-4 * power * np.log(peak)
    assert np.abs(loud_out[1:] - quiet_out[1:]).max() < 1e-3  # deltas do not see the gain
    # a normal row takes the plain float32 path: bit-identical alone and beside a loud row
    assert np.array_equal(extractor.numpy(y), quiet_out)


def test_loud_minmax_features_equal_the_quiet_ones():
    cfg = resolve_feature_config({"duration": 1.0, "sample_rate": 16000, "n_fft": 512, "hop_length": 256,
                                  "n_mels": 40})
    y = _noisy(1.0, 16000)
    extractor = LogMelExtractor(cfg)
    quiet, loud = extractor.numpy(y), extractor.numpy((y.astype(np.float64) * 1e30).astype(np.float32))
    assert np.isfinite(loud).all() and np.abs(quiet - loud).max() < 1e-4
