"""Throughput of `asc predict` on 10-s files, with the parts it is made of side by side.

    python scripts/bench_predict.py                                  # untrained quick FCNN, 96 files
    python scripts/bench_predict.py --run exp/dcase2020_quick/fcnn_quick_l2bn_seed0 --files 192

Files are 10-s mono 44.1-kHz 24-bit WAVs (noise and tones) written to a temp folder. Timed, best of
`--repeats`, in one process: decoding alone, decoding + features, and the whole Predictor
(decode, features, model, averaging); the model alone on precomputed features. Rates are files/s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from bench_extract import best_time  # scripts/ is on the path when a script runs

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
    args = ap.parse_args()

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
        waves = [predictor.load(p) for p in paths]
        feats = torch.cat([predictor.extractor(torch.from_numpy(w)) for w in waves])
        from asc.eval.inference import infer

        def model_only() -> None:
            infer(predictor.model, feats.split(args.batch_size), device="cpu")

        def decode_features() -> None:
            for p in paths:
                predictor.extractor(torch.from_numpy(predictor.load(p)))

        rows = [
            ("decode only (soundfile)", best_time(lambda: [predictor.load(p) for p in paths], args.repeats)),
            ("decode + features, one clip at a time", best_time(decode_features, args.repeats)),
            ("model only (precomputed features)", best_time(model_only, args.repeats)),
            ("asc predict: Predictor.predict_many", best_time(
                lambda: predictor.predict_many(paths, show_progress=False), args.repeats)),
        ]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.files} files of 10 s, "
          f"batch {args.batch_size}, best of {args.repeats}")
    whole = rows[-1][1]
    print(f"{'part':<38} {'files/s':>9} {'share of predict time':>22}")
    for name, seconds in rows:
        print(f"{name:<38} {args.files / seconds:>9.1f} {seconds / whole:>22.2f}")


if __name__ == "__main__":
    main()
