"""Shared fixtures: the real TAU 2020 metadata and a tiny synthetic TAU-format set."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # several workers share the cores: one thread each (and in the processes they start), or the
    # threads of every worker fight over every core
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

_HERE = Path(__file__).resolve().parent
_SHARED_META = _HERE.parents[1] / "shared" / "tau2020-meta"
_FIXTURE_META = _HERE / "fixtures" / "tau2020-meta"
_META_FILES = ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv",
               "evaluation_setup/fold1_test.csv")


@pytest.fixture(scope="session")
def tau2020_meta_dir(tmp_path_factory) -> Path:
    """A read-only folder with the real v2 meta.csv and fold files (no audio)."""
    if all((_SHARED_META / f).is_file() for f in _META_FILES):
        return _SHARED_META
    out = tmp_path_factory.mktemp("tau2020-meta")
    for rel in _META_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(_FIXTURE_META / f"{rel}.gz", "rb") as src, open(out / rel, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A synthetic TAU-format set (preset tiny, 2-s clips, seed 0): ~120 clips in every split and device.

    Shared by the whole session: treat it as read-only.
    """
    from asc.data.synth import synthesize

    out = tmp_path_factory.mktemp("tiny-synth")
    synthesize(out, preset="tiny", seed=0, duration=2.0, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A stored tiny run (FCNN, L2BN, a few full-batch steps) in the training engine's layout, over a
    TAU-format folder and its feature cache; shared by the session, so tests only add files to it."""
    import json

    import torch
    import yaml

    from asc.models import create_model
    from asc.runs import save_checkpoint

    from .tiny_tau import make_feature_cache

    base = tmp_path_factory.mktemp("evaluate")
    paths = make_feature_cache(base)
    features, cache_dir = paths["features"], paths["cache_dir"]
    assert (cache_dir / "manifest.json").is_file()

    run = base / "runs" / "fcnn-l2bn"
    params = {"width_mult": 0.1}
    torch.manual_seed(0)
    model = create_model("fcnn", num_classes=10, in_channels=3, norm="l2bn", **params)
    # a few full-batch steps on the training clips (each scene is a distinct tone), so that the
    # predictions differ between clips and devices
    from asc.features.dataset import load_split_arrays

    x_train, y_train, _ = load_split_arrays(cache_dir, "train")
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(25):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    model.eval()
    spec = {"name": "fcnn", "num_classes": 10, "in_channels": 3, "norm": "l2bn", "params": params}
    recipe = {
        "name": "tiny-fcnn",
        "task": "dcase",
        "profile": "quick",
        "norm": "l2bn",
        "seed": 7,
        "features": str(features),
        "model": {"name": "fcnn", "params": params},
        "data": {
            "cache": str(base / "cache"),
            "cache_dir": str(cache_dir),
            "train_split": "train",
            "eval_split": "evaluate",
        },
    }
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    history = [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 2.3 - 0.1 * e,
            "train_acc": 0.1 * e,
            "val_loss": 2.3,
            "val_acc": 0.1,
            "time_s": 1.0,
            "angles": {
                "intra_train": 40.0 - e,
                "intra_test": 45.0 - e,
                "inter": 30.0 + e,
                "iir_train": (40.0 - e) / (30.0 + e),
                "iir_test": (45.0 - e) / (30.0 + e),
            },
        }
        for e in (1, 2)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history) + '{"epoch": 3, "tr')
    state = {
        "epoch": 2,
        "model": model.state_dict(),
        "optimizer": {},
        "model_spec": spec,
        "recipe": recipe,
        "metrics": history[-1],
        "best": {"val_acc": 0.1, "epoch": 2},
    }
    save_checkpoint(state, run / "checkpoints" / "best.pt")
    return {"run": run, "cache_dir": cache_dir, "model": model, "features": features, "base": base}


def pytest_collection_modifyitems(items: list) -> None:
    """Tests marked slow (end-to-end runs of 20-60 s) go first: with two xdist workers, one of them
    starting last would leave the other idle at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
