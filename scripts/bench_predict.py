"""Throughput of `asc predict` on 10-s files, with the parts it is made of side by side.

    python scripts/bench_predict.py                                  # untrained quick FCNN, 96 files
    python scripts/bench_predict.py --run exp/dcase2020_quick/fcnn_quick_l2bn_seed0 --files 192  # + export

Files are 10-s mono 44.1-kHz 24-bit WAVs (noise and tones) written to a temp folder. Timed, best of
`--repeats`: decoding alone; the two parts of prediction, each on ONE torch thread (decode + features
one clip at a time; the model alone on precomputed features); and the whole Predictor (decode,
features, model, averaging) with a feature process beside the model (workers=1) and in one process
(workers=0). A pipeline of the two parts runs at best at the slower part's rate: that is the bound
the pipelined path is measured against. Each part is timed again while the other runs in a second
process: two vector-heavy processes slow each other on this machine's two cores (shared caches and
memory bandwidth; a float32 matmul loses a fifth beside another), and the slower part under that
contention is the most a pipeline can reach here. Rates are files/s. The training benchmark of the same model
(`scripts/bench_train.py`) runs last, in a subprocess, so a loaded machine shows in both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from benchtime import best_time  # scripts/ is on the path when a script runs

from asc.cpus import usable_cpus
from asc.features.compute import _keep_large_buffers
from asc.features.logmel import bind_duration, load_feature_config
from asc.models import create_model
from asc.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]


def write_files(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    sr = 44100
    t = np.arange(10 * sr) / sr
    paths = []
    for i in range(n):
        y = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (200 + 37 * i) * t)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype="PCM_24")
        paths.append(str(path))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a trained run folder (default: an untrained quick FCNN, width 0.125)")
    ap.add_argument("--files", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-train", action="store_true", help="skip the training benchmark")
    args = ap.parse_args()
    _keep_large_buffers(every_size=True)  # as `asc predict` does, for every part measured here

    if args.run:
        predictor = Predictor.from_run(args.run, batch_size=args.batch_size)
    else:
        torch.manual_seed(0)
        model = create_model("fcnn", norm="l2bn", width_mult=0.125, norm_momentum=0.1)
        from asc.data.tau2020 import SCENES

        cfg = bind_duration(load_feature_config(ROOT / "features/logmel128_deltas.yaml"), 10.0)  # 10-s files
        predictor = Predictor(model, cfg, SCENES, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), args.files)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each part on one thread, as each stage of the pipeline runs
        waves = [predictor.load(p) for p in paths]
        feats = torch.cat([predictor.extractor(torch.from_numpy(w)) for w in waves])
        from asc.eval.inference import infer

        def model_only() -> None:
            infer(predictor.model, feats.split(args.batch_size), device="cpu")

        def decode_features() -> None:
            for p in paths:
                predictor.extractor(torch.from_numpy(predictor.load(p)))

        decode = best_time(lambda: [predictor.load(p) for p in paths], args.repeats)
        parts = best_time(decode_features, args.repeats), best_time(model_only, args.repeats)
        contended = (beside(decode_features, model_only, args.repeats),
                     beside(model_only, decode_features, args.repeats))
        torch.set_num_threads(threads)
        whole = {workers: best_time(lambda w=workers: predictor.predict_many(paths, show_progress=False,
                                                                             workers=w), args.repeats)
                 for workers in (1, 0)}
        exported = None
        if args.run:  # the same run exported to ONNX, scored the same way through onnxruntime
            from asc.export.write import export_run

            export_run(args.run, Path(tmp) / "export")
            from_export = Predictor.from_export(Path(tmp) / "export", batch_size=args.batch_size)
            exported = best_time(lambda: from_export.predict_many(paths, show_progress=False, workers=1),
                                 args.repeats)
    bound = max(parts)
    print(f"torch {torch.__version__}, {threads} threads ({usable_cpus()} CPUs), {args.files} files of 10 s, "
          f"batch {args.batch_size}, best of {args.repeats}")
    print(f"{'part':<46} {'files/s':>9} {'of bound':>9}")
    rows = [("decode only (soundfile)", decode),
            ("decode + features, one clip at a time, 1 thread", parts[0]),
            ("model only (precomputed features), 1 thread", parts[1]),
            ("bound: the slower part", bound),
            ("decode + features, the model running beside them", contended[0]),
            ("model only, features running beside it", contended[1]),
            ("bound with both cores busy: the slower of these", max(contended)),
            ("asc predict --workers 1 (pipelined)", whole[1]),
            ("asc predict --workers 0 (one process)", whole[0])]
    if exported is not None:
        rows.append(("asc predict EXPORT (ONNX, onnxruntime), --workers 1", exported))
    for name, seconds in rows:
        print(f"{name:<46} {args.files / seconds:>9.1f} {bound / seconds:>9.2f}")
    print(f"pipelined: {args.files / whole[1]:.1f} files/s, {bound / whole[1]:.0%} of the bound "
          f"(target: 150 files/s or 80 % of the bound), {max(contended) / whole[1]:.0%} of the bound with "
          f"both cores busy; {whole[0] / whole[1]:.2f}x the one-process path")
    if not args.no_train:
        command = [sys.executable, str(ROOT / "scripts/bench_train.py"), "--reps", "5", "--warmup", "1",
                   "--batch", "32", "--width-mult", "0.125", "--models", "fcnn"]
        print("training, the same run:", " ".join(["scripts/bench_train.py", *command[2:]]), flush=True)
        subprocess.run(command, check=True)


def beside(timed, other, repeats: int) -> float:
    """Best time of `timed` while a forked process runs `other` over and over on the other core: what
    a stage of the pipeline gets when both cores are busy (shared caches and memory bandwidth)."""
    import multiprocessing as mp

    def loop() -> None:
        torch.set_num_threads(1)
        while True:
            other()

    proc = mp.get_context("fork").Process(target=loop, daemon=True)
    proc.start()
    try:
        time.sleep(0.5)  # the other process under way first
        return best_time(timed, repeats)
    finally:
        proc.terminate()
        proc.join()


if __name__ == "__main__":
    main()
