"""CIFAR-100 recipes: the paper's supplementary Table 1 settings, and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asc.train.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "cifar100"

# supplementary Table 1 of the paper: lr, schedule, weight decay, batch, epochs, warm-up
TABLE1 = {
    "resnet": (0.1, "cosine", 5e-4, 128, 200, 0),
    "densenet": (0.1, "step", 1e-4, 64, 300, 0),
    "vgg": (0.1, "cosine", 5e-4, 128, 200, 0),
    "regnet": (0.5, "cosine", 5e-4, 512, 200, 5),
    "resnext": (0.1, "cosine", 5e-4, 128, 300, 0),
}
MODELS = {name: f"cifar_{name}" for name in (  # recipe name -> registered model
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16", "vgg19", "densenet40_12",
    "densenet_bc100_12", "resnext29_8x64d", "regnetx_200mf", "regnety_400mf")}


def family(name: str) -> str:
    return next(f for f in ("resnext", "resnet", "densenet", "vgg", "regnet") if name.startswith(f))


def test_every_model_has_a_recipe():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recipe_follows_the_paper(name, tmp_path):
    r = load_recipe(RECIPES / f"{name}.yaml", overrides=[f"data.root={tmp_path}"])
    tr, aug = r["train"], r["augment"]
    lr, schedule, wd, batch, epochs, warmup = TABLE1[family(name)]
    assert r["task"] == "cifar100" and r["model"]["name"] == MODELS[name] and r["norm"] == "bn"
    assert (tr["lr"], tr["schedule"], tr["weight_decay"], tr["batch_size"], tr["epochs"]) == (
        lr, schedule, wd, batch, epochs)
    assert tr["warmup_epochs"] == warmup and tr["min_lr"] == 0.0
    assert tr["momentum"] == 0.9 and tr["nesterov"] is True
    if schedule == "step":
        assert tr["milestones"] == [150, 225] and tr["gamma"] == 0.1
    regnet = family(name) == "regnet"
    assert aug["mixup_alpha"] == (0.5 if regnet else 0.0)
    assert tr["label_smoothing"] == (0.1 if regnet else 0.0)
    assert aug["crop_pad"] == 4 and aug["hflip"] is True
    quick = load_recipe(RECIPES / f"{name}.yaml", profile="quick")
    assert quick["data"]["root"].endswith("cifar100_synth") and quick["train"]["epochs"] <= 2


def test_table4_parts_through_the_recipe(tmp_path):
    r = load_recipe(RECIPES / "resnet56.yaml", overrides=[f"data.root={tmp_path}",
                                                          "model_params.l2bn_parts=stage1"])
    assert r["model"]["params"]["l2bn_parts"] == "stage1"


def test_quick_recipe_trains_on_synthetic_cifar(tmp_path):
    from asc.data.cifar import write_synthetic_cifar100
    from asc.train.engine import train

    root = write_synthetic_cifar100(tmp_path / "data", preset="tiny", seed=0)
    recipe = load_recipe(RECIPES / "resnet20.yaml", profile="quick", norm="l2bn", overrides=[
        f"data.root={root}", "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16",
        "train.angles_every=1"])
    summary = train(recipe, tmp_path / "run", device="cpu")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= last["val_acc"] <= 1.0 and last["train_loss"] > 0
    assert set(last["angles"]) >= {"intra_train", "intra_test", "inter", "iir_train", "iir_test"}
    assert summary["best"]["epoch"] == 1


TABLE5 = ("bn", "l2bn", "lnbn", "inbn", "pnbn", "ln", "in", "gn4", "gn8", "sn", "bcn", "bin")


@pytest.mark.parametrize("norm", TABLE5)
def test_every_table5_norm_builds_and_steps_in_the_resnet56_recipe(norm, tmp_path):
    """What `run_cifar.sh --norms "..."` passes to `asc train`: each of the paper's Table 5 kinds."""
    import torch

    from asc.nn import norm_kind_of
    from asc.runs import build_model

    r = load_recipe(RECIPES / "resnet56.yaml", profile="quick", norm=norm,
                    overrides=[f"data.root={tmp_path}"])
    model = build_model({"name": r["model"]["name"], "num_classes": 100, "in_channels": 3, "norm": r["norm"],
                         "params": r["model"]["params"]})
    kinds = {norm_kind_of(m) for m in model.modules()} - {None}
    assert kinds == {norm}
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
