"""The training engine end to end on a tiny extracted set: run directory, resume after SIGKILL,
two-process DDP (gloo) against one process with the same global batch, and divergence handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from asc.errors import AscError
from asc.runs import load_checkpoint, model_from_checkpoint

from .tiny_tau import make_feature_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    paths = make_feature_cache(base, train_devices=("a", "a", "a", "a", "b", "c"))
    recipe = {
        "name": "tiny",
        "task": "dcase",
        "features": str(paths["features"]),
        "model": str(ROOT / "models/fcnn.yaml"),
        "model_params": {"width_mult": 0.06, "norm_momentum": 0.1},
        "norm": "l2bn",
        "seed": 3,
        "data": {"cache": str(paths["cache"]), "num_workers": 0},
        "train": {"epochs": 6, "batch_size": 8, "lr": 0.1, "min_lr": 1e-4, "eval_batch_size": 16,
                  "angles_every": 3},
        "augment": {"crop_frames": 48, "mixup_alpha": 0.4, "freq_masks": 1, "freq_mask_width": 5,
                    "time_masks": 1, "time_mask_width": 8},
    }
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {**paths, "recipe": path, "base": base}


def _env(threads: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), ASC_PROGRESS="0")
    env.pop("WORLD_SIZE", None)
    return env


def _train_cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asc", "train", "--recipe", str(recipe), "--out", str(out), *extra]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time_s")
        r.pop("train_s")
    return rows


@pytest.mark.slow
def test_run_directory_and_learning(tiny):
    out = tiny["base"] / "run_plain"
    res = subprocess.run(_train_cmd(tiny["recipe"], out), env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert "epoch 6/6" in res.stdout and "samples/s" in res.stdout
    for name in ("recipe.yaml", "env.json", "metrics.jsonl", "COMPLETED", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["norm"] == "l2bn" and saved["data"]["cache_dir"] == str(tiny["cache_dir"])
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["world_size"] == 1
    # what it takes to reproduce the run: the command, the commit (and whether the tree had changes),
    # the thread count, which moves results at the 1e-6 level
    assert env["command"][:3] == ["__main__.py", "train", "--recipe"] and env["threads"] >= 1
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git_commit"] == head.stdout.strip() and isinstance(env["git_dirty"], bool)
    from asc.features.logmel import feature_hash
    from asc.runs import feature_config

    spec = load_checkpoint(out / "checkpoints" / "best.pt")["model_spec"]
    assert spec["feature_hash"] == feature_hash(feature_config(out, saved))  # features.yaml is checked by it
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.2
    assert max(r["val_acc"] for r in rows) > 0.25  # 10 tones: chance is 0.1
    assert [r["epoch"] for r in rows if "angles" in r] == [3, 6]
    # TensorBoard event files with the curves
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "train_acc", "val_acc", "val_loss", "lr", "angles/iir_train",
            "angles/inter"} <= tags
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2, 3, 4, 5, 6]
    assert events.Scalars("val_acc")[-1].value == pytest.approx(rows[-1]["val_acc"], abs=1e-6)
    assert set(rows[-1]["angles"]) == {"intra_train", "intra_test", "inter", "iir_train", "iir_test"}
    ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
    assert ckpt["epoch"] == max(rows, key=lambda r: r["val_acc"])["epoch"]
    model = model_from_checkpoint(ckpt)
    assert not model.training
    # an existing run is not overwritten without --resume; a completed one resumes as a no-op
    res = subprocess.run(_train_cmd(tiny["recipe"], out), env=_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "--resume" in res.stderr and len(res.stderr.splitlines()) == 1
    res = subprocess.run(_train_cmd(tiny["recipe"], out, "--resume"), env=_env(), capture_output=True,
                         text=True)
    assert res.returncode == 0 and "already complete" in res.stdout


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tiny):
    full = tiny["base"] / "run_full"
    three = ("--set", "train.epochs=3")
    subprocess.run(_train_cmd(tiny["recipe"], full, *three), env=_env(), check=True, capture_output=True,
                   timeout=600)

    cut = tiny["base"] / "run_cut"
    proc = subprocess.Popen(_train_cmd(tiny["recipe"], cut, *three), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    epoch_s = sorted(json.loads(line)["time_s"] for line in (full / "metrics.jsonl").read_text().splitlines())
    deadline = time.time() + 300
    while not (cut / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
    time.sleep(0.3 * epoch_s[len(epoch_s) // 2])  # a third into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "COMPLETED").exists()
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["epoch"] < 3

    res = subprocess.run(_train_cmd(tiny["recipe"], cut, *three, "--resume"), env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout
    assert _metrics(cut) == _metrics(full)
    a = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_same_global_batch(tiny):
    one = tiny["base"] / "run_single"
    two = tiny["base"] / "run_ddp"
    # dropout on (the recipe's): its masks are drawn for the global batch and sliced per process.
    # One epoch (7 steps): rounding differences of 1e-7 can later flip a max-pool or ReLU and grow.
    common = ["--set", "train.epochs=1", "--device", "cpu"]
    # synchronized L2BN statistics: the same global batch of 8, whole, in one process
    subprocess.run(_train_cmd(tiny["recipe"], one, *common), env=_env(), check=True, capture_output=True,
                   timeout=600)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "asc", "train", "--recipe", str(tiny["recipe"]), "--out", str(two), *common]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((two / "env.json").read_text())["world_size"] == 2
    a = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    assert any(k.endswith("running_var") for k in a)
    from asc.train.recipe import load_recipe

    assert load_recipe(tiny["recipe"])["model"]["params"]["dropout"] == 0.3  # the recipe trains with dropout
    for name in a:  # weights and running statistics
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tiny, monkeypatch):
    from asc.train import engine
    from asc.train.recipe import load_recipe

    recipe = load_recipe(tiny["recipe"])
    steps = 60 // 8  # 60 training clips, batch 8
    calls = {"n": 0}
    real = engine.soft_cross_entropy

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] == steps + 3 else loss

    monkeypatch.setattr(engine, "soft_cross_entropy", poisoned)
    out = tiny["base"] / "run_nan"
    with pytest.raises(engine.TrainingDiverged, match=r"epoch 2, step 3;.*last good checkpoint"):
        engine.train(recipe, out, device="cpu")
    kept = load_checkpoint(out / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


# ---------------------------------------------------------------- hostile cases, through the CLI

def test_nan_weights_from_the_last_step_of_an_epoch_stop_the_run(tiny, monkeypatch, capsys):
    """The update of an epoch's last step makes a weight NaN: no checkpoint, no COMPLETED, one line."""
    from asc.cli import main

    steps = 60 // 8
    calls = {"n": 0}
    real_step = torch.optim.SGD.step

    def poisoned_step(self, *a, **kw):
        out = real_step(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == steps:  # the last step of epoch 1
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned_step)
    out = tiny["base"] / "run_nan_weights"
    code = main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--set", "train.epochs=1",
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "non-finite values after epoch 1" in err[0], err
    assert not (out / "COMPLETED").exists() and not (out / "checkpoints" / "last.pt").exists()


def test_a_folder_without_a_checkpoint_is_taken_over_and_bad_out_is_one_line(tiny, tmp_path, capsys):
    from asc.cli import main

    out = tiny["base"] / "run_takeover"
    empty = tmp_path / "no_cache"
    empty.mkdir()
    base = ["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--set", "train.epochs=1",
            "--device", "cpu"]
    assert main([*base, "--set", f"data.cache={empty}"]) == 2  # a typo: fails before any checkpoint
    assert "no feature cache" in capsys.readouterr().err and (out / "recipe.yaml").is_file()
    assert main([*base, "--resume"]) == 0  # the fixed command, even with --resume, takes it over
    assert "starting afresh" in capsys.readouterr().out
    assert (out / "COMPLETED").is_file()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["data"]["cache_dir"] == str(tiny["cache_dir"])

    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    capsys.readouterr()
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(a_file), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0] and a_file.read_text() == "keep me"


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_one(tiny, monkeypatch, capsys):
    from asc.cli import main

    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1 wrote last.pt and best.pt; epoch 2's write fails
            f.write(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 128 vs 64")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tiny["base"] / "run_disk_full"
    code = main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--set", "train.epochs=2",
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write the checkpoint" in err[0] and "--resume" in err[0]
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1  # intact
    assert not (out / "COMPLETED").exists() and not list((out / "checkpoints").glob(".*tmp"))
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--set", "train.epochs=2",
                 "--device", "cpu", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2


def test_a_folder_being_trained_is_not_taken_over(tiny):
    """Before its first checkpoint a run folder looks abandoned; the lock says someone is in it."""
    out = tiny["base"] / "run_locked"
    first = subprocess.Popen(_train_cmd(tiny["recipe"], out, "--set", "train.epochs=3"), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / ".training.lock").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.01)
        res = subprocess.run(_train_cmd(tiny["recipe"], out, "--resume"), env=_env(), capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and "is training in this folder" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()


def test_resume_needs_only_the_run_folder_and_more_epochs_extend_it(tiny, capsys):
    """`asc train --out RUN --resume`: the run's recipe is the truth; options that disagree with it are
    listed in one line; --set train.epochs=N extends a finished run where an uninterrupted one would be."""
    from asc.cli import main

    out = tiny["base"] / "run_extend"
    base = ["--device", "cpu", "--set", "train.max_steps_per_epoch=2", "--set", "train.angles_every=0"]
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), *base,
                 "--set", "train.epochs=2"]) == 0
    assert main(["train", "--out", str(out), "--resume"]) == 0  # nothing else needed: already complete
    assert "already complete (2 epochs)" in capsys.readouterr().out
    assert main(["train", "--out", str(out), "--resume", "--set", "train.epochs=3"]) == 0
    assert "extending the finished run from 2 to 3 epochs" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3]
    assert json.loads((out / "COMPLETED").read_text())["epochs"] == 3
    full = tiny["base"] / "run_extend_ref"
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(full), *base,
                 "--set", "train.epochs=3"]) == 0
    a = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    for k in a:  # the same weights as three epochs in one go: SGDR went on with its cycles
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--norm", "bn", "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "norm: 'l2bn' -> 'bn'" in err and "train.lr: 0.1 -> 0.5" in err and len(err.splitlines()) == 1
    assert main(["train", "--out", str(tiny["base"] / "nowhere"), "--resume"]) == 2
    assert "--recipe YAML is required (" in capsys.readouterr().err


def test_run_folder_lock_is_atomic_and_dies_with_its_process(tmp_path):
    from asc.runs import RunFolder

    script = ("import sys, time; from asc.runs import RunFolder; f = RunFolder(sys.argv[1]); f.take_lock(); "
              "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        folder = RunFolder(tmp_path)
        assert folder.holder() == f"process {holder.pid} on {__import__('socket').gethostname()}"
        with pytest.raises(AscError, match="is training in this folder"):
            folder.take_lock()
    finally:
        holder.kill()
        holder.wait()
    folder = RunFolder(tmp_path)
    assert folder.holder() is None and folder.lock.exists()  # a dead holder's lock is free, not deleted
    folder.take_lock()
    try:
        assert RunFolder(tmp_path).holder() is None  # this process holds it
    finally:
        folder.release_lock()


def test_torn_metrics_lines_are_dropped_with_a_notice(tmp_path, capsys):
    from asc.runs import RunFolder

    folder = RunFolder(tmp_path)
    folder.metrics.write_text('{"epoch": 1, "lr": 0.1}\n{"epoch": 2, "lr": 0.05}\n["x"]\n{"epoch": 3, "lr"')
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2]
    err = capsys.readouterr().err
    assert "metrics.jsonl:3: dropped a malformed line" in err and "metrics.jsonl:4: dropped" in err


def test_a_crop_the_models_pooling_cannot_take_is_refused_naming_the_setting(tiny, capsys):
    from asc.cli import main

    out = tiny["base"] / "run_tiny_crop"
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--device", "cpu",
                 "--set", "augment.crop_frames=6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fcnn cannot take inputs of 6 frames" in err and "raise augment.crop_frames" in err
    assert len(err.splitlines()) == 1 and not (out / "checkpoints" / "last.pt").exists()


def test_a_frequency_mask_wider_than_the_mel_bins_is_refused(tiny, capsys):
    from asc.cli import main

    out = tiny["base"] / "run_wide_mask"
    assert main(["train", "--recipe", str(tiny["recipe"]), "--out", str(out), "--device", "cpu",
                 "--set", "augment.freq_mask_width=1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "augment.freq_mask_width 1000 is more than the features' 32 mel bins" in err
    assert len(err.splitlines()) == 1
