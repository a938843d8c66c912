"""The one audio loader of every stage: read WAV/FLAC, downmix, resample, pad or crop, and refuse
files that would silently poison features (unreadable, empty, NaN/Inf) with an error naming the file."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asc.errors import DataError

PAD_MODES = ("zero", "none")

# Extra input read past the needed span when resampling, so the crop edge is not a filter edge.
_RESAMPLE_MARGIN_S = 0.05


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples are decoded)."""

    samplerate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, frames and subtype (e.g. PCM_24) of `path`; DataError if unreadable."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError/TypeError by version
        raise DataError(f"{path}: not a readable audio file ({_describe(exc)}); re-download or remove it") \
            from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype),
                     str(info.format))


def load_audio(path: str | os.PathLike, sr: int = 44100, duration: float | None = 10.0, mono: bool = True,
               pad: str = "zero") -> np.ndarray:
    """Read `path` as float32 at `sr` Hz: shape (samples,) if `mono` else (channels, samples).

    Stereo is averaged to mono; other rates are resampled with soxr (HQ, as librosa does); with
    `duration` the signal is cut to that length, and padded with zeros at the end when shorter
    (`pad="zero"`) or left short (`pad="none"`). `duration=None` keeps the file's length.
    """
    import soundfile as sf

    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive or None, got {duration}")
    path = Path(path)
    info = audio_info(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError(f"{path}: empty audio file (0 samples); re-download or remove it")
    target = None if duration is None else int(round(duration * sr))
    frames = -1
    if target is not None:
        need = math.ceil(target * info.samplerate / sr)
        if info.samplerate != sr:
            need += math.ceil(_RESAMPLE_MARGIN_S * info.samplerate)
        frames = min(need, info.frames)
    try:
        data, file_sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot decode audio ({_describe(exc)}); re-download or remove it") from None
    data = conform(data, file_sr, sr, mono=mono, name=str(path))
    if target is not None:
        if data.shape[0] > target:
            data = data[:target]
        elif data.shape[0] < target and pad == "zero":
            data = np.concatenate([data, np.zeros((target - data.shape[0], data.shape[1]), np.float32)])
    out = data[:, 0] if mono else data.T
    return np.ascontiguousarray(out, dtype=np.float32)


def conform(data: np.ndarray, file_sr: int, sr: int, *, mono: bool = True, name: str = "audio") -> np.ndarray:
    """Decoded samples (frames, channels) -> float32 (frames', channels') at `sr`, averaged to one
    channel if `mono`; the one place where every input, file or array, is checked and converted."""
    import soxr

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] == 0:
        raise DataError(f"{name}: empty audio (0 samples); re-download or remove it")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise DataError(f"{name}: {bad} NaN/Inf samples; the file is corrupt, re-download or remove it")
    if mono and data.shape[1] > 1:
        data = data.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if file_sr != sr:
        data = np.asarray(soxr.resample(data, file_sr, sr, quality="HQ"), dtype=np.float32)
    return data
