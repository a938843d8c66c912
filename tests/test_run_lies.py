"""Run folders and reports that lie are refused in one line: edited features, a checkpoint of another
model, a run still training, report.json and metrics of the wrong shape, outputs onto special files."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asc.errors import AscError, DataError

ROOT = Path(__file__).resolve().parents[1]


def _copy_run(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run, ignore=shutil.ignore_patterns("report*"))
    return run


def test_an_edited_features_yaml_is_refused_against_the_checkpoints_hash(tiny_run, tmp_path):
    from asc.features.logmel import feature_hash, load_feature_config
    from asc.runs import FEATURES_FILE, feature_config

    run = _copy_run(tiny_run, tmp_path)
    cfg = load_feature_config(tiny_run["features"])
    (run / FEATURES_FILE).write_text(yaml.safe_dump(cfg))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert feature_config(run, recipe, feature_hash(cfg)) == cfg
    for key, value in (("n_mels", 16), ("sample_rate", 16000), ("deltas", False)):
        (run / FEATURES_FILE).write_text(yaml.safe_dump({**cfg, key: value, "fmax": None}))
        expected = feature_hash(cfg)
        message = rf"features.yaml: these features .* are not the ones the run trained on \(hash {expected}"
        with pytest.raises(AscError, match=message):
            feature_config(run, recipe, feature_hash(cfg))


def test_a_checkpoint_of_another_model_is_refused_naming_both(tiny_run, tmp_path):
    from asc.models import create_model
    from asc.runs import load_checkpoint, load_run, save_checkpoint

    run = _copy_run(tiny_run, tmp_path)
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    other = copy.deepcopy(state)
    other["model_spec"] = {**state["model_spec"], "name": "resnet17", "params": {"width_mult": 0.1}}
    other["model"] = create_model("resnet17", num_classes=10, norm="l2bn", width_mult=0.1).state_dict()
    save_checkpoint(other, run / "checkpoints" / "best.pt")
    with pytest.raises(AscError, match=r"holds a resnet17 / l2bn model, but the run's recipe is fcnn / l2bn"):
        load_run(run)
    other["model_spec"] = {**state["model_spec"], "norm": "bn"}
    save_checkpoint(other, run / "checkpoints" / "best.pt")
    with pytest.raises(AscError, match=r"holds a fcnn / bn model, but the run's recipe is fcnn / l2bn"):
        load_run(run)


def test_evaluate_refuses_a_run_that_is_still_training(tiny_run, tmp_path, capsys):
    from asc.cli import main

    run = _copy_run(tiny_run, tmp_path)
    script = ("import sys, time; from asc.runs import RunFolder; RunFolder(sys.argv[1]).take_lock(); "
              "print('held', flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", script, str(run)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["evaluate", str(run), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"process {holder.pid}" in err and "is still training this run" in err
        assert len(err.splitlines()) == 1 and not (run / "report").exists()
    finally:
        holder.kill()
        holder.wait()


def _report(**changes) -> dict:
    report = {"run": {"model": "fcnn", "norm": "bn", "seed": 0},
              "overall": {"accuracy": 0.5, "macro_accuracy": 0.5, "log_loss": 1.2, "n": 10},
              "per_device": {"a": {"accuracy": 0.6, "log_loss": 1.0, "n": 5}},
              "device_groups": {"real": {"accuracy": 0.6, "log_loss": 1.0, "n": 5}},
              "angles": {"intra_train": 30.0, "inter": 60.0, "iir_train": 0.5},
              "history": [{"epoch": 1, "val_acc": 0.4, "train_loss": 2.0, "angles": {"iir_test": 0.9}}]}
    for dotted, value in changes.items():
        node = report
        *keys, last = dotted.split("__")
        for key in keys:
            node = node[key]
        node[last] = value
    return report


@pytest.mark.parametrize("changes, key", [
    ({"overall__accuracy": "0.5"}, "overall.accuracy"),
    ({"overall__accuracy": 56.72}, "overall.accuracy"),                  # a percentage
    ({"per_device": [["a", 0.5]]}, "per_device"),
    ({"per_device__a": None}, "per_device.a"),
    ({"device_groups__real__n": "5"}, "device_groups.real.n"),
    ({"angles__inter": 400.0}, "angles.inter"),
    ({"history": {"epoch": 1}}, "history"),
    ({"history": [{"epoch": "1"}]}, "history[0].epoch"),
    ({"history": [{"epoch": 1, "val_acc": 40.0}]}, "history[0].val_acc"),
    ({"history": [{"epoch": 1, "angles": [1, 2]}]}, "history[0].angles"),
    ({"run__model": ["fcnn"]}, "run.model"),
])
def test_reports_of_the_wrong_shape_are_one_line_naming_the_key(changes, key):
    from asc.eval.validate import check_report

    assert check_report("r.json", _report()) == _report()
    with pytest.raises(DataError) as info:
        check_report("r.json", _report(**changes))
    assert str(info.value).startswith(f"r.json: {key} is ") and "\n" not in str(info.value)


def test_compare_refuses_an_ill_typed_report_in_one_line(tiny_run, tmp_path, capsys):
    from asc.cli import main

    runs = []
    for norm in ("bn", "l2bn"):
        run = tmp_path / norm
        (run / "report").mkdir(parents=True)
        (run / "report" / "report.json").write_text(json.dumps(_report(run__norm=norm)))
        runs.append(str(run))
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp")]) == 0
    (tmp_path / "l2bn" / "report" / "report.json").write_text(json.dumps(_report(overall__accuracy=57.0)))
    capsys.readouterr()
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert "report.json: overall.accuracy is 57.0, not a fraction in [0, 1]" in err
    assert len(err.splitlines()) == 1


def test_ill_typed_history_lines_are_skipped_with_a_notice(tmp_path, capsys):
    from asc.eval.evaluate import read_history

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "val_acc": 0.3}\n{"epoch": 2, "val_acc": "high"}\n'
                    '{"epoch": 3, "val_acc": 0.5}\n')
    assert [r["epoch"] for r in read_history(path)] == [1, 3]
    assert "epoch 2.val_acc is 'high'" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_outputs_onto_a_fifo_or_a_folder_are_refused(tmp_path):
    from asc.fileio import atomic_write_text

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(AscError, match=r"pipe: is a FIFO, not a file to write"):
        atomic_write_text(fifo, "x")
    assert fifo.exists() and not fifo.is_file()
    with pytest.raises(AscError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(AscError, match="is a device"):
        atomic_write_text(Path("/dev/null"), "x")
    atomic_write_text(tmp_path / "ok.txt", "fine")
    assert (tmp_path / "ok.txt").read_text() == "fine"



def test_a_report_names_the_data_the_run_trained_on_when_scored_on_other_data(tiny_run, tmp_path):
    """Scored on data other than its own, a run's report says what it trained on; synthetic training
    data keeps the synthetic banner wherever the model is scored."""
    from asc.data.description import DatasetDescription
    from asc.eval.evaluate import evaluate_run

    run = _copy_run(tiny_run, tmp_path)
    from asc.data.tau2020 import SCENES

    trained = DatasetDescription(name="tau2020", title="TAU Urban Acoustic Scenes 2020 Mobile",
                                 classes=SCENES, synthetic=True, root="/elsewhere/synthetic-set")
    (run / "dataset.json").write_text(json.dumps(trained.to_dict()))
    report = evaluate_run(run, device="cpu", angles=False).report
    assert report["dataset"]["trained_on"]["root"] == "/elsewhere/synthetic-set"
    assert report["synthetic"] is True
    page = (run / "report" / "report.md").read_text()
    assert page.startswith("> **Synthetic data") and "**Trained on another dataset**: synthetic TAU" in page
