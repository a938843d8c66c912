"""SN, BCN and BIN (paper Table 5) against float64 references written from each paper's formulas."""

from __future__ import annotations

import pytest
import torch

from asc.nn import BatchChannelNorm, BatchInstanceNorm, SwitchNorm, convert_norm, make_norm, norm_kind_of
from asc.nn.hybrid import bcn_groups

SHAPES = [(5, 8, 6, 7), (5, 8, 9)]


def _view(t, x):
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def _moments(x, dims):
    mean = x.mean(dims, keepdim=True)
    return mean, ((x - mean) ** 2).mean(dims, keepdim=True)


def _spatial(x):
    return tuple(range(2, x.dim()))


def sn_reference(x, m, running=None):
    """Luo et al. eq. (1)-(3): IN over spatial, LN over (C, spatial), BN over (N, spatial)."""
    mean_in, var_in = _moments(x, _spatial(x))
    mean_ln, var_ln = _moments(x, tuple(range(1, x.dim())))
    if running is None:
        mean_bn, var_bn = _moments(x, (0, *_spatial(x)))
    else:
        mean_bn, var_bn = _view(running[0], x), _view(running[1], x)
    wm = torch.softmax(m.mean_weight.double(), 0)
    wv = torch.softmax(m.var_weight.double(), 0)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    y = (x - mean) / torch.sqrt(var + m.eps)
    return y * _view(m.weight.double(), x) + _view(m.bias.double(), x), (mean_bn.flatten(), var_bn.flatten())


@pytest.mark.parametrize("shape", SHAPES)
def test_switch_norm_train_and_eval_match_reference(shape):
    torch.manual_seed(0)
    m = SwitchNorm(shape[1], momentum=0.3).double()
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.3, -0.5, 1.1]))
        m.var_weight.copy_(torch.tensor([-0.2, 0.8, 0.1]))
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
        y = m(x)
        ref, (mb, vb) = sn_reference(x, m)
        torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-10)
        rm, rv = 0.7 * rm + 0.3 * mb, 0.7 * rv + 0.3 * vb
    torch.testing.assert_close(m.running_mean, rm, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(m.running_var, rv, atol=1e-12, rtol=1e-12)
    m.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), sn_reference(x, m, (rm, rv))[0], atol=1e-10, rtol=1e-10)
    x = torch.randn(3, shape[1], 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SwitchNorm(shape[1]).double().train(), (x,))


def bcn_reference(x, m, running=None):
    """Qiao et al.: BN with per-channel affine, then per-sample group statistics, per-group affine."""
    if running is None:
        mean, var = _moments(x, (0, *_spatial(x)))
    else:
        mean, var = _view(running[0], x), _view(running[1], x)
    y = (x - mean) / torch.sqrt(var + m.eps) * _view(m.bn.weight.double(), x) + _view(m.bn.bias.double(), x)
    n, g = x.shape[0], m.groups
    yg = y.reshape(n, g, -1)
    gm, gv = _moments(yg, (2,))
    yg = (yg - gm) / torch.sqrt(gv + m.eps)
    yg = yg * m.weight.double().view(1, g, 1) + m.bias.double().view(1, g, 1)
    return yg.reshape(x.shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_batch_channel_norm_train_and_eval_match_reference(shape):
    torch.manual_seed(1)
    m = BatchChannelNorm(shape[1], momentum=0.3).double()
    assert m.groups == 2  # min(32, 8 / 4)
    with torch.no_grad():
        for p in (m.weight, m.bias, m.bn.weight, m.bn.bias):
            p.uniform_(-1.5, 1.5)
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64) * 3 - 1
        torch.testing.assert_close(m(x), bcn_reference(x, m), atol=1e-10, rtol=1e-10)
        dims = (0, *_spatial(x))
        rm = 0.7 * rm + 0.3 * x.mean(dims)
        rv = 0.7 * rv + 0.3 * x.var(dims)  # the BN part keeps the unbiased variance, as torch's BN
    torch.testing.assert_close(m.bn.running_var, rv, atol=1e-12, rtol=1e-12)
    m.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), bcn_reference(x, m, (rm, rv)), atol=1e-10, rtol=1e-10)


def test_bcn_group_counts():
    assert [bcn_groups(c) for c in (4, 16, 64, 128, 512, 36, 168)] == [1, 4, 16, 32, 32, 9, 28]


def bin_reference(x, m, running=None):
    """Nam & Kim eq. (4): y = γ (ρ x̂_BN + (1 - ρ) x̂_IN) + β, ρ clipped to [0, 1]."""
    if running is None:
        mean, var = _moments(x, (0, *_spatial(x)))
    else:
        mean, var = _view(running[0], x), _view(running[1], x)
    x_bn = (x - mean) / torch.sqrt(var + m.eps)
    mi, vi = _moments(x, _spatial(x))
    x_in = (x - mi) / torch.sqrt(vi + m.eps)
    rho = _view(m.gate.double().clamp(0, 1), x)
    return (rho * x_bn + (1 - rho) * x_in) * _view(m.weight.double(), x) + _view(m.bias.double(), x)


@pytest.mark.parametrize("shape", SHAPES)
def test_batch_instance_norm_train_and_eval_match_reference(shape):
    torch.manual_seed(2)
    m = BatchInstanceNorm(shape[1], momentum=0.3).double()
    with torch.no_grad():
        m.gate.uniform_(0, 1)
        m.gate[0] = 1.4  # an optimizer step past the range: the layer clips it to 1
        m.gate[1] = -0.2
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64) * 2 + 1
        torch.testing.assert_close(m(x), bin_reference(x, m), atol=1e-10, rtol=1e-10)
        dims = (0, *_spatial(x))
        rm, rv = 0.7 * rm + 0.3 * x.mean(dims), 0.7 * rv + 0.3 * x.var(dims)
    assert float(m.gate.detach()[0]) == 1.0 and float(m.gate.detach()[1]) == 0.0
    torch.testing.assert_close(m.running_mean, rm, atol=1e-12, rtol=1e-12)
    m.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(m(x), bin_reference(x, m, (rm, rv)), atol=1e-10, rtol=1e-10)
    assert m.param_lr_mult == {"gate": 10.0}


@pytest.mark.parametrize("kind", ["sn", "bcn", "bin"])
def test_factory_and_convert_norm_know_the_new_kinds(kind):
    layer = make_norm(kind, 16, dim=2, eps=1e-3, momentum=0.01)
    assert norm_kind_of(layer) == kind
    bn = torch.nn.BatchNorm2d(16, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
    net = convert_norm(torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), bn), kind)
    assert norm_kind_of(net[1]) == kind
    inner = net[1].bn if kind == "bcn" else net[1]
    torch.testing.assert_close(inner.running_mean, bn.running_mean)
    if kind in ("sn", "bin"):
        with pytest.raises(ValueError, match="spatial"):
            make_norm(kind, 16, dim=1)(torch.randn(4, 16))


def test_training_engine_gives_bin_gates_ten_times_the_rate_and_no_weight_decay():
    from asc.train.engine import make_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), make_norm("bin", 8))
    opt = make_optimizer(model, {"weight_decay": 1e-3, "weight_decay_on": "all", "lr": 0.1, "momentum": 0.9,
                                 "nesterov": False})
    gate = next(g for g in opt.param_groups if any(p is model[1].gate for p in g["params"]))
    assert gate["lr_mult"] == 10.0 and gate["weight_decay"] == 0.0 and len(gate["params"]) == 1
    others = [g for g in opt.param_groups if g is not gate]
    assert all(g["lr_mult"] == 1.0 and g["weight_decay"] == 1e-3 for g in others)


def test_switch_norm_stays_finite_on_a_constant_channel():
    """E[x²] − E[x]² in float32 can go below zero for a large constant; the variances are clamped."""
    m = SwitchNorm(4, momentum=1.0)
    with torch.no_grad():
        m.var_weight.copy_(torch.tensor([-30.0, -30.0, 30.0]))  # the variance is the BN part's
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5)
    # constant over space, nearly so over the batch: E[x²] − E[x]² of the BN part is -1 in float32
    x[:, 1] = (3000 + 1e-3 * torch.randn(8)).view(8, 1, 1)
    y = m(x)
    assert torch.isfinite(y).all() and (m.running_var >= 0).all()
