"""The stage scripts end to end on tiny synthetic sets: every stage, re-runs that skip finished work,
and a clear error for a wrong --data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, ASC_PROGRESS="0")
    return subprocess.run(["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _quick(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return _run(["recipes/run_dcase.sh", "--preset", "tiny", "--cache", str(tmp_path / "cache"),
                 "--exp", str(tmp_path / "exp"), "--nj", "1", "--models", "fcnn", "--jobs", "2",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", *args])


@pytest.mark.slow
def test_run_dcase_every_stage_with_variants_and_a_feature_config_then_rerun(tmp_path):
    """Every stage on the tiny set, two runs at a time: a feature config of our own that must reach
    extraction, training and the reports, and --variants (a plain norm, and a norm with freq_mixstyle
    appended to the recipe's own augmentation) naming the run folders, recipes and the comparison,
    paired with the first; then a re-run that skips everything already done."""
    import yaml

    features = yaml.safe_load((ROOT / "features" / "logmel128_deltas.yaml").read_text())
    features.update(n_mels=64, duration=2.0)  # not the recipes' features; 2-s clips keep the test short
    (tmp_path / "mel64.yaml").write_text(yaml.safe_dump(features))
    from asc.data.synth import synthesize

    synthesize(tmp_path / "data", preset="tiny", seed=0, duration=2.0, workers=1)  # stage 0 finds it
    args = ["--synth", str(tmp_path / "data"), "--features", str(tmp_path / "mel64.yaml"),
            "--variants", "bn l2bn+freq_mixstyle"]
    res = _quick(tmp_path, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in range(5):
        assert f"stage {stage}:" in res.stdout
    assert "expected: training about" in res.stdout and "| total |" in res.stdout  # estimate, stage times
    assert "variants [bn l2bn+freq_mixstyle]" in res.stdout and "against bn" in res.stdout
    assert "comparison report:" in res.stdout and "| fcnn | l2bn+freq_mixstyle |" in res.stdout
    exp = tmp_path / "exp"
    runs = sorted(p.name for p in exp.iterdir() if p.name not in ("compare", "logs"))
    assert runs == ["fcnn_quick_bn_seed0", "fcnn_quick_l2bn+freq_mixstyle_seed0"]
    for run in runs:
        recipe = yaml.safe_load((exp / run / "recipe.yaml").read_text())
        assert recipe["features"] == str(tmp_path / "mel64.yaml")
        report = json.loads((exp / run / "report" / "report.json").read_text())
        assert report["synthetic"] is True and report["overall"]["n"] > 0
        assert set(report["per_device"]) == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}
        assert report["model"]["input_shape"] == [3, 64, 79]
    plain = yaml.safe_load((exp / runs[0] / "recipe.yaml").read_text())["augment"]
    listed = yaml.safe_load((exp / runs[1] / "recipe.yaml").read_text())
    assert plain.get("transforms") is None and listed["norm"] == "l2bn"
    names = [t["name"] for t in listed["augment"]["transforms"]]
    assert names == ["specaugment", "crop", "mixup", "freq_mixstyle"]  # the recipe's list, then the added one
    assert listed["augment"]["transforms"][-1] == {"name": "freq_mixstyle", "p": 0.4, "alpha": 0.3}
    assert listed["augment"]["transforms"][1] == {"name": "crop", "frames": 200}  # the quick profile's crop
    compare = json.loads((exp / "compare" / "compare.json").read_text())
    assert compare["synthetic"] is True
    assert [g["variant"] for g in compare["groups"]] == ["bn", "l2bn+freq_mixstyle"]
    diff = compare["differences"][0]
    assert (diff["variant"], diff["baseline"], diff["paired"]["n"]) == ("l2bn+freq_mixstyle", "bn", 1)
    assert compare["unseen_group"] == "unseen" and "gap seen − unseen (points)" in res.stdout

    again = _quick(tmp_path, *args, "--stage", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to extract" in again.stdout
    assert again.stdout.count("complete, skipped") == 2
    assert again.stdout.count("report up to date, skipped") == 2

    for bad, message in ((["--variants", "bn bn+freq_mix"], "--variants bn+freq_mix: unknown transform"),
                         (["--variants", "bn+freq_mixstyle", "--norms", "bn"], "--variants and --norms")):
        res = _quick(tmp_path, "--synth", str(tmp_path / "none"), *bad)
        assert res.returncode == 2 and message in res.stderr, (bad, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "none").exists()


def test_stage_scripts_refuse_bad_options_before_any_stage(tmp_path):
    for args, message in ((["--norms", "bn batchnorm"], "unknown norm 'batchnorm'"),
                          (["--models", "fcnn vgg"], "no recipe recipes/dcase2020/vgg.yaml"),
                          (["--seeds"], "--seeds needs a value"),
                          (["--features", str(tmp_path / "none.yaml")], "no such feature config")):
        res = _run(["recipes/run_dcase.sh", "--synth", str(tmp_path / "data"), *args])
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert not (tmp_path / "data").exists()
    res = _run(["recipes/run_cifar.sh", "--norms", "sn bcn bin xx", "--synth", str(tmp_path / "c")])
    assert res.returncode == 2 and "unknown norm 'xx'" in res.stderr


def test_run_dcase_refuses_a_data_folder_that_is_not_a_dataset(tmp_path):
    res = _run(["recipes/run_dcase.sh", "--data", str(tmp_path), "--stop-stage", "0"])
    assert res.returncode == 2
    assert f"{tmp_path}: not a dataset: no meta.csv or evaluation_setup/" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "audio").exists()


@pytest.mark.slow
def test_run_dcase_on_a_synthetic_tau2022_set_of_one_second_clips(tmp_path):
    """--dataset tau2022: the shipped features take the data's 1-s length, crops scale to 36 frames, and
    every stage runs; the reports name TAU 2022 and its devices."""
    res = _quick(tmp_path, "--dataset", "tau2022", "--synth", str(tmp_path / "data"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "comparison report:" in res.stdout and "| fcnn | l2bn |" in res.stdout
    run = tmp_path / "exp" / "fcnn_quick_l2bn_seed0"
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["dataset"]["name"] == "synthetic TAU Urban Acoustic Scenes 2022 Mobile"
    assert report["model"]["input_shape"] == [3, 128, 36] and "s4" in report["per_device"]
    assert json.loads((run / "dataset.json").read_text())["duration"] == 1.0
    log = (tmp_path / "exp" / "logs" / "fcnn_quick_l2bn_seed0.train.log").read_text()
    assert "crop_frames 200 -> 17" in log


@pytest.mark.slow
def test_run_dcase_on_a_folder_dataset_of_its_own_classes(tmp_path):
    """--data DIR of class subfolders: the reports name its classes and have no device tables."""
    from asc.data.synth import FOLDER_CLASSES, synthesize

    synthesize(tmp_path / "sounds", preset="tiny", duration=2.0, workers=1, layout="folder")
    res = _quick(tmp_path, "--data", str(tmp_path / "sounds"), "--set", "train.val_clips=null")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "exp" / "fcnn_quick_bn_seed0" / "report" / "report.json").read_text())
    assert report["labels"] == sorted(FOLDER_CLASSES.values()) and report["per_device"] == {}
    page = (tmp_path / "exp" / "fcnn_quick_bn_seed0" / "report" / "report.md").read_text()
    assert "## Per class" in page and "Per device" not in page and "departure_hall" in page
    compare = (tmp_path / "exp" / "compare" / "compare.md").read_text()
    assert "Accuracy per device" not in compare and "unseen" not in compare
    # other data into the same experiment folder: the finished runs are not taken for its runs
    synthesize(tmp_path / "other", preset="tiny", duration=2.0, seed=1, workers=1, layout="folder")
    again = _run(["recipes/run_dcase.sh", "--data", str(tmp_path / "other"), "--cache", str(tmp_path / "c2"),
                  "--exp", str(tmp_path / "exp"), "--nj", "1", "--models", "fcnn", "--stage", "1",
                  "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2",
                  "--set", "train.val_clips=null"])
    assert again.returncode == 2 and "complete, skipped" not in again.stdout
    assert "the run was trained with other settings (data.cache:" in again.stderr, again.stderr[-2000:]
    assert "data.cache_dir:" in again.stderr and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_run_cifar_quick_on_tiny_synthetic_set(tmp_path):
    res = _run(["recipes/run_cifar.sh", "--preset", "tiny", "--models", "resnet20", "--norms", "l2bn",
                "--synth", str(tmp_path / "cifar"), "--exp", str(tmp_path / "exp"),
                "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2",
                "--set", "train.angle_clips=200"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "comparison report:" in res.stdout
    run = tmp_path / "exp" / "resnet20_quick_l2bn_seed121"
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["synthetic"] is True and report["overall"]["n"] > 0


def test_parallel_jobs_report_a_failure_and_start_no_more(tmp_path):
    """run_jobs with two at a time: one fails, the running one finishes, the queued ones never start."""
    script = f"""
set -euo pipefail
script=t; exp={tmp_path}; jobs=2; threads=1
source recipes/stages.sh
job_dirs=(a b c d)
job_cmds=("sleep 0.5; echo done-a" "echo boom >&2; exit 3" "sleep 0.2; echo done-c" "touch {tmp_path}/d-ran")
run_jobs train
"""
    res = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "stage failed" in res.stderr
    assert "b: FAILED" in res.stdout and "boom" in res.stdout and "a: done in" in res.stdout
    assert not (tmp_path / "d-ran").exists()
    assert (tmp_path / "logs" / "a.train.log").read_text().strip() == "done-a"
