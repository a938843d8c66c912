"""Feature extraction throughput: `asc extract` (1 and 2 workers) vs a per-file librosa loop and the
decode-only bound, on the same synthetic 10-s clips and cores. Prints files/s side by side.

    .venv/bin/python scripts/bench_extract.py --clips 80 --repeats 3

The synthetic set is built with `asc data synth --preset tiny --duration 10 --seed 0` in a temp
folder unless --data names an existing TAU-format folder. Every method runs warm (files in
the page cache, librosa/numba compiled, torch imported) and the best of --repeats runs is reported;
ours is timed end to end through asc.features.cache.extract (planning, shards, manifest) into a
fresh cache each time. Every process runs one thread (OMP/BLAS limits set below, torch in our
workers), so "N processes" means N cores for every method.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from benchtime import best_time  # noqa: E402  (scripts/ is on the path when a script runs)

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / "features" / "logmel128_deltas.yaml"


def decode_only(path: str) -> int:
    import soundfile as sf

    data, _ = sf.read(path, dtype="float32")
    return data.shape[0]


def librosa_per_file(path: str) -> np.ndarray:
    """The reference recipe's way: load, mel spectrogram, log, deltas and delta-deltas, per file."""
    import librosa

    y, sr = librosa.load(path, sr=44100, mono=True, duration=10.0)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=1024, n_mels=128, fmin=0.0,
                                         fmax=22050.0, htk=True, norm=None)
    logmel = np.log(mel + 1e-8)

    def deltas(x):  # N = 2, valid frames only
        return ((x[:, 3:-1] - x[:, 1:-3]) + 2 * (x[:, 4:] - x[:, :-4])) / 10.0

    d1 = deltas(logmel)
    d2 = deltas(d1)
    return np.stack([logmel[:, 4:-4], d1[:, 2:-2], d2]).astype(np.float32)


def stage_profile(paths: list[str], cfg: dict, repeats: int) -> list[tuple[str, float]]:
    """Milliseconds per clip of each stage of one clip's extraction, clip after clip on one core as a
    worker runs them (buffers of one clip at a time), best of `repeats` passes per stage: where an
    extraction's time goes beyond decoding."""
    import time

    import torch

    from asc.data import audio
    from asc.features.compute import keep_large_buffers
    from asc.features.logmel import LogMelExtractor, _tame, delta_n, deltas, fit_length, num_samples

    ext = LogMelExtractor(cfg)
    c, n = ext.cfg, delta_n(cfg)

    def stages(path: str):
        audio.check_audio(path, float(c["duration"]))
        yield "header check (asc.data.audio.check_audio)"
        wave = fit_length(audio.load_audio(path, sr=int(c["sample_rate"]), duration=float(c["duration"])),
                          num_samples(c))
        yield "decode + fit (asc.data.audio.load_audio)"
        x = _tame(torch.from_numpy(wave).unsqueeze(0))[0]
        spec = torch.stft(x, n_fft=c["n_fft"], hop_length=c["hop_length"], win_length=c["win_length"],
                          window=ext.window, center=c["center"], pad_mode=c["pad_mode"], return_complex=True)
        yield "STFT"
        mag = spec.real.square() + spec.imag.square()
        yield "power"
        mel = ext._mel(mag)
        yield "mel (sparse filterbank)"
        lm = torch.log(mel + c["log_offset"])
        yield "log"
        d1 = deltas(lm, n)
        d2 = deltas(d1, n)
        t = lm.shape[-1]
        feats = torch.stack([lm[..., 2 * n:t - 2 * n], d1[..., n:t - 3 * n], d2], dim=1)
        yield "deltas + stack"
        feats[0].to(torch.float16).numpy().tobytes()
        yield "float16 cast + bytes"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    keep_large_buffers()  # as in the extraction workers
    best: dict[str, float] = {"decode only (soundfile.read float32)": best_time(
        lambda: [decode_only(p) for p in paths], repeats)}
    try:
        for _ in range(repeats):
            spent: dict[str, float] = {}
            for path in paths:
                start = time.perf_counter()
                for name in stages(path):
                    now = time.perf_counter()
                    spent[name] = spent.get(name, 0.0) + now - start
                    start = now
            for name, seconds in spent.items():
                best[name] = min(best.get(name, float("inf")), seconds)
    finally:
        torch.set_num_threads(threads)
    return [(name, 1000 * seconds / len(paths)) for name, seconds in best.items()]


def run_pool(func, paths: list[str], procs: int) -> None:
    if procs == 1:
        for p in paths:
            func(p)
        return
    with mp.get_context("fork").Pool(procs) as pool:
        for _ in pool.imap(func, paths, chunksize=1):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="existing TAU-format folder (default: build a synthetic one)")
    ap.add_argument("--clips", type=int, default=80, help="clips to extract (first by id)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--passes", type=int, default=1,
                    help="process the clip list this many times per run (steady state: start-up costs of "
                         "worker pools spread over more clips)")
    args = ap.parse_args()

    from asc.data.tau2020 import load_tau2020
    from asc.features.extract import clips_from_dataset, extract
    from asc.features.logmel import bind_duration, load_feature_config

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        if args.data:
            data = Path(args.data)
        else:
            import subprocess

            data = tmp / "synth"
            print(f"building a synthetic set in {data} ...", file=sys.stderr)
            synth = ["data", "synth", "--out", str(data), "--preset", "tiny", "--duration", "10",
                     "--seed", "0"]
            subprocess.run([sys.executable, "-m", "asc", *synth], check=True, stdout=subprocess.DEVNULL)
        clips = clips_from_dataset(load_tau2020(data))[: args.clips]
        seconds = [decode_only(c.path) / 44100 for c in clips]  # also warms the page cache
        clips = [dataclasses.replace(c, id=f"{c.id}-{k}") for k in range(args.passes) for c in clips]
        paths = [c.path for c in clips]
        cfg = bind_duration(load_feature_config(FEATURES), 10.0)  # the synthetic clips are 10 s
        n = len(paths)
        librosa_per_file(paths[0])  # numba/librosa warm-up

        def ours(workers: int, compute_in: str = "auto"):
            def go():
                out = tmp / "cache"
                shutil.rmtree(out, ignore_errors=True)
                extract(clips, cfg, out / "x", name="x", dataset_root=str(data), workers=workers,
                        compute_in=compute_in, log=lambda s: None)
            return go

        methods = [
            ("decode only (soundfile), 1 process", lambda: run_pool(decode_only, paths, 1)),
            ("decode only (soundfile), 2 processes", lambda: run_pool(decode_only, paths, 2)),
            ("librosa loop, 1 process", lambda: run_pool(librosa_per_file, paths, 1)),
            ("librosa loop, 2 processes", lambda: run_pool(librosa_per_file, paths, 2)),
        ]
        for w in args.workers:
            methods.append((f"asc extract, {w} worker{'s' if w > 1 else ''}", ours(w)))
        methods.append(("asc extract, 2 workers decode + batched compute in main", ours(2, "main")))
        ours(1)()  # warm-up: torch kernels, filterbank
        # interleaved repeats, so a burst of load on the shared machine hits every method alike
        best = {name: float("inf") for name, _ in methods}
        for _ in range(args.repeats):
            for name, fn in methods:
                best[name] = min(best[name], best_time(fn, 1))
        rows = [(name, n / best[name]) for name, _ in methods]

        load = os.getloadavg()
        passes = f" ({n // args.passes} files x {args.passes} passes)" if args.passes > 1 else ""
        print(f"{n} clips{passes} of {np.mean(seconds):.1f} s, features {FEATURES.name}, "
              f"best of {args.repeats}, {os.cpu_count()} cores, "
              f"1-min load average {load_before:.2f} before, {load[0]:.2f} after")
        dec1 = rows[0][1]
        lib1 = rows[2][1]
        print(f"{'method':58s} {'files/s':>8s} {'x librosa(1)':>13s} {'x decode(1)':>12s}")
        for name, rate in rows:
            print(f"{name:58s} {rate:8.1f} {rate / lib1:13.2f} {rate / dec1:12.2f}")
        profile = stage_profile(paths[: args.clips], cfg, args.repeats)
        ours_ms = sum(ms for name, ms in profile[1:])
        print(f"\nwhere one clip's time goes, one core, {min(n, args.clips)} clips, best of {args.repeats}:")
        print(f"{'stage':58s} {'ms/clip':>8s} {'share':>8s}")
        for name, ms in profile:
            share = "" if name.startswith("decode only") else f"{ms / ours_ms:8.0%}"
            print(f"{name:58s} {ms:8.2f} {share}")
        print(f"{'sum of the stages of asc extract':58s} {ours_ms:8.2f}")
        print(f"ceiling of extraction / decode-only on the same cores: {profile[0][1] / ours_ms:.0%} "
              "(decoding is one part of an extraction's work)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
