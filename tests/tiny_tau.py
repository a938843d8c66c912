"""A tiny TAU 2020 Mobile-shaped folder with learnable classes, and its extracted feature cache.

1-s clips at 8 kHz (features 3 x 32 x 55), one tone per scene plus device-dependent noise, so a
model can learn something in a few steps and devices differ in difficulty.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from asc.data.tau2020 import SCENES

SR = 8000
FEATURES = {
    "sample_rate": SR,
    "duration": 1.0,
    "n_fft": 256,
    "hop_length": 128,
    "n_mels": 32,
    "fmax": 4000.0,
    "deltas": True,
    "scaling": "none",  # 1-s tones learn in the tests' few steps unscaled; the published scaling is slower
    "storage": {"dtype": "float32", "shard_size": 32},
}
NOISE = {"a": 0.05, "b": 0.1, "c": 0.1, "s1": 0.4, "s4": 1.5}


def write_tau_folder(root: Path, train_devices=("a", "a", "b"), eval_devices=("a", "b", "s1", "s4"),
                     seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    meta, folds = [], {"train": [], "evaluate": []}
    t = np.arange(SR) / SR
    for k, scene in enumerate(SCENES):
        splits = (("train", train_devices, "lisbon"), ("evaluate", eval_devices, "prague"))
        for split, devices, city in splits:
            for j, device in enumerate(devices):
                name = f"audio/{scene}-{city}-{100 + k}-{j}-{device}.wav"
                wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t) + NOISE[device] * rng.standard_normal(SR)
                sf.write(root / name, wave.astype(np.float32), SR, subtype="PCM_16")
                meta.append(f"{name}\t{scene}\t{city}-{100 + k}\t{device}")
                folds[split].append(f"{name}\t{scene}")
    header = "filename\tscene_label\n"
    meta_header = "filename\tscene_label\tidentifier\tsource_label\n"
    (root / "meta.csv").write_text(meta_header + "\n".join(meta) + "\n")
    setup = root / "evaluation_setup"
    (setup / "fold1_train.csv").write_text(header + "\n".join(folds["train"]) + "\n")
    (setup / "fold1_evaluate.csv").write_text(header + "\n".join(folds["evaluate"]) + "\n")
    (setup / "fold1_test.csv").write_text(
        "filename\n" + "\n".join(r.split("\t")[0] for r in folds["evaluate"]) + "\n")
    (root / "SYNTHETIC.json").write_text(json.dumps({"generator": "test fixture"}))
    return root


def run_extract(data: Path, features: Path, cache: Path) -> None:
    from asc.cli import main

    assert main(["extract", "--data", str(data), "--features", str(features), "--out", str(cache),
                 "--workers", "1"]) == 0


def make_feature_cache(base: Path, **folder_kw) -> dict:
    """Write the folder and extract it; returns paths (data, features, cache root, cache dir)."""
    from asc.features.cache import cache_path

    data = write_tau_folder(base / "tau", **folder_kw)
    features = base / "tiny_logmel.yaml"
    features.write_text(yaml.safe_dump(FEATURES))
    cache = base / "cache"
    run_extract(data, features, cache)
    return {"data": data, "features": features, "cache": cache, "cache_dir": cache_path(cache, features)}
