"""ResNet-17, FCNN and fsFCNN: Keras-faithful shapes and parameter counts, the norm switch, training,
checkpoints, embeddings, torch.compile and the model configs."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asc.errors import ConfigError
from asc.models import create_model, list_models
from asc.models.common import (
    Conv2dSame,
    count_parameters,
    keras_he_normal_,
    load_model_config,
    pool2d_same,
    same_padding,
)
from asc.nn import NORM_KINDS, norm_kind_of

ROOT = Path(__file__).resolve().parents[1]
DCASE = ("resnet17", "fcnn", "fsfcnn")
TINY = 0.1  # width_mult: every width rounds to a small multiple of 8


def tiny(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, width_mult=TINY, **kw)


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if norm_kind_of(m) is not None]


# ---------------------------------------------------------------- Keras 'same' padding, by hand


@pytest.mark.parametrize("size, expected", [(8, [3.0, 9.0, 15.0, 13.0]), (7, [1.0, 6.0, 12.0, 11.0])])
def test_conv_same_aligns_windows_like_keras(size, expected):
    # kernel 3, stride 2, all-ones weights over 0, 1, ..., size-1. Keras pads (0, 1) for 8 -> windows
    # start at 0, 2, 4, 6; and (1, 1) for 7 -> windows start at -1, 1, 3, 5.
    conv = Conv2dSame(1, 1, (1, 3), stride=(1, 2))
    nn.init.ones_(conv.weight)
    x = torch.arange(size, dtype=torch.float32).reshape(1, 1, 1, size)
    assert conv(x).flatten().tolist() == expected


@pytest.mark.parametrize("size, avg, peak", [
    (8, [1.0, 3.0, 5.0, 6.5], [2.0, 4.0, 6.0, 7.0]),
    (7, [0.5, 2.0, 4.0, 5.5], [1.0, 3.0, 5.0, 6.0]),
])
def test_pool_same_aligns_windows_and_averages_real_elements_only(size, avg, peak):
    x = torch.arange(size, dtype=torch.float32).reshape(1, 1, 1, size)
    assert pool2d_same(x, "avg", (1, 3), (1, 2)).flatten().tolist() == avg
    assert pool2d_same(x, "max", (1, 3), (1, 2)).flatten().tolist() == peak


def _tf_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("h, w", [(5, 8), (6, 7), (9, 12)])
@pytest.mark.parametrize("k, stride", [(3, (1, 2)), (3, (2, 2)), (5, (1, 2)), (5, (2, 1))])
def test_same_conv_and_avg_pool_match_float64_reference(h, w, k, stride):
    torch.manual_seed(1)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    (t, b), (l, r) = _tf_pads(h, k, stride[0]), _tf_pads(w, k, stride[1])
    assert same_padding(h, k, stride[0]) == (t, b)
    conv = Conv2dSame(3, 4, k, stride).double()
    ref = F.conv2d(F.pad(x, (l, r, t, b)), conv.weight, None, stride)
    torch.testing.assert_close(conv(x), ref)
    # average over the real elements of each window, element by element
    out = pool2d_same(x, "avg", k, stride)
    oh, ow = math.ceil(h / stride[0]), math.ceil(w / stride[1])
    assert out.shape == (2, 3, oh, ow)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride[0] - t, j * stride[1] - l
            win = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            torch.testing.assert_close(out[:, :, i, j], win.mean(dim=(2, 3)))


# ---------------------------------------------------------------- shapes


# Feature maps fed to the classifier, from the Keras layer arithmetic: (frequency, time).
KERAS_MAP = {
    # stride (1, 2) four times, mel bins kept: 400 -> 200, 100, 50, 25; 423 -> 212, 106, 53, 27
    "resnet17": {400: (128, 25), 423: (128, 27)},
    # conv 5x5 stride 2 (pad 2) then three 2x2 valid max-pools
    "fcnn": {400: (8, 25), 423: (8, 26)},
    # 'same' conv stride (1, 2), pools stride 2, 2, (1, 2), (1, 2)
    "fsfcnn": {400: (32, 13), 423: (32, 14)},
}


@pytest.mark.parametrize("name", DCASE)
@pytest.mark.parametrize("frames", [400, 423])
def test_logits_and_feature_shapes_for_training_and_evaluation_lengths(name, frames):
    model = tiny(name).eval()
    x = torch.randn(2, 3, 128, frames)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert features.shape == (2, model.embed_dim, *KERAS_MAP[name][frames])
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_other_class_and_channel_counts():
    model = create_model("fcnn", num_classes=4, in_channels=1, width_mult=TINY).eval()
    assert model(torch.randn(2, 1, 64, 50)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, mel bins, frames\)"):
        model(torch.randn(2, 3, 64, 50))


# ---------------------------------------------------------------- parameter counts (Keras, trainable)


@pytest.mark.parametrize("name, kw, expected", [
    ("resnet17", {}, 12_966_444),
    ("resnet17", {"base_width": 24}, 3_246_108),
    ("resnet17", {"base_width": 24, "in_channels": 1}, 3_245_236),
    ("fcnn", {}, 11_780_329),
    ("fsfcnn", {}, 16_531_913),
    ("fsfcnn", {"channel_mult": 3}, 148_672_105),
    ("fsfcnn", {"channel_mult": None}, 148_672_105),
])
def test_trainable_parameter_counts_match_the_published_keras_models(name, kw, expected):
    with torch.device("meta"):
        model = create_model(name, **kw)
    assert count_parameters(model) == expected


def test_fcnn_count_breakdown():
    with torch.device("meta"):
        model = create_model("fcnn")
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    norms = sum(p.numel() for _, m in norm_layers(model) for p in m.parameters())
    dense = sum(p.numel() for p in model.attention.parameters())
    assert (convs, norms, dense) == (11_773_872, 6_342, 115)
    assert model.widths == [144, 288, 576]


def test_width_mult_rounds_widths_to_multiples_of_8():
    for mult in (0.05, 0.1, 0.3):
        for name in DCASE:
            with torch.device("meta"):
                widths = create_model(name, width_mult=mult).widths
            assert all(w % 8 == 0 and w >= 8 for w in widths), (name, mult, widths)
    with pytest.raises(ConfigError, match="width_mult"):
        create_model("fcnn", width_mult=0)


# ---------------------------------------------------------------- norm switch


# (norm layers, of which affine): hand-counted BatchNormalization layers of the Keras code
NORM_COUNTS = {"resnet17": (37, 2), "fcnn": (11, 9), "fsfcnn": (13, 11)}


@pytest.mark.parametrize("name", DCASE)
def test_norm_switch_replaces_every_norm_and_keeps_affine_flags(name):
    # 16 input channels, 16 classes and widths >= 16, so that every group-norm kind fits every layer
    # and gn8 never degenerates to a single group (which reads back as "ln")
    extra = {} if name == "resnet17" else {"channel_mult": 1}

    def build(kind):
        with torch.device("meta"):  # structure only: no memory, no initialization cost
            return create_model(name, num_classes=16, in_channels=16, norm=kind, width_mult=0.34, **extra)

    reference = build("bn")
    layers = norm_layers(reference)
    total, affine = NORM_COUNTS[name]
    assert len(layers) == total
    assert sum(m.affine for _, m in layers) == affine
    def outside_norms(model):
        norms = [n + "." for n, m in model.named_modules() if norm_kind_of(m) is not None]
        return {k: v.shape for k, v in model.named_parameters() if not any(k.startswith(n) for n in norms)}

    ref_shapes = outside_norms(reference)
    for kind in NORM_KINDS:
        model = build(kind)
        swapped = norm_layers(model)
        if kind == "none":
            assert swapped == []
            assert sum(isinstance(m, nn.Identity) for m in model.modules()) == total
        else:
            assert [n for n, _ in swapped] == [n for n, _ in layers], kind
            assert all(norm_kind_of(m) == kind for _, m in swapped), kind
            assert [m.affine for _, m in swapped] == [m.affine for _, m in layers], kind
        assert outside_norms(model) == ref_shapes, kind  # nothing but the norms changes
    bn, l2bn = reference.state_dict(), build("l2bn").state_dict()
    assert {k: v.shape for k, v in bn.items()} == {k: v.shape for k, v in l2bn.items()}


def test_group_norm_that_does_not_fit_names_the_model_and_layer():
    with pytest.raises(ConfigError, match=r"fcnn: norm 'gn8' cannot normalize the input \(3 channels\)"):
        create_model("fcnn", norm="gn8")


# ---------------------------------------------------------------- training, checkpoints, embeddings


@pytest.mark.parametrize("name", DCASE)
@pytest.mark.parametrize("norm", ["bn", "l2bn"])
def test_one_sgd_step_lowers_the_loss(name, norm):
    model = tiny(name, norm=norm).train()
    x = torch.randn(8, 3, 32, 48)
    y = torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def loss() -> torch.Tensor:
        torch.manual_seed(3)  # the same dropout masks for both evaluations
        return F.cross_entropy(model(x), y)

    before = loss()
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before


@pytest.mark.parametrize("name", DCASE)
def test_state_dict_round_trip_restores_outputs(name):
    source = tiny(name, norm="l2bn").train()
    with torch.no_grad():
        for _ in range(2):
            source(torch.randn(4, 3, 32, 40) * 3 + 1)  # moves the running statistics away from 0/1
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(99)
    target = create_model(name, norm="l2bn", width_mult=TINY)
    target.load_state_dict(torch.load(buf, weights_only=True))
    source.eval()
    target.eval()
    x = torch.randn(3, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", DCASE)
def test_embed_is_the_pooled_input_of_the_classification_layer(name):
    model = tiny(name).eval()
    seen = []

    def keep_input(module, args, output):
        seen.append(args[0])

    model.classifier.register_forward_hook(keep_input)
    x = torch.randn(3, 3, 32, 40)
    with torch.no_grad():
        logits = model(x)
        emb = model.embed(x)
        both = model.forward_with_embedding(x)
    assert emb.shape == (3, model.embed_dim)
    torch.testing.assert_close(emb, seen[0].mean(dim=(2, 3)))
    torch.testing.assert_close(both[0], logits)
    torch.testing.assert_close(both[1], emb)


def test_resnet17_embedding_sizes():
    with torch.device("meta"):
        assert create_model("resnet17").embed_dim == 1536
        assert create_model("resnet17", base_width=24).embed_dim == 768


@pytest.mark.parametrize("name", DCASE)
def test_channels_last_gives_the_same_result(name):
    model = tiny(name, norm="l2bn").eval()
    x = torch.randn(2, 3, 32, 41)
    with torch.no_grad():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    model.train()
    model(x.contiguous(memory_format=torch.channels_last)).sum().backward()


@pytest.mark.slow
def test_compiled_training_step_under_bf16_autocast_has_finite_gradients():
    """The mixed-precision GPU path, compiled: gradients must match eager (dropout off) and be finite."""
    torch.manual_seed(0)
    model = tiny("fcnn", norm="l2bn", dropout=0.0)
    x = torch.randn(4, 3, 32, 24)
    y = torch.arange(4)
    grads = []
    for net in (model, torch.compile(model)):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[1]).all()
    # bf16 rounding differs between the two; the gradient direction must not
    assert torch.nn.functional.cosine_similarity(grads[1], grads[0], dim=0) > 0.95


def test_keras_he_normal_statistics():
    torch.manual_seed(0)
    w = keras_he_normal_(torch.empty(512, 64, 3, 3))
    fan_in = 64 * 9
    assert abs(w.std().item() / math.sqrt(2 / fan_in) - 1) < 0.02
    assert w.abs().max().item() <= 2 * math.sqrt(2 / fan_in) / 0.8796 + 1e-6


# ---------------------------------------------------------------- registry and model configs


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet18'") as info:
        create_model("resnet18")
    for name in DCASE:
        assert name in str(info.value)
    assert set(DCASE) <= set(list_models())


@pytest.mark.parametrize("name, count", [("resnet17", 12_966_444), ("fcnn", 11_780_329),
                                         ("fsfcnn", 16_531_913)])
def test_shipped_model_configs_build_the_published_models(name, count):
    cfg = load_model_config(ROOT / "models" / f"{name}.yaml")
    assert cfg["name"] == name
    with torch.device("meta"):
        model = create_model(cfg["name"], norm="l2bn", **cfg["params"])
    assert count_parameters(model) == count


@pytest.mark.parametrize("text, message", [
    ("name: resnet18\n", r"name: unknown model 'resnet18'; known models: .*resnet17"),
    ("name: fcnn\nwidth: 2\n", "unknown key width"),
    ("name: fcnn\nparams: [1, 2]\n", "params: expected dict"),
    ("name: fcnn\nparams:\n  norm: l2bn\n", "params.norm: set by the data/recipe"),
    ("params: {}\n", "name: missing required key"),
])
def test_bad_model_configs_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_model_config(path)
    assert str(path) in str(info.value)


def test_model_size_counts_macs_as_by_hand():
    from asc.models.common import model_size

    # conv 3->8, 3x3, no bias, on 3x10x10 ('valid'): 8x8x8 outputs of 27 MACs; linear 512->10: 5,120
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Flatten(), nn.Linear(512, 10))
    size = model_size(net, (3, 10, 10))
    assert size["macs"] == 8 * 8 * 8 * 27 + 512 * 10
    assert size["params"] == 8 * 27 + 512 * 10 + 10
    assert size["bytes_fp32"] == 4 * size["params"] and size["bytes_fp16"] == 2 * size["params"]
    assert size["input_shape"] == [3, 10, 10] and net.training  # mode restored
    # the published FCNN: about 15 GMAC per 10-s clip, the README's figure
    with torch.device("meta"):  # shapes only: counted without memory or arithmetic
        full = model_size(create_model("fcnn", norm="bn"), (3, 128, 423))
    assert full["params"] == 11_780_329 and 15.0e9 < full["macs"] < 15.6e9


@pytest.mark.parametrize("name", list_models())
def test_mac_count_equals_torchs_flop_counter_on_every_model(name):
    """`count_macs` hooks the conv and linear layers; torch's FLOP counter sees every product the
    dispatcher runs (SE gates, grouped and 1-D convolutions, matmuls written as functions)."""
    from torch.utils.flop_counter import FlopCounterMode

    from asc.models.common import count_macs

    shape = (3, 32, 32) if name.startswith("cifar_") else (3, 64, 100)
    with torch.device("meta"):  # shapes only
        model = create_model(name, num_classes=10).eval()
        x = torch.zeros((2, *shape))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    with torch.no_grad():
        assert count_macs(model, x) == counter.get_total_flops() // 2 > 0
