"""FeatureDataset and load_split_arrays over an extracted cache: random access, labels, devices,
split and device filters, DataLoader workers."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from asc.data.tau2020 import SCENES
from asc.errors import DataError
from asc.features.dataset import FeatureDataset, load_split_arrays
from tests.test_cache import CLIPS, clip_name, make_tau_set, run, write_wav


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    base = tmp_path_factory.mktemp("featds")
    data = make_tau_set(base / "tau")
    result, _ = run(data, base / "cache")
    return result.cache_dir


def _expected(split: str) -> list[tuple]:
    return sorted((c for c in CLIPS if c[5] == split), key=clip_name)


def test_split_rows_labels_and_devices(cache):
    ds = FeatureDataset(cache, split="train")
    want = _expected("train")
    assert len(ds) == len(want) == 5
    assert ds.ids == [clip_name(c)[6:-4] for c in want]
    assert ds.scenes == list(SCENES)
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [SCENES.index(c[0]) for c in want]
    assert ds.devices == [c[4] for c in want]
    assert [r["split"] for r in ds.records] == ["train"] * 5
    assert ds.shape == (3, 128, 14) and ds.synthetic is False
    assert ds.feature_config["n_mels"] == 128
    assert len(FeatureDataset(cache, split="evaluate")) == 3
    assert len(FeatureDataset(cache, split=None)) == 8


def test_random_access_matches_the_shard_rows(cache):
    ds = FeatureDataset(cache, split="evaluate")
    for i in (2, 0, 1, -1):
        x, y = ds[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == ds.shape
        r = ds.records[i]
        row = np.load(cache / r["shard"])[r["offset"]].astype(np.float32)
        np.testing.assert_array_equal(x.numpy(), row)
        assert y == SCENES.index(r["scene"])
        x[0, 0, 0] = 123.0  # a private copy: the cache is untouched
        assert ds[i][0][0, 0, 0] != 123.0
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_device_filter(cache):
    ds = FeatureDataset(cache, split="evaluate", devices=["s4", "s2"])
    assert sorted(ds.devices) == ["s2", "s4"]


def test_pickles_without_open_maps_and_works_in_dataloader_workers(cache):
    ds = FeatureDataset(cache, split="train")
    ds[0]
    assert ds._shards
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._shards == {}
    np.testing.assert_array_equal(clone[3][0].numpy(), ds[3][0].numpy())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    x = torch.cat(xs)
    assert x.shape == (5, 3, 128, 14)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), ds.labels)
    np.testing.assert_array_equal(x[4].numpy(), ds[4][0].numpy())


def test_load_split_arrays(cache):
    x, y, devices = load_split_arrays(cache, "evaluate")
    ds = FeatureDataset(cache, split="evaluate")
    assert x.dtype == np.float32 and x.shape == (3, 3, 128, 14)
    np.testing.assert_array_equal(y, ds.labels)
    assert devices == ds.devices
    for i in range(3):
        np.testing.assert_array_equal(x[i], ds[i][0].numpy())


def test_unlabelled_clips_get_label_minus_one(tmp_path):
    """An evaluation-style folder: anonymous file names, only fold1_test.csv, no meta.csv."""
    data = tmp_path / "eval"
    for i in range(2):
        write_wav(data / "audio" / f"{i}.wav", seed=i)
    (data / "evaluation_setup").mkdir()
    (data / "evaluation_setup" / "fold1_test.csv").write_text("filename\naudio/0.wav\naudio/1.wav\n")
    result, _ = run(data, tmp_path / "cache")
    ds = FeatureDataset(result.cache_dir, split="test")
    assert ds.ids == ["0", "1"]
    assert ds.labels.tolist() == [-1, -1] and ds.devices == [None, None]
    assert ds[1][1] == -1


def test_missing_cache_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="asc extract"):
        FeatureDataset(tmp_path / "nothing")


def test_a_missing_or_truncated_shard_is_named_when_the_dataset_is_made(cache, tmp_path):
    copy = tmp_path / cache.name
    shutil.copytree(cache, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    victim = copy / manifest["shards"][0]["file"]
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size - 1)
    name = re.escape(str(victim))
    with pytest.raises(DataError, match=rf"^{name}: truncated: .*; the feature cache is damaged, re-run"):
        FeatureDataset(copy, split=None)
    victim.unlink()
    with pytest.raises(DataError, match=rf"^{name}: missing; the feature cache is damaged"):
        FeatureDataset(copy, split=None)
    assert len(FeatureDataset(copy, split="evaluate")) == 3  # rows in other shards still load
