"""Schedules, batch augmentation, the step sampler and recipe loading."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from asc.errors import ConfigError
from asc.features.logmel import load_feature_config
from asc.train import augment
from asc.train.data import StepSampler
from asc.train.recipe import load_recipe, resume_mismatch
from asc.train.schedule import keras_decay, learning_rate, sgdr_lr, sgdr_total_epochs

ROOT = Path(__file__).resolve().parents[1]


def test_sgdr_cycles_match_the_dcase_recipe():
    assert sgdr_total_epochs(6) == 126 and sgdr_total_epochs(7) == 254
    # restarts at epochs 2, 6, 14, 30, 62: maximum there, minimum approached just before
    for restart in (0, 2, 6, 14, 30, 62):
        assert sgdr_lr(restart, 0.1, 1e-5) == pytest.approx(0.1)
    for end, length in ((2, 2), (6, 4), (14, 8), (126, 64)):
        assert sgdr_lr(end - 1e-9, 0.1, 1e-5) == pytest.approx(1e-5, abs=1e-9)
        mid = end - length / 2
        assert sgdr_lr(mid, 0.1, 1e-5) == pytest.approx((0.1 + 1e-5) / 2)
    # a quarter into the 4-epoch cycle: min + (max-min)/2·(1 + cos(π/4))
    expected = 1e-5 + 0.5 * (0.1 - 1e-5) * (1 + math.cos(math.pi / 4))
    assert sgdr_lr(3.0, 0.1, 1e-5) == pytest.approx(expected)


def test_keras_decay_scales_the_scheduled_rate():
    """Keras SGD(decay=d): lr_t = lr / (1 + d · t) on top of whatever the schedule set (t: steps so far)."""
    assert keras_decay(0.1, 1e-6, 0) == 0.1
    assert keras_decay(0.1, 1e-6, 1_000_000) == pytest.approx(0.05)
    assert keras_decay(0.1, 0.0, 10**9) == 0.1
    # 254 epochs of the real training split (13,965 clips, 436 steps of 32) end 10 % below the schedule
    assert keras_decay(1.0, 1e-6, 254 * 436) == pytest.approx(1 / 1.110744)


def test_other_schedules_and_warmup():
    kw = dict(lr=0.1, min_lr=0.0, epochs=200, milestones=[150, 225], gamma=0.1)
    assert learning_rate(100, schedule="cosine", **kw) == pytest.approx(0.05)
    assert learning_rate(199.999, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-6)
    assert learning_rate(160, schedule="step", **kw) == pytest.approx(0.01)
    assert learning_rate(230, schedule="step", **kw) == pytest.approx(0.001)
    assert learning_rate(2.5, schedule="cosine", warmup_epochs=5, **kw) == pytest.approx(0.05)


def test_step_sampler_covers_epoch_and_splits_ranks_exactly():
    single = list(StepSampler(100, 32, seed=3, epoch=1, partner=True))
    assert len(single) == 3 and all(len(b) == 64 for b in single)
    primary = [i for b in single for i in b[:32]]
    assert len(set(primary)) == 96  # each clip at most once as primary
    ranks = [list(StepSampler(100, 32, seed=3, epoch=1, rank=r, world=2, partner=True)) for r in range(2)]
    for step, batch in enumerate(single):
        r0, r1 = ranks[0][step], ranks[1][step]
        assert r0[:16] + r1[:16] == batch[:32]  # primary slice
        assert r0[16:] + r1[16:] == batch[32:]  # partner slice
    # resuming at a step yields the remaining batches unchanged; another epoch reshuffles
    assert list(StepSampler(100, 32, seed=3, epoch=1, partner=True, start_step=1)) == single[1:]
    assert list(StepSampler(100, 32, seed=3, epoch=2, partner=True)) != single


def test_masks_and_crop_follow_their_parameters():
    g = augment.step_generator(0, 0, 0)
    x = torch.randn(4, 3, 20, 50) + 5  # no zeros before masking
    start, width = augment.mask_params(4, 3, 20, 13, 1, g)
    assert (width < 13).all() and (start + width <= 20).all()
    y = augment.apply_masks(x, start, width, axis=2)
    for i in range(4):
        for c in range(3):
            s, w = int(start[i, c, 0]), int(width[i, c, 0])
            zero_rows = (y[i, c] == 0).all(dim=1).nonzero().flatten().tolist()
            assert zero_rows == list(range(s, s + w))
    offsets = torch.tensor([0, 3, 10, 7])
    cropped = augment.crop_time(x, offsets, 40)
    for i, o in enumerate(offsets.tolist()):
        assert torch.equal(cropped[i], x[i, :, :, o:o + 40])
    assert augment.random_crop_offsets(1000, 423, 400, g).max() <= 23


def test_mixup_weights_follow_beta_distribution():
    from scipy import stats

    lam = augment.mixup_weights(20000, 0.4, augment.step_generator(1, 2, 3)).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    again = augment.mixup_weights(20000, 0.4, augment.step_generator(1, 2, 3)).numpy()
    np.testing.assert_array_equal(lam, again)


def test_recipes_load_with_profiles_and_overrides():
    for name in ("resnet17", "fcnn", "fsfcnn"):
        paper = load_recipe(ROOT / "recipes/dcase2020" / f"{name}.yaml")
        quick = load_recipe(ROOT / "recipes/dcase2020" / f"{name}.yaml", profile="quick", norm="l2bn", seed=4)
        assert paper["train"]["batch_size"] == 32 and paper["augment"]["mixup_alpha"] == 0.4
        assert paper["train"]["epochs"] == (126 if name == "resnet17" else 254)
        assert quick["norm"] == "l2bn" and quick["seed"] == 4 and quick["train"]["epochs"] < 20
        assert quick["model"]["params"]["width_mult"] < 1
        assert Path(quick["data"]["cache"]) == ROOT / "cache"  # the cache itself is found there by its source
        # as published: Keras SGD(decay=1e-6) in the ResNet and FCNN scripts, none in fsFCNN's;
        # float32 training unless bf16 autocast is asked for; the published [0, 1] reflect-padded features
        assert paper["train"]["lr_decay"] == (0.0 if name == "fsfcnn" else 1e-6)
        assert paper["train"]["amp"] == quick["train"]["amp"] == "off"
        assert paper["features"] == quick["features"] == str(ROOT / "features/logmel128_deltas.yaml")
        feats = load_feature_config(paper["features"])
        assert feats["scaling"] == "minmax" and feats["pad_mode"] == "reflect"
    r = load_recipe(ROOT / "recipes/dcase2020/resnet17.yaml", overrides=["train.epochs=3", "train.lr=0.05"])
    assert r["train"]["epochs"] == 3 and r["train"]["lr"] == 0.05
    assert resume_mismatch(r, {**r, "data": {**r["data"], "num_workers": 9}}) is None
    assert resume_mismatch(r, {**r, "norm": "l2bn"}) == "norm"


@pytest.mark.parametrize("override,message", [
    (["train.epochs=0"], "--set train.epochs=0: 0 must be >= 1"),
    (["norm=batchnorm"], "--set norm=batchnorm: 'batchnorm' is not one of"),
    (["train.schedul=sgdr"], "--set train.schedul=sgdr: unknown key train.schedul"),
    (["train.amp=yes"], "--set train.amp=yes: True is not one of"),
    (["train.lr=abc"], "--set train.lr=abc: expected float, got 'abc'"),
    (["train.lr=.nan"], "--set train.lr=.nan: expected a finite number, got nan"),
    (["train.momentum=.inf"], "--set train.momentum=.inf: expected a finite number, got inf"),
])
def test_recipe_validation_names_the_set_that_gave_the_value(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_recipe(ROOT / "recipes/dcase2020/resnet17.yaml", overrides=override)
    assert "resnet17.yaml" not in str(info.value)  # the --set is at fault, not the recipe
    with pytest.raises(ConfigError, match="--profile fast: unknown profile 'fast'"):
        load_recipe(ROOT / "recipes/dcase2020/resnet17.yaml", profile="fast")


def test_recipe_validation_names_the_file_and_line_of_a_bad_value(tmp_path):
    text = (ROOT / "recipes/dcase2020/resnet17.yaml").read_text().replace("../../", str(ROOT) + "/")
    lines = text.splitlines()
    lr_line = next(i for i, line in enumerate(lines, 1) if line.startswith("  lr:"))
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("  lr: 0.1", "  lr: .inf"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:{lr_line}: train.lr: expected a finite number")):
        load_recipe(path)
    path.write_text(text.replace("  lr: 0.1", "  lr: 1e-3").replace("min_lr: 1.0e-5", "min_lr: 1e-5"))
    r = load_recipe(path, overrides=["train.weight_decay=5E-4", "train.momentum=.95"])
    assert (r["train"]["lr"], r["train"]["min_lr"]) == (1e-3, 1e-5)
    assert (r["train"]["weight_decay"], r["train"]["momentum"]) == (5e-4, 0.95)


def test_keras_momentum_follows_the_hand_computed_sequence_across_a_restart():
    """v = m v - lr g; p += v. A unit gradient through a cycle's end (lr 1e-5) and a restart (lr 0.1):
    the first step after the restart is 0.1 + 0.9 * (previous velocity) = 0.21 in Keras, where torch's
    buffer (built from raw gradients) gives 0.1 * (1 + 0.9 + 0.81 + 0.729) = 0.34."""
    import torch

    from asc.train.optim import KerasSGD

    lrs = [0.1, 0.05, 1e-5, 0.1]
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = KerasSGD([p], lr=0.1, momentum=0.9)
    v, expected, steps = 0.0, 0.0, []
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.ones_like(p)
        before = float(p.detach())
        opt.step()
        v = 0.9 * v - lr * 1.0
        expected += v
        steps.append(float(p.detach()) - before)
        assert float(p.detach()) == pytest.approx(expected, abs=1e-15)
    assert steps[-1] == pytest.approx(-(0.1 + 0.9 * (0.9 * (0.9 * 0.1 + 0.05) + 1e-5)), abs=1e-15)
    q = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for lr in lrs:
        for group in ref.param_groups:
            group["lr"] = lr
        q.grad = torch.ones_like(q)
        before = float(q.detach())
        ref.step()
    assert float(q.detach()) - before == pytest.approx(-0.1 * (1 + 0.9 + 0.81 + 0.729))  # torch 0.34
    for name in ("resnet17", "fcnn", "fsfcnn"):  # the paper profiles train as the Keras originals did
        assert load_recipe(ROOT / "recipes/dcase2020" / f"{name}.yaml")["train"]["momentum_style"] == "keras"


def test_shipped_recipes_keep_their_flat_augment_keys_as_the_default_list():
    listed = {}
    for path in sorted((ROOT / "recipes").glob("*/*.yaml")):
        r = load_recipe(path, overrides=["data.root=/nowhere"] if "cifar" in path.parent.name else [])
        assert r["augment"]["transforms"] is None, path
        listed[path.stem] = [t["name"] for t in augment.transform_list(r["augment"])]
    assert listed["fcnn"] == listed["fsfcnn"] == ["specaugment", "crop", "mixup"]
    assert listed["resnet17"] == ["crop", "mixup"]
    assert listed["resnet20"] == ["crop_flip"] and listed["regnetx_200mf"] == ["crop_flip", "mixup"]


def test_a_transform_list_given_with_set_loads_and_trains_its_order():
    r = load_recipe(ROOT / "recipes/dcase2020/resnet17.yaml", overrides=[
        "augment.crop_frames=null", "augment.mixup_alpha=0",
        "augment.transforms=[{name: crop, frames: 400}, {name: freq_mixstyle}, {name: mixup, alpha: 0.4}]"])
    assert [t["name"] for t in augment.transform_list(r["augment"])] == ["crop", "freq_mixstyle", "mixup"]
    assert augment.transform_list(r["augment"])[1] == {"name": "freq_mixstyle", "p": 0.4, "alpha": 0.3}
    assert augment.needs_partner(r["augment"])
    with pytest.raises(ConfigError, match="--set augment.transforms=crop: expected list"):
        load_recipe(ROOT / "recipes/dcase2020/resnet17.yaml", overrides=["augment.transforms=crop"])
