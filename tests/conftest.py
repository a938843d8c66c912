"""Shared fixtures: the real TAU 2020 metadata and a tiny synthetic TAU-format set."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

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
