"""The feature cache: layout, no-op and incremental re-runs, resume after SIGKILL, bad files,
multi-part extraction and merging."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc.errors import DataError
from asc.features.cache import cache_path, merge_parts, read_manifest
from asc.features.extract import clips_from_dataset, extract
from asc.features.logmel import LogMelExtractor, feature_hash, resolve_feature_config

ROOT = Path(__file__).resolve().parents[1]
SR = 44100

# scene, city, location, segment, device, split
CLIPS = [
    ("airport", "lisbon", "1000", "40000", "a", "train"),
    ("airport", "lisbon", "1000", "40000", "b", "train"),
    ("bus", "paris", "2000", "10", "a", "train"),
    ("park", "vienna", "3000", "20", "s1", "train"),
    ("tram", "prague", "4000", "30", "c", "train"),
    ("metro", "milan", "5000", "40", "a", "evaluate"),
    ("metro", "milan", "5000", "40", "s4", "evaluate"),
    ("street_traffic", "lyon", "6000", "50", "s2", "evaluate"),
]


def clip_name(c: tuple) -> str:
    scene, city, loc, seg, dev, _ = c
    return f"audio/{scene}-{city}-{loc}-{seg}-{dev}.wav"


def write_wav(path: Path, seed: int, seconds: float = 0.5, sr: int = SR) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.1 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, subtype="PCM_16")


def make_tau_set(root: Path, clips: list[tuple] = CLIPS, seconds: float = 0.5) -> Path:
    """A tiny TAU 2020 Mobile folder: WAVs, meta.csv and fold files (tab-separated)."""
    for i, c in enumerate(clips):
        write_wav(root / clip_name(c), seed=i, seconds=seconds)
    write_metadata(root, clips)
    return root


def write_metadata(root: Path, clips: list[tuple]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    folds = {"train": ["filename\tscene_label"], "evaluate": ["filename\tscene_label"], "test": ["filename"]}
    for c in clips:
        name = clip_name(c)
        meta.append(f"{name}\t{c[0]}\t{c[1]}-{c[2]}\t{c[4]}")
        folds[c[5]].append(f"{name}\t{c[0]}")
        if c[5] == "evaluate":
            folds["test"].append(name)
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "evaluation_setup").mkdir(exist_ok=True)
    for split, lines in folds.items():
        (root / "evaluation_setup" / f"fold1_{split}.csv").write_text("\n".join(lines) + "\n")


def small_config(**storage) -> dict:
    return resolve_feature_config({"duration": 0.5, "storage": {"shard_size": 3, **storage}})


def run(data: Path, out: Path, cfg: dict | None = None, **kw):
    from asc.data.tau2020 import load_tau2020

    cfg = cfg or small_config()
    ds = load_tau2020(data, check_audio=False)
    cache_dir = out / f"small-{feature_hash(cfg)}"
    logs: list[str] = []
    result = extract(clips_from_dataset(ds), cfg, cache_dir, name="small", dataset_root=str(data),
                     synthetic=ds.synthetic, log=logs.append, **kw)
    return result, logs


def snapshot(cache_dir: Path) -> dict:
    """Every file of a cache (arrays as arrays), the manifest without its timestamp and the command
    that made it (a CLI run records one, an API run none), and without the CLI's note of its source."""
    out = {}
    for path in sorted(cache_dir.rglob("*")):
        if path.is_dir() or path.name == "source.json":
            continue
        rel = str(path.relative_to(cache_dir))
        if path.suffix == ".npy":
            out[rel] = np.load(path)
        elif path.name == "manifest.json":
            m = json.loads(path.read_text())
            m.pop("created")
            m["dataset"] = {k: m["dataset"][k] for k in ("root", "synthetic")}  # the CLI adds the description
            m.pop("command")
            out[rel] = m
        else:
            out[rel] = path.read_text()
    return out


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


@pytest.fixture()
def data(tmp_path) -> Path:
    return make_tau_set(tmp_path / "tau")


def test_layout_manifest_and_values(data, tmp_path):
    result, logs = run(data, tmp_path / "cache")
    assert logs[0] == "8 to extract, 0 cached"
    assert result.complete
    m = read_manifest(result.cache_dir)
    assert [s["count"] for s in m["shards"]] == [3, 3, 2]
    assert m["num_clips"] == 8 and m["skipped"] == [] and m["dtype"] == "float16"
    assert m["shape"] == [3, 128, 14]  # 0.5 s -> 22 frames -> 22 - 8
    assert m["config_hash"] == feature_hash(m["feature_config"])
    assert {"torch", "torchaudio", "numpy", "soundfile"} <= set(m["versions"])
    assert m["dataset"] == {"root": str(data), "synthetic": False}
    ids = [r["id"] for r in m["clips"]]
    assert ids == sorted(Path(clip_name(c)).stem for c in CLIPS)
    row = next(r for r in m["clips"] if r["id"] == "park-vienna-3000-20-s1")
    assert (row["scene"], row["device"], row["city"], row["location"], row["split"]) == \
        ("park", "s1", "vienna", "vienna-3000", "train")
    src = m["sources"][row["file"]]
    st = os.stat(data / row["file"])
    assert (src["size"], src["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    # the stored row is the extractor's output for that file, rounded to float16
    from asc.data.audio import load_audio

    stored = np.load(result.cache_dir / row["shard"], mmap_mode="r")[row["offset"]]
    cfg = resolve_feature_config(m["feature_config"])
    expected = LogMelExtractor(cfg).numpy(load_audio(data / row["file"], duration=0.5))
    np.testing.assert_array_equal(stored, expected.astype(np.float16))
    assert not list(result.cache_dir.glob(".*"))  # no temp files left


def test_cache_path_is_keyed_by_config(tmp_path):
    paper = ROOT / "features" / "logmel128_deltas.yaml"
    path = cache_path(tmp_path, paper, duration=10.0)  # the config takes the clip length from the data
    assert path.parent == tmp_path and path.name.startswith("logmel128_deltas-") and len(path.name) == 17 + 12
    assert cache_path(tmp_path, ROOT / "features" / "logmel256.yaml", duration=10.0) != path
    assert cache_path(tmp_path, ROOT / "features" / "logmel128_deltas.yaml", duration=1.0) != path
    # defaults == the paper's settings, and the hash of caches made when configs said `duration: 10.0`
    assert cache_path(tmp_path, {"duration": 10.0}, name="logmel128_deltas") == path
    assert path.name == "logmel128_deltas-8f31758858f1"
    with pytest.raises(DataError, match="no feature cache of logmel128_deltas"):
        cache_path(tmp_path, paper)  # nothing extracted yet: nothing to find


def test_rerun_is_a_no_op(data, tmp_path):
    result, _ = run(data, tmp_path / "cache")
    manifest = result.cache_dir / "manifest.json"
    before = {p.name: p.stat().st_mtime_ns for p in result.cache_dir.iterdir()}
    _, logs = run(data, tmp_path / "cache")
    assert logs[0] == "0 to extract, 8 cached"
    after = {p.name: p.stat().st_mtime_ns for p in result.cache_dir.iterdir()}
    assert before == after and manifest.is_file()


def test_new_and_changed_audio_are_extracted_incrementally(data, tmp_path):
    result, _ = run(data, tmp_path / "cache")
    changed = data / clip_name(CLIPS[2])  # bus-paris-...: third in id order (shard 0, offset 2)
    write_wav(changed, seed=99)
    os.utime(changed, ns=(time.time_ns() + 10**9,) * 2)
    added = ("airport", "lisbon", "1000", "40001", "a", "train")  # sorts second: every shard shifts
    write_wav(data / clip_name(added), seed=50)
    write_metadata(data, CLIPS + [added])
    result2, logs = run(data, tmp_path / "cache")
    assert logs[0] == "2 to extract, 7 cached"
    rows = read_manifest(result2.cache_dir)["clips"]
    changed_row = next(r for r in rows if r["file"] == clip_name(CLIPS[2]))
    assert changed_row["offset"] == 0 and changed_row["shard"].startswith("shard-00001-")
    fresh, _ = run(data, tmp_path / "fresh")
    assert_same(snapshot(result2.cache_dir), snapshot(fresh.cache_dir))


def _slow_extract_cmd(data: Path, out: Path, delay: float, workers: int = 1) -> list[str]:
    """`asc extract` in a subprocess whose audio loader sleeps, so it can be killed mid-run."""
    code = (
        "import sys, time\n"
        "import asc.data.audio as audio\n"
        "orig = audio.load_audio\n"
        f"def slow(*a, **k):\n    time.sleep({delay})\n    return orig(*a, **k)\n"
        "audio.load_audio = slow\n"
        "from asc.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cfg = out.parent / "small.yaml"
    cfg.write_text("duration: 0.5\nstorage:\n  shard_size: 3\n")
    return [sys.executable, "-c", code, "extract", "--data", str(data), "--features", str(cfg),
            "--out", str(out), "--workers", str(workers)]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("kill_after_shards, workers", [(0, 1), (1, 2)])
def test_sigkill_mid_run_then_resume_equals_uninterrupted(data, tmp_path, kill_after_shards, workers):
    out = tmp_path / "killed"
    cmd = _slow_extract_cmd(data, out, delay=0.15 * workers, workers=workers)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            done = list(out.glob("small-*/shard-*.npy"))
            temps = list(out.glob("small-*/.shard-*.tmp"))
            if len(done) >= kill_after_shards and temps:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)  # inside the loader of some clip of the current shard
        workers_pids = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if workers > 1 and sys.platform.startswith("linux"):
        assert len(workers_pids) == workers
        deadline = time.time() + 10
        while any(_alive(p) for p in workers_pids) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers_pids), "pool workers outlived the killed run"
    cache_dir = next(out.glob("small-*"))
    assert not (cache_dir / "manifest.json").exists()
    assert len(list(cache_dir.glob("shard-*.npy"))) == kill_after_shards
    resumed = subprocess.run([sys.executable, "-m", "asc"] + cmd[3:], capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.strip().splitlines()
    assert lines[0] == f"{8 - 3 * kill_after_shards} to extract, {3 * kill_after_shards} cached"
    assert lines[-1] == str(cache_dir)
    fresh, _ = run(data, tmp_path / "fresh")
    assert_same(snapshot(cache_dir), snapshot(fresh.cache_dir))


def test_bad_file_stops_the_run_keeping_finished_shards(data, tmp_path):
    bad = data / clip_name(CLIPS[4])  # tram-... sorts last of the 8 -> in the third shard
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(DataError) as err:
        run(data, tmp_path / "cache")
    assert str(bad) in str(err.value) and "--skip-bad" in str(err.value)
    cache_dir = next((tmp_path / "cache").glob("small-*"))
    assert len(list(cache_dir.glob("shard-*.npy"))) == 2
    assert not list(cache_dir.glob(".*")) and not (cache_dir / "manifest.json").exists()


def test_skip_bad_lists_the_file_and_goes_on(data, tmp_path):
    bad = data / clip_name(CLIPS[4])
    bad.write_bytes(b"RIFF not really a wav file")
    missing = data / clip_name(CLIPS[0])
    missing.unlink()
    result, logs = run(data, tmp_path / "cache", skip_bad=True)
    m = read_manifest(result.cache_dir)
    assert m["num_clips"] == 6
    assert sorted(s["file"] for s in m["skipped"]) == sorted([clip_name(CLIPS[0]), clip_name(CLIPS[4])])
    reasons = {s["file"]: s["reason"] for s in m["skipped"]}
    assert "no such audio file" in reasons[clip_name(CLIPS[0])]
    assert str(bad) in reasons[clip_name(CLIPS[4])]
    assert any(line.startswith("skipped ") for line in logs)
    # re-run: nothing to do; fixing the file extracts just that one
    assert run(data, tmp_path / "cache", skip_bad=True)[1][0] == "0 to extract, 8 cached"
    write_wav(bad, seed=4)
    _, logs = run(data, tmp_path / "cache", skip_bad=True)
    assert logs[0] == "1 to extract, 7 cached"
    assert [s["file"] for s in read_manifest(result.cache_dir)["skipped"]] == [clip_name(CLIPS[0])]


def test_parts_then_merge_equal_a_single_run(data, tmp_path):
    single, _ = run(data, tmp_path / "single")
    machines = []
    for i in range(3):
        r, logs = run(data, tmp_path / f"machine{i}", num_shards=3, shard_index=i)
        assert not r.complete and "merge" in logs[-1]
        machines.append(r.cache_dir)
    merged = tmp_path / "merged" / single.cache_dir.name
    merged.mkdir(parents=True)
    for src in machines[:2]:  # copy two of three parts in, as rsync -a would
        shutil.copytree(src, merged, dirs_exist_ok=True)
    with pytest.raises(DataError, match="parts not yet run or copied in: 2"):
        merge_parts(merged)
    shutil.copytree(machines[2], merged, dirs_exist_ok=True)
    merge_parts(merged)
    assert_same(snapshot(merged), snapshot(single.cache_dir))


def test_parts_into_one_folder_merge_automatically(data, tmp_path):
    single, _ = run(data, tmp_path / "single")
    for i in range(2):
        r, _ = run(data, tmp_path / "shared", num_shards=2, shard_index=i)
    assert r.complete
    assert_same(snapshot(r.cache_dir), snapshot(single.cache_dir))


def test_workers_and_batched_compute_give_the_same_features(data, tmp_path):
    one, _ = run(data, tmp_path / "one")
    two, _ = run(data, tmp_path / "two", workers=2)
    assert_same(snapshot(one.cache_dir), snapshot(two.cache_dir))
    # the GPU code path (workers decode, main computes batches) run on the CPU
    batched, _ = run(data, tmp_path / "batched", workers=2, compute_in="main", batch_size=3)
    a, b = snapshot(one.cache_dir), snapshot(batched.cache_dir)
    assert sorted(a) == sorted(b)
    for key in a:
        if key.endswith(".npy"):
            np.testing.assert_allclose(a[key].astype(np.float32), b[key].astype(np.float32), atol=2e-2)


def test_float32_storage_and_changing_dtype_rewrites(data, tmp_path):
    r16, _ = run(data, tmp_path / "cache")
    r32, logs = run(data, tmp_path / "cache", cfg=small_config(dtype="float32"))
    assert r16.cache_dir == r32.cache_dir and logs[0] == "8 to extract, 0 cached"
    m = read_manifest(r32.cache_dir)
    assert m["dtype"] == "float32"
    shards = sorted(r32.cache_dir.glob("shard-*.npy"))
    assert len(shards) == 3 and all(np.load(p).dtype == np.float32 for p in shards)
