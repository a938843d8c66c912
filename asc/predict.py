"""`asc predict` and `Predictor`: a trained run on any audio, through the one inference function.

Audio of any rate, channel count, bit depth and length is decoded by the one loader, downmixed and
resampled exactly as the run's features were computed (the run folder records its feature config),
cut into windows of the feature duration (10 s for the published features), each scored, and the
clip's probabilities are the mean of its windows'. A clip shorter than one window is zero-padded to
it and flagged. Windows are made and scored `batch_size` at a time, so memory stays bounded however
long or many the files are. Many files are pipelined: a feature process (one torch thread) decodes
and computes the windows' features while this process runs the model on the previous batch (one
torch thread), so the two parts overlap instead of taking turns. Both paths cut exactly the same
batches and run the model on one thread, so their probabilities are equal bit for bit. The module imports only
argparse and the standard library at top level, so `asc --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: files decoded ahead of the one being scored: at most this many, and at most _PREFETCH_BYTES of files
_PREFETCH = 4
_PREFETCH_BYTES = 256 << 20
#: messages (each at most batch_size windows) the feature process may have ready ahead of the model:
#: enough to keep it busy during a forward pass, few enough that memory stays bounded
_PIPELINE_AHEAD = 2
#: windows in the first batch of a run of files, and the fewest in any but the last: later ones hold
#: batch_size, until the end nears (see Predictor._messages)
_FIRST_BATCH = 4
#: the most windows per forward pass (one window's published features are 0.66 MB in float32)
MAX_BATCH_SIZE = 1024
#: an array's first axis longer than this is samples, not channels (see predict_waveform)
MAX_CHANNELS = 16
#: how output names a file: relative to the dataset folder it lies in (as its lists do), or as given
NAME_MODES = ("dataset", "as-given")


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


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


@dataclass
class _Pending:
    """A file whose windows are being scored: its probabilities fill in as their batches finish."""

    name: str
    n_samples: int
    starts: list[int]
    padded: bool
    prob: Any  # (windows, classes) float64
    index: int = 0  # in the input order
    done: int = 0


@dataclass
class _Message:
    """What the feature stage hands the model stage: the files it finished decoding since the last
    message, in input order, each (index, constant-file notes, error or None, samples, window starts,
    padded); and at most batch_size windows, as waveform segments (in one process) or features (from
    the feature process: sent as (slot, count) of _Slots, seen by the model stage as a tensor), owned
    by `owners` (file index, window). `error`: the feature process failed."""

    files: list[tuple[int, list[str], BaseException | None, int, list[int], bool]]
    owners: list[tuple[int, int]]
    windows: Any = None
    error: BaseException | None = None


class _Segments:
    """A batch of windows as waveform segments: their features are computed with the model."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, segment: Any) -> None:
        self.items.append(segment)

    def __len__(self) -> int:
        return len(self.items)

    def take(self) -> list[Any]:
        return self.items


class _SlotBatch:
    """A batch of windows as features, computed as each window comes and written into a slot of
    _Slots (taken with the first window); taken as (slot, count)."""

    def __init__(self, slots: _Slots, predictor: Predictor) -> None:
        self.slots, self.predictor = slots, predictor
        self.slot: int | None = None
        self.count = 0

    def add(self, segment: Any) -> None:
        if self.slot is None:
            self.slot = self.slots.take_free()
        self.slots.buffers[self.slot, self.count].copy_(self.predictor._window_features(segment)[0])
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def take(self) -> tuple[int, int]:
        assert self.slot is not None
        return self.slot, self.count


class _Slots:
    """Shared memory for the feature process's batches, mapped before it is forked so both processes
    see it: features are written in place and only (slot, count) travels. A tensor sent through the
    DataLoader's queue instead is copied into a fresh shared-memory file for every batch, which both
    processes then page-fault in."""

    def __init__(self, count: int, batch_size: int, like: Any) -> None:
        import math
        import mmap
        import multiprocessing as mp

        import torch

        size = count * batch_size * math.prod(like.shape) * like.element_size()
        try:
            self._area = mmap.mmap(-1, size)
        except OSError as exc:
            from asc.errors import AscError

            raise AscError(f"cannot map {size / 2**20:.0f} MB of shared memory for the feature process "
                           f"({exc.strerror}); lower --batch-size, or pass --workers 0") from None
        self.buffers = torch.frombuffer(self._area, dtype=like.dtype).view(count, batch_size, *like.shape)
        self._free = mp.get_context("fork").SimpleQueue()
        for k in range(count):
            self._free.put(k)

    def batch(self, predictor: Predictor) -> _SlotBatch:
        """In the feature process: an empty batch whose features go into a free slot."""
        return _SlotBatch(self, predictor)

    def take_free(self) -> int:
        return self._free.get()

    def view(self, slot: int, count: int) -> Any:
        return self.buffers[slot, :count]

    def release(self, slot: int) -> None:
        self._free.put(slot)


class Predictor:
    """A trained model with its feature extraction: waveforms or files in, scene probabilities out.

        from asc.predict import Predictor
        predictor = Predictor.from_run("exp/dcase2020_quick/fcnn_quick_l2bn_seed0")
        result = predictor.predict("recording.wav")
        print(result.scene, max(result.probabilities.values()))
        results, bad = predictor.predict_many(["a.wav", "b.flac"])

    `window` (seconds) runs from the deltas' minimum to the longest clip a feature config allows
    (600 s); `hop` from one feature frame (hop_length samples: finer steps score near-identical
    windows) to the longest file read whole (4 h; a hop longer than the window skips audio on
    purpose). `names="dataset"` names a file inside a dataset folder (one holding meta.csv or
    evaluation_setup/) as the dataset's lists do, `"as-given"` as given. `warn` hears of files that
    are scored but suspicious (all one value); by default it prints to stderr.
    """

    def __init__(self, model: Any, feature_config: dict, class_names: Sequence[str], *, device: str = "cpu",
                 window: float | None = None, hop: float | None = None, batch_size: int = 32,
                 names: str = "dataset", warn: Callable[[str], None] | None = None) -> None:
        from asc.data.audio import MAX_AUDIO_S
        from asc.errors import ConfigError
        from asc.features.logmel import MAX_CLIP_S, LogMelExtractor, resolve_feature_config

        self.model = model.eval()
        self.device = device
        self.class_names = list(class_names)
        self.sample_rate = int(feature_config["sample_rate"])
        if window is None and feature_config.get("duration") is None:
            raise ConfigError("the feature config has no clip length (duration: null); use the config a run "
                              "recorded (Predictor.from_run) or give --window in seconds")
        self.window = _seconds(window if window is not None else feature_config["duration"], "--window")
        if self.window > MAX_CLIP_S:
            raise ConfigError(f"--window {self.window:g}: at most {MAX_CLIP_S:g} s; long files are scored in "
                              "windows, so keep the run's clip length (the default) and set --hop")
        # the run's features, computed over windows of `window` seconds (the training clip length
        # by default); a window too short for the deltas is refused by the config check
        cfg = resolve_feature_config({**feature_config, "duration": self.window},
                                     source=f"--window {self.window:g}")
        self.hop = _seconds(hop if hop is not None else self.window, "--hop")
        frame = int(feature_config["hop_length"]) / self.sample_rate
        if not frame <= self.hop <= MAX_AUDIO_S:
            raise ConfigError(f"--hop {self.hop:g}: must be between one feature frame ({frame:.4g} s) and "
                              f"{MAX_AUDIO_S:g} s")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size must be a whole number from 1 to {MAX_BATCH_SIZE}, "
                              f"got {batch_size}")
        if names not in NAME_MODES:
            raise ConfigError(f"--names must be one of {', '.join(NAME_MODES)}, got {names!r}")
        self.batch_size = batch_size
        self.names = names
        self.warn = warn if warn is not None else _stderr_warning
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
        features = runs.feature_config(run_dir, trained.recipe, trained.spec.get("feature_hash"))
        return cls(trained.model, features, runs.class_names(trained),
                   device=trained.device, **kw)

    @classmethod
    def from_export(cls, export_dir: str | os.PathLike, device: str = "cpu", **kw: Any) -> Predictor:
        """An `asc export` folder (ONNX through onnxruntime, or TorchScript) with the features it records,
        scored through the same windows and inference function as a run. Its SHA256SUMS is checked first,
        and a model that does not take audio features is refused; the graph takes windows of the export's
        clip length only, so another --window is refused."""
        from asc.errors import ConfigError
        from asc.export.read import load_export
        from asc.features.logmel import feature_shape

        loaded = load_export(export_dir, device)
        predictor = cls(loaded.model, loaded.features, loaded.classes, device=loaded.device, **kw)
        shape = tuple(feature_shape({**loaded.features, "duration": predictor.window}))
        if shape != loaded.input_shape:
            raise ConfigError(f"--window {predictor.window:g}: the model of {export_dir} takes windows of "
                              f"{float(loaded.features['duration']):g} s only (input "
                              f"{' x '.join(map(str, loaded.input_shape))}); leave --window out")
        return predictor

    # ------------------------------------------------------------------ windows
    def _starts(self, n: int) -> tuple[list[int], bool]:
        """(start samples of the windows, padded) of a waveform of `n` samples at the model's rate."""
        from asc.data.audio import LENGTH_TOLERANCE_S

        size = self.window_samples
        if n < size:
            return [0], (size - n) / self.sample_rate > LENGTH_TOLERANCE_S
        starts = list(range(0, n - size + 1, self.hop_samples))
        if starts[-1] + size < n and self.hop_samples <= size:  # a tail the windows missed: one more, ending
            # at the end (a hop longer than the window skips audio on purpose, so not then)
            starts.append(n - size)
        return starts, False

    def _segment(self, wave: Any, start: int) -> Any:
        import numpy as np

        seg = wave[start:start + self.window_samples]
        return seg if len(seg) == self.window_samples else np.pad(seg, (0, self.window_samples - len(seg)))

    def _features(self, segments: Sequence[Any]) -> Any:
        """Features (W, C, F, T) of a batch of windows (each (samples,))."""
        import torch

        # one window at a time: on a CPU 2.5x faster per window than a batched STFT, whose buffers
        # outgrow the caches
        return torch.cat([self._window_features(s) for s in segments])

    def _window_features(self, segment: Any) -> Any:
        """Features (1, C, F, T) of one window (samples,)."""
        import numpy as np
        import torch

        return self.extractor(torch.from_numpy(np.ascontiguousarray(segment)))

    def _model(self, feats: Any, names: Sequence[str]) -> Any:
        """Class probabilities (W, K) float64 of a batch of features; `names` name their files in the
        error that NaN/Inf logits raise."""
        import torch

        from asc.eval.inference import infer

        logits, _, _ = infer(self.model, [feats], device=self.device, names=names)
        return torch.softmax(logits.double(), dim=1).numpy()

    def _score(self, segments: Sequence[Any], names: Sequence[str]) -> Any:
        """Class probabilities (W, K) of one batch of windows (each (samples,)): features, then the model."""
        return self._model(self._features(segments), names)

    def _messages(self, decoded: Iterable[tuple[int, list[str], Any]], *,
                  batch: Callable[[], Any] = _Segments, stop_at_bad: bool,
                  total: int | None = None) -> Iterator[_Message]:
        """Cut (index, notes, mono waveform or the exception that loading it raised) into messages of
        windows `batch_size` at a time across files, so no file's windows are ever held all at once.
        The same cut serves both paths, so the model sees the same batches in both. `batch` makes an
        empty batch that takes the windows' waveform segments (the feature process's batch computes
        each window's features as it comes, while the waveform is still in the cache). `stop_at_bad`:
        end at the first bad file (it raises at the model stage), rather than decode files that will
        never be scored.

        With `total` files known, batches shrink as the end nears: a batch is cut at the windows still
        to come (at least _FIRST_BATCH), so the last batches halve. In the pipeline the model's last
        forward pass is the one thing nothing overlaps; at batch_size 32 it cost 0.3 s per run of
        files, a tenth of 192 files' time."""
        from asc.errors import DataError

        files: list = []
        owners: list[tuple[int, int]] = []
        windows = batch()
        # a short first batch: the model starts as soon as a few windows are ready instead of waiting
        # for a whole batch of features, which nothing can overlap
        limit = min(self.batch_size, _FIRST_BATCH)

        def cut() -> _Message:
            nonlocal files, owners, windows, limit
            limit = self.batch_size
            message = _Message(files, owners, windows.take() if len(windows) else None)
            files, owners, windows = [], [], batch()
            return message

        for i, notes, wave in decoded:
            if isinstance(wave, BaseException):
                files.append((i, notes, wave, 0, [], False))
                if stop_at_bad or not isinstance(wave, DataError):
                    yield _Message(files, [], None)  # the windows cut so far will not be scored
                    return
                continue
            starts, padded = self._starts(len(wave))
            files.append((i, notes, None, len(wave), starts, padded))
            for j, start in enumerate(starts):
                windows.add(self._segment(wave, start))
                owners.append((i, j))
                # windows known to follow: this file's, then at least one per file not yet decoded
                ahead = None if total is None else len(starts) - j - 1 + total - i - 1
                if len(windows) >= (limit if ahead is None else min(limit, max(_FIRST_BATCH, ahead))):
                    yield cut()
        if files or len(windows):
            yield cut()

    def _consume(self, messages: Iterable[_Message], names: Sequence[str],
                 on_bad: Callable[[int, BaseException], None],
                 tick: Callable[[], None]) -> Iterator[Prediction]:
        """Predictions of the files in `messages`, in input order: warnings and bad files are reported
        as their files come up, each batch of windows is scored as cut, and a file is done when all its
        windows are. `on_bad(index, error)` records or raises; `tick` counts a file."""
        import numpy as np

        pending: deque[_Pending] = deque()
        by_index: dict[int, _Pending] = {}
        for message in messages:
            if message.error is not None:
                raise message.error
            for i, notes, error, n_samples, starts, padded in message.files:
                tick()
                for note in notes:
                    self._constant(note)
                if error is not None:
                    on_bad(i, error)
                    continue
                entry = _Pending(names[i], n_samples, starts, padded,
                                 np.empty((len(starts), len(self.class_names))), index=i)
                pending.append(entry)
                by_index[i] = entry
            if message.owners:
                owned = [by_index[i] for i, _ in message.owners]
                batch_names = [entry.name for entry in owned]
                prob = (self._score(message.windows, batch_names) if isinstance(message.windows, list)
                        else self._model(message.windows, batch_names))
                for entry, (_, j), p in zip(owned, message.owners, prob):
                    entry.prob[j] = p
                    entry.done += 1
            while pending and pending[0].done == len(pending[0].starts):
                entry = pending.popleft()
                del by_index[entry.index]
                yield self._result(entry)

    def _one(self, waves: Iterable[tuple[str, Any]]) -> Prediction:
        """The prediction of one (name, mono waveform), on one torch thread like predict_many."""
        with _one_torch_thread():
            return next(self._stream(waves))

    def _stream(self, waves: Iterable[tuple[str, Any]]) -> Iterator[Prediction]:
        """Predictions of (name, mono waveform) pairs, in order, in this process."""
        names: list[str] = []

        def decoded() -> Iterator[tuple[int, list[str], Any]]:
            for i, (name, wave) in enumerate(waves):
                names.append(name)
                yield i, [], wave

        def never(i: int, error: BaseException) -> None:
            raise error

        return self._consume(self._messages(decoded(), stop_at_bad=True), names, never, lambda: None)

    def _result(self, entry: _Pending) -> Prediction:
        names, prob = self.class_names, entry.prob
        windows = [Window(start=s / self.sample_rate, end=(s + self.window_samples) / self.sample_rate,
                          scene=names[int(p.argmax())], probabilities=dict(zip(names, map(float, p))))
                   for s, p in zip(entry.starts, prob)]
        mean = prob.mean(axis=0)
        return Prediction(name=entry.name, scene=names[int(mean.argmax())],
                          probabilities=dict(zip(names, map(float, mean))),
                          duration=entry.n_samples / self.sample_rate, padded=entry.padded, windows=windows)

    # ------------------------------------------------------------------ public
    def predict_waveform(self, y: Any, sr: float, name: str = "<waveform>", *,
                         channels_last: bool = False) -> Prediction:
        """A waveform in memory at `sr` Hz: (samples,), (channels, samples), or with `channels_last`
        (frames, channels) as soundfile returns it. A first axis longer than MAX_CHANNELS is refused
        without `channels_last`, since reading 48,000 "channels" of 2 samples gives a plausible but
        meaningless prediction."""
        import numpy as np

        from asc.data.audio import conform
        from asc.errors import ConfigError

        y = np.asarray(y, dtype=np.float32)
        if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)) \
                or not math.isfinite(sr) or sr != int(sr):
            raise ConfigError(f"{name}: sr must be a whole number of Hz, got {sr!r}")
        if y.ndim == 1:
            data = y[:, None]
        elif y.ndim == 2:
            channels, axis = (y.shape[1], "second") if channels_last else (y.shape[0], "first")
            if channels > MAX_CHANNELS:
                fix = ("for (channels, samples) drop channels_last=True" if channels_last else
                       "for soundfile's (frames, channels) layout pass channels_last=True")
                raise ConfigError(f"{name}: shape {y.shape} would be {channels} channels (the {axis} axis; "
                                  f"at most {MAX_CHANNELS}); {fix}")
            data = y if channels_last else y.T
        else:
            raise ConfigError(f"{name}: expected (samples,), (channels, samples) or with channels_last=True "
                              f"(frames, channels), got shape {y.shape}")
        wave = conform(data, int(sr), self.sample_rate, name=name, on_constant=self._constant)[:, 0]
        return self._one([(name, wave)])

    def _constant(self, message: str) -> None:
        self.warn(f"{message}; scored anyway")

    def load(self, path: str | os.PathLike, on_constant: Callable[[str], None] | None = None) -> Any:
        """A file as the model hears it: mono float32 at the feature rate, full length (at most 4 h).
        `on_constant` hears of a file whose samples hold one value (default: a warning)."""
        from asc.data.audio import load_audio

        return load_audio(path, sr=self.sample_rate, duration=None,
                          on_constant=on_constant if on_constant is not None else self._constant)

    def name_of(self, path: str | os.PathLike) -> str:
        """How output names `path`: see `names` in the class docstring."""
        from asc.data.roots import dataset_name

        return (dataset_name(path) if self.names == "dataset" else None) or str(path)

    def predict(self, path: str | os.PathLike) -> Prediction:
        """One file, in this process (predict_many pipelines a long one); raises DataError when it cannot
        be used."""
        return self._one([(self.name_of(path), self.load(path))])

    def predict_many(self, paths: Iterable[str | os.PathLike], *, skip_bad: bool = True,
                     show_progress: bool = True, workers: int | None = None
                     ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Files in batches of windows across files; returns (predictions in input order, bad files as
        (path, reason)). A path given twice is scored once. With `skip_bad=False` the first file that
        cannot be used raises DataError instead (for a command that must stop before writing).

        `workers=1` decodes and computes features in a separate process while this one runs the model,
        so the two overlap (the default with at least 2 CPUs); `workers=0` does both here in turn, with
        decoding a few files ahead in a thread. Files that hold at most one batch of windows (the model
        runs once: nothing to overlap), a non-Linux system, or a process that cannot fork safely (other
        threads running, a daemon process) take the one-process path too; the probabilities are the same
        either way.
        """
        import contextlib

        from asc.errors import DataError
        from asc.progress import progress

        workers = check_workers(default_workers() if workers is None else workers)
        paths, names = self._unique(paths)
        bad: list[tuple[str, str]] = []

        def on_bad(i: int, error: BaseException) -> None:
            if skip_bad and isinstance(error, DataError):
                bad.append((paths[i], str(error)))
            else:
                raise error

        with contextlib.ExitStack() as stack:
            if workers and self._can_pipeline(paths):
                messages = stack.enter_context(self._pipeline(paths, skip_bad))  # forks before any bar
            else:
                messages = self._messages(self._decode_ahead(paths, stack), stop_at_bad=not skip_bad,
                                          total=len(paths))
            stack.enter_context(_one_torch_thread())  # in the pipeline the other core is the worker's
            bar = stack.enter_context(contextlib.closing(
                progress(total=len(paths), desc="predict", unit="file", enabled=show_progress)))
            results = list(self._consume(messages, names, on_bad, lambda: bar.update(1)))
        return results, bad

    def _decode_each(self, paths: Sequence[str]) -> Iterator[tuple[int, list[str], Any]]:
        """(index, constant-file notes, waveform or the error loading it raised) of each path in turn."""
        for i, path in enumerate(paths):
            notes: list[str] = []
            try:
                wave = self.load(path, on_constant=notes.append)  # warned in order, at the model stage
            except Exception as exc:  # noqa: BLE001 - reported at the model stage, in input order
                wave = exc
            yield i, notes, wave

    def _decode_ahead(self, paths: Sequence[str], stack: Any) -> Iterator[tuple[int, list[str], Any]]:
        """_decode_each, decoding in a thread (libsndfile and soxr release the GIL) while the features and
        the model of earlier files run here: at most _PREFETCH files and _PREFETCH_BYTES of them ahead."""
        from concurrent.futures import ThreadPoolExecutor

        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))

        def one(i: int) -> tuple[int, list[str], Any]:
            _, notes, wave = next(self._decode_each([paths[i]]))
            return i, notes, wave

        def size(path: str) -> int:
            try:
                return os.path.getsize(path)
            except OSError:
                return 0

        ahead: deque = deque()
        queue = iter(range(len(paths)))
        try:
            while True:
                while len(ahead) < _PREFETCH and (not ahead or sum(a[0] for a in ahead) < _PREFETCH_BYTES):
                    i = next(queue, None)
                    if i is None:
                        break
                    ahead.append((size(paths[i]), pool.submit(one, i)))
                if not ahead:
                    return
                yield ahead.popleft()[1].result()
        finally:
            for _, future in ahead:
                future.cancel()

    def _can_pipeline(self, paths: Sequence[str]) -> bool:
        """Whether a feature process pays and can be forked safely: Linux (fork is cheap and the process
        inherits the model's config without pickling), no other Python thread that could hold a lock
        the child needs (forking is unsafe then), not a daemon process (which may not have children),
        and more than one batch of windows: with one forward pass the model can only wait for the
        features, so a second process would cost its start and gain nothing."""
        import multiprocessing as mp
        import threading

        # tqdm's monitor thread (left by any progress bar) only ever takes tqdm's own lock
        others = [t for t in threading.enumerate()
                  if t is not threading.current_thread() and type(t).__name__ != "TMonitor"]
        if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods() \
                or mp.current_process().daemon or others:
            return False
        return len(paths) > self.batch_size or self._more_windows_than(paths, self.batch_size)

    def _more_windows_than(self, paths: Sequence[str], limit: int) -> bool:
        """Whether `paths` hold more than `limit` windows, by their headers (a file whose header cannot
        be read counts as one window: it is likely a bad file)."""
        import soundfile as sf

        total = 0
        for path in paths:
            try:
                info = sf.info(path)
                n = int(info.frames * self.sample_rate / info.samplerate)
            except Exception:  # noqa: BLE001 - any unreadable header: judged when the file is loaded
                n = 0
            size = self.window_samples
            total += 1 if n <= size else (n - size) // self.hop_samples + 2  # a generous count of _starts
            if total > limit:
                return True
        return False

    def _pipeline(self, paths: Sequence[str], skip_bad: bool) -> Any:
        """A context manager yielding the feature process's messages (see _Message), in input order;
        the process is stopped on leaving, however that happens. A torch DataLoader with one forked
        worker over a stream of messages keeps the worker's lifetime and its queue bound
        (_PIPELINE_AHEAD messages); the features themselves go through _Slots."""
        import contextlib
        import functools

        import numpy as np
        from torch.utils.data import DataLoader, IterableDataset

        from asc.errors import AscError

        predictor = self
        # in flight at once: one batch being computed, _PIPELINE_AHEAD queued, one at the model
        slots = _Slots(_PIPELINE_AHEAD + 2, self.batch_size, self._features([self._segment(
            np.zeros(self.window_samples, np.float32), 0)])[0])

        class Stream(IterableDataset):
            # the slots hang on the instance, not in this class's closure: a class lives until the
            # cyclic garbage collector finds it, and would keep the shared memory mapped that long
            def __init__(self, slots: _Slots) -> None:
                self.slots = slots

            def __iter__(self) -> Iterator[_Message]:
                try:
                    for message in predictor._messages(predictor._decode_each(paths),
                                                       batch=functools.partial(self.slots.batch, predictor),
                                                       stop_at_bad=not skip_bad, total=len(paths)):
                        # an exception that cannot be pickled would be lost on the way, and the parent
                        # would wait for it forever
                        message.files = [(i, notes, None if error is None else _picklable(error), *rest)
                                         for i, notes, error, *rest in message.files]
                        yield message
                except Exception as exc:  # noqa: BLE001 - raised in the parent, as one line
                    yield _Message([], [], None, error=_picklable(exc))

        loader = DataLoader(Stream(slots), batch_size=None, num_workers=1, collate_fn=_as_is,
                            prefetch_factor=_PIPELINE_AHEAD, multiprocessing_context="fork",
                            worker_init_fn=functools.partial(_init_feature_worker, os.getpid()))

        def received(it: Iterator[_Message]) -> Iterator[_Message]:
            """The messages with their features in view; a batch's slot is freed when the model stage
            asks for the next message, as it is done with the batch by then."""
            held = None
            while True:
                if held is not None:
                    slots.release(held)
                    held = None
                message = next(it, None)
                if message is None:
                    return
                if message.windows is not None:
                    held = message.windows[0]
                    message.windows = slots.view(*message.windows)
                yield message

        @contextlib.contextmanager
        def running() -> Iterator[Iterator[_Message]]:
            it = iter(loader)
            finished = False

            try:
                yield received(it)
                finished = True
            except RuntimeError as exc:  # from the next message, or the DataLoader's SIGCHLD handler
                if "DataLoader worker" not in str(exc):
                    raise
                raise AscError("the feature process ended unexpectedly (out of memory?); rerun with "
                               "--workers 0 to decode and score in one process") from None
            finally:
                if not finished and getattr(it, "_worker_pids_set", False):
                    # an error or Ctrl-C: do not wait for the file being decoded. Unregister the worker
                    # first, or the DataLoader's SIGCHLD handler reports its end as a crash
                    from torch.utils.data._utils import signal_handling

                    signal_handling._remove_worker_pids(id(it))
                    it._worker_pids_set = False
                    for worker in getattr(it, "_workers", ()):
                        worker.terminate()
                shutdown = getattr(it, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()

        return running()

    def _unique(self, paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
        """(paths, output names): each file once (the first spelling of it), named by `names`; two files
        that would get one name are refused."""
        from asc.data.roots import dataset_name
        from asc.errors import AscError

        seen: dict[str, str] = {}
        repeats = 0
        for p in map(str, paths):
            key = os.path.realpath(p)
            if key in seen:
                repeats += 1
            else:
                seen[key] = p
        unique = list(seen.values())
        if repeats:
            self.warn(f"{repeats} path(s) given more than once; each file is scored once")
        if self.names == "as-given":
            return unique, unique
        cache: dict = {}
        names = [dataset_name(p, cache) or p for p in unique]
        owner: dict[str, str] = {}
        for path, name in zip(unique, names):
            if name in owner:
                raise AscError(f"{path}: named {name} like {owner[name]} (each relative to its dataset "
                               "folder); score the two datasets separately or pass --names as-given")
            owner[name] = path
        return unique, names


def default_workers() -> int:
    """A feature process when this process may run on at least 2 CPUs: on the 2-CPU machine it scored
    1.5x to 1.9x the files per second of one process (BENCHMARKS.md, 2026-12-06). On one CPU the two
    processes would only take turns."""
    from asc.cpus import usable_cpus

    return 1 if usable_cpus() >= 2 else 0


def check_workers(workers: Any) -> int:
    """0 or 1, or ConfigError: one feature process already keeps the model busy on a core of its own,
    and a second would need files split across processes, which loses the input order or the bound on
    memory."""
    from asc.errors import ConfigError

    if isinstance(workers, bool) or not isinstance(workers, int) or workers not in (0, 1):
        raise ConfigError(f"--workers must be 0 (decode, features and model in one process) or 1 (a "
                          f"feature process beside the model), got {workers!r}")
    return workers


def _one_torch_thread() -> Any:
    """The model runs on one torch thread on every path: its reductions are split differently over
    more threads (logits differ by ~1e-7), so one thread makes the probabilities the same whether the
    features come from a feature process or not, and whatever torch's thread count is."""
    from asc.features.compute import _single_thread_torch

    return _single_thread_torch()


def _as_is(message: Any) -> Any:
    """The DataLoader's collate function: messages are sent as they are."""
    return message


def _init_feature_worker(parent_pid: int, worker_id: int) -> None:
    """The feature process: one torch thread (the model has the other core), no traceback of its own
    on Ctrl-C (the parent reports it in one line and stops it), gone when the parent is killed, and
    glibc keeping the STFT's buffers (see asc.features.compute)."""
    import signal

    import torch

    from asc.features.compute import _die_with_parent, keep_large_buffers

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    torch.set_num_threads(1)
    keep_large_buffers()


def _picklable(exc: BaseException) -> BaseException:
    """`exc` if it survives the trip to the parent, else a RuntimeError with its one-line message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not round-trip
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _seconds(value: Any, option: str) -> float:
    from asc.errors import positive_seconds

    return positive_seconds(value, option)


# ---------------------------------------------------------------------------------------------- CLI

EXAMPLES = """examples:
  asc predict exp/dcase2020_quick/fcnn_quick_l2bn_seed0 street.wav
  asc predict RUN recordings/ --out predictions.csv --json predictions.json     # a folder, recursively
  asc predict RUN @files.txt --skip-bad                                          # paths listed one per line
  asc predict RUN long_walk.flac --window 10 --hop 5 --json windows.json         # overlapping windows
  asc predict RUN data/tau/audio --names as-given             # full paths instead of audio/<file>.wav
  asc predict exports/fcnn_l2bn street.wav      # an `asc export` folder: checksums checked, onnxruntime
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
            "submission layout (filename as its dataset lists it, or as given: --names; scene_label;\n"
            "one probability per scene in full precision), one row per file even when a path is given\n"
            "twice, and prints the top-k scenes. A broken file (empty, not audio, NaN samples, a header\n"
            "rate outside 1-768 kHz, over 4 h) stops everything before anything is written, unless\n"
            "--skip-bad; a silent (all-constant) file is scored with a warning. Windows: from the\n"
            "deltas' minimum to 600 s; hop: from one feature frame to 4 h; batch size: 1 to 1024."),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder written by `asc train`, or an export folder "
                                             "written by `asc export` (ONNX runs through onnxruntime)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="audio files, folders (searched recursively) or @list.txt (one path per line)")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--json", metavar="FILE", help="also write every file's windows and probabilities as JSON")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="scenes shown per file (default: 3)")
    p.add_argument("--window", type=float, default=None, metavar="S",
                   help="window length in seconds (default: the run's clip length, 10 s)")
    p.add_argument("--hop", type=float, default=None, metavar="S",
                   help="seconds between windows (default: --window)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="of a run folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="windows per forward pass (default: 32)")
    p.add_argument("--names", choices=NAME_MODES, default="dataset",
                   help="dataset (default): a file inside a dataset folder (one holding meta.csv or "
                        "evaluation_setup/) is named as the dataset's lists name it, e.g. audio/0.wav; "
                        "as-given: every file as given on the command line")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="1 (default with 2 or more CPUs): decode and compute features in a second process "
                        "while this one runs the model, overlapping the two; 0 (default on one CPU): both "
                        "in one process. The probabilities are the same either way; files that fill one "
                        "batch of windows take one process")
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


def check_outputs(outputs: list, inputs: list[str], run_dir: str | os.PathLike) -> None:
    """Outputs that would destroy something are refused before any work: an output that is one of the
    inputs, two outputs on one path, an output inside the run folder, a FIFO or device."""
    from asc.errors import AscError
    from asc.fileio import refuse_special

    given = [Path(o) for o in outputs if o]
    real = [p.resolve() for p in given]
    if len(set(real)) < len(real):
        raise AscError(f"{given[0]}: --out and --json name the same file; give each its own path")
    sources = {Path(p).resolve() for p in inputs}
    run = Path(run_dir).resolve()
    for path, resolved in zip(given, real):
        if resolved in sources:
            raise AscError(f"{path}: is one of the audio inputs; writing there would destroy it, choose "
                           "another output path")
        if resolved == run or run in resolved.parents:
            raise AscError(f"{path}: lies inside the run folder {run_dir}; write predictions elsewhere")
        refuse_special(path)


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
    from asc.eval.report import submission_text
    from asc.fileio import write_all

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    window = None if args.window is None else _seconds(args.window, "--window")  # before the run loads
    hop = None if args.hop is None else _seconds(args.hop, "--hop")
    workers = check_workers(default_workers() if args.workers is None else args.workers)
    paths = expand_paths(args.paths)
    check_outputs([args.out, args.json], paths, args.run)
    from asc.export import is_export

    options = dict(window=window, hop=hop, batch_size=args.batch_size, names=args.names)
    if is_export(args.run):  # an `asc export` folder: its checksums are checked, --checkpoint is moot
        predictor = Predictor.from_export(args.run, device=args.device, **options)
    else:
        predictor = Predictor.from_run(args.run, device=args.device, checkpoint=args.checkpoint, **options)
    if args.top_k > len(predictor.class_names):
        raise ConfigError(f"--top-k {args.top_k}: the run has only {len(predictor.class_names)} classes")
    from asc.features.compute import keep_large_buffers

    keep_large_buffers(every_size=True)  # the model's activations, reused batch after batch
    results, bad = predictor.predict_many(paths, skip_bad=args.skip_bad, workers=workers)
    if results:  # the CSV and the JSON are written as one: both, or neither when a write fails
        outputs = [(args.out, submission_text([r.name for r in results],
                                              [[r.probabilities[c] for c in predictor.class_names]
                                               for r in results], predictor.class_names))]
        if args.json:
            outputs.append((args.json, json.dumps({"run": str(args.run), "window_s": predictor.window,
                                                   "hop_s": predictor.hop,
                                                   "files": [r.to_dict() for r in results]}, indent=1)))
        write_all(outputs)
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
