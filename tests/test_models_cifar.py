"""CIFAR models: registry names, output and embedding shapes, parameter counts, norm switching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asc.models import create_model, list_models
from asc.models.cifar.resnet import ShortcutA, parse_parts, stage_of
from asc.nn import L2BatchNorm1d, norm_kind_of

CIFAR_MODELS = {  # name -> width of the features fed to the classifier
    "cifar_resnet20": 64, "cifar_resnet32": 64, "cifar_resnet44": 64, "cifar_resnet56": 64,
    "cifar_resnet110": 64, "cifar_vgg16": 512, "cifar_vgg19": 512, "cifar_densenet40_12": 448,
    "cifar_densenet_bc100_12": 342, "cifar_resnext29_8x64d": 1024, "cifar_regnetx_200mf": 368,
    "cifar_regnety_400mf": 384,
}

# Parameter counts quoted for 10 classes, in millions, with the precision they are quoted at.
#   ResNets: He et al. 2016 (CIFAR-10 table: 0.27, 0.46, 0.66, 0.85, 1.7 M), option A shortcuts.
#   vgg19 (BN, one linear layer), ResNeXt-29 8x64d, DenseNet-BC-100-12: bearpaw/pytorch-classification
#   README (20.04, 34.43, 0.77 M). DenseNet-40-12: Huang et al. 2017, Table 2 (1.0 M).
QUOTED_10_CLASSES = {
    "cifar_resnet20": (0.27, 0.005), "cifar_resnet32": (0.46, 0.005), "cifar_resnet44": (0.66, 0.005),
    "cifar_resnet56": (0.85, 0.005), "cifar_resnet110": (1.7, 0.05), "cifar_vgg19": (20.04, 0.005),
    "cifar_resnext29_8x64d": (34.43, 0.005), "cifar_densenet_bc100_12": (0.77, 0.005),
    "cifar_densenet40_12": (1.0, 0.05),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if norm_kind_of(m) is not None]


def test_registry_lists_every_cifar_model():
    assert set(CIFAR_MODELS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(QUOTED_10_CLASSES))
def test_parameter_counts_match_quoted(name):
    quoted, tol = QUOTED_10_CLASSES[name]
    assert abs(n_params(create_model(name, num_classes=10)) / 1e6 - quoted) <= tol


def test_cifar100_counts_stated_in_the_docs():
    # ResNet-56 ~0.86 M and ResNet-110 ~1.73 M for 100 classes
    assert round(n_params(create_model("cifar_resnet56", num_classes=100)) / 1e6, 2) == 0.86
    assert round(n_params(create_model("cifar_resnet110", num_classes=100)) / 1e6, 2) == 1.73


def _resnet_formula(depth: int, classes: int) -> int:
    """Option-A CIFAR ResNet counted by hand: 3x3 convs without bias, 2 affine params per norm channel."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem
    c_in = 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += c_in * w * 9 + w * w * 9 + 4 * w
            c_in = w
    return total + 64 * classes + classes


def _regnet_formula(depths, widths, gw, se, classes) -> int:
    """kuangliu-style CIFAR RegNet counted by hand (stem 64, bottleneck ratio 1, SE on block input)."""
    total, c_in = 3 * 64 * 9 + 2 * 64, 64
    for d, w in zip(depths, widths):
        for j in range(d):
            total += c_in * w + 2 * w            # 1x1 + norm
            total += w * gw * 9 + 2 * w          # grouped 3x3: each output sees group_width inputs
            if se:
                h = round(c_in * se)
                total += w * h + h + h * w + w   # SE 1x1 convs with bias
            total += w * w + 2 * w               # 1x1 + norm
            if j == 0:                           # every stage starts with a shape change here
                total += c_in * w + 2 * w
            c_in = w
    return total + widths[-1] * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_resnet_count_matches_hand_formula(depth):
    assert n_params(create_model(f"cifar_resnet{depth}", num_classes=100)) == _resnet_formula(depth, 100)


def test_regnet_counts_match_hand_formula():
    x = create_model("cifar_regnetx_200mf", num_classes=100)
    y = create_model("cifar_regnety_400mf", num_classes=100)
    assert n_params(x) == _regnet_formula((1, 1, 4, 7), (24, 56, 152, 368), 8, 0, 100)
    assert n_params(y) == _regnet_formula((1, 2, 7, 12), (32, 64, 160, 384), 16, 0.25, 100)


def test_option_b_shortcut_adds_projection_parameters():
    a = n_params(create_model("cifar_resnet20"))
    b = n_params(create_model("cifar_resnet20", shortcut="B"))
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_forward_and_embed_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()
    model.eval()
    with torch.no_grad():
        emb = model.embed(x)
        out = model(x)
        assert emb.shape == (2, CIFAR_MODELS[name])
        assert torch.allclose(out, model.fc(emb))  # embed is exactly what the classifier sees
        logits, emb2 = model.forward_with_embedding(x)
        assert torch.allclose(logits, out) and torch.allclose(emb2, emb)


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_norm_switch_reaches_every_norm_layer(name):
    bn = norm_layers(create_model(name, norm="bn"))
    l2 = norm_layers(create_model(name, norm="l2bn"))
    ln = norm_layers(create_model(name, norm="ln"))
    assert len(bn) > 0 and {norm_kind_of(m) for _, m in bn} == {"bn"}
    assert [n for n, _ in l2] == [n for n, _ in bn] == [n for n, _ in ln]
    assert {norm_kind_of(m) for _, m in l2} == {"l2bn"}
    assert {norm_kind_of(m) for _, m in ln} == {"ln"}


def test_l2bn_model_trains_a_step():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=100, norm="l2bn")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()


def test_in_channels_and_num_classes_are_honoured():
    model = create_model("cifar_resnet20", num_classes=7, in_channels=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError):
        create_model("cifar_vgg16", l2bn_part="stage1")


# ------------------------------------------------------------------ Table 4: L2BN on parts of ResNet-56

def _kinds(module: nn.Module) -> set[str]:
    return {norm_kind_of(m) for m in module.modules() if norm_kind_of(m) is not None}


@pytest.mark.parametrize("spec, l2_parts", [
    ("stage1", {"stage1"}),
    ("stages2-3", {"stage2", "stage3"}),
    ("classifier", {"classifier"}),
    ("all", {"stem", "stage1", "stage2", "stage3"}),
    ("stage1+classifier", {"stage1", "classifier"}),
    ("last", {"last"}),  # Table 4's other reading: only the last existing norm, nothing added
    (None, set()),
    ("none", set()),
])
def test_l2bn_parts_place_l2bn_only_in_named_parts(spec, l2_parts):
    model = create_model("cifar_resnet56", norm="bn", l2bn_parts=spec)
    if "stage3" in l2_parts:
        l2_parts = l2_parts | {"last"}
    for part, module in stage_of(model).items():
        expected = {"l2bn"} if part in l2_parts else ({"bn"} if part != "classifier" else set())
        if part == "stage3" and "last" in l2_parts and "stage3" not in l2_parts:
            expected = {"bn", "l2bn"}
        assert _kinds(module) == expected, part
    assert isinstance(model.head_norm, L2BatchNorm1d) == ("classifier" in l2_parts)
    if spec == "last":
        assert [n for n, m in model.named_modules() if norm_kind_of(m) == "l2bn"] == ["body.stage3.8.bn2"]


def test_l2bn_parts_all_is_the_l2bn_model():
    a = create_model("cifar_resnet56", l2bn_parts="all")
    b = create_model("cifar_resnet56", norm="l2bn")
    assert [(n, type(m)) for n, m in a.named_modules()] == [(n, type(m)) for n, m in b.named_modules()]


def test_classifier_part_normalizes_the_embedding():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", l2bn_parts="classifier").train()
    emb = model.embed(torch.randn(16, 3, 32, 32))
    # BN1d in training mode: each feature has zero batch mean and unit (biased) variance
    assert torch.allclose(emb.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(emb.var(0, unbiased=False), torch.ones(64), atol=1e-2)


def test_bad_part_specs_are_refused():
    with pytest.raises(ValueError, match="unknown l2bn part"):
        parse_parts("stage4")
    with pytest.raises(ValueError, match="head_norm"):
        create_model("cifar_resnet56", l2bn_parts="classifier", head_norm="bn")
    with pytest.raises(ValueError, match="6n\\+2"):
        from asc.models.cifar.resnet import CifarResNet

        CifarResNet(21)


def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_model_configs_build_their_models():
    from pathlib import Path

    from asc.models.common import load_model_config

    root = Path(__file__).resolve().parents[1] / "models"
    configs = sorted(root.glob("cifar_*.yaml"))
    assert {load_model_config(p)["name"] for p in configs} == set(CIFAR_MODELS)
    for path in configs:
        cfg = load_model_config(path)
        if cfg["name"] != "cifar_resnext29_8x64d":  # the 34 M one is built elsewhere already
            assert isinstance(create_model(cfg["name"], num_classes=100, **cfg["params"]), nn.Module)
