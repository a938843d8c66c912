"""How hard is a TAU-format set? A quick classifier per device, as a sanity benchmark.

Features: per-band mean and standard deviation of a 64-band log-mel spectrogram (librosa, 44.1 kHz,
n_fft 2048, hop 1024). Classifiers: multinomial logistic regression and a one-hidden-layer MLP (torch,
full batch), trained on the train split, scored on evaluate per device and device group.

    .venv/bin/python scripts/bench_synth.py --data /tmp/small            # an existing folder
    .venv/bin/python scripts/bench_synth.py --build small --seed 0        # build one in a temp folder

Prints accuracy (%) for each device, the groups real / seen simulated / unseen and overall.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def clip_features(path: str) -> np.ndarray:
    import librosa

    from asc.data.audio import load_audio

    y = load_audio(path, sr=44100, duration=None)
    mel = librosa.feature.melspectrogram(y=y, sr=44100, n_fft=2048, hop_length=1024, n_mels=64, htk=True,
                                         norm=None)
    logmel = np.log(mel + 1e-8)
    return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]).astype(np.float32)


def train_and_score(x_tr, y_tr, x_ev, hidden: int, seed: int) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    xt = torch.tensor((x_tr - mu) / sd)
    xe = torch.tensor((x_ev - mu) / sd)
    yt = torch.tensor(y_tr)
    if hidden:
        model = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], hidden), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.2), torch.nn.Linear(hidden, 10))
    else:
        model = torch.nn.Linear(xt.shape[1], 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(xe).argmax(1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset folder (TAU 2020 Mobile layout)")
    src.add_argument("--build", choices=("tiny", "small", "full"), help="build a synthetic preset first")
    parser.add_argument("--seed", type=int, default=0, help="synthetic seed with --build")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="classifier seeds averaged")
    args = parser.parse_args(argv)

    from asc.data.synth import synthesize
    from asc.data.tau2020 import DEVICE_GROUPS, DEVICES, SCENES, load_tau2020

    tmp = None
    root = args.data
    if args.build:
        tmp = tempfile.TemporaryDirectory(prefix="bench-synth-")
        started = time.perf_counter()
        result = synthesize(tmp.name, preset=args.build, seed=args.seed, workers=args.workers)
        took = time.perf_counter() - started
        print(f"built {args.build} (seed {args.seed}): {result.files} clips in {took:.1f} s")
        root = tmp.name
    data = load_tau2020(root)
    clips = data.split("train") + data.split("evaluate")
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        feats = np.stack(list(pool.map(clip_features, [str(data.path(c)) for c in clips], chunksize=16)))
    print(f"features of {len(clips)} clips in {time.perf_counter() - started:.1f} s")
    n_tr = len(data.split("train"))
    labels = np.array([SCENES.index(c.scene) for c in clips])
    devices = np.array([c.device for c in clips[n_tr:]])
    print(f"dataset: {root} ({'synthetic' if data.synthetic else data.version}); train {n_tr}, "
          f"evaluate {len(clips) - n_tr}; chance 10.0%")
    rows = []
    for name, hidden in (("logistic regression", 0), ("MLP 128", 128)):
        acc = []
        for run in range(args.runs):
            pred = train_and_score(feats[:n_tr], labels[:n_tr], feats[n_tr:], hidden, run)
            acc.append(pred == labels[n_tr:])
        hits = np.mean(acc, axis=0)
        row = {"overall": hits.mean()}
        for d in DEVICES:
            if (devices == d).any():
                row[d] = hits[devices == d].mean()
        for group, members in DEVICE_GROUPS.items():
            mask = np.isin(devices, members)
            if mask.any():
                row[group] = hits[mask].mean()
        rows.append((name, row))
    cols = list(rows[0][1])
    widths = [max(6, len(c)) + 2 for c in cols]
    print(f"{'accuracy %':<20}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
    for name, row in rows:
        cells = [f"{100 * row.get(c, float('nan')):>{w}.1f}" for c, w in zip(cols, widths)]
        print(f"{name:<20}" + "".join(cells))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
