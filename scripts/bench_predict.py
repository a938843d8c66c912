"""Throughput of `asc predict` on 10-s files, with the parts it is made of side by side.

    python scripts/bench_predict.py                                  # untrained quick FCNN, 96 files
    python scripts/bench_predict.py --run exp/dcase2020_quick/fcnn_quick_l2bn_seed0 --files 192  # + exports

Files are 10-s mono 44.1-kHz 24-bit WAVs (noise and tones) written to a temp folder. Timed in
`--repeats` rounds, each timing everything once (after one round to warm up), so a machine whose speed
drifts moves the parts and the pipeline together: decoding alone; the two parts of prediction, each on
ONE torch thread (decode + features one clip at a time; the model alone on precomputed features); and
the whole Predictor (decode, features, model, averaging) with a feature process beside the model
(workers=1) and in one process (workers=0). With --run, the run exported to ONNX at the default opset
(L2BN as RMSNormalization) and at opset 18 (ReduceL2) is timed the same ways through onnxruntime, and
each round's export is compared with that round's run folder. A pipeline of the two parts runs at best
at the slower part's rate: that is the bound the pipelined path is measured against, within each round
(the median ratio is the figure). Each part is timed again while the other runs in a second process: two
vector-heavy processes slow each other on this machine's two cores (shared caches and memory bandwidth;
a float32 matmul loses a fifth beside another), and the slower part under that contention is the most a
pipeline can reach here. Rates are files/s, the best of the rounds. The training benchmark of the same
model (`scripts/bench_train.py`) runs last, in a subprocess, so a loaded machine shows in both.
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

from asc.cpus import usable_cpus
from asc.features.compute import keep_large_buffers
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
    keep_large_buffers(every_size=True)  # as `asc predict` does, for every part measured here

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
        torch.set_num_threads(1)
        waves = [predictor.load(p) for p in paths]
        feats = torch.cat([predictor.extractor(torch.from_numpy(w)) for w in waves])
        torch.set_num_threads(threads)
        from asc.eval.inference import infer

        def model_only() -> None:
            infer(predictor.model, feats.split(args.batch_size), device="cpu")

        def decode_features() -> None:
            for p in paths:
                predictor.extractor(torch.from_numpy(predictor.load(p)))

        exporters = {}
        if args.run:  # the same run exported to ONNX, scored the same way through onnxruntime
            from asc.export import OPSET
            from asc.export.write import export_run

            for opset in (OPSET, 18):
                export_run(args.run, Path(tmp) / f"export{opset}", opset=opset)
                exporters[opset] = Predictor.from_export(Path(tmp) / f"export{opset}",
                                                         batch_size=args.batch_size)

        def predict(p: Predictor, workers: int) -> None:
            p.predict_many(paths, show_progress=False, workers=workers)

        # seconds of one call each; the parts on one torch thread, as each stage of the pipeline runs
        timers = {
            "decode": lambda: timed(lambda: [predictor.load(p) for p in paths], 1),
            "features": lambda: timed(decode_features, 1),
            "model": lambda: timed(model_only, 1),
            "features beside": lambda: timed(decode_features, 1, beside=model_only),
            "model beside": lambda: timed(model_only, 1, beside=decode_features),
            "pipelined": lambda: timed(lambda: predict(predictor, 1)),
            "one process": lambda: timed(lambda: predict(predictor, 0)),
        }
        for opset, exporter in exporters.items():
            timers[f"export {opset}"] = lambda e=exporter: timed(lambda: predict(e, 1))
            timers[f"export {opset} model"] = lambda e=exporter: timed(
                lambda: infer(e.model, feats.split(args.batch_size), device="cpu"))
        # every round times everything once, so a machine whose speed drifts (other tenants) moves the
        # parts and the pipeline together, and the pipeline is compared with its round's bound
        rounds = [{name: fn() for name, fn in timers.items()} for _ in range(args.repeats + 1)][1:]
    best = {name: min(r[name] for r in rounds) for name in timers}
    ratios = sorted(max(r["features"], r["model"]) / r["pipelined"] for r in rounds)
    busy = sorted(max(r["features beside"], r["model beside"]) / r["pipelined"] for r in rounds)
    bound = max(best["features"], best["model"])
    print(f"torch {torch.__version__}, {threads} threads ({usable_cpus()} CPUs), {args.files} files of 10 s, "
          f"batch {args.batch_size}, best of {args.repeats} rounds (after one to warm up)")
    print(f"{'part':<52} {'files/s':>9} {'of bound':>9}")
    rows = [("decode only", best["decode"]),
            ("decode + features, one clip at a time, 1 thread", best["features"]),
            ("model only (precomputed features), 1 thread", best["model"]),
            ("bound: the slower part", bound),
            ("decode + features, the model running beside them", best["features beside"]),
            ("model only, features running beside it", best["model beside"]),
            ("bound with both cores busy: the slower of these", max(best["features beside"],
                                                                    best["model beside"])),
            ("asc predict --workers 1 (pipelined)", best["pipelined"]),
            ("asc predict --workers 0 (one process)", best["one process"])]
    for opset in exporters:
        form = "RMSNormalization" if opset >= 23 else "ReduceL2"
        rows += [(f"EXPORT opset {opset} ({form}): model only, onnxruntime", best[f"export {opset} model"]),
                 (f"EXPORT opset {opset}: asc predict DIR, --workers 1", best[f"export {opset}"])]
    for name, seconds in rows:
        print(f"{name:<52} {args.files / seconds:>9.1f} {bound / seconds:>9.2f}")
    for opset in exporters:  # each round's export against the run folder, as the pipeline ratio above
        pair = sorted(r["pipelined"] / r[f"export {opset}"] for r in rounds)
        model = sorted(r["model"] / r[f"export {opset} model"] for r in rounds)
        print(f"export opset {opset} / run folder: asc predict {pair[len(pair) // 2]:.2f}x (median; "
              f"{pair[0]:.2f}-{pair[-1]:.2f}), model only {model[len(model) // 2]:.2f}x "
              f"({model[0]:.2f}-{model[-1]:.2f})")
    median = ratios[len(ratios) // 2]
    print(f"pipelined: {args.files / best['pipelined']:.1f} files/s; of its round's bound {median:.0%} "
          f"(median; {ratios[0]:.0%}-{ratios[-1]:.0%} over {len(ratios)} rounds; target: 150 files/s or "
          f"80 %), of the bound with both cores busy {busy[len(busy) // 2]:.0%}; "
          f"{best['one process'] / best['pipelined']:.2f}x the one-process path")
    if not args.no_train:
        command = [sys.executable, str(ROOT / "scripts/bench_train.py"), "--reps", "5", "--warmup", "1",
                   "--batch", "32", "--width-mult", "0.125", "--models", "fcnn"]
        print("training, the same run:", " ".join(["scripts/bench_train.py", *command[2:]]), flush=True)
        subprocess.run(command, check=True)


def timed(fn, threads: int | None = None, beside=None) -> float:
    """Seconds of one call of `fn` on `threads` torch threads (None: as set); with `beside`, while a
    forked process runs `beside` over and over on the other core: what a stage of the pipeline gets
    when both cores are busy (shared caches and memory bandwidth)."""
    import multiprocessing as mp

    before = torch.get_num_threads()
    proc = None
    if beside is not None:
        def loop() -> None:
            torch.set_num_threads(1)
            while True:
                beside()

        proc = mp.get_context("fork").Process(target=loop, daemon=True)
        proc.start()
        time.sleep(0.5)  # the other process under way first
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
        if proc is not None:
            proc.terminate()
            proc.join()


if __name__ == "__main__":
    main()
