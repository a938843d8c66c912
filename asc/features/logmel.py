"""Log-mel features with deltas, computed in torch so one code path runs batched on CPU or CUDA.

The default settings follow the DCASE 2020 Task 1a systems of Hu et al. that the L2BN paper trains:
44.1 kHz, 2048-point FFT, hop 1024, centred frames with reflect padding (librosa 0.6), 128 HTK mel
bands without filter normalization, natural log(x + 1e-8) rescaled per clip to [0, 1], then deltas
over N = 2 frames and delta-deltas, each taken over the valid frames only,
so the three channels are cropped to the same length: [logmel[2N:-2N], delta[N:-N], delta-delta].
A 10-s clip gives 431 centred frames and a 3 x 128 x 423 feature.

A feature set is a YAML file (see `features/`); `load_feature_config` validates it and resolves
defaults so two spellings of the same settings hash the same.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asc.config import Field, config_hash, load_yaml, validate
from asc.errors import ConfigError

FEATURE_SCHEMA: dict = {
    "sample_rate": Field(int, 44100, min=1, help="audio is resampled to this rate (Hz)"),
    "duration": Field(float, None, nullable=True, min=0.0, min_exclusive=True,
                      help="seconds per clip; null: the dataset's clip length (set when features are "
                           "extracted); longer clips are cut"),
    "n_fft": Field(int, 2048, min=2),
    "win_length": Field(int, None, min=1, nullable=True, help="null: n_fft"),
    "hop_length": Field(int, 1024, min=1),
    "window": Field(str, "hann", choices=("hann", "hamming")),
    "center": Field(bool, True, help="frames centred on t * hop (input padded by n_fft // 2)"),
    "pad_mode": Field(str, "reflect", choices=("constant", "reflect"),
                      help="padding for centred frames: reflect as librosa < 0.9.0 (the published "
                           "features), constant (zeros) as librosa >= 0.9.0"),
    "power": Field(float, 2.0, choices=(1.0, 2.0), help="1: magnitude, 2: power spectrogram"),
    "n_mels": Field(int, 128, min=1),
    "fmin": Field(float, 0.0, min=0.0),
    "fmax": Field(float, None, nullable=True, help="null: sample_rate / 2"),
    "mel_scale": Field(str, "htk", choices=("htk", "slaney")),
    "mel_norm": Field(str, None, choices=("slaney",), nullable=True,
                      help="null: triangular filters of peak 1 (no area normalization)"),
    "log_offset": Field(float, 1e-8, min=0.0, min_exclusive=True, help="features are log(mel + offset)"),
    "scaling": Field(str, "minmax", choices=("none", "minmax"),
                     help="minmax: rescale each clip's log-mel to [0, 1] before the deltas (the "
                          "published features); none: log values as they are"),
    "deltas": Field(bool, True, help="stack delta and delta-delta channels"),
    "delta_width": Field(int, 5, min=3, help="odd; frames in the delta window (2N + 1)"),
    "storage": {
        "dtype": Field(str, "float16", choices=("float16", "float32"), help="array type in the shards"),
        "shard_size": Field(int, 1024, min=1, help="clips per shard file"),
    },
}

# Keys that change how features are stored, not their values; left out of the cache hash.
STORAGE_KEY = "storage"

# Sizes beyond any scene feature, refused before a buffer of that size is made: the longest FFT
# (1.5 s at 44.1 kHz), the longest clip, and the most STFT values of one clip (frames x bins; a 600-s
# clip at the published n_fft 2048 / hop 1024 has 26.5 M, 0.2 GB as complex64).
MAX_N_FFT = 1 << 16
MAX_CLIP_S = 600.0
MAX_STFT_VALUES = 1 << 26
# Waveforms whose peak is above this are scaled by a power of two before the STFT (and the scale put
# back in the log domain), so |X|^2 cannot overflow float32 for any finite input; with n_fft <= MAX_N_FFT
# a peak up to this gives |X|^2 <= 2^64. Normal audio (|x| <= 1) takes the plain float32 path.
_LOUD = 2.0 ** 16


def resolve_feature_config(raw: Mapping, source: str = "feature config") -> dict:
    """Validate a feature config mapping, fill defaults and check that the values fit together."""
    from asc.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    cfg = validate(raw, FEATURE_SCHEMA, source)
    sr, n_fft = cfg["sample_rate"], cfg["n_fft"]
    nyquist = sr / 2
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ConfigError(f"{source}: sample_rate: {sr} Hz is outside "
                          f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, the rates recordings have")
    if n_fft > MAX_N_FFT:
        raise ConfigError(f"{source}: n_fft: {n_fft} is above {MAX_N_FFT} ({MAX_N_FFT / sr:.2f} s at "
                          f"{sr} Hz), longer than any scene feature needs; lower it (the published features "
                          "use 2048)")
    if cfg["n_mels"] > n_fft // 2 + 1:
        raise ConfigError(f"{source}: n_mels: {cfg['n_mels']} is more than the {n_fft // 2 + 1} FFT bins of "
                          f"n_fft {n_fft}; lower n_mels or raise n_fft")
    if cfg["duration"] is not None and cfg["duration"] > MAX_CLIP_S:
        raise ConfigError(f"{source}: duration: {cfg['duration']:g} s is longer than the {MAX_CLIP_S:g} s a "
                          "clip may have; use shorter clips (asc predict scores long files in windows)")
    if cfg["win_length"] is None:
        cfg["win_length"] = n_fft
    if cfg["win_length"] > n_fft:
        raise ConfigError(f"{source}: win_length: {cfg['win_length']} must be <= n_fft ({n_fft})")
    if cfg["hop_length"] > n_fft:
        raise ConfigError(f"{source}: hop_length: {cfg['hop_length']} must be <= n_fft ({n_fft}); "
                          "larger hops skip samples")
    if cfg["fmax"] is None:
        cfg["fmax"] = float(nyquist)
    if cfg["fmax"] > nyquist:
        raise ConfigError(f"{source}: fmax: {cfg['fmax']:g} Hz is above the Nyquist frequency "
                          f"sample_rate / 2 = {nyquist:g} Hz")
    if cfg["fmin"] >= cfg["fmax"]:
        raise ConfigError(f"{source}: fmin: {cfg['fmin']:g} Hz must be below fmax ({cfg['fmax']:g} Hz)")
    if cfg["delta_width"] % 2 == 0:
        raise ConfigError(f"{source}: delta_width: {cfg['delta_width']} must be odd (2N + 1), e.g. 5")
    empty = _empty_mel_bands(cfg)
    if empty:
        lo, hi = empty[0]
        raise ConfigError(f"{source}: n_mels: {cfg['n_mels']} leaves {len(empty)} mel band(s) without any "
                          f"FFT bin at n_fft {n_fft} (first: {lo:.1f}-{hi:.1f} Hz); "
                          "lower n_mels or raise n_fft")
    if cfg["duration"] is None:
        return cfg  # the dataset decides it: `bind_duration`
    n_samples = num_samples(cfg)
    if n_samples < n_fft:
        raise ConfigError(f"{source}: n_fft: {n_fft} is longer than the clip (duration {cfg['duration']:g} s "
                          f"= {n_samples} samples at {sr} Hz); lower n_fft or use longer clips")
    frames = num_frames(cfg)
    if frames * (n_fft // 2 + 1) > MAX_STFT_VALUES:
        raise ConfigError(f"{source}: hop_length: {cfg['hop_length']} gives {frames} frames x "
                          f"{n_fft // 2 + 1} bins per clip (over {MAX_STFT_VALUES}); raise hop_length or "
                          "shorten duration")
    if cfg["deltas"] and frames - 4 * delta_n(cfg) < 1:
        raise ConfigError(f"{source}: duration: {cfg['duration']:g} s gives {frames} frames, too few for "
                          f"deltas of width {cfg['delta_width']} (needs > {4 * delta_n(cfg)})")
    return cfg


def bind_duration(cfg: Mapping, seconds: float | None, source: str = "feature config",
                  dataset: str = "the dataset") -> dict:
    """The config with its clip length taken from the dataset (duration: null), or checked against it:
    a config asking for longer clips than the dataset has is refused, naming both lengths."""
    from asc.data.audio import LENGTH_TOLERANCE_S

    cfg = copy.deepcopy(dict(cfg))
    if cfg.get("duration") is None:
        if seconds is None:
            raise ConfigError(f"{source}: duration: null takes the clip length from the dataset, and "
                              f"{dataset} has no single clip length; set duration in seconds")
        return resolve_feature_config({**cfg, "duration": float(seconds)}, source)
    if seconds is not None and float(cfg["duration"]) > float(seconds) + LENGTH_TOLERANCE_S:
        raise ConfigError(f"{source}: duration: {cfg['duration']:g} s, but the clips of {dataset} are "
                          f"{float(seconds):g} s; set `duration: null` (the dataset's length) or "
                          f"--set duration={float(seconds):g}")
    return cfg


def require_duration(cfg: Mapping, source: str = "feature config") -> None:
    if cfg.get("duration") is None:
        raise ConfigError(f"{source}: duration: null (the dataset's clip length) is only known once features "
                          "are extracted; use the config a cache or run recorded, or set duration")


def _hz_to_mel(f: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # slaney: linear below 1 kHz, logarithmic above
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def _empty_mel_bands(cfg: Mapping) -> list[tuple[float, float]]:
    """(low, high) Hz of every triangular mel filter that no FFT bin falls strictly inside."""
    freqs = np.linspace(0.0, cfg["sample_rate"] // 2, cfg["n_fft"] // 2 + 1)
    scale = cfg["mel_scale"]
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(cfg["fmin"]), scale),
                                   _hz_to_mel(np.float64(cfg["fmax"]), scale), cfg["n_mels"] + 2), scale)
    out = []
    for i in range(cfg["n_mels"]):
        lo, hi = edges[i], edges[i + 2]
        if not np.any((freqs > lo) & (freqs < hi)):
            out.append((float(lo), float(hi)))
    return out


def load_feature_config(path: str | os.PathLike) -> dict:
    """Read and resolve a feature YAML; errors name the file and key."""
    path = Path(path)
    return resolve_feature_config(load_yaml(path), str(path))


def feature_hash(cfg: Mapping) -> str:
    """12 hex digits identifying the feature values (storage options excluded)."""
    values = {k: v for k, v in cfg.items() if k != STORAGE_KEY}
    return config_hash(values)


def delta_n(cfg: Mapping) -> int:
    return (int(cfg["delta_width"]) - 1) // 2


def num_samples(cfg: Mapping) -> int:
    require_duration(cfg)
    return int(round(float(cfg["duration"]) * int(cfg["sample_rate"])))


def num_frames(cfg: Mapping) -> int:
    """STFT frames of one clip (before delta cropping)."""
    n = num_samples(cfg)
    if cfg["center"]:
        return 1 + n // int(cfg["hop_length"])
    return 1 + (n - int(cfg["n_fft"])) // int(cfg["hop_length"])


def feature_shape(cfg: Mapping) -> tuple[int, int, int]:
    """(channels, mel bands, frames) of one clip's feature."""
    frames = num_frames(cfg)
    if cfg["deltas"]:
        return (3, int(cfg["n_mels"]), frames - 4 * delta_n(cfg))
    return (1, int(cfg["n_mels"]), frames)


def deltas(x: Any, n: int = 2) -> Any:
    """Regression deltas over the last axis, valid frames only (output is 2n frames shorter):
    d[t] = sum_k k (x[t+k] - x[t-k]) / (2 sum_k k^2), k = 1..n — librosa.feature.delta's interior.
    Works on torch tensors and numpy arrays alike."""
    length = x.shape[-1]
    if length <= 2 * n:
        raise ValueError(f"deltas need more than {2 * n} frames, got {length}")
    denom = 2.0 * sum(k * k for k in range(1, n + 1))
    out = None
    for k in range(1, n + 1):
        term = k * (x[..., n + k:length - n + k] - x[..., n - k:length - n - k])
        out = term if out is None else out + term
    return out / denom


class LogMelExtractor:
    """Batched log-mel (+ deltas) on any torch device: waveforms (B, samples) -> (B, C, mels, frames)."""

    def __init__(self, cfg: Mapping, device: str = "cpu"):
        import torch
        import torchaudio.functional as AF

        self.cfg = copy.deepcopy(dict(cfg))
        self.device = torch.device(device)
        c = self.cfg
        window_fn = torch.hann_window if c["window"] == "hann" else torch.hamming_window
        # periodic windows, as librosa (scipy.signal.get_window(..., fftbins=True)) uses
        self.window = window_fn(c["win_length"], periodic=True, dtype=torch.float32, device=self.device)
        fb = AF.melscale_fbanks(n_freqs=c["n_fft"] // 2 + 1, f_min=c["fmin"], f_max=c["fmax"],
                                n_mels=c["n_mels"], sample_rate=c["sample_rate"], norm=c["mel_norm"],
                                mel_scale=c["mel_scale"])
        self.mel_basis = fb.T.contiguous().to(self.device)  # (mels, freqs)
        # Each FFT bin feeds at most two triangular filters: ~2 n_freqs non-zeros of n_mels * n_freqs,
        # so a sparse product is ~40x faster than the dense one on a CPU, with the same sums.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self._mel_sparse = self.mel_basis.to_sparse_csr()
        self.n_samples = num_samples(c)
        self.shape = feature_shape(c)

    def __call__(self, waves: Any) -> Any:
        import torch

        c = self.cfg
        x = torch.as_tensor(waves, dtype=torch.float32).to(self.device)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        x, scale = _tame(x)
        spec = torch.stft(x, n_fft=c["n_fft"], hop_length=c["hop_length"], win_length=c["win_length"],
                          window=self.window, center=c["center"], pad_mode=c["pad_mode"],
                          normalized=False, onesided=True, return_complex=True)
        mag = spec.real.square() + spec.imag.square()  # |X|^2, (B, freqs, frames)
        if c["power"] == 1.0:
            mag = mag.sqrt()
        mel = self._mel(mag)
        logmel = torch.log(mel + c["log_offset"])
        if scale is not None:  # loud rows: log(scale^power * mel + offset) in float64, which cannot overflow
            gain = scale.square() if c["power"] == 2.0 else scale
            loud = gain != 1.0
            logmel[loud] = torch.log(mel[loud].double() * gain[loud].view(-1, 1, 1)
                                     + c["log_offset"]).float()
        if c["scaling"] == "minmax":
            flat = logmel.flatten(1)
            lo = flat.min(dim=1).values.view(-1, 1, 1)
            hi = flat.max(dim=1).values.view(-1, 1, 1)
            logmel = (logmel - lo) / (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
        if not c["deltas"]:
            return logmel.unsqueeze(1)
        n = delta_n(c)
        d1 = deltas(logmel, n)
        d2 = deltas(d1, n)
        frames = logmel.shape[-1]
        return torch.stack([logmel[..., 2 * n:frames - 2 * n], d1[..., n:frames - 3 * n], d2], dim=1)

    def _mel(self, mag: Any) -> Any:
        """(B, freqs, frames) -> (B, mels, frames) through the sparse filterbank."""
        import torch

        b, f, t = mag.shape
        flat = mag[0] if b == 1 else mag.permute(1, 0, 2).reshape(f, b * t)
        mel = torch.sparse.mm(self._mel_sparse, flat)
        return mel.unsqueeze(0) if b == 1 else mel.reshape(-1, b, t).permute(1, 0, 2)

    def numpy(self, wave: np.ndarray, dtype: str = "float32") -> np.ndarray:
        """One clip (samples,) -> np.ndarray (C, mels, frames) in `dtype`."""
        import torch

        return self(wave)[0].to(getattr(torch, dtype)).cpu().numpy()


def _tame(x: Any) -> tuple[Any, Any]:
    """(waveforms, None) when every row's peak is at most _LOUD (the exact float32 path of normal
    audio); else rows above it divided by a power of two (exact: only the exponent changes) that
    brings their peak to (0.5, 1], and the float64 scales (1 for the other rows)."""
    import torch

    peak = x.abs().amax(dim=-1)
    loud = peak > _LOUD
    if not bool(loud.any()):
        return x, None
    peak = peak.double()
    scale = torch.where(loud, torch.exp2(torch.ceil(torch.log2(peak))), torch.ones_like(peak))
    return (x.double() / scale.view(-1, 1)).float(), scale


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Cut or zero-pad a waveform to exactly `n_samples`."""
    if wave.shape[-1] >= n_samples:
        return wave[..., :n_samples]
    pad = np.zeros(wave.shape[:-1] + (n_samples - wave.shape[-1],), dtype=wave.dtype)
    return np.concatenate([wave, pad], axis=-1)


def load_clip(path: str | os.PathLike, cfg: Mapping, *,
              pad_short: bool = False) -> tuple[np.ndarray, float | None]:
    """Decode one file with the shared loader at the config's rate and length.

    The file is judged first by `asc.data.audio.check_audio`, the verdict `asc data check` gives too:
    a clip shorter than the config's duration (beyond rounding) raises ShortAudioError, since silently
    zero-padding a truncated file would train on silence; with `pad_short` it is padded instead.
    Returns (waveform, seconds of audio the file held when it was padded, else None).
    """
    from asc.data import audio

    duration = float(cfg["duration"])
    info = audio.check_audio(path, None if pad_short else duration)
    wave = audio.load_audio(path, sr=int(cfg["sample_rate"]), duration=duration)
    padded = info.duration if info.duration < duration - audio.LENGTH_TOLERANCE_S else None
    return fit_length(wave, num_samples(cfg)), padded
