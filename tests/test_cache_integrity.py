"""A feature cache is trusted only as far as it checks out: shards cut short or corrupted, sidecars
and manifests damaged, a disk that fills up mid-run. Driven through `asc extract` as a user runs it:
exit status, the one-line message naming the file and the command that repairs it, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from asc.cli import main
from asc.errors import DataError
from asc.features.dataset import FeatureDataset, load_split_arrays
from tests.test_cache import make_tau_set


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """8 clips of 0.5 s and a config cutting them into 3 shards (3, 3, 2): (data, features yaml)."""
    base = tmp_path_factory.mktemp("integrity")
    data = make_tau_set(base / "tau")
    cfg = base / "small.yaml"
    cfg.write_text("duration: 0.5\nn_mels: 32\nstorage:\n  shard_size: 3\n")
    return data, cfg


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> np.ndarray:
    """Every clip's features from an undisturbed run, to compare repaired caches with."""
    data, cfg = source
    out = tmp_path_factory.mktemp("reference")
    assert main(["extract", "--data", str(data), "--features", str(cfg), "--out", str(out),
                 "--workers", "1"]) == 0
    return load_split_arrays(next(out.iterdir()), None)[0]


def extract(capsys, source, out: Path, *extra: str) -> tuple[int, list[str], str]:
    data, cfg = source
    code = main(["extract", "--data", str(data), "--features", str(cfg), "--out", str(out), "--workers", "1",
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip()


def cache_only(capsys, source, out: Path, *extra: str) -> tuple[int, list[str], str]:
    """`asc extract --features F --out O ...` (no --data): --verify and --merge."""
    code = main(["extract", "--features", str(source[1]), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip()


def one_line(err: str) -> str:
    assert len(err.splitlines()) == 1, err
    return err


def shard(cache_dir: Path, index: int) -> Path:
    return next(cache_dir.glob(f"shard-{index:05d}-*.npy"))


@pytest.fixture()
def built(capsys, source, tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "cache"
    code, lines, _ = extract(capsys, source, out)
    assert code == 0
    return out, Path(lines[-1])


def test_truncated_shard_is_named_everywhere_and_rebuilt_by_a_plain_rerun(capsys, source, built, reference):
    out, cache_dir = built
    victim = shard(cache_dir, 1)
    full = victim.stat().st_size
    os.truncate(victim, full // 2)  # a full disk or an interrupted copy
    cut = f"{victim}: truncated: {full // 2} bytes, expected {full}"
    rerun = f"asc extract --data {source[0].resolve()} --features {source[1].resolve()} --out {out.resolve()}"

    with pytest.raises(DataError) as exc:  # training opens the dataset: named at once, not mid-epoch
        FeatureDataset(cache_dir, split=None)
    assert str(victim) in str(exc.value) and "truncated" in str(exc.value) and rerun in str(exc.value)

    code, lines, err = cache_only(capsys, source, out, "--verify")
    assert code == 2 and f"1 of 3 shards are bad (first: {victim}: truncated" in one_line(err)
    assert f"`{rerun} --verify`" in err and lines == [f"bad: {cut}"]
    code, _, err = cache_only(capsys, source, out, "--merge")
    assert code == 2 and str(victim) in one_line(err) and "truncated" in err and rerun in err

    code, lines, _ = extract(capsys, source, out)
    assert code == 0 and lines[0] == f"{cut}; extracting it again"
    assert lines[1] == "3 to extract, 5 cached"
    assert cache_only(capsys, source, out, "--verify")[0] == 0
    np.testing.assert_array_equal(load_split_arrays(cache_dir, None)[0], reference)


def test_corrupt_shard_content_is_found_by_verify_and_repaired_by_verify_with_data(capsys, source, built,
                                                                                   reference):
    out, cache_dir = built
    victim = shard(cache_dir, 2)
    with open(victim, "r+b") as fh:  # same size, other bytes: only the checksum can tell
        fh.seek(victim.stat().st_size - 100)
        fh.write(b"\x7f" * 8)
    code, lines, _ = extract(capsys, source, out)
    assert code == 0 and lines[0] == "0 to extract, 8 cached"  # the cheap checks cannot see it

    code, lines, err = cache_only(capsys, source, out, "--verify")
    corrupt = f"{victim}: content does not match its checksum (the data is corrupt)"
    assert code == 2 and lines == [f"bad: {corrupt}"]
    assert "1 of 3 shards are bad" in one_line(err) and "--verify`" in err
    code, _, err = cache_only(capsys, source, out, "--merge")
    assert code == 2 and corrupt in one_line(err)

    code, lines, _ = extract(capsys, source, out, "--verify")
    assert code == 0 and lines[:2] == [f"{corrupt}; extracting it again", "2 to extract, 6 cached"]
    code, lines, _ = cache_only(capsys, source, out, "--verify")
    assert code == 0 and lines == ["3 shards, 8 clips: checksums match", str(cache_dir)]
    np.testing.assert_array_equal(load_split_arrays(cache_dir, None)[0], reference)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text(p.read_text()[:40]), "sidecar is cut short or corrupt (line "),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "shape": [3, 32, 99]})),
     "sidecar says float16 rows of (3, 32, 99), expected float16 rows of (3, 32, 14)"),
    (lambda p: p.unlink(), "sidecar missing"),
])
def test_damaged_sidecar_is_rebuilt(capsys, source, built, damage, message):
    out, cache_dir = built
    sidecar = shard(cache_dir, 0).with_suffix(".json")
    damage(sidecar)
    code, _, err = cache_only(capsys, source, out, "--verify")
    assert code == 2 and f"{sidecar}: {message}" in one_line(err)
    code, lines, _ = extract(capsys, source, out)
    assert code == 0 and lines[0].startswith(f"{sidecar}: {message}") and lines[1] == "3 to extract, 5 cached"
    assert cache_only(capsys, source, out, "--verify")[0] == 0


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{ not json", "manifest.json:1: corrupt manifest"),
    (lambda m: json.dumps([m]), "not a feature manifest (a JSON list)"),
    (lambda m: json.dumps({**m, "shards": m["shards"] + m["shards"][:1]}), "is listed twice"),
    (lambda m: json.dumps({**m, "clips": m["clips"] + m["clips"][:1]}), "is listed twice"),
    (lambda m: json.dumps({**m, "clips": [{**m["clips"][0], "offset": 7}] + m["clips"][1:]}),
     "which has 3 rows"),
])
def test_damaged_manifest_is_one_line_and_a_rerun_rewrites_it(capsys, source, built, reference, edit,
                                                              message):
    out, cache_dir = built
    path = cache_dir / "manifest.json"
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(DataError, match="manifest") as exc:
        FeatureDataset(cache_dir, split=None)
    assert message in str(exc.value) and "asc extract" in str(exc.value)
    code, _, err = cache_only(capsys, source, out, "--verify")
    assert code == 2 and message in one_line(err)
    code, lines, _ = extract(capsys, source, out)
    assert code == 0 and lines[0] == "0 to extract, 8 cached"
    np.testing.assert_array_equal(load_split_arrays(cache_dir, None)[0], reference)


def test_merge_with_a_truncated_sidecar_names_it_and_the_part_that_rebuilds_it(capsys, source, tmp_path,
                                                                              reference):
    machine, other = tmp_path / "machine", tmp_path / "other"
    for part, out in ((0, machine), (1, machine), (2, other)):  # part 2 on another machine
        code, lines, _ = extract(capsys, source, out, "--num-shards", "3", "--shard-index", str(part))
        assert code == 0
    cache_dir = Path(lines[-1])
    merged = machine / cache_dir.name
    shutil.copytree(cache_dir, merged, dirs_exist_ok=True)  # as rsync would bring it in
    sidecar = shard(merged, 1).with_suffix(".json")
    sidecar.write_text(sidecar.read_text()[:60])

    code, _, err = cache_only(capsys, source, machine, "--merge")
    assert code == 2 and f"{sidecar}: sidecar is cut short or corrupt" in one_line(err)
    assert "re-run part 1 (`asc extract --data" in err and "--num-shards 3 --shard-index 1`" in err
    assert not (merged / "manifest.json").exists()

    code, lines, _ = extract(capsys, source, machine, "--num-shards", "3", "--shard-index", "1")
    assert code == 0 and lines[0].startswith(f"{sidecar}: sidecar is cut short") and \
        lines[1] == "3 to extract, 0 cached (shards 1 of 3)"
    code, lines, _ = cache_only(capsys, source, machine, "--merge")
    assert code == 0 and lines == ["8 clips, 0 skipped, 3 shards", str(merged)]
    np.testing.assert_array_equal(load_split_arrays(merged, None)[0], reference)


def _disk_full(monkeypatch, target: object, name: str, after: int) -> None:
    """Make `target.name` raise ENOSPC from its call number `after` on, as a full disk does."""
    real = getattr(target, name)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


@pytest.mark.parametrize("where, after, shards_kept, names", [
    ("row", 4, 1, "shard-00001-"),        # the 5th clip, in the second shard
    ("sidecar", 1, 1, "shard-00001-"),    # the second shard's sidecar
    ("manifest", 0, 3, "manifest.json"),  # every shard written, then the manifest
])
def test_disk_full_keeps_finished_shards_and_a_rerun_resumes(capsys, monkeypatch, source, tmp_path, reference,
                                                             where, after, shards_kept, names):
    import asc.features.cache as cache_mod
    import asc.features.extract as extract_mod

    target = {"row": (os, "pwrite"), "sidecar": (extract_mod, "atomic_write_json"),
              "manifest": (cache_mod, "atomic_write_json")}[where]
    _disk_full(monkeypatch, *target, after=after)
    out = tmp_path / "cache"
    code, _, err = extract(capsys, source, out)
    assert code == 2 and names in one_line(err) and "disk full" in err and "re-run the same command" in err
    monkeypatch.undo()
    cache_dir = next(out.iterdir())
    assert len(list(cache_dir.glob("shard-*.npy"))) == shards_kept
    assert not list(cache_dir.glob(".*")) and not (cache_dir / "manifest.json").exists()

    code, lines, _ = extract(capsys, source, out)
    done = 3 * shards_kept if shards_kept < 3 else 8
    assert code == 0 and lines[0] == f"{8 - done} to extract, {done} cached"
    assert cache_only(capsys, source, out, "--verify")[0] == 0
    np.testing.assert_array_equal(load_split_arrays(cache_dir, None)[0], reference)


def test_verify_of_a_cache_never_built_says_what_to_run(capsys, source, tmp_path):
    code, _, err = cache_only(capsys, source, tmp_path, "--verify")
    assert code == 2 and "no feature manifest; run `asc extract`" in one_line(err)


def test_merge_with_a_corrupt_part_note_names_it(capsys, source, tmp_path):
    for part in (0, 1):
        assert extract(capsys, source, tmp_path, "--num-shards", "3", "--shard-index", str(part))[0] == 0
    note = next(tmp_path.glob("*/parts/part-1-of-3.json"))
    note.write_text(note.read_text()[:100])
    code, _, err = cache_only(capsys, source, tmp_path, "--merge")
    assert code == 2 and f"{note}: corrupt part note" in one_line(err) and "--merge` again" in err
