"""Augmentation as an ordered list of registered transforms: the same draws as the flat keys' code, the
determinism rule for every transform, freq_mixstyle's formula, resuming runs saved before the list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from asc.data.cifar import normalize_images, random_crop_flip
from asc.errors import AscError, ConfigError
from asc.tasks import TaskData
from asc.train import augment
from asc.train.data import clip_augment, prepare_batch, train_loader
from asc.train.recipe import SCHEMA, load_recipe, resume_recipe

ROOT = Path(__file__).resolve().parents[1]
FLAT = {k: f.default for k, f in SCHEMA["augment"].items()}


def _task(kind: str, n: int = 40) -> TaskData:
    return TaskData(train=list(range(n)), eval=None, num_classes=10, in_channels=3, class_names=[], kind=kind,
                    transform=normalize_images if kind == "image" else None)


def _recipe(aug: dict, gb: int = 8, seed: int = 5) -> dict:
    return {"seed": seed, "train": {"batch_size": gb, "label_smoothing": 0.1}, "augment": {**FLAT, **aug}}


def _global_batch(kind: str, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    if kind == "spectrogram":
        x = torch.randn(rows, 3, 20, 50, generator=g) + 2
    else:
        x = torch.randint(0, 256, (rows, 3, 8, 8), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, 10, (rows,), generator=g)


def _rank_rows(gb: int, world: int, rank: int, parts: int) -> torch.Tensor:
    local = gb // world
    return torch.cat([torch.arange(rank * local, (rank + 1) * local) + p * gb for p in range(parts)])


def _run(kind, aug, world=1, rank=0, gb=8, epoch=1, step=2, parts=None):
    """prepare_batch on rank `rank`'s rows of one fixed global batch (partner rows after the primary)."""
    recipe = _recipe(aug, gb)
    parts = parts or (2 if augment.needs_partner(recipe["augment"]) else 1)
    x, y = _global_batch(kind, gb * parts)
    rows = _rank_rows(gb, world, rank, parts)
    return prepare_batch(x[rows], y[rows], task=_task(kind), recipe=recipe, epoch=epoch, step=step, rank=rank,
                         world=world)


def _old_prepare_batch(x, y, *, task, recipe, epoch, step, rank, world):
    """The batch code before the transform list, kept verbatim as the reference for the flat keys."""
    aug = task.augment or recipe["augment"]
    tr = recipe["train"]
    g = augment.step_generator(recipe["seed"], epoch, step)
    gb = min(tr["batch_size"], len(task.train))
    local = gb // world
    sl = slice(rank * local, (rank + 1) * local)
    mix = aug["mixup_alpha"] > 0
    parts = 2 if mix else 1
    rows = torch.cat([torch.arange(sl.start, sl.stop) + p * gb for p in range(parts)])
    n_all = gb * parts
    if task.kind == "image":
        imgs = x
        if aug["crop_pad"] > 0 or aug["hflip"]:
            full = torch.zeros((n_all, *x.shape[1:]), dtype=x.dtype, device=x.device)
            full[rows] = x
            full = random_crop_flip(full, pad=aug["crop_pad"], generator=g)
            imgs = full[rows]
        x = normalize_images(imgs)
    else:
        x = x.float()
        c, f, t = x.shape[1], x.shape[2], x.shape[3]
        if aug["freq_masks"]:
            start, width = augment.mask_params(n_all, c, f, aug["freq_mask_width"], aug["freq_masks"], g)
            x = augment.apply_masks(x, start[rows], width[rows], axis=2)
        if aug["time_masks"]:
            start, width = augment.mask_params(n_all, c, t, aug["time_mask_width"], aug["time_masks"], g)
            x = augment.apply_masks(x, start[rows], width[rows], axis=3)
        if aug["crop_frames"]:
            offsets = augment.random_crop_offsets(n_all, t, aug["crop_frames"], g)
            x = augment.crop_time(x, offsets[rows], aug["crop_frames"])
    targets = augment.soft_targets(y.to(x.device), task.num_classes, tr["label_smoothing"])
    if mix:
        lam = augment.mixup_weights(gb, aug["mixup_alpha"], g)[sl].to(x.device)
        half = x.shape[0] // 2
        lx = lam.view(-1, *([1] * (x.dim() - 1)))
        x = x[:half] * lx + x[half:] * (1 - lx)
        targets = targets[:half] * lam[:, None] + targets[half:] * (1 - lam[:, None])
    return x, targets


SPEC_ALL = {"crop_frames": 40, "mixup_alpha": 0.4, "freq_masks": 2, "freq_mask_width": 5, "time_masks": 1,
            "time_mask_width": 8}
FLAT_CASES = [
    ("spectrogram", SPEC_ALL),
    ("spectrogram", {"crop_frames": 30}),
    ("spectrogram", {"time_masks": 2, "time_mask_width": 9}),
    ("spectrogram", {"mixup_alpha": 0.4}),
    ("spectrogram", {}),
    ("image", {"crop_pad": 4, "hflip": True, "mixup_alpha": 0.5}),
    ("image", {"crop_pad": 4, "hflip": True}),
    ("image", {"hflip": True}),
    ("image", {}),
]


@pytest.mark.parametrize("kind,aug", FLAT_CASES)
@pytest.mark.parametrize("world", [1, 2, 4])
def test_flat_keys_draw_what_the_old_code_drew(kind, aug, world):
    recipe = _recipe(aug)
    parts = 2 if recipe["augment"]["mixup_alpha"] > 0 else 1
    x, y = _global_batch(kind, 8 * parts)
    for rank in range(world):
        rows = _rank_rows(8, world, rank, parts)
        args = dict(task=_task(kind), recipe=recipe, epoch=1, step=2, rank=rank, world=world)
        new, old = prepare_batch(x[rows], y[rows], **args), _old_prepare_batch(x[rows], y[rows], **args)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])


def test_values_recorded_from_the_code_before_the_list():
    """Sums of outputs the pre-list code gave for these seeds (not just a copy of it run again)."""
    recorded = {
        "spec_all": ("spectrogram", SPEC_ALL, (8, 3, 20, 40),
                     28487.450710866164, 61980.91868289312, 35.817820163443685),
        "spec_crop": ("spectrogram", {"crop_frames": 30}, (8, 3, 20, 30),
                      28754.657387137413, 71739.39870905588, 46.799998328089714),
        "img_mix": ("image", {"crop_pad": 4, "hflip": True, "mixup_alpha": 0.5}, (8, 3, 8, 8),
                    -1425.5463343178853, 2960.595790404493, 40.48846811056137),
    }
    for name, (kind, aug, shape, s1, s2, st) in recorded.items():
        x, t = _run(kind, aug)
        assert tuple(x.shape) == shape, name
        assert float(x.double().sum()) == pytest.approx(s1, rel=1e-12), name
        assert float((x.double() ** 2).sum()) == pytest.approx(s2, rel=1e-12), name
        assert float((t.double() * torch.arange(10)).sum()) == pytest.approx(st, rel=1e-12), name


def test_the_written_list_equals_the_flat_keys_it_spells_out():
    listed = {"transforms": [
        {"name": "specaugment", "freq_masks": 2, "freq_mask_width": 5, "time_masks": 1, "time_mask_width": 8},
        {"name": "crop", "frames": 40},
        {"name": "mixup", "alpha": 0.4},
    ]}
    assert augment.transform_list({**FLAT, **SPEC_ALL}) == augment.transform_list({**FLAT, **listed})
    flat, new = _run("spectrogram", SPEC_ALL), _run("spectrogram", listed)
    assert torch.equal(flat[0], new[0]) and torch.equal(flat[1], new[1])
    imgs = {"transforms": [{"name": "crop_flip", "pad": 4}, {"name": "mixup", "alpha": 0.5}]}
    flat, new = _run("image", {"crop_pad": 4, "hflip": True, "mixup_alpha": 0.5}), _run("image", imgs)
    assert torch.equal(flat[0], new[0]) and torch.equal(flat[1], new[1])


@pytest.mark.parametrize("transforms", [
    [{"name": "crop", "frames": 30}, {"name": "specaugment"}],
    [{"name": "mixup", "alpha": 0.3}, {"name": "specaugment", "freq_masks": 2, "time_masks": 0}],
    [{"name": "specaugment"}, {"name": "mixup", "alpha": 0.3}, {"name": "crop", "frames": 45}],
])
def test_every_order_splits_over_processes_like_one_process(transforms):
    """Draws are for the global batch, then sliced: ranks together give the single process's batch."""
    aug = {"transforms": transforms}
    whole = _run("spectrogram", aug)
    for world in (2, 4):
        parts = [_run("spectrogram", aug, world=world, rank=r) for r in range(world)]
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    # another step draws anew
    assert not torch.equal(_run("spectrogram", aug, step=3)[0], whole[0])


# ------------------------------------------------------------------------------ freq_mixstyle


def _reference_mixstyle(x: np.ndarray, lam: np.ndarray, perm: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """By hand: per (sample, frequency) mean and unbiased variance over (channel, time)."""
    b, c, f, t = x.shape
    mu = np.empty((b, f))
    sig = np.empty((b, f))
    for i in range(b):
        for k in range(f):
            vals = x[i, :, k, :].ravel()
            mu[i, k] = vals.sum() / vals.size
            sig[i, k] = np.sqrt(((vals - mu[i, k]) ** 2).sum() / (vals.size - 1) + eps)
    out = np.empty_like(x)
    for i in range(b):
        j = perm[i]
        for k in range(f):
            m = lam[i] * mu[i, k] + (1 - lam[i]) * mu[j, k]
            s = lam[i] * sig[i, k] + (1 - lam[i]) * sig[j, k]
            out[i, :, k, :] = (x[i, :, k, :] - mu[i, k]) / sig[i, k] * s + m
    return out


def test_freq_mixstyle_formula_in_float64():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64) * 2 + torch.arange(4.0).view(1, 1, 4, 1)
    lam = torch.tensor([0.25, 0.9, 0.5], dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    got = augment.mix_freq_statistics(x, lam, perm)
    np.testing.assert_allclose(got.numpy(), _reference_mixstyle(x.numpy(), lam.numpy(), perm.numpy()),
                               rtol=1e-12, atol=1e-12)
    # λ = 1 (or the identity permutation) gives each sample back, up to eps
    same = augment.mix_freq_statistics(x, torch.ones(3, dtype=torch.float64), perm)
    torch.testing.assert_close(same, x, rtol=1e-6, atol=1e-6)


def test_freq_mixstyle_with_p_zero_changes_nothing_and_draws_as_when_it_fires():
    x, _ = _global_batch("spectrogram", 8)
    alone = _run("spectrogram", {"transforms": [{"name": "freq_mixstyle", "p": 0.0}]})
    assert torch.equal(alone[0], x) and torch.equal(alone[1], _run("spectrogram", {"transforms": []})[1])
    crop = {"name": "crop", "frames": 30}
    off = _run("spectrogram", {"transforms": [{"name": "freq_mixstyle", "p": 0.0}, crop]})
    # the crop after it picks the same windows whether freq_mixstyle fires or not
    on = _run("spectrogram", {"transforms": [{"name": "freq_mixstyle", "p": 1.0}, crop]})
    g = augment.step_generator(5, 1, 2)
    torch.rand((), generator=g, dtype=torch.float64)
    lam = augment.mixup_weights(8, 0.3, g)
    keys = torch.rand(8, generator=g, dtype=torch.float64)
    offsets = augment.random_crop_offsets(8, 50, 30, g)
    mixed = augment.mix_freq_statistics(x, lam, torch.argsort(keys))
    assert torch.equal(on[0], augment.crop_time(mixed, offsets, 30))
    assert torch.equal(off[0], augment.crop_time(x, offsets, 30))


def test_freq_mixstyle_draws_for_the_global_batch_and_permutes_within_a_process():
    aug = {"transforms": [{"name": "freq_mixstyle", "p": 1.0, "alpha": 0.3}]}
    x, _ = _global_batch("spectrogram", 8)
    g = augment.step_generator(5, 1, 2)
    torch.rand((), generator=g, dtype=torch.float64)
    lam = augment.mixup_weights(8, 0.3, g)
    keys = torch.rand(8, generator=g, dtype=torch.float64)
    for world in (1, 2):
        for rank in range(world):
            rows = _rank_rows(8, world, rank, 1)
            want = augment.mix_freq_statistics(x[rows], lam[rows], torch.argsort(keys[rows]))
            assert torch.equal(_run("spectrogram", aug, world=world, rank=rank)[0], want)
    # statistics move: each frequency bin's mean becomes the λ-mix of two samples' means
    out = _run("spectrogram", aug)[0]
    assert not torch.allclose(out.mean(dim=(1, 3)), x.mean(dim=(1, 3)))


# ------------------------------------------------------------------------------ recipes and resuming


def test_clip_length_scales_the_lists_widths_and_refuses_a_long_crop():
    aug = {**FLAT, "reference_frames": 423, "transforms": [
        {"name": "specaugment", "time_mask_width": 40}, {"name": "crop", "frames": 400}]}
    logs: list[str] = []
    out = clip_augment(aug, 36, logs.append)
    assert [t.get("frames") or t.get("time_mask_width") for t in out["transforms"]] == [3, 34]
    assert out["transforms"][0] == {"name": "specaugment", "freq_masks": 1, "freq_mask_width": 13,
                                    "time_masks": 1, "time_mask_width": 3}
    assert "augment.transforms.1.frames 400 -> 34" in logs[0]
    assert aug["transforms"][1]["frames"] == 400  # the recipe itself is left alone
    with pytest.raises(AscError, match=r"augment.transforms.0.frames 400 is longer than the clips' 36 frames "
                                       r"\(set augment.reference_frames"):
        clip_augment({**FLAT, "transforms": [{"name": "crop", "frames": 400}]}, 36)


@pytest.mark.parametrize("transforms,message", [
    ([{"name": "mixstyle"}], r"augment.transforms.0.name: unknown transform 'mixstyle' \(known: specaugment"),
    ([{"name": "crop"}], r"augment.transforms.0.frames: missing required key"),
    ([{"name": "crop", "frames": 4}, {"name": "mixup", "alpha": -1}], r"augment.transforms.1.alpha: -1"),
    ([{"name": "mixup", "alpha": 0.4, "beta": 1}], r"unknown key augment.transforms.0.beta"),
    ([{"name": "freq_mixstyle", "p": 2}], r"augment.transforms.0.p: 2.0 must be <= 1.0"),
    ([{"name": "mixup", "alpha": 0.4}, {"name": "mixup", "alpha": 0.2}], r"1: mixup may appear once"),
    ([{"name": "mixup", "alpha": 0.4}, {"name": "crop_flip"}], r"crop_flip works on raw inputs and must"),
    (["crop"], r"augment.transforms.0: expected a mapping with a name"),
])
def test_bad_lists_name_the_key(transforms, message):
    with pytest.raises(ConfigError, match=message):
        augment.transform_list({**FLAT, "transforms": transforms})


def test_flat_keys_beside_a_list_and_transforms_for_the_other_kind_are_refused():
    with pytest.raises(ConfigError, match="augment.mixup_alpha is set beside augment.transforms"):
        augment.transform_list({**FLAT, "mixup_alpha": 0.4, "transforms": []})
    with pytest.raises(ConfigError, match="augment.transforms.0: specaugment applies to spectrogram inputs; "
                                          "this task's are image"):
        _run("image", {"transforms": [{"name": "specaugment"}]})
    # the flat keys of the other kind are ignored, as they always were
    assert augment.transforms_for({**FLAT, "freq_masks": 1, "crop_pad": 4}, "image") == \
        [{"name": "crop_flip", "pad": 4}]


def test_the_sampler_loads_partners_for_a_listed_mixup():
    recipe = {**_recipe({"transforms": [{"name": "mixup", "alpha": 0.4}]}), "data": {"num_workers": 0}}
    recipe["train"]["max_steps_per_epoch"] = None
    loader = train_loader(_task("spectrogram"), recipe, epoch=0, rank=0, world=1)
    assert loader.batch_sampler.partner and len(next(iter(loader.batch_sampler))) == 16
    recipe["augment"]["transforms"] = [{"name": "freq_mixstyle"}]
    assert not train_loader(_task("spectrogram"), recipe, epoch=0, rank=0, world=1).batch_sampler.partner


def test_a_run_saved_before_the_list_resumes_and_trains_as_before(tmp_path):
    path = ROOT / "recipes/dcase2020/fcnn.yaml"
    recipe = load_recipe(path)
    assert recipe["augment"]["transforms"] is None
    saved = {**recipe, "augment": {k: v for k, v in recipe["augment"].items() if k != "transforms"}}
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(saved))
    again = resume_recipe(run)  # the run's own recipe
    assert "transforms" not in again["augment"] and again["augment"]["mixup_alpha"] == 0.4
    assert resume_recipe(run, path)["augment"] == saved["augment"]  # the same recipe file beside it
    with pytest.raises(ConfigError, match=r"augment.transforms: None -> \[\{'name': 'crop'"):
        resume_recipe(run, path, overrides=["augment.transforms=[{name: crop, frames: 400}]",
                                            "augment.crop_frames=null", "augment.mixup_alpha=0",
                                            "augment.freq_masks=0", "augment.time_masks=0"])
    # and it draws what it drew
    assert [t["name"] for t in augment.transform_list(again["augment"])] == ["specaugment", "crop", "mixup"]
    short = {"seed": 5, "train": {"batch_size": 8, "label_smoothing": 0.0},
             "augment": {**saved["augment"], "crop_frames": 40}}  # no transforms key at all
    x, y = _global_batch("spectrogram", 16)
    args = dict(task=_task("spectrogram"), recipe=short, epoch=0, step=0, rank=0, world=1)
    new, old = prepare_batch(x, y, **args), _old_prepare_batch(x, y, **args)
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])
