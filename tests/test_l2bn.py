"""L2BN against a float64 reference written straight from the paper's eq. 3 (second form) + BN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asc.nn import L2_EPS, L2BatchNorm1d, L2BatchNorm2d, _kernels, l2_batch_norm

SHAPES = {1: [(6, 5), (6, 5, 7)], 2: [(6, 4, 5, 7)]}


def reference(x, weight, bias, mean=None, var=None, eps=1e-5):
    """x64 reference: x̂ = sqrt(n) x / max(‖x‖, ε); BN over all dims but 1 (batch stats or given)."""
    x = x.double()
    n = x[0].numel()
    norms = torch.sqrt((x.reshape(len(x), -1) ** 2).sum(1)).clamp_min(L2_EPS)
    xh = math.sqrt(n) * x / norms.reshape((-1,) + (1,) * (x.dim() - 1))
    dims = [0] + list(range(2, x.dim()))
    view = (1, -1) + (1,) * (x.dim() - 2)
    if mean is None:
        mean = xh.mean(dims)
        var = ((xh - mean.reshape(view)) ** 2).mean(dims)
    y = (xh - mean.reshape(view)) / torch.sqrt(var.reshape(view) + eps)
    return y * weight.double().reshape(view) + bias.double().reshape(view), xh


def make_layer(shape, dtype=torch.float64):
    cls = L2BatchNorm2d if len(shape) == 4 else L2BatchNorm1d
    m = cls(shape[1]).to(dtype)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    return m


@pytest.fixture(params=["native", "torch"])
def path(request):
    if request.param == "native":
        if not _kernels.available():
            pytest.skip("no C compiler for the native passes")
        yield "native"
    else:
        with _kernels.disabled():
            yield "torch"


@pytest.mark.parametrize("shape", SHAPES[1] + SHAPES[2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_output_and_grads_match_reference(path, shape, dtype):
    torch.manual_seed(0)
    m = make_layer(shape, dtype)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).to(dtype).requires_grad_(True)
    y = m(x)
    xr = x.detach().double().requires_grad_(True)
    w = m.weight.detach().double().requires_grad_(True)
    b = m.bias.detach().double().requires_grad_(True)
    yr, _ = reference(xr, w, b)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(y.double(), yr, atol=tol, rtol=tol)
    g = torch.randn_like(yr)
    y.backward(g.to(dtype))
    yr.backward(g)
    gtol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(x.grad.double(), xr.grad, atol=gtol, rtol=gtol)
    torch.testing.assert_close(m.weight.grad.double(), w.grad, atol=gtol, rtol=gtol)
    torch.testing.assert_close(m.bias.grad.double(), b.grad, atol=gtol, rtol=gtol)


@pytest.mark.parametrize("shape", [(6, 5, 7), (6, 4, 5, 7)])
def test_running_stats_after_several_steps_and_eval(path, shape):
    torch.manual_seed(1)
    m = make_layer(shape)
    m.momentum = 0.3
    c = shape[1]
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(4):
        x = torch.randn(shape, dtype=torch.float64) * (step + 1) + step
        m(x)
        _, xh = reference(x, m.weight.detach(), m.bias.detach())
        dims = [0] + list(range(2, x.dim()))
        count = xh.numel() // c
        rm = 0.7 * rm + 0.3 * xh.mean(dims)
        rv = 0.7 * rv + 0.3 * xh.var(dims, unbiased=True)
        assert count > 1
    torch.testing.assert_close(m.running_mean, rm, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(m.running_var, rv, atol=1e-10, rtol=1e-10)
    assert int(m.num_batches_tracked) == 4
    # eval: the same l2 step, then the running statistics
    m.eval()
    x = (torch.randn(shape, dtype=torch.float64) * 2).requires_grad_(True)
    y = m(x)
    xr = x.detach().clone().requires_grad_(True)
    yr, _ = reference(xr, m.weight.detach(), m.bias.detach(), rm, rv)
    torch.testing.assert_close(y, yr, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(y)
    y.backward(g)
    yr.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (3, 2, 3, 4)])
def test_gradcheck_float64(path, shape):
    torch.manual_seed(2)
    x = (torch.randn(shape, dtype=torch.float64) + 0.5).requires_grad_(True)
    w = torch.rand(shape[1], dtype=torch.float64).add_(0.5).requires_grad_(True)
    b = torch.randn(shape[1], dtype=torch.float64).requires_grad_(True)

    def f(x, w, b):
        return l2_batch_norm(x, None, None, w, b, training=True)

    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-6)


def test_native_and_torch_paths_agree():
    if not _kernels.available():
        pytest.skip("no C compiler for the native passes")
    torch.manual_seed(3)
    x = torch.randn(8, 16, 12, 10) * 4 - 3
    g = torch.randn_like(x)
    layer = make_layer(x.shape, torch.float32)

    def run():
        m = make_layer(x.shape, torch.float32)
        m.load_state_dict(layer.state_dict())
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y.backward(g)
        return y.detach(), xi.grad, m.weight.grad, m.running_var

    native = run()
    with _kernels.disabled():
        fallback = run()
    for a, b in zip(native, fallback):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_zero_sample_stays_finite(path):
    m = make_layer((4, 3, 5, 5))
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    x[1] = 0
    x.requires_grad_(True)
    y = m(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    m.eval()
    assert torch.isfinite(m(x)).all()


def test_batch_of_one_raises_like_batchnorm():
    for bn, l2 in ((nn.BatchNorm1d(3), L2BatchNorm1d(3)), (nn.BatchNorm2d(3), L2BatchNorm2d(3))):
        x = torch.randn((1, 3) if isinstance(bn, nn.BatchNorm1d) else (1, 3, 1, 1))
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bn(x)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            l2(x)
    # a single sample with spatial extent is fine for both
    L2BatchNorm2d(3)(torch.randn(1, 3, 4, 4))


def test_channels_last_matches_contiguous():
    torch.manual_seed(4)
    x = torch.randn(4, 8, 6, 5)
    g = torch.randn_like(x)
    layer = make_layer(x.shape, torch.float32)
    res = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        m = make_layer(x.shape, torch.float32)
        m.load_state_dict(layer.state_dict())
        xi = x.clone().to(memory_format=fmt).requires_grad_(True)
        y = m(xi)
        y.backward(g.to(memory_format=fmt))
        res.append((y.contiguous(), xi.grad.contiguous()))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bfloat16_autocast_computes_stats_in_float32():
    torch.manual_seed(5)
    x = torch.randn(8, 4, 6, 6) * 5 + 3
    m = make_layer(x.shape, torch.float32)
    m2 = make_layer(x.shape, torch.float32)
    m2.load_state_dict(m.state_dict())
    ref = m(x).detach()
    conv_in = x.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m2(conv_in)
    assert y.dtype == torch.bfloat16
    assert m2.running_mean.dtype == torch.float32
    torch.testing.assert_close(m2.running_mean, m.running_mean, atol=0.02, rtol=0.02)
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.05)
    y.float().sum().backward()
    assert conv_in.grad.dtype == torch.bfloat16 and torch.isfinite(conv_in.grad.float()).all()


def test_state_dict_keys_match_batchnorm():
    assert L2BatchNorm2d(7).state_dict().keys() == nn.BatchNorm2d(7).state_dict().keys()
    no_affine = L2BatchNorm1d(7, affine=False).state_dict().keys()
    assert no_affine == nn.BatchNorm1d(7, affine=False).state_dict().keys()
    bn = nn.BatchNorm2d(7)
    bn.running_mean.fill_(2.0)
    l2 = L2BatchNorm2d(7)
    l2.load_state_dict(bn.state_dict())
    assert torch.equal(l2.running_mean, bn.running_mean)


def test_no_affine_and_cumulative_momentum():
    torch.manual_seed(6)
    m = L2BatchNorm2d(3, affine=False, momentum=None).double()
    xs = [torch.randn(4, 3, 5, 5, dtype=torch.float64) + i for i in range(3)]
    for x in xs:
        m(x)
    means = []
    for x in xs:
        _, xh = reference(x, torch.ones(3), torch.zeros(3))
        means.append(xh.mean((0, 2, 3)))
    torch.testing.assert_close(m.running_mean, torch.stack(means).mean(0))
    assert m.weight is None


def test_eval_without_running_stats_uses_batch_statistics():
    torch.manual_seed(7)
    m = L2BatchNorm2d(3, track_running_stats=False).double().eval()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    yr, _ = reference(x, m.weight.detach(), m.bias.detach())
    torch.testing.assert_close(m(x), yr)


def test_scale_invariance_per_sample():
    """The l2 step makes each sample's scale irrelevant: scaling one sample leaves the output unchanged."""
    torch.manual_seed(8)
    m = make_layer((6, 4, 5, 5))
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    y1 = m(x)
    x2 = x.clone()
    x2[2] *= 37.0
    torch.testing.assert_close(m(x2), y1)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5), (0, 3, 4, 5), (2, 3, 0, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_empty_batch_behaves_like_batchnorm(path, shape, training, track):
    """No elements: torch's BatchNorm gives an empty output, an empty dx, zero parameter gradients and
    leaves the running statistics alone (num_batches_tracked still counts the call); so do BN and L2BN."""
    from asc.nn import SyncBatchNorm, SyncL2BatchNorm

    torch_cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    ours_cls = L2BatchNorm2d if len(shape) == 4 else L2BatchNorm1d
    layers = [torch_cls(3, track_running_stats=track), ours_cls(3, track_running_stats=track),
              SyncBatchNorm(3, track_running_stats=track), SyncL2BatchNorm(3, track_running_stats=track)]
    results = []
    for m in layers:
        m.double().train(training)
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-1, 1)
            if track:
                m.running_mean.fill_(0.25)
                m.running_var.fill_(2.0)
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        y = m(x)
        y.sum().backward()
        state = {k: v.clone() for k, v in m.state_dict().items() if k not in ("weight", "bias")}
        results.append((y.shape, y.dtype, x.grad.shape, m.weight.grad, m.bias.grad, state))
    expected = results[0]
    assert expected[0] == shape and torch.equal(expected[3], torch.zeros(3, dtype=torch.float64))
    for got in results[1:]:
        assert got[:3] == expected[:3]
        torch.testing.assert_close(got[3], expected[3], atol=0, rtol=0)
        torch.testing.assert_close(got[4], expected[4], atol=0, rtol=0)
        assert got[5].keys() == expected[5].keys()
        for key, value in expected[5].items():
            assert torch.equal(got[5][key], value), key


def test_empty_batch_between_full_ones_changes_nothing(path):
    """An empty batch in the middle of training leaves the layer where a run without it would be."""
    torch.manual_seed(9)
    xs = [torch.randn(4, 3, 5, 6, dtype=torch.float64) + i for i in range(2)]
    plain, with_empty = make_layer(xs[0].shape), make_layer(xs[0].shape)
    with_empty.load_state_dict(plain.state_dict())
    plain(xs[0]), plain(xs[1])
    with_empty(xs[0]), with_empty(xs[0][:0]), with_empty(xs[1])
    for key in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(with_empty, key), getattr(plain, key), atol=0, rtol=0)
    # and the reference's statistics after those two steps (momentum 0.1 from zeros and ones)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for x in xs:
        _, xh = reference(x, plain.weight.detach(), plain.bias.detach())
        rm, rv = 0.9 * rm + 0.1 * xh.mean((0, 2, 3)), 0.9 * rv + 0.1 * xh.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(with_empty.running_mean, rm, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(with_empty.running_var, rv, atol=1e-12, rtol=1e-12)
    assert int(with_empty.num_batches_tracked) == 3


@pytest.mark.parametrize("shape", [(5, 6, 7, 9), (5, 6, 11)])
def test_the_rms_norm_form_an_export_traces_is_the_l2bn_formula(shape):
    """What `asc export` writes as RMSNormalization (opset 23): eval-mode L2BN, float64 formula, with a
    zero sample (stays the shift: no NaN) and one of norm 1e-6 (far above l2_eps, so no floor)."""
    from asc.nn.l2bn import traced_as_rms_norm

    torch.manual_seed(0)
    m = make_layer(shape, torch.float32).eval()
    with torch.no_grad():
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(shape)
    x[1] = 0
    x[2] *= 1e-6 / float(x[2].norm())
    expected, _ = reference(x, m.weight, m.bias, m.running_mean.double(), m.running_var.double())
    with _kernels.disabled(), traced_as_rms_norm(), torch.no_grad():
        got = m(x)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)
    view = (-1,) + (1,) * (len(shape) - 2)
    shift = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
    assert torch.allclose(got[1], shift.reshape(view).expand_as(got[1]), atol=1e-6)
