"""The one audio loader of every stage: read WAV/FLAC, downmix, resample, pad or crop, and refuse
files that would silently poison features (unreadable, empty, NaN/Inf, cut short, a header whose rate or
length no recording has) with an error naming the file. `check_audio` is the one verdict on a file that
`asc data check` and `asc extract` share."""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import DataError

PAD_MODES = ("zero", "none")

#: a shortfall up to this many seconds is rounding (e.g. a resampled 10-s file), not a short clip
LENGTH_TOLERANCE_S = 0.05

# What a recording can be. A header outside these limits is damaged (a 4-KB file that claims 1 Hz
# would be upsampled to gigabytes), so it is refused before any sample is decoded.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
#: longest file decoded whole (`duration=None`): 4 h is ~2.5 GB of float32 at 44.1 kHz
MAX_AUDIO_S = 4 * 3600.0

# Above this peak the samples are scaled by a power of two (exact in floating point) before resampling,
# since the resampler overflows near the float32 limit; normal audio (|x| <= 1) is not touched.
_LOUD = 2.0 ** 16

#: why `file_problem` rejects a path that simply is not there
MISSING_FILE = "no such audio file"

# Sample formats that can hold NaN/Inf; integer PCM cannot, so only these need their samples read.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})

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


class ShortAudioError(DataError):
    """Audio shorter than the clip it must fill: usually a file cut short by a bad copy or download."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be opened as a file (missing, a looping or broken link, a folder,
    unreadable), or None when it can. The words name the real cause, so a link loop is not
    reported as a missing file."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link (-> {os.readlink(path)}, which does not exist)"
        return MISSING_FILE
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = os.readlink(path) if path.is_symlink() else "?"
            return f"symbolic link loop (-> {target})"
        return f"cannot be opened ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a folder?)"
    if not os.access(path, os.R_OK):
        return "cannot be opened (permission denied)"
    return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, frames and subtype (e.g. PCM_24) of `path`; DataError if unreadable."""
    import soundfile as sf

    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError/TypeError by version
        raise DataError(f"{path}: not a readable audio file ({_describe(exc)}); re-download or remove it") \
            from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype),
                     str(info.format))


def load_audio(path: str | os.PathLike, sr: int = 44100, duration: float | None = 10.0, mono: bool = True,
               pad: str = "zero", on_constant: Callable[[str], None] | None = None) -> np.ndarray:
    """Read `path` as float32 at `sr` Hz: shape (samples,) if `mono` else (channels, samples).

    Stereo is averaged to mono; other rates are resampled with soxr (HQ, as librosa does); with
    `duration` the signal is cut to that length, and padded with zeros at the end when shorter
    (`pad="zero"`) or left short (`pad="none"`). `duration=None` keeps the file's length (at most
    MAX_AUDIO_S). `on_constant` is called with a message when the samples hold one value (silence).
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
    _require_samples(info, path)
    if duration is None:
        _require_length(info, path)
    target = None if duration is None else int(round(duration * sr))
    frames = -1
    if target is not None:
        need = math.ceil(target * info.samplerate / sr)
        if info.samplerate != sr:
            need += math.ceil(_RESAMPLE_MARGIN_S * info.samplerate)
        frames = min(need, info.frames)
    try:
        data, file_sr = _read_float32(sf, path, frames, info.subtype)
    except Exception as exc:
        raise DataError(f"{path}: cannot decode audio ({_describe(exc)}); re-download or remove it") from None
    data = conform(data, file_sr, sr, mono=mono, name=str(path), on_constant=on_constant)
    if target is not None:
        if data.shape[0] > target:
            data = data[:target]
        elif data.shape[0] < target and pad == "zero":
            data = np.concatenate([data, np.zeros((target - data.shape[0], data.shape[1]), np.float32)])
    out = data[:, 0] if mono else data.T
    return np.ascontiguousarray(out, dtype=np.float32)


#: integer subtypes whose samples are exact in float32 once read as int32 (sample * 2^(32-bits))
_EXACT_INTEGER = ("PCM_16", "PCM_24")


def _read_float32(sf: Any, path: Path, frames: int, subtype: str) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 in [-1, 1) and the rate. 16- and 24-bit files are read as int32 and
    scaled here: the same values libsndfile gives (each is sample / 2^(bits-1), exact in float32),
    with 10-s 24-bit clips decoded about 1.3x as fast (scripts/bench_predict.py's files)."""
    if subtype not in _EXACT_INTEGER:
        return sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    data, rate = sf.read(str(path), frames=frames, dtype="int32", always_2d=True)
    return np.multiply(data, np.float32(2.0 ** -31), dtype=np.float32), rate


def _require_samples(info: AudioInfo, path: Path) -> None:
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError(f"{path}: empty audio file (0 samples); re-download or remove it")
    require_sample_rate(info.samplerate, str(path))


def require_sample_rate(sr: float, name: str) -> None:
    """A rate no recording has (a damaged header, or an argument mix-up) is refused before any
    buffer of that rate is made."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise DataError(f"{name}: sample rate {sr:g} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, "
                        "which no recording has (a damaged header?); re-export the file with its real rate")


def _require_length(info: AudioInfo, path: Path) -> None:
    if info.duration > MAX_AUDIO_S:
        raise DataError(f"{path}: {info.duration / 3600:.1f} h of audio, more than the "
                        f"{MAX_AUDIO_S / 3600:g} h a file may hold when read whole; cut it into parts "
                        "(or its header is damaged)")


def _require_finite(data: np.ndarray, name: str) -> None:
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise DataError(f"{name}: {bad} NaN/Inf samples; the file is corrupt, re-download or remove it")


def check_audio(path: str | os.PathLike, duration: float | None = None, *,
                tolerance: float = LENGTH_TOLERANCE_S) -> AudioInfo:
    """The one verdict on whether an audio file is usable, shared by `asc data check` and
    `asc extract` so the two never disagree: DataError when it cannot be opened or decoded, is empty,
    holds NaN/Inf samples anywhere, or (ShortAudioError) is shorter than `duration` seconds by more
    than `tolerance`. Integer PCM is judged from its header; float files are read in full."""
    import soundfile as sf

    path = Path(path)
    info = audio_info(path)
    _require_samples(info, path)
    if duration is not None and info.duration < duration - tolerance:
        raise ShortAudioError(f"{path}: {info.duration:.3f} s of audio, shorter than the {duration:g} s "
                              "a clip must have (a truncated file?)", info.duration)
    if info.subtype in _FLOAT_SUBTYPES:
        bad = 0
        try:  # in blocks: memory stays bounded however long the file is
            for block in sf.blocks(str(path), blocksize=_CHECK_BLOCK, dtype="float32", always_2d=True):
                bad += int(np.count_nonzero(~np.isfinite(block)))
        except Exception as exc:
            raise DataError(f"{path}: cannot decode audio ({_describe(exc)}); re-download or remove it") \
                from None
        if bad:
            raise DataError(f"{path}: {bad} NaN/Inf samples; the file is corrupt, re-download or remove it")
    return info


_CHECK_BLOCK = 1 << 20  # frames per block when a float file is read for NaN/Inf


def conform(data: np.ndarray, file_sr: int, sr: int, *, mono: bool = True, name: str = "audio",
            on_constant: Callable[[str], None] | None = None) -> np.ndarray:
    """Decoded samples (frames, channels) -> float32 (frames', channels') at `sr`, averaged to one
    channel if `mono`; the one place where every input, file or array, is checked and converted.
    `on_constant` hears of samples that hold one value (before resampling, whose edges ripple)."""
    import soxr

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] == 0:
        raise DataError(f"{name}: empty audio (0 samples); re-download or remove it")
    require_sample_rate(file_sr, name)
    _require_finite(data, name)
    if mono and data.shape[1] > 1:
        data = data.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if on_constant is not None:
        lo, hi = data.min(axis=0), data.max(axis=0)
        if np.all(lo == hi):
            value = "0 (silence)" if not np.any(lo) else f"{float(lo[0]):g}" if lo.size == 1 else "constant"
            on_constant(f"{name}: every sample is {value}, so it holds no sound")
    if file_sr != sr:
        peak = float(np.abs(data).max())
        if peak <= _LOUD:
            data = np.asarray(soxr.resample(data, file_sr, sr, quality="HQ"), dtype=np.float32)
        else:  # in float64 at a peak near 1, then back to the recording's own scale
            scale = 2.0 ** math.ceil(math.log2(peak))
            out = np.asarray(soxr.resample(data.astype(np.float64) / scale, file_sr, sr, quality="HQ"),
                             dtype=np.float64) * scale
            if not np.all(np.abs(out) <= np.finfo(np.float32).max):
                raise DataError(f"{name}: samples up to {peak:.3g} leave the float32 range when resampled "
                                f"to {sr} Hz; scale the recording down")
            data = out.astype(np.float32)
    return data
