"""Datasets as data: the readers (TAU 2020, TAU 2022, a folder per class, a CSV), the description that
travels from the cache into the run and its reports, and the one-line errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.data.readers import READERS, detect_reader, load_dataset
from asc.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SR = 8000


def _tone(path: Path, freq: float, seconds: float = 1.0, sr: int = SR, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, sr, subtype="PCM_16")


def _folder(root: Path, classes=("cat", "dog", "rain"), per_class: int = 6) -> Path:
    for k, label in enumerate(classes):
        for i in range(per_class):
            _tone(root / label / f"{label}_{i}.wav", 300 + 200 * k + 10 * i)
    return root


# ------------------------------------------------------------------------------------ readers


def test_every_reader_is_reachable_by_name_and_detection(tau2020_meta_dir, tmp_path):
    from asc.data.synth import synthesize

    assert set(READERS) == {"tau2020", "tau2022", "folder", "csv"}
    assert detect_reader(tau2020_meta_dir) == "tau2020"
    synthesize(tmp_path / "s22", preset="tiny", duration=2, workers=1, layout="tau2022")
    assert detect_reader(tmp_path / "s22") == "tau2022"
    assert detect_reader(_folder(tmp_path / "mine")) == "folder"
    (tmp_path / "list.csv").write_text("filename,label\nmine/cat/cat_0.wav,cat\n")
    assert detect_reader(tmp_path / "list.csv") == "csv"
    with pytest.raises(DataError, match="not a dataset"):
        detect_reader(tmp_path / "s22" / "evaluation_setup")


def test_tau2020_description_is_the_published_set(tau2020_meta_dir):
    data = load_dataset(tau2020_meta_dir, check_audio=False)
    d = data.description
    assert d.name == "tau2020" and d.version == "v2" and d.duration == 10.0 and d.sample_rate == 44100
    assert d.classes[0] == "airport" and len(d.classes) == 10
    assert d.devices == ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
    assert d.device_groups["unseen"] == ("s4", "s5", "s6")


def test_synthetic_tau2022_layout_is_read_as_one_second_clips_with_subsets(tmp_path):
    from asc.data.synth import synthesize

    synthesize(tmp_path / "s22", preset="tiny", duration=2, workers=1, layout="tau2022")
    data = load_dataset(tmp_path / "s22")
    d = data.description
    assert d.name == "tau2022" and d.duration == 1.0 and d.synthetic
    first = data.split("train")[0]
    # scene-city-location-segment-subsegment-device: two 1-s segments of each 2-s recording, and the
    # parallel captures of other devices share a segment's base
    assert re.fullmatch(r"audio/[a-z_]+-[a-z]+-\d+-\d+-[01]-a\.wav", first.filename)
    assert sf.info(str(data.path(first))).duration == pytest.approx(1.0)
    names = {c.filename for c in data.clips}
    stem = first.filename.rsplit("-", 2)[0]
    assert {f"{stem}-0-a.wav", f"{stem}-1-a.wav"} <= names
    parallel = next(c for c in data.clips if c.device == "b" and c.split == "train")
    assert any(c.base == parallel.base and c.device == "a" for c in data.clips)
    # a training subset as the DCASE 2024 splitN.csv: the rest of train becomes unused
    keep = [c.filename for c in data.split("train")[:10]]
    (tmp_path / "s22" / "split5.csv").write_text("filename\tscene_label\n" + "\n".join(
        f"{name}\t{name.split('/')[1].split('-')[0]}" for name in keep) + "\n")
    subset = load_dataset(tmp_path / "s22", train_subset="split5.csv")
    assert [c.filename for c in subset.split("train")] == keep
    assert len(subset.split("unused")) == len(data.split("unused")) + len(data.split("train")) - 10
    evaluate = data.split("evaluate")[0].filename
    (tmp_path / "bad.csv").write_text(f"filename\n{keep[0]}\n{evaluate}\n")
    with pytest.raises(DataError, match=rf"bad.csv:3: {re.escape(evaluate)} is not a training clip"):
        load_dataset(tmp_path / "s22", train_subset=tmp_path / "bad.csv")


def test_folder_dataset_classes_split_and_metadata(tmp_path):
    root = _folder(tmp_path / "mine")
    data = load_dataset(root)
    d = data.description
    assert d.name == "folder" and d.classes == ("cat", "dog", "rain") and d.devices == ()
    assert d.duration == 1.0 and d.sample_rate == SR and "stratified" in d.split_rule
    split = {c.filename: c.split for c in data.clips}
    for k in d.classes:
        assert {c.split for c in data.clips if c.scene == k} == {"train", "evaluate"}
    # the same split on every read, and a new file moves no other
    _tone(root / "cat" / "cat_new.wav", 999)
    again = {c.filename: c.split for c in load_dataset(root).clips}
    assert {k: again[k] for k in split} == split
    # metadata.csv adds devices and splits
    rows = ["filename,device,split"] + [f"{c.filename},{'phone' if i % 2 else 'laptop'},"
                                        f"{'train' if i % 3 else 'val'}"
                                        for i, c in enumerate(load_dataset(root).clips)]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(root)
    assert data.description.devices == ("laptop", "phone") and data.description.split_rule is None
    assert {c.split for c in data.clips} == {"train", "evaluate"}


def test_csv_dataset_reads_labels_devices_and_splits(tmp_path):
    _folder(tmp_path / "audio", classes=("siren", "speech"), per_class=3)
    rows = ["filename\tlabel\tdevice\tsplit"]
    for label in ("siren", "speech"):
        for i in range(3):
            split = "test" if i == 2 else "train"
            rows.append(f"audio/{label}/{label}_{i}.wav\t{label}\tmic{i % 2}\t{split}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(tmp_path / "list.csv")
    assert data.description.name == "csv" and data.description.classes == ("siren", "speech")
    assert data.description.devices == ("mic0", "mic1")
    assert len(data.split("train")) == 4 and len(data.split("test")) == 2
    assert data.path(data.clips[0]).is_file()


@pytest.mark.parametrize("case, message", [
    ("missing", r"list.csv:3: audio/dog/dog_9.wav: no such audio file"),
    ("no_train", r"class 'dog' has no training clip"),
    ("lengths", r"dog_1.wav: 0.500 s long, but .* is 1.000 s: clips of a dataset must have one length"),
    ("split", r"list.csv:3: unknown split 'holdout'"),
    ("unlabelled", r"list.csv:2: audio/cat/cat_0.wav has no label"),
])
def test_bad_csv_datasets_are_one_line_errors_naming_the_file_and_line(tmp_path, case, message):
    _folder(tmp_path / "audio", classes=("cat", "dog"), per_class=2)
    rows = ["filename,label,split", "audio/cat/cat_0.wav,cat,train", "audio/dog/dog_0.wav,dog,train",
            "audio/cat/cat_1.wav,cat,evaluate", "audio/dog/dog_1.wav,dog,evaluate"]
    if case == "missing":
        rows[2] = "audio/dog/dog_9.wav,dog,train"
    elif case == "no_train":
        rows[2] = "audio/dog/dog_0.wav,dog,evaluate"
    elif case == "lengths":
        _tone(tmp_path / "audio" / "dog" / "dog_1.wav", 500, seconds=0.5)
    elif case == "split":
        rows[2] = "audio/dog/dog_0.wav,dog,holdout"
    elif case == "unlabelled":
        rows[1] = "audio/cat/cat_0.wav,,train"
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_dataset(tmp_path / "list.csv")
    assert "\n" not in str(info.value)


def test_a_tau_fold_label_outside_the_class_list_names_file_and_line(tmp_path):
    from tests.tiny_tau import write_tau_folder

    root = write_tau_folder(tmp_path / "tau")
    fold = root / "evaluation_setup" / "fold1_train.csv"
    lines = fold.read_text().splitlines()
    lines[2] = lines[2].split("\t")[0] + "\tbeach"
    fold.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fold1_train.csv:3: .*'beach'"):
        load_dataset(root)


# ------------------------------------------------------------------- the description travels


def test_extract_records_the_description_and_the_cache_serves_the_dataset_classes(tmp_path, capsys):
    from asc.cli import main
    from asc.features.dataset import FeatureDataset

    root = _folder(tmp_path / "mine", classes=("owl", "ant"))
    assert main(["extract", "--data", str(root), "--features", str(ROOT / "features/logmel128_deltas.yaml"),
                 "--out", str(tmp_path / "cache"), "--workers", "1"]) == 0
    cache_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    described = manifest["dataset"]["description"]
    assert described["classes"] == ["ant", "owl"] and described["duration"] == 1.0
    assert manifest["feature_config"]["duration"] == 1.0  # `duration: null` took the data's length
    ds = FeatureDataset(cache_dir, split=None)
    assert ds.scenes == ["ant", "owl"] and (ds.labels >= 0).all()
    # a recipe naming the config (clip length from the data) and the cache root finds this cache
    from asc.train.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes/dcase2020/fcnn.yaml", profile="quick",
                         overrides=[f"data.cache={tmp_path / 'cache'}"])
    assert recipe["data"]["cache_dir"] == str(cache_dir)
    # the same feature config on another dataset goes into another folder, never over this one
    other = _folder(tmp_path / "other", classes=("x", "y"))
    before = sorted(p.name for p in cache_dir.iterdir())
    assert main(["extract", "--data", str(other), "--features", str(ROOT / "features/logmel128_deltas.yaml"),
                 "--out", str(tmp_path / "cache"), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds the features of another dataset (folder at" in err and str(root) in err
    assert sorted(p.name for p in cache_dir.iterdir()) == before
    assert FeatureDataset(cache_dir, split=None).scenes == ["ant", "owl"]


def test_a_feature_config_longer_than_the_clips_is_refused(tmp_path, capsys):
    from asc.cli import main

    root = _folder(tmp_path / "mine")
    assert main(["extract", "--data", str(root), "--features", str(ROOT / "features/logmel128_deltas.yaml"),
                 "--out", str(tmp_path / "cache"), "--set", "duration=10"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"duration: 10 s, but the clips of .* are 1 s; set `duration: null`", err), err
    assert not (tmp_path / "cache").exists()


def test_legacy_manifests_and_runs_read_as_tau2020():
    from asc.data.description import description_of

    legacy = description_of({"root": "/data/old", "synthetic": True}, "old manifest")
    assert legacy.name == "tau2020" and legacy.synthetic and legacy.root == "/data/old"
    assert legacy.classes[-1] == "tram"


# --------------------------------------------------------------- generic code names no dataset

GENERIC = ["asc/train/engine.py", "asc/eval/evaluate.py", "asc/eval/report.py", "asc/eval/compare.py",
           "asc/eval/inference.py", "asc/runs.py", "asc/features/dataset.py", "asc/predict.py"]


def test_generic_code_holds_no_dataset_task_scene_or_device_literals():
    from asc.data.tau2020 import DEVICES, SCENES

    literals = {*SCENES, *DEVICES, "real", "seen_simulated", "unseen", "tau2020", "tau2022", "dcase",
                "cifar100", "cifar", "TAU Urban Acoustic Scenes 2020 Mobile", "CIFAR-100"}
    found = []
    for rel in GENERIC:
        text = (ROOT / rel).read_text(encoding="utf-8")
        for literal in re.findall(r"""(?<![A-Za-z0-9_])(?:"([^"\n]*)"|'([^'\n]*)')""", text):
            value = literal[0] or literal[1]
            if value in literals:
                found.append(f"{rel}: {value!r}")
        if re.search(r"\bfrom asc\.data\.(tau20\d\d|cifar)\b|\bimport asc\.data\.(tau20\d\d|cifar)\b", text):
            found.append(f"{rel}: imports a dataset module")
    assert not found, found
