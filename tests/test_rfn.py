"""IFN and RFN (Kim et al., Interspeech 2022) against a float64 transcription of their formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from asc.nn import InstanceFreqNorm, RelaxedFreqNorm, convert_norm, convert_sync_norm, make_norm, norm_kind_of

EPS = 1e-5


def reference(x: np.ndarray, relax: float, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """relax · LN + (1 - relax) · IFN, then γ, β per channel, by loops over samples and frequency bins."""
    n, c, f, t = x.shape
    out = np.empty_like(x)
    for i in range(n):
        ln = (x[i] - x[i].mean()) / np.sqrt(x[i].var() + EPS)  # over (C, F, T), biased
        for k in range(f):
            band = x[i, :, k, :]  # (C, T)
            ifn = (band - band.mean()) / np.sqrt(band.var() + EPS)
            out[i, :, k, :] = relax * ln[:, k, :] + (1 - relax) * ifn
    return out * gamma[None, :, None, None] + beta[None, :, None, None]


@pytest.mark.parametrize("kind,relax", [("rfn", 0.5), ("rfn", 0.2), ("ifn", 0.0)])
def test_formula_in_training_and_evaluation(kind, relax):
    g = torch.Generator().manual_seed(0)
    # each frequency bin its own offset and scale, like a device's response
    x = torch.randn(3, 4, 6, 7, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, 6).view(1, 1, 6, 1)
    x = x + torch.linspace(-2, 2, 6, dtype=torch.float64).view(1, 1, 6, 1)
    layer = make_norm(kind, 4, relax=relax) if kind == "rfn" else make_norm(kind, 4)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, 0.5, -1.0, 2.0]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    want = reference(x.numpy(), relax, layer.weight.detach().numpy(), layer.bias.detach().numpy())
    for mode in ("train", "eval"):  # no running statistics: both modes compute the same
        getattr(layer, mode)()
        np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    assert not list(layer.buffers())
    # a sample's output does not depend on the rest of the batch
    np.testing.assert_allclose(layer(x[1:2]).detach().numpy(), want[1:2], rtol=1e-12, atol=1e-12)


def test_ifn_removes_each_bins_offset_and_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 50, generator=g, dtype=torch.float64)
    scale = torch.rand(1, 1, 5, 1, generator=g, dtype=torch.float64) + 0.5
    shifted = x * scale + torch.randn(1, 1, 5, 1, generator=g, dtype=torch.float64)
    ifn = make_norm("ifn", 3, affine=False).double()
    torch.testing.assert_close(ifn(shifted), ifn(x), rtol=1e-4, atol=1e-4)  # up to eps inside the root


def test_affine_false_is_the_parameter_free_published_module():
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    layer = make_norm("rfn", 4, affine=False).double()
    assert not list(layer.parameters()) and layer.affine is False
    want = reference(x.numpy(), 0.5, np.ones(4), np.zeros(4))
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-12, atol=1e-12)


def test_layouts_kinds_and_precision():
    assert isinstance(make_norm("rfn", 8), RelaxedFreqNorm)
    assert isinstance(make_norm("ifn", 8), InstanceFreqNorm)
    assert norm_kind_of(make_norm("rfn", 8)) == "rfn" and norm_kind_of(make_norm("ifn", 8)) == "ifn"
    # (N, C, L): the last axis is frequency, each position normalized over channels
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    y = make_norm("ifn", 8, dim=1, affine=False)(x)
    torch.testing.assert_close(y, (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False,
                                                                                   keepdim=True) + EPS))
    with pytest.raises(ValueError, match="rfn needs a frequency axis"):
        make_norm("rfn", 8, dim=1)(torch.randn(4, 8))
    with pytest.raises(ValueError, match="relax must be in \\[0, 1\\]"):
        make_norm("rfn", 8, relax=1.5)
    half = make_norm("rfn", 8)(torch.randn(2, 8, 4, 6).bfloat16() * 100)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()


def test_convert_keeps_bn_affine_and_sync_leaves_it_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    convert_norm(model, "rfn")
    assert isinstance(model[1], RelaxedFreqNorm) and torch.all(model[1].weight == 2.0)
    assert convert_sync_norm(model)[1] is model[1]  # no batch statistics to synchronize
    loss = model(torch.randn(2, 3, 10, 12)).square().mean()
    loss.backward()
    assert model[1].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()


@pytest.mark.parametrize("kind,relax", [("rfnbn", 0.5), ("ifnbn", 0.0)])
def test_frequency_norm_in_front_of_bn(kind, relax):
    """rfnbn / ifnbn: the parameter-free RFN or IFN, then BN with its batch and running statistics,
    against the float64 formulas; a BN converted to it keeps its weights and statistics."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 7, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, 6).view(1, 1, 6, 1)
    layer = make_norm(kind, 4).double()
    gamma, beta = np.array([1.5, 0.5, -1.0, 2.0]), np.array([0.1, -0.2, 0.3, 0.0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    pre = reference(x.numpy(), relax, np.ones(4), np.zeros(4))
    mean, var = pre.mean(axis=(0, 2, 3)), pre.var(axis=(0, 2, 3))

    def bn(m, v):
        return (pre - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + EPS) \
            * gamma[None, :, None, None] + beta[None, :, None, None]

    layer.train()
    np.testing.assert_allclose(layer(x).detach().numpy(), bn(mean, var), rtol=1e-10, atol=1e-10)
    running_mean, running_var = 0.1 * mean, 0.9 + 0.1 * pre.var(axis=(0, 2, 3), ddof=1)  # momentum 0.1
    np.testing.assert_allclose(layer.running_mean.numpy(), running_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), running_var, rtol=1e-12, atol=1e-12)
    layer.eval()
    np.testing.assert_allclose(layer(x).detach().numpy(), bn(running_mean, running_var), rtol=1e-10,
                               atol=1e-10)
    assert norm_kind_of(layer) == kind

    old = nn.BatchNorm2d(4)
    with torch.no_grad():
        old.weight.fill_(2.0)
        old.running_mean.fill_(0.5)
    new = convert_norm(nn.Sequential(old), kind)[0]
    assert norm_kind_of(new) == kind
    assert float(new.weight.detach()[0]) == 2.0 and float(new.running_mean[0]) == 0.5
