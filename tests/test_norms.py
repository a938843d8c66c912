"""make_norm kinds and convert_norm on models built with BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asc.nn import NORM_KINDS, L2BatchNorm1d, L2BatchNorm2d, convert_norm, make_norm, norm_kind_of


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8, momentum=0.2, eps=1e-3),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, affine=False)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.BatchNorm1d(8, track_running_stats=False),
        nn.Linear(8, 5),
    )


def test_unknown_kind_lists_known_ones():
    with pytest.raises(ValueError, match="known kinds: bn, l2bn"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError, match="unknown norm kind"):
        convert_norm(small_cnn(), "nope")


@pytest.mark.parametrize("kind", NORM_KINDS)
@pytest.mark.parametrize("dim", [1, 2])
def test_every_kind_keeps_shape_and_trains_one_step(kind, dim):
    torch.manual_seed(0)
    shape = (6, 16, 5, 7) if dim == 2 else (6, 16, 9)
    norm = make_norm(kind, 16, dim=dim)
    conv = nn.Conv2d(16, 16, 3, padding=1) if dim == 2 else nn.Conv1d(16, 16, 3, padding=1)
    model = nn.Sequential(conv, norm)
    x = torch.randn(shape)
    y = model(x)
    assert y.shape == x.shape
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.mse_loss(y, torch.randn_like(y))
    loss.backward()
    opt.step()
    y2 = model(x)
    assert torch.isfinite(y2).all()
    assert norm_kind_of(norm) == (None if kind == "none" else kind)


def test_group_sizes_and_affine_flag():
    assert make_norm("gn4", 32).num_groups == 8
    assert make_norm("gn8", 32).num_groups == 4
    assert make_norm("ln", 32).num_groups == 1
    assert make_norm("in", 32).num_groups == 32
    assert norm_kind_of(make_norm("gn8", 8)) == "gn8" and norm_kind_of(make_norm("gn4", 4)) == "gn4"
    with pytest.raises(ValueError, match="not divisible"):
        make_norm("gn8", 12)
    for kind in ("bn", "l2bn", "lnbn", "gn4"):
        assert not any(p.requires_grad for p in make_norm(kind, 8, affine=False).parameters())


def test_pre_norms_compute_what_they_name():
    torch.manual_seed(1)
    x = torch.randn(4, 8, 5, 6) * 3 + 1
    for kind, pre in (
        ("lnbn", F.layer_norm(x, x.shape[1:])),
        ("inbn", F.instance_norm(x)),
        ("pnbn", (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)),
    ):
        norm = make_norm(kind, 8)
        torch.testing.assert_close(norm(x), F.batch_norm(pre, None, None, norm.weight, norm.bias, True),
                                   atol=1e-5, rtol=1e-5)


def test_convert_norm_replaces_every_bn_and_keeps_state():
    torch.manual_seed(2)
    model = small_cnn()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2)
        model[1].bias.uniform_(-1, 1)
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[3][1].running_mean.uniform_(-1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_norm(model, "l2bn")
    assert converted is model
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 3
    assert all(isinstance(m, (L2BatchNorm1d, L2BatchNorm2d)) for m in bns)
    assert model[1].eps == 1e-3 and model[1].momentum == 0.2
    assert model[3][1].affine is False and model[7].track_running_stats is False
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k

    # a hand-built twin with L2BN from the start, loaded with the same weights, gives the same output
    twin = small_cnn()
    twin[1] = L2BatchNorm2d(8, momentum=0.2, eps=1e-3)
    twin[3][1] = L2BatchNorm2d(16, affine=False)
    twin[7] = L2BatchNorm1d(8, track_running_stats=False)
    twin.load_state_dict(before)
    x = torch.randn(4, 3, 10, 12)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(twin, mode)()
        torch.testing.assert_close(model(x), twin(x))


def test_convert_norm_to_group_norm_copies_affine():
    model = small_cnn()
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    convert_norm(model, "gn4")
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_groups == 2
    assert torch.all(model[1].weight == 3.0)
    assert model[3][1].weight is None  # affine=False kept


def test_convert_torchvision_style_resnet_block():
    """A module tree like torchvision's BasicBlock (named bn1/bn2 and a downsample Sequential)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(4, 8, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(8)
            self.downsample = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))

    block = convert_norm(Block(), "l2bn")
    assert [norm_kind_of(m) for m in (block.bn1, block.bn2, block.downsample[1])] == ["l2bn"] * 3
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)
    # a bare BatchNorm module is returned converted
    assert isinstance(convert_norm(nn.BatchNorm2d(4), "l2bn"), L2BatchNorm2d)


def test_nn_modules_import_each_other_one_way():
    """norms.py is the registry: it imports the layer modules (the synchronized ones included) and none
    of them imports it back, lazily inside a function or not; no asc.nn module is in an import cycle."""
    import ast
    from pathlib import Path

    import asc.nn

    folder = Path(asc.nn.__file__).parent
    graph: dict[str, set[str]] = {}
    for file in folder.glob("*.py"):
        if file.stem == "__init__":
            continue
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {n.split(".")[2] for n in names if n.startswith("asc.nn.")}
        graph[file.stem] = deps - {file.stem}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, {m})]
    assert not cycles, f"import cycles through {cycles}: {graph}"
    assert not [m for m, deps in graph.items() if "norms" in deps], graph
    assert {"sync", "l2bn", "hybrid", "prenorm", "freqnorm"} <= graph["norms"]


# ------------------------------------------------------------------------------ the registry


def test_torch_free_names_are_the_registry():
    """asc.norm_kinds reads the registry's source without torch; its reading must equal the registry."""
    import subprocess
    import sys

    from asc.nn import NORMS
    from asc.norm_kinds import NORM_KINDS as FREE_KINDS
    from asc.norm_kinds import NORM_LABELS

    assert FREE_KINDS == tuple(NORMS) == NORM_KINDS
    assert NORM_LABELS == {k: spec.label for k, spec in NORMS.items()}
    code = "import sys, asc.norm_kinds as k; assert 'torch' not in sys.modules; print(len(k.NORM_KINDS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(NORMS)


def test_cli_recipe_and_stage_script_take_their_norm_names_from_the_registry():
    import argparse
    import subprocess
    import sys
    from pathlib import Path

    from asc.train import cli
    from asc.train.recipe import SCHEMA

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    train = parser._subparsers._group_actions[0].choices["train"]
    norm = next(a for a in train._actions if a.dest == "norm")
    assert tuple(norm.choices) == NORM_KINDS
    assert all(f"{k}: " in norm.help for k in NORM_KINDS)
    assert SCHEMA["norm"].choices == NORM_KINDS
    # the Python check inside recipes/stages.sh setup()
    text = (Path(__file__).resolve().parents[1] / "recipes/stages.sh").read_text()
    snippet = text.split("<<'PY'", 1)[1].split("\n", 1)[1].split("\nPY\n", 1)[0]
    res = subprocess.run([sys.executable, "-c", snippet, "run_x", "rfn", "ifn", "bn"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-c", snippet, "run_x", "rfn", "nope"], capture_output=True,
                         text=True)
    assert res.returncode != 0 and "unknown norm 'nope'" in res.stderr and "rfn" in res.stderr


def test_norm_kind_of_names_torch_layers_by_the_registry():
    assert norm_kind_of(nn.BatchNorm2d(8)) == "bn" and norm_kind_of(nn.SyncBatchNorm(8)) == "bn"
    assert norm_kind_of(nn.GroupNorm(1, 8)) == "ln" and norm_kind_of(nn.GroupNorm(8, 8)) == "in"
    assert norm_kind_of(nn.GroupNorm(2, 8)) == "gn4" and norm_kind_of(nn.GroupNorm(2, 16)) == "gn8"
    assert norm_kind_of(nn.GroupNorm(4, 20)) is None  # 5 channels a group: no registered kind
    assert norm_kind_of(nn.Identity()) is None and norm_kind_of(nn.Conv2d(3, 3, 1)) is None


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_sync_conversion_follows_the_registry(kind):
    from asc.nn import NORMS, convert_sync_norm

    layer = make_norm(kind, 8)
    synced = convert_sync_norm(layer)
    sync = NORMS[kind].sync
    if sync is None:
        assert synced is layer
    else:
        assert type(synced) is sync and synced.state_dict().keys() == layer.state_dict().keys()
    assert norm_kind_of(synced) == norm_kind_of(layer)


def test_options_go_to_the_kind_that_takes_them():
    assert make_norm("rfn", 8, relax=0.25).relax == 0.25
    with pytest.raises(ValueError, match="norm kind 'bn' has no option 'relax' \\(it takes none\\)"):
        make_norm("bn", 8, relax=0.25)
    with pytest.raises(ValueError, match="'rfn' has no option 'lam' \\(it takes: relax\\)"):
        make_norm("rfn", 8, lam=0.25)


def test_a_new_entry_is_all_a_new_norm_needs(monkeypatch):
    """One registry entry: make_norm builds it, norm_kind_of names it, convert_norm swaps BN for it."""
    from asc.nn import NORMS, NormSpec

    class Toy(nn.Module):
        norm_kind = "toy"

        def __init__(self, c, eps=1e-5, affine=True):
            super().__init__()
            self.affine = affine
            self.weight = nn.Parameter(torch.ones(c))

        def forward(self, x):
            return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))

    monkeypatch.setitem(NORMS, "toy", NormSpec(build=lambda c, dim, *, affine, eps, **_: Toy(c, eps, affine),
                                               label="toy"))
    model = convert_norm(small_cnn(), "toy")
    assert [norm_kind_of(m) for m in model.modules() if norm_kind_of(m)] == ["toy"] * 3
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 5)
