"""TAU 2020 Mobile reader: the real published metadata, and small hand-written (broken) copies."""

from __future__ import annotations

import logging
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from asc.data.tau2020 import (
    DEVICE_GROUPS,
    DEVICES,
    SCENES,
    Clip,
    load_tau2020,
    parse_clip_name,
)
from asc.errors import DataError

# ------------------------------------------------------------ the real metadata (v2)


@pytest.fixture(scope="module")
def real(tau2020_meta_dir):
    return load_tau2020(tau2020_meta_dir, check_audio=False)


def test_constants():
    assert SCENES == ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
                      "street_pedestrian", "street_traffic", "tram")
    assert DEVICES == ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
    assert DEVICE_GROUPS == {"real": ("a", "b", "c"), "seen_simulated": ("s1", "s2", "s3"),
                             "unseen": ("s4", "s5", "s6")}


def test_real_v2_split_sizes(real):
    assert real.version == "v2"
    assert not real.synthetic
    assert len(real.split("train")) == 13962
    assert len(real.split("evaluate")) == 2968
    assert len(real.split("test")) == 0  # fold1_test repeats fold1_evaluate in the development set
    assert len(real.clips) == 23035
    assert len(real.split("unused")) == 23035 - 13962 - 2968


def test_real_v2_device_counts(real):
    counts = real.counts()["device"]
    assert counts["train"] == {"a": 10215, "b": 749, "c": 748, "s1": 750, "s2": 750, "s3": 750}
    assert counts["evaluate"] == {"a": 330, "b": 329, "c": 329, "s1": 330, "s2": 330, "s3": 330,
                                  "s4": 330, "s5": 330, "s6": 330}
    per_scene = real.counts()["scene"]["evaluate"]
    assert list(per_scene) == list(SCENES) and sum(per_scene.values()) == 2968


def test_real_unseen_devices_only_in_evaluate(real):
    train_devices = {c.device for c in real.split("train")}
    assert train_devices.isdisjoint({"s4", "s5", "s6"})
    assert {"s4", "s5", "s6"} <= {c.device for c in real.split("evaluate")}


def test_real_no_location_shared_between_train_and_evaluate(real):
    train_locs = {c.location for c in real.split("train")}
    eval_locs = {c.location for c in real.split("evaluate")}
    assert train_locs and eval_locs and train_locs.isdisjoint(eval_locs)


def test_real_clip_fields_and_parallel_recordings(real):
    first = real.clips[0]
    assert first == Clip("audio/airport-lisbon-1000-40000-a.wav", "airport", "lisbon", "lisbon-1000", "40000",
                         "a", "train")
    assert first.base == "airport-lisbon-1000-40000" and real.label(first) == 0
    bases = defaultdict(set)
    for c in real.clips:
        bases[c.base].add(c.device)
    assert all("a" in devices for devices in bases.values())
    assert len({c.city for c in real.clips}) == 10


def test_real_paths(real, tau2020_meta_dir):
    assert real.path(real.clips[0]) == Path(tau2020_meta_dir) / "audio/airport-lisbon-1000-40000-a.wav"


def test_v1_is_recognised_by_its_split_sizes(tau2020_meta_dir, tmp_path):
    """Version 1 has 3 more train and 2 more evaluate rows; here taken from unused clips."""
    root = tmp_path / "v1"
    shutil.copytree(tau2020_meta_dir, root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    data = load_tau2020(root, check_audio=False)
    unused = [c for c in data.split("unused") if c.device == "a"]
    with open(root / "evaluation_setup/fold1_train.csv", "a") as fh:
        fh.writelines(f"{c.filename}\t{c.scene}\n" for c in unused[:3])
    for name in ("fold1_evaluate.csv", "fold1_test.csv"):
        with open(root / "evaluation_setup" / name, "a") as fh:
            fh.writelines(f"{c.filename}\t{c.scene}\n" if "evaluate" in name else f"{c.filename}\n"
                          for c in unused[3:5])
    v1 = load_tau2020(root, check_audio=False)
    assert v1.version == "v1"
    assert (len(v1.split("train")), len(v1.split("evaluate"))) == (13965, 2970)


def test_parse_clip_name():
    assert parse_clip_name("audio/street_traffic-paris-91-2710-s5.wav") == {
        "scene": "street_traffic", "city": "paris", "location": "paris-91", "segment": "2710", "device": "s5"}
    assert parse_clip_name("audio/0.wav") is None
    assert parse_clip_name("audio/beach-paris-91-2710-a.wav") is None


# ------------------------------------------------------------ small hand-written sets

META_HEADER = "filename\tscene_label\tidentifier\tsource_label"
NAMES = {
    "train": ["airport-lisbon-1000-40000-a", "airport-lisbon-1000-40000-b", "bus-paris-5-100-a"],
    "evaluate": ["park-vienna-7-300-a", "park-vienna-7-300-s4"],
    "unused": ["tram-milan-9-400-a"],
}


def _meta_line(stem: str) -> str:
    scene, city, loc, _seg, dev = stem.split("-")
    return f"audio/{stem}.wav\t{scene}\t{city}-{loc}\t{dev}"


def write_set(root: Path, *, meta: list[str] | None = None, train: list[str] | None = None,
              evaluate: list[str] | None = None, test: list[str] | None = None, audio: bool = True,
              newline: str = "\n", bom: bool = False, final_newline: bool = True) -> Path:
    """A miniature TAU folder; None = the default rows, [] = header only; lines without header added."""
    stems = [s for names in NAMES.values() for s in names]
    meta = [_meta_line(s) for s in stems] if meta is None else meta
    train = [f"audio/{s}.wav\t{s.split('-')[0]}" for s in NAMES["train"]] if train is None else train
    if evaluate is None:
        evaluate = [f"audio/{s}.wav\t{s.split('-')[0]}" for s in NAMES["evaluate"]]
    test = [f"audio/{s}.wav" for s in NAMES["evaluate"]] if test is None else test

    def put(rel: str, header: str, rows: list[str]) -> None:
        text = newline.join([header, *rows]) + (newline if final_newline else "")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())

    put("meta.csv", META_HEADER, meta)
    put("evaluation_setup/fold1_train.csv", "filename\tscene_label", train)
    put("evaluation_setup/fold1_evaluate.csv", "filename\tscene_label", evaluate)
    put("evaluation_setup/fold1_test.csv", "filename", test)
    if audio:
        (root / "audio").mkdir(exist_ok=True)
        for s in stems:
            (root / "audio" / f"{s}.wav").write_bytes(b"")
    return root


def test_small_set_splits(tmp_path):
    data = load_tau2020(write_set(tmp_path))
    assert [c.id for c in data.split("train")] == NAMES["train"]
    assert [c.id for c in data.split("evaluate")] == NAMES["evaluate"]
    assert [c.id for c in data.split("unused")] == NAMES["unused"]
    assert data.split("test") == [] and data.version == "unknown" and data.missing == []
    assert data.counts()["device"]["evaluate"] == {"a": 1, "s4": 1}


def test_test_only_rows_are_split_test(tmp_path):
    extra = "audio/tram-milan-9-400-a.wav"
    data = load_tau2020(write_set(tmp_path, test=[f"audio/{s}.wav" for s in NAMES["evaluate"]] + [extra]))
    assert [c.filename for c in data.split("test")] == [extra]
    assert data.split("unused") == []


@pytest.mark.parametrize("style", ["crlf", "bom", "no_final_newline", "trailing_spaces"])
def test_tolerated_text_variants(tmp_path, style):
    kw = {"crlf": {"newline": "\r\n"}, "bom": {"bom": True}, "no_final_newline": {"final_newline": False},
          "trailing_spaces": {}}[style]
    if style == "trailing_spaces":
        stems = [s for names in NAMES.values() for s in names]
        kw = {"meta": [_meta_line(s) + "  " for s in stems],
              "train": [f"audio/{s}.wav\t{s.split('-')[0]} " for s in NAMES["train"]]}
    data = load_tau2020(write_set(tmp_path, **kw))
    assert len(data.split("train")) == 3 and len(data.split("evaluate")) == 2
    assert data.split("train")[0].scene == "airport"


def test_fields_from_file_names_without_meta(tmp_path):
    root = write_set(tmp_path)
    (root / "meta.csv").unlink()
    data = load_tau2020(root)
    clip = data.split("evaluate")[1]
    assert (clip.scene, clip.city, clip.location, clip.segment, clip.device) == ("park", "vienna", "vienna-7",
                                                                                 "300", "s4")
    assert data.split("unused") == []  # without meta.csv only fold rows are known


def test_official_evaluation_layout_has_unknown_labels(tmp_path):
    root = tmp_path / "eval"
    (root / "evaluation_setup").mkdir(parents=True)
    (root / "evaluation_setup/fold1_test.csv").write_text("filename\naudio/0.wav\naudio/1.wav\n")
    (root / "audio").mkdir()
    for i in range(2):
        (root / f"audio/{i}.wav").write_bytes(b"")
    data = load_tau2020(root)
    assert data.version == "eval"
    assert [c.split for c in data.clips] == ["test", "test"]
    assert all(c.scene is None and c.device is None and data.label(c) == -1 and c.base is None
               for c in data.clips)


def test_synthetic_marker(tmp_path):
    root = write_set(tmp_path)
    (root / "SYNTHETIC.json").write_text('{"generator": "asc.data.synth", "seed": 3}')
    data = load_tau2020(root)
    assert data.synthetic and data.synthetic_info["seed"] == 3 and data.version == "synthetic"


def test_missing_audio_is_an_error_naming_count_and_files(tmp_path):
    root = write_set(tmp_path)
    (root / "audio/bus-paris-5-100-a.wav").unlink()
    with pytest.raises(DataError, match=r"1 of 6 audio files listed in the metadata cannot be opened "
                                        r"\(audio/bus-paris-5-100-a.wav: no such audio file"):
        load_tau2020(root)


def test_allow_missing_drops_and_lists(tmp_path, caplog):
    root = write_set(tmp_path)
    (root / "audio/bus-paris-5-100-a.wav").unlink()
    with caplog.at_level(logging.WARNING, logger="asc.data.tau2020"):
        data = load_tau2020(root, allow_missing=True)
    assert data.missing == ["audio/bus-paris-5-100-a.wav"]
    assert len(data.clips) == 5 and "bus-paris-5-100-a" not in [c.id for c in data.clips]
    assert "1 of 6 audio files are missing" in caplog.text


def test_check_audio_false_skips_existence(tmp_path):
    data = load_tau2020(write_set(tmp_path, audio=False), check_audio=False)
    assert len(data.clips) == 6 and data.missing == []


def _meta_with(replace: str, by: str) -> list[str]:
    stems = [s for names in NAMES.values() for s in names]
    return [_meta_line(s).replace(replace, by) for s in stems]


@pytest.mark.parametrize("kwargs, where, message", [
    ({"meta": _meta_with("\tbus\t", "\tboat\t")}, "meta.csv:4", "unknown scene 'boat'"),
    ({"meta": _meta_with("\ts4", "\ts9")}, "meta.csv:6", "unknown device 's9'"),
    ({"meta": _meta_with("\tvienna-7\t", "\tvienna7\t")}, "meta.csv:5", "malformed identifier"),
    ({"meta": _meta_with("\tvienna-7\t", "\tvienna-8\t")}, "meta.csv:5", "contradicts the file name"),
    ({"meta": [_meta_line(s) for s in ["airport-lisbon-1000-40000-a", "airport-lisbon-1000-40000-a"]]},
     "meta.csv:3", "duplicate row"),
    ({"meta": ["audio/airport-lisbon-1000-40000-a.wav\tairport"]}, "meta.csv:2", "malformed row"),
    ({"train": ["audio/airport-lisbon-1000-40000-a.wav\tairport", "audio/bus-paris-5-100-a.wav"]},
     "fold1_train.csv:3", "malformed row"),
    ({"train": ["audio/airport-lisbon-1000-40000-a.wav\ttram"]}, "fold1_train.csv:2",
     "labelled 'tram' here but 'airport' in .*meta.csv:2"),
    ({"train": ["audio/airport-lisbon-1000-40000-a.wav\tbeach"]}, "fold1_train.csv:2",
     "unknown scene 'beach'"),
    ({"train": ["audio/park-vienna-7-999-a.wav\tpark"]}, "fold1_train.csv:2", "not listed in .*meta.csv"),
    ({"train": ["audio/bus-paris-5-100-a.wav\tbus", "audio/bus-paris-5-100-a.wav\tbus"]}, "fold1_train.csv:3",
     "duplicate row"),
    ({"train": ["audio/park-vienna-7-300-a.wav\tpark"]}, "fold1_evaluate.csv:2",
     "also in .*fold1_train.csv:2"),
    ({"train": ["../secret.wav\tpark"]}, "fold1_train.csv:2", "outside the dataset folder"),
    ({"train": ["/etc/passwd\tpark"]}, "fold1_train.csv:2", "outside the dataset folder"),
])
def test_broken_metadata_is_a_data_error_with_file_and_line(tmp_path, kwargs, where, message):
    root = write_set(tmp_path, **kwargs)
    with pytest.raises(DataError, match=rf"{where}: .*{message}"):
        load_tau2020(root)


def test_comma_separated_file_gets_a_hint(tmp_path):
    root = write_set(tmp_path)
    (root / "evaluation_setup/fold1_train.csv").write_text("filename,scene_label\naudio/x.wav,bus\n")
    with pytest.raises(DataError, match=r"fold1_train.csv:1: .*tab-separated"):
        load_tau2020(root)


def test_headerless_fold_file_is_read(tmp_path):
    root = write_set(tmp_path)
    (root / "evaluation_setup/fold1_train.csv").write_text("audio/bus-paris-5-100-a.wav\tbus\n")
    assert [c.id for c in load_tau2020(root).split("train")] == ["bus-paris-5-100-a"]


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="no such dataset folder"):
        load_tau2020(tmp_path / "nothing")
    with pytest.raises(DataError, match="not a TAU Urban Acoustic Scenes 2020 Mobile folder"):
        load_tau2020(tmp_path)


def test_unknown_split_name(tmp_path):
    with pytest.raises(ValueError):
        load_tau2020(write_set(tmp_path)).split("validation")


def test_counts_are_consistent_with_clips(real):
    counts = real.counts()
    for split in ("train", "evaluate", "unused"):
        assert sum(counts["device"][split].values()) == len(real.split(split))
        assert counts["scene"][split] == dict(
            sorted(Counter(c.scene for c in real.split(split)).items(), key=lambda kv: SCENES.index(kv[0])))


def test_a_link_loop_is_named_as_such_not_as_every_file_missing(tmp_path):
    root = write_set(tmp_path)
    target = root / "audio/bus-paris-5-100-a.wav"
    target.unlink()
    target.symlink_to(target.name)  # points at itself
    with pytest.raises(DataError) as err:
        load_tau2020(root)
    message = str(err.value)
    assert "1 of 6 audio files" in message and "symbolic link loop" in message
    assert "--allow-missing" not in message and "--skip-bad" in message
