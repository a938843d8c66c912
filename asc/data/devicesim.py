"""Device simulation on waveforms, written as extra training clips (`asc data augment`).

A dataset's source clips (its device-a training clips; all training clips when it has no devices) are
transformed and written as WAVs into a new folder, which is a `csv` dataset of its own: `list.csv`
lists the augmented clips (split train, device "<source>+<transform>") and every original clip, linked
into the folder at its original relative path, with its own split and device. So one
`asc extract --data AUG/list.csv` gives a cache where the augmented clips are extra training rows and
the evaluation rows are the untouched originals (same file names and ids as in the source's cache).
`augment.json` records what made each augmented file.

Transforms (`TRANSFORMS`, a name -> `Transform` map), each deterministic given (seed, source clip id,
transform, copy):

- `dir`: convolution with a device impulse response from a folder of WAVs (Morocutti et al. 2023 with
  MicIRP), aligned at the response's peak, cut to the clip's length, at the input's RMS.
- `spectrum_correction`: the ratio of a device's mean magnitude spectrum to device a's over their
  parallel training recordings (clips sharing `Clip.base`), as a linear-phase FIR; one copy per device.
- Hu et al. 2020: `pitch_shift` (±2 semitones), `speed` (time stretch 0.9-1.1, cut or zero-padded to
  the clip's length), `noise` (white noise at an SNR of 20-40 dB), `reverb_drc` (a short exponential
  reverb, then a dynamic range compressor), `mix` (two clips of one class, weight 0.3-0.7).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from asc.data.clips import AudioDataset, Clip
from asc.errors import DataError
from asc.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import numpy as np

    Wave = np.ndarray
    Rng = np.random.Generator

LIST_FILE = "list.csv"
RECORD_FILE = "augment.json"
AUGMENTED_DIR = "augmented"
SPECTRUM_NFFT = 2048
SPECTRUM_HOP = 1024
_EPS = 1e-10
_IR_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")

# ============================================================================ randomness


def clip_rng(seed: int, clip_id: str, transform: str, copy: str) -> np.random.Generator:
    """A generator fixed by (seed, source clip id, transform, copy) alone, not by call order."""
    import numpy as np

    digest = hashlib.sha256(repr(("asc.data.devicesim", 1, int(seed), clip_id, transform, copy)).encode())
    return np.random.default_rng(np.frombuffer(digest.digest(), dtype=np.uint32))


def rms(x: np.ndarray) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _match_rms(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    level = rms(y)
    return y if level < _EPS else y * (rms(reference) / level)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Cut to n samples, or zero-pad at the end."""
    import numpy as np

    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


# ============================================================================ signal operations


def convolve_aligned(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """x convolved with `ir`, aligned at the response's peak and cut to len(x) (a unit impulse leaves
    x unchanged); the output has the input's RMS."""
    import numpy as np
    from scipy.signal import fftconvolve

    peak = int(np.argmax(np.abs(ir)))
    y = fftconvolve(x.astype(np.float64), ir.astype(np.float64))[peak:peak + len(x)]
    return _match_rms(_fit(y, len(x)), x)


def mean_spectrum(x: np.ndarray, n_fft: int = SPECTRUM_NFFT, hop: int = SPECTRUM_HOP) -> np.ndarray:
    """Mean magnitude spectrum over Hann-windowed frames (n_fft // 2 + 1 bins)."""
    import numpy as np

    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).mean(axis=0)


def linear_phase_fir(gain: np.ndarray) -> np.ndarray:
    """A linear-phase FIR of 2 * (len(gain) - 1) + 1 taps whose response samples `gain` (magnitudes on
    an rfft grid); its peak is the middle tap. A constant gain g gives g times a unit impulse."""
    import numpy as np

    n = 2 * (len(gain) - 1)
    kernel = np.fft.irfft(np.asarray(gain, dtype=np.float64), n)
    half = n // 2
    h = np.concatenate([kernel[-half:], kernel[:half + 1]])
    h[0] *= 0.5  # the kernel's Nyquist lag, split between both ends
    h[-1] *= 0.5
    return h * np.hanning(n + 3)[1:-1]


def apply_fir_centred(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x through a linear-phase FIR of odd length, without its delay, cut to len(x)."""
    import numpy as np
    from scipy.signal import fftconvolve

    centre = len(h) // 2
    return fftconvolve(x.astype(np.float64), h)[centre:centre + len(x)]


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x plus white Gaussian noise scaled to exactly `snr_db` below x's power."""
    noise = rng.standard_normal(len(x))
    noise *= rms(x) / max(rms(noise), _EPS) / 10 ** (snr_db / 20)
    return x + noise


def compress(x: np.ndarray, sr: int, threshold_db: float, ratio: float, window_s: float = 0.01,
             smooth_s: float = 0.05) -> np.ndarray:
    """A feed-forward dynamic range compressor: the level (RMS over `window_s`) above `threshold_db`
    (dBFS) is divided by `ratio`; the gain is smoothed over `smooth_s`."""
    import numpy as np
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import lfilter


    power = uniform_filter1d(np.square(x, dtype=np.float64), max(1, int(window_s * sr)), mode="nearest")
    level = 10 * np.log10(power + 1e-12)
    reduction = np.minimum(0.0, (threshold_db - level) * (1 - 1 / ratio))
    a = math.exp(-1.0 / max(1.0, smooth_s * sr))
    smooth = lfilter([1 - a], [1, -a], reduction, zi=[a * reduction[0]])[0]
    return x * 10 ** (smooth / 20)


def exponential_reverb(sr: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room response: a direct path of 1 and a noise tail decaying by 60 dB in `rt60` s,
    at `wet` of the direct path's energy."""
    import numpy as np

    n = max(2, int(rt60 * sr))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[0] = 0.0
    tail *= math.sqrt(wet) / max(float(np.sqrt(np.sum(tail ** 2))), _EPS)
    tail[0] = 1.0
    return tail


# ============================================================================ transforms


@dataclass
class Context:
    """What the transforms share (picklable, for worker processes): where the clips are, their rate and
    length, loaded impulse responses, the spectrum-correction filters and the clips of each class (mix)."""

    root: Path
    sr: int
    n: int                                   # samples per clip
    k: int = 1
    irs: list[tuple[str, np.ndarray]] = field(default_factory=list)
    corrections: dict[str, np.ndarray] = field(default_factory=dict)    # device -> FIR
    correction_info: dict[str, dict] = field(default_factory=dict)
    by_label: dict[str | None, list[Clip]] = field(default_factory=dict)

    def load(self, clip: Clip) -> np.ndarray:
        """A clip at the context's rate, cut or padded to its length, as float64."""
        import numpy as np

        from asc.data.audio import load_audio

        return load_audio(self.root / clip.filename, sr=self.sr, duration=self.n / self.sr).astype(np.float64)


#: (x, rng, ctx, clip, copy) -> (y, parameters)
Apply = Callable[..., "tuple[np.ndarray, dict]"]


@dataclass(frozen=True)
class Transform:
    """A waveform transform: `apply(x, rng, ctx, clip, copy) -> (y, parameters)`; `copies(ctx)` names
    the copies made of each clip (k by default)."""

    apply: Apply
    help: str
    copies: Callable[[Context], list[str]] = lambda ctx: [str(i) for i in range(ctx.k)]


def _dir(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    name, ir = ctx.irs[int(rng.integers(len(ctx.irs)))]
    return convolve_aligned(x, ir), {"ir": name}


def _spectrum_correction(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    y = apply_fir_centred(x, ctx.corrections[copy])
    return y, {"target_device": copy, **ctx.correction_info[copy]}


def _pitch_shift(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    import librosa
    import numpy as np

    steps = float(rng.uniform(-2.0, 2.0))
    return librosa.effects.pitch_shift(x.astype(np.float32), sr=ctx.sr, n_steps=steps), {"semitones": steps}


def _speed(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    import librosa
    import numpy as np

    rate = float(rng.uniform(0.9, 1.1))
    return _fit(librosa.effects.time_stretch(x.astype(np.float32), rate=rate), len(x)), {"rate": rate}


def _noise(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    snr = float(rng.uniform(20.0, 40.0))
    return add_noise(x, snr, rng), {"snr_db": snr}


def _reverb_drc(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    import numpy as np
    from scipy.signal import fftconvolve

    rt60, wet = float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.1, 0.5))
    y = fftconvolve(x.astype(np.float64), exponential_reverb(ctx.sr, rt60, wet, rng))[:len(x)]
    level = 20 * math.log10(max(rms(y), _EPS))
    below, ratio = float(rng.uniform(0.0, 10.0)), float(rng.uniform(2.0, 4.0))
    y = _match_rms(compress(y, ctx.sr, level - below, ratio), x)
    return y, {"rt60_s": rt60, "wet": wet, "threshold_db_below_rms": below, "ratio": ratio}


def _mix(x: Wave, rng: Rng, ctx: Context, clip: Clip, copy: str) -> tuple[Wave, dict]:
    pool = [c for c in ctx.by_label.get(clip.scene, []) if c.filename != clip.filename]
    partner = pool[int(rng.integers(len(pool)))]
    w = float(rng.uniform(0.3, 0.7))
    return w * x + (1 - w) * _fit(ctx.load(partner), len(x)), {"partner": partner.filename, "weight": w}


TRANSFORMS: dict[str, Transform] = {
    "dir": Transform(_dir, "convolve with a device impulse response from --ir-folder (k copies)"),
    "spectrum_correction": Transform(
        _spectrum_correction, "filter by each device's mean spectrum over a's (one copy per device)",
        copies=lambda ctx: sorted(ctx.corrections)),
    "pitch_shift": Transform(_pitch_shift, "pitch shift by a random -2..2 semitones"),
    "speed": Transform(_speed, "time stretch by a random 0.9..1.1, cut or padded to the clip length"),
    "noise": Transform(_noise, "add white noise at a random SNR of 20..40 dB"),
    "reverb_drc": Transform(_reverb_drc, "short exponential reverb, then a dynamic range compressor"),
    "mix": Transform(_mix, "mix with another clip of the same class, weight 0.3..0.7"),
}


def parse_transforms(text: str | Sequence[str]) -> list[str]:
    """Transform names from "a,b" or a list; DataError naming an unknown one."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not names:
        raise DataError(f"--transforms: no transform named; choose from {', '.join(TRANSFORMS)}")
    for name in names:
        if name not in TRANSFORMS:
            raise DataError(f"--transforms: unknown transform {name!r}; choose from {', '.join(TRANSFORMS)}")
    if len(set(names)) != len(names):
        raise DataError(f"--transforms {','.join(names)}: a transform is named twice")
    return names


# ============================================================================ inputs


def load_irs(folder: str | os.PathLike, sr: int) -> list[tuple[str, np.ndarray]]:
    """(file name, samples at `sr`) of every audio file under `folder`, sorted by path."""
    import numpy as np

    from asc.data.audio import load_audio

    folder = Path(folder)
    hint = ("write the synthetic devices' responses with `asc data synth --out DIR --preset tiny "
            f"--write-irs {folder}`, or give a folder of measured ones (e.g. MicIRP)")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such impulse-response folder; {hint}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IR_SUFFIXES and p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: no impulse responses ({', '.join(_IR_SUFFIXES)} files); {hint}")
    out = []
    for path in files:
        ir = load_audio(path, sr=sr, duration=None).astype(np.float64)
        if not np.any(ir):
            raise DataError(f"{path}: the impulse response is all zeros; remove it from {folder}")
        out.append((path.relative_to(folder).as_posix(), ir))
    return out


def source_clips(dataset: AudioDataset, device: str = "a") -> list[Clip]:
    """The clips to augment: training clips of `device`, or all training clips when the data has no
    devices."""
    train = dataset.split("train")
    where = dataset.description.root or str(dataset.root)
    if not train:
        raise DataError(f"{where}: the dataset has no training clips, which augmentation starts from; give "
                        "it a train split (a TAU fold1_train.csv, or a split column of train rows)")
    if not any(c.device for c in dataset.clips):
        return train
    chosen = [c for c in train if c.device == device]
    if not chosen:
        have = sorted({c.device for c in train if c.device})
        raise DataError(f"{where}: no training clips of device {device!r} (training devices: "
                        f"{', '.join(have)}); choose one with --source-device")
    return chosen


def spectrum_corrections(dataset: AudioDataset, load: Callable[[Clip], np.ndarray], reference: str = "a"
                         ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """device -> linear-phase FIR with the ratio of the device's mean magnitude spectrum to the
    reference device's, both averaged over the training recordings (Clip.base) they share; and
    device -> {"recordings": n}. Only training clips are read, so no evaluation audio leaks in."""
    import numpy as np

    from asc.progress import progress

    train = [c for c in dataset.split("train") if c.base is not None and c.device]
    ref = {c.base: c for c in train if c.device == reference}
    pairs: dict[str, list[tuple[Clip, Clip]]] = {}
    for c in train:
        if c.device != reference and c.base in ref:
            pairs.setdefault(c.device, []).append((ref[c.base], c))
    if not pairs:
        where = dataset.description.root or str(dataset.root)
        raise DataError(f"{where}: no parallel recordings (training clips of another device sharing a "
                        f"recording with device {reference!r}); spectrum_correction needs them, as TAU "
                        "Mobile has; use dir with --ir-folder instead")
    cache: dict[str, np.ndarray] = {}

    def spectrum(clip: Clip) -> np.ndarray:
        if clip.filename not in cache:
            cache[clip.filename] = mean_spectrum(load(clip))
        return cache[clip.filename]

    filters, info = {}, {}
    total = sum(len(v) for v in pairs.values())
    bar = progress(total=total, desc="spectra", unit="pair")
    try:
        for device in sorted(pairs):
            dev_sum = np.zeros(SPECTRUM_NFFT // 2 + 1)
            ref_sum = np.zeros_like(dev_sum)
            for a_clip, d_clip in pairs[device]:
                ref_sum += spectrum(a_clip)
                dev_sum += spectrum(d_clip)
                bar.update(1)
            ratio = dev_sum / np.maximum(ref_sum, _EPS * max(float(ref_sum.max()), _EPS))
            filters[device] = linear_phase_fir(ratio)
            info[device] = {"recordings": len(pairs[device])}
    finally:
        bar.close()
    return filters, info


# ============================================================================ the run


@dataclass(frozen=True)
class AugmentResult:
    out: Path
    written: int                 # augmented files
    originals: int               # original clips linked
    counts: dict[str, int]       # transform -> files
    skipped: dict[str, int]      # transform -> source clips it could not use


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sr, subtype="FLOAT", format="WAV")
    data = bytearray(buf.getvalue())
    peak = data.find(b"PEAK", 12, 512)  # libsndfile stamps its PEAK chunk with the time of writing:
    if peak >= 0:                       # zeroed, so the same samples give the same bytes
        data[peak + 12:peak + 16] = bytes(4)
    return bytes(data)


def _csv_text(rows: list[tuple[str, str, str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("filename", "label", "device", "split"))
    writer.writerows(rows)
    return buf.getvalue()


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; --out must be a new folder (remove it "
                        "to augment again)")
    out.mkdir(parents=True, exist_ok=True)


def _link(source: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(source.absolute(), link.parent.absolute())
    os.symlink(target, link)


@dataclass
class _Task:
    """Augment one source clip with every (transform, copy) and write the files; picklable, so worker
    processes run it. Returns (list.csv rows, augment.json entries, transforms that skipped the clip)."""

    ctx: Context
    jobs: list[tuple[str, str]]
    out: str
    seed: int
    has_devices: bool

    def __call__(self, clip: Clip) -> tuple[list[tuple[str, str, str, str]], dict[str, dict], list[str]]:
        import numpy as np

        ctx, rows, record, skipped = self.ctx, [], {}, []
        x = ctx.load(clip)
        for name, copy in self.jobs:
            if name == "mix" and len(ctx.by_label.get(clip.scene, [])) < 2:
                skipped.append(name)
                continue
            y, params = TRANSFORMS[name].apply(x, clip_rng(self.seed, clip.id, name, copy), ctx, clip, copy)
            y = _fit(np.asarray(y, dtype=np.float64), ctx.n)
            if not np.all(np.isfinite(y)):
                raise DataError(f"{ctx.root / clip.filename}: {name} gave non-finite samples; check the clip "
                                "(and the impulse responses)")
            rel = f"{AUGMENTED_DIR}/{name}/{clip.id}-{copy}.wav"
            atomic_write_bytes(Path(self.out) / rel, _wav_bytes(y, ctx.sr))
            device = ""
            if self.has_devices:
                device = f"{clip.device}+{name}" + (f":{copy}" if name == "spectrum_correction" else "")
            rows.append((rel, clip.scene or "", device, "train"))
            record[rel] = {"source": clip.filename, "transform": name, "copy": copy, "seed": self.seed,
                           "params": params}
        return rows, record, skipped


def augment_dataset(data: str | os.PathLike, out: str | os.PathLike, transforms: str | Sequence[str], *,
                    reader: str | None = None, k: int = 1, ir_folder: str | os.PathLike | None = None,
                    seed: int = 0, source_device: str = "a", workers: int = 1) -> AugmentResult:
    """Write the augmented clips of `data` and links to its clips into the new folder `out` as a csv
    dataset (`out/list.csv`), with `out/augment.json` recording what made each file. The output is the
    same for any number of `workers` (processes)."""
    from asc.data.audio import audio_info
    from asc.data.readers import load_dataset
    from asc.progress import progress

    names = parse_transforms(transforms)
    if k < 1:
        raise DataError(f"--k {k}: give at least one copy per clip")
    if "dir" in names and ir_folder is None:
        raise DataError("--transforms dir: give --ir-folder DIR, a folder of impulse-response WAVs (write "
                        "the synthetic devices' with `asc data synth --out D --preset tiny --write-irs DIR`)")
    out = Path(out)
    dataset = load_dataset(data, reader)
    root = Path(dataset.root)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise DataError(f"{out}: inside the dataset folder {root}; choose a folder outside it")
    sources = source_clips(dataset, source_device)
    has_devices = any(c.device for c in dataset.clips)
    clash = [c.filename for c in dataset.clips
             if PurePosixPath(c.filename).parts[0] in (AUGMENTED_DIR, LIST_FILE, RECORD_FILE)]
    if clash:
        raise DataError(f"{root / clash[0]}: the dataset uses the name {PurePosixPath(clash[0]).parts[0]!r}, "
                        "which the augmented folder keeps for itself; rename that folder of the dataset")
    first = audio_info(dataset.path(sources[0]))  # the files' own rate and length, not a nominal one
    sr, n = first.samplerate, first.frames
    ctx = Context(root=root, sr=sr, n=n, k=k)
    for c in sources:
        ctx.by_label.setdefault(c.scene, []).append(c)
    if "dir" in names:
        ctx.irs = load_irs(ir_folder, sr)  # type: ignore[arg-type]
    if "spectrum_correction" in names:
        ctx.corrections, ctx.correction_info = spectrum_corrections(dataset, ctx.load, source_device)

    _prepare_out(out)
    jobs = [(name, copy) for name in names for copy in TRANSFORMS[name].copies(ctx)]
    task = _Task(ctx, jobs, str(out), int(seed), has_devices)
    rows: list[tuple[str, str, str, str]] = []
    record: dict[str, dict[str, Any]] = {}
    counts = dict.fromkeys(names, 0)
    skipped = dict.fromkeys(names, 0)
    bar = progress(total=len(sources), desc="augment", unit="clip")
    workers = max(1, min(int(workers), len(sources)))
    try:
        if workers == 1:
            done = map(task, sources)
        else:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            done = pool.imap(task, sources, chunksize=4)  # in order: the same list.csv for any workers
        for clip_rows, clip_record, clip_skipped in done:
            bar.update(1)
            rows.extend(clip_rows)
            record.update(clip_record)
            for name in clip_skipped:
                skipped[name] += 1
            for info in clip_record.values():
                counts[info["transform"]] += 1
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()

    originals = 0
    for clip in dataset.clips:
        if clip.scene is None and clip.split != "test":
            continue  # the csv reader needs a label outside the test split
        _link(dataset.path(clip), out / clip.filename)
        rows.append((clip.filename, clip.scene or "", clip.device or "", clip.split))
        originals += 1
    if dataset.synthetic_info is not None:
        atomic_write_json(out / "SYNTHETIC.json", {**dataset.synthetic_info, "augmented_from": str(root)})
    atomic_write_json(out / RECORD_FILE, {
        "source": str(root.resolve()), "reader": dataset.description.name, "transforms": names, "k": k,
        "seed": int(seed), "source_device": source_device if has_devices else None,
        "ir_folder": str(Path(ir_folder).resolve()) if ir_folder is not None else None,
        "irs": [name for name, _ in ctx.irs], "spectrum_correction": ctx.correction_info,
        "sample_rate": sr, "samples": n, "counts": counts, "skipped": skipped, "originals": originals,
        "files": record})
    atomic_write_text(out / LIST_FILE, _csv_text(rows))  # last: a folder without it is incomplete
    return AugmentResult(out, sum(counts.values()), originals, counts, skipped)

