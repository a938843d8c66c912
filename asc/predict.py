"""`asc predict` and `Predictor`: a trained run on any audio, through the one inference function.

Audio of any rate, channel count, bit depth and length is decoded by the one loader, downmixed and
resampled exactly as the run's features were computed (the run folder records its feature config),
cut into windows of the feature duration (10 s for the published features), each scored, and the
clip's probabilities are the mean of its windows'. A clip shorter than one window is zero-padded to
it and flagged. The module imports only argparse at top level, so `asc --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: files decoded ahead of the one being scored
_PREFETCH = 4
#: a shortfall up to this many seconds is rounding (e.g. a resampled 10-s file), not a short clip
LENGTH_TOLERANCE_S = 0.05


@dataclass
class Window:
    start: float  # seconds
    end: float
    scene: str
    probabilities: dict[str, float]


@dataclass
class Prediction:
    """One input's result: the mean of its windows' class probabilities, and the windows themselves."""

    name: str
    scene: str
    probabilities: dict[str, float]
    duration: float  # seconds of audio
    padded: bool  # shorter than one window: zero-padded to it
    windows: list[Window] = field(default_factory=list)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.name, "scene": self.scene, "probabilities": self.probabilities,
                "duration_s": self.duration, "padded": self.padded,
                "windows": [vars(w) for w in self.windows]}


class Predictor:
    """A trained model with its feature extraction: waveforms or files in, scene probabilities out.

        from asc.predict import Predictor
        predictor = Predictor.from_run("exp/dcase2020_quick/fcnn_quick_l2bn_seed0")
        result = predictor.predict("recording.wav")
        print(result.scene, max(result.probabilities.values()))
        results = predictor.predict_many(["a.wav", "b.flac"])
    """

    def __init__(self, model: Any, feature_config: dict, class_names: Sequence[str], *, device: str = "cpu",
                 window: float | None = None, hop: float | None = None, batch_size: int = 32) -> None:
        from asc.errors import ConfigError
        from asc.features.logmel import LogMelExtractor, resolve_feature_config

        self.model = model.eval()
        self.device = device
        self.class_names = list(class_names)
        self.sample_rate = int(feature_config["sample_rate"])
        self.window = float(window if window is not None else feature_config["duration"])
        self.hop = float(hop if hop is not None else self.window)
        if self.hop <= 0:
            raise ConfigError(f"--hop must be positive, got {self.hop:g}")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        # the run's features, computed over windows of `window` seconds (the training clip length
        # by default); a window too short for the deltas is refused by the config check
        cfg = resolve_feature_config({**feature_config, "duration": self.window},
                                     source=f"--window {self.window:g}")
        self.extractor = LogMelExtractor(cfg, device="cpu")
        self.window_samples = int(round(self.window * self.sample_rate))
        self.hop_samples = max(1, int(round(self.hop * self.sample_rate)))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "cpu", checkpoint: str = "best",
                 **kw: Any) -> Predictor:
        """The run's `checkpoint` (best or last) with the feature config it trained on."""
        from asc import runs
        from asc.errors import AscError
        from asc.tasks import task_of

        trained = runs.load_run(run_dir, checkpoint, device)
        task = task_of(trained.recipe, run_dir)
        if task.kind != "spectrogram":
            raise AscError(f"{run_dir}: a {task.name} run classifies {task.unit}, not audio; "
                           "asc predict needs a run trained on audio")
        return cls(trained.model, runs.feature_config(run_dir, trained.recipe), runs.class_names(trained),
                   device=trained.device, **kw)

    # ------------------------------------------------------------------ windows
    def _windows(self, wave: Any) -> tuple[Any, list[int], bool]:
        """(windows (W, samples), start samples, padded) of a mono waveform at the model's rate."""
        import numpy as np

        n, size = len(wave), self.window_samples
        if n < size:
            short = (size - n) / self.sample_rate > LENGTH_TOLERANCE_S
            return np.pad(wave, (0, size - n))[None], [0], short
        starts = list(range(0, n - size + 1, self.hop_samples))
        if starts[-1] + size < n and self.hop_samples <= size:  # a tail the windows missed: one more, ending
            # at the end (a hop longer than the window skips audio on purpose, so not then)
            starts.append(n - size)
        return np.stack([wave[s:s + size] for s in starts]), starts, False

    def _score(self, waves: Any) -> Any:
        """Class probabilities (W, K) of windows (W, samples), in batches."""
        import torch

        from asc.eval.inference import infer

        # features one window at a time (on a CPU 2.5x faster per window than a batched STFT, whose
        # buffers outgrow the caches), the model in batches
        batches = (torch.cat([self.extractor(torch.from_numpy(w)) for w in waves[i:i + self.batch_size]])
                   for i in range(0, len(waves), self.batch_size))
        logits, _, _ = infer(self.model, batches, device=self.device)
        return torch.softmax(logits.double(), dim=1).numpy()

    def _result(self, name: str, n_samples: int, starts: list[int], padded: bool, prob: Any) -> Prediction:
        names = self.class_names
        windows = [Window(start=s / self.sample_rate, end=(s + self.window_samples) / self.sample_rate,
                          scene=names[int(p.argmax())], probabilities=dict(zip(names, map(float, p))))
                   for s, p in zip(starts, prob)]
        mean = prob.mean(axis=0)
        return Prediction(name=name, scene=names[int(mean.argmax())],
                          probabilities=dict(zip(names, map(float, mean))),
                          duration=n_samples / self.sample_rate, padded=padded, windows=windows)

    # ------------------------------------------------------------------ public
    def predict_waveform(self, y: Any, sr: int, name: str = "<waveform>") -> Prediction:
        """A waveform in memory: (samples,) or (channels, samples), float, at `sr` Hz."""
        import numpy as np

        from asc.data.audio import conform

        y = np.asarray(y, dtype=np.float32)
        if y.ndim not in (1, 2):
            raise ValueError(f"{name}: expected (samples,) or (channels, samples), got shape {y.shape}")
        wave = conform(y.reshape(1, -1).T if y.ndim == 1 else y.T, int(sr), self.sample_rate, name=name)[:, 0]
        return self._predict_wave(name, wave)

    def _predict_wave(self, name: str, wave: Any) -> Prediction:
        windows, starts, padded = self._windows(wave)
        return self._result(name, len(wave), starts, padded, self._score(windows))

    def load(self, path: str | os.PathLike) -> Any:
        """A file as the model hears it: mono float32 at the feature rate, full length."""
        from asc.data.audio import load_audio

        return load_audio(path, sr=self.sample_rate, duration=None)

    def predict(self, path: str | os.PathLike) -> Prediction:
        return self._predict_wave(str(path), self.load(path))

    def predict_many(self, paths: Iterable[str | os.PathLike], *, skip_bad: bool = False,
                     show_progress: bool = True) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Files in batches of windows across files; returns (predictions in input order, bad files).

        A file that cannot be used raises DataError unless `skip_bad`, which lists it with the reason.
        """
        import numpy as np

        from asc.errors import DataError
        from asc.progress import progress

        paths = [str(p) for p in paths]
        results: list[Prediction] = []
        bad: list[tuple[str, str]] = []
        pending: list[tuple[str, int, list[int], bool, int]] = []  # name, samples, starts, padded, n_windows
        buffer: list[Any] = []

        def flush() -> None:
            if not buffer:
                return
            prob = self._score(np.concatenate(buffer))
            offset = 0
            for name, n, starts, padded, count in pending:
                results.append(self._result(name, n, starts, padded, prob[offset:offset + count]))
                offset += count
            pending.clear()
            buffer.clear()

        def load(path: str) -> Any:
            try:
                return self.load(path)
            except DataError as exc:
                return exc

        # decode a few files ahead in a thread (libsndfile and soxr release the GIL) while the
        # features and the model of earlier files run
        bar = progress(total=len(paths), desc="predict", unit="file", enabled=show_progress)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = [pool.submit(load, p) for p in paths[:_PREFETCH]]
            for i, path in enumerate(paths):
                wave = ahead[i].result()
                ahead[i] = None
                if i + _PREFETCH < len(paths):
                    ahead.append(pool.submit(load, paths[i + _PREFETCH]))
                bar.update(1)
                if isinstance(wave, DataError):
                    if not skip_bad:
                        for future in ahead[i + 1:]:
                            future.cancel()
                        raise wave
                    bad.append((path, str(wave)))
                    continue
                windows, starts, padded = self._windows(wave)
                pending.append((path, len(wave), starts, padded, len(windows)))
                buffer.append(windows)
                if sum(len(b) for b in buffer) >= self.batch_size:
                    flush()
        bar.close()
        flush()
        return results, bad


# ---------------------------------------------------------------------------------------------- CLI

EXAMPLES = """examples:
  asc predict exp/dcase2020_quick/fcnn_quick_l2bn_seed0 street.wav
  asc predict RUN recordings/ --out predictions.csv --json predictions.json     # a folder, recursively
  asc predict RUN @files.txt --skip-bad                                          # paths listed one per line
  asc predict RUN long_walk.flac --window 10 --hop 5 --json windows.json         # overlapping windows
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="scene probabilities of any audio files with a trained run",
        description=(
            "Run a trained DCASE run on audio files of any sample rate, channel count, bit depth and\n"
            "length (wav, flac, ogg and whatever else soundfile reads). Audio is resampled and downmixed\n"
            "exactly as the run's features were computed, cut into windows of --window seconds every\n"
            "--hop seconds, and each file's probabilities are the mean over its windows; a file shorter\n"
            "than one window is zero-padded and flagged. Writes a tab-separated CSV in the DCASE\n"
            "submission layout (filename as given, scene_label, one probability per scene in full\n"
            "precision) and prints the top-k scenes. A broken file (empty, not audio, NaN samples) stops\n"
            "everything before anything is written, unless --skip-bad."),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder written by `asc train`")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="audio files, folders (searched recursively) or @list.txt (one path per line)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--json", metavar="FILE", help="also write every file's windows and probabilities as JSON")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="scenes shown per file (default: 3)")
    p.add_argument("--window", type=float, default=None, metavar="S",
                   help="window length in seconds (default: the run's clip length, 10 s)")
    p.add_argument("--hop", type=float, default=None, metavar="S",
                   help="seconds between windows (default: --window)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="windows per forward pass (default: 32)")
    p.add_argument("--skip-bad", action="store_true",
                   help="score the other files when some cannot be read, and list the bad ones at the end")
    p.set_defaults(func=run)


def expand_paths(items: Sequence[str]) -> list[str]:
    """Files as given; folders searched recursively for audio; @list.txt read line by line."""
    from asc.errors import DataError

    suffixes = audio_suffixes()
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            listing = Path(item[1:])
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise DataError(f"{listing}: cannot read the list of paths ({exc.strerror})") from None
            # relative paths in a list are taken from the list's folder, as paths in a config file are
            listed = [str(listing.parent / line) if not os.path.isabs(line) else line
                      for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]
            if not listed:
                raise DataError(f"{listing}: lists no paths (one audio path per line; # starts a comment)")
            out.extend(listed)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*")
                           if p.suffix.lower() in suffixes and p.is_file())
            if not found:
                raise DataError(f"{item}: no audio files ({', '.join(sorted(suffixes))}) in this folder")
            out.extend(found)
        else:
            out.append(item)
    return out


def audio_suffixes() -> set[str]:
    import soundfile as sf

    names = {k.lower() for k in sf.available_formats()}
    suffixes = {f".{n}" for n in names} | {".wav", ".flac", ".ogg"}
    if "aiff" in names:
        suffixes |= {".aif", ".aiff"}
    if "ogg" in names:
        suffixes |= {".oga", ".opus"}
    return suffixes


def run(args: argparse.Namespace) -> int:
    import json

    from asc.errors import ConfigError
    from asc.eval.report import write_submission
    from asc.fileio import atomic_write_text

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.window is not None and args.window <= 0:
        raise ConfigError(f"--window must be positive, got {args.window:g}")
    paths = expand_paths(args.paths)
    predictor = Predictor.from_run(args.run, device=args.device, checkpoint=args.checkpoint,
                                   window=args.window, hop=args.hop, batch_size=args.batch_size)
    results, bad = predictor.predict_many(paths, skip_bad=args.skip_bad)
    if results:
        write_submission(args.out, [r.name for r in results],
                         [[r.probabilities[c] for c in predictor.class_names] for r in results],
                         predictor.class_names)
        if args.json:
            atomic_write_text(args.json, json.dumps({"run": str(args.run), "window_s": predictor.window,
                                                     "hop_s": predictor.hop,
                                                     "files": [r.to_dict() for r in results]}, indent=1))
    shown = results[:20]
    width = max((len(r.name) for r in shown), default=4)
    for r in shown:
        top = "  ".join(f"{scene} {prob:.3f}" for scene, prob in r.top(args.top_k))
        flag = "  (shorter than one window: padded)" if r.padded else ""
        print(f"{r.name:<{width}}  {top}{flag}")
    if len(results) > len(shown):
        print(f"... and {len(results) - len(shown)} more")
    if results:
        print(f"wrote {args.out}" + (f" and {args.json}" if args.json else "") + f" ({len(results)} files)")
    for _path, reason in bad:
        print(f"skipped: {reason}", file=sys.stderr)
    if bad and not results:
        return 1
    return 0
