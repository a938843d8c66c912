"""Synchronized BN and L2BN: 2 processes (gloo, CPU) with a global batch B train like 1 process with B."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from asc.models import create_model
from asc.nn import (
    L2BatchNorm2d,
    SyncBatchNorm,
    SyncL2BatchNorm,
    convert_sync_norm,
    make_norm,
    norm_kind_of,
)

BATCH, STEPS = 8, 3


def _model(norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    # a real model of ours, small; dropout off so both runs draw nothing at random
    return create_model("fcnn", num_classes=10, in_channels=3, norm=norm, width_mult=0.06, dropout=0.0,
                        norm_momentum=0.1)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, BATCH, 3, 32, 40, generator=g) * 2 + 0.5
    y = torch.randint(0, 10, (STEPS, BATCH), generator=g)
    return x, y


def _train(model, x, y, rows, ddp_model=None) -> dict:
    """STEPS SGD steps on rows `rows` of each global batch; outputs and gradients of the first step."""
    net = ddp_model or model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    out: dict = {}
    for step in range(STEPS):
        opt.zero_grad()
        logits = net(x[step, rows])
        F.cross_entropy(logits, y[step, rows]).backward()
        if step == 0:
            out["logits"] = logits.detach().clone()
            out["grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return out


def _worker(rank: int, world: int, port: int, norm: str, path: str) -> None:
    _init_gloo(rank, world, port)
    try:
        model = convert_sync_norm(_model(norm))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        x, y = _data()
        local = BATCH // world
        res = _train(model, x, y, slice(rank * local, (rank + 1) * local), ddp)
        torch.save(res, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(fn, *args, world: int = 2, timeout: float = 60.0) -> None:
    """fn(rank, world, port, *args) in `world` processes; one that fails or hangs fails the test."""
    ctx = mp.start_processes(fn, args=(world, _free_port(), *args), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=0.5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            pytest.fail(f"{world} processes still running after {timeout:.0f} s: a rank hangs")


def _init_gloo(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # a collective that one rank never joins fails after this instead of blocking the test run
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))


@pytest.mark.parametrize("norm", ["bn", "l2bn"])
def test_two_processes_train_like_one(norm, tmp_path):
    x, y = _data()
    one = _train(_model(norm), x, y, slice(0, BATCH))
    path = str(tmp_path / "res")
    _run_ranks(_worker, norm, path, timeout=120)
    parts = [torch.load(f"{path}.{r}", weights_only=True) for r in range(2)]

    deviation = {}
    logits = torch.cat([p["logits"] for p in parts])
    deviation["outputs"] = float((logits - one["logits"]).abs().max())
    # DDP averages the per-process gradients of per-process mean losses: the global mean's gradient
    grads = one["grads"].items()
    deviation["gradients"] = max(float((parts[0]["grads"][n] - g).abs().max()) for n, g in grads)
    for key, v in one["state"].items():
        for p in parts:
            if v.is_floating_point():
                deviation[key] = float((p["state"][key] - v).abs().max())
            else:
                assert torch.equal(p["state"][key], v), key
    assert all(torch.equal(parts[0]["grads"][n], parts[1]["grads"][n]) for n in one["grads"])
    worst = max(deviation, key=deviation.get)
    assert deviation[worst] < 1e-5, (worst, deviation[worst])
    assert any("running_var" in k for k in one["state"])


def test_convert_sync_norm_keeps_the_l2_step_and_the_state_dict():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), L2BatchNorm2d(8, eps=1e-3, momentum=0.01),
                                torch.nn.Sequential(make_norm("bn", 8)), make_norm("lnbn", 8),
                                make_norm("bcn", 8))
    keys = {k: v.shape for k, v in model.state_dict().items()}
    converted = convert_sync_norm(model)
    assert isinstance(converted[1], SyncL2BatchNorm) and norm_kind_of(converted[1]) == "l2bn"
    assert converted[1].eps == 1e-3 and converted[1].momentum == 0.01
    assert type(converted[2][0]) is SyncBatchNorm and norm_kind_of(converted[2][0]) == "bn"
    assert norm_kind_of(converted[3]) == "lnbn"  # other kinds keep their own layer, BN parts included
    assert not isinstance(converted[4].bn, SyncBatchNorm)
    assert {k: v.shape for k, v in converted.state_dict().items()} == keys
    # outside a process group the synchronized layers compute exactly what the plain ones do
    torch.manual_seed(3)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), L2BatchNorm2d(8))
    synced = convert_sync_norm(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), L2BatchNorm2d(8)))
    synced.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 9, 9)
    torch.testing.assert_close(synced(x), plain(x), atol=1e-5, rtol=1e-5)


# (kind, shape of one sample): BN and L2BN, 2-D maps, vectors and sequences
EMPTY_CASES = [("bn", (3, 4, 5)), ("l2bn", (3, 4, 5)), ("bn", (3,)), ("l2bn", (3, 6))]
SPLITS = [(2, 0), (0, 2)]  # samples on rank 0 and rank 1


def _norm_layer(kind: str, sample: tuple) -> torch.nn.Module:
    torch.manual_seed(0)
    m = make_norm(kind, sample[0], dim=2 if len(sample) == 3 else 1, momentum=0.3).double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
    return m


def _batch(sample: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, *sample), generator=g, dtype=torch.float64) * 2 + 1
    return x, torch.randn(x.shape, generator=g, dtype=torch.float64)


def _steps(m: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor) -> dict:
    """Two training steps (forward and backward) on x, then one in eval; what each gave."""
    out: dict = {"train": []}
    for _ in range(2):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        (y * gy).sum().backward()
        out["train"].append({"y": y.detach(), "dx": xi.grad, "dw": m.weight.grad.clone(),
                             "db": m.bias.grad.clone()})
    m.eval()
    out["eval"] = m(x).detach()
    out["state"] = {k: v.clone() for k, v in m.state_dict().items()}
    return out


def _empty_rank_worker(rank: int, world: int, port: int, path: str) -> None:
    _init_gloo(rank, world, port)
    try:
        res = {}
        for case in EMPTY_CASES:
            x, gy = _batch(case[1])
            for split in SPLITS:
                start = sum(split[:rank])
                rows = slice(start, start + split[rank])
                res[case, split] = _steps(convert_sync_norm(_norm_layer(*case)), x[rows], gy[rows])
        torch.save(res, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _close(got: torch.Tensor, want: torch.Tensor, what: str, tol: float = 1e-10) -> None:
    torch.testing.assert_close(got, want, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")


def test_a_rank_with_an_empty_batch_joins_every_all_reduce(tmp_path):
    """2 samples on one rank and none on the other train like 1 process with the 2 samples."""
    path = str(tmp_path / "res")
    _run_ranks(_empty_rank_worker, path)
    parts = [torch.load(f"{path}.{r}", weights_only=False) for r in range(2)]
    for case in EMPTY_CASES:
        x, gy = _batch(case[1])
        one = _steps(_norm_layer(*case), x, gy)
        for split in SPLITS:
            got = [p[case, split] for p in parts]
            for step, ref in enumerate(one["train"]):
                steps = [g["train"][step] for g in got]
                for key in ("y", "dx"):  # per sample: the ranks' rows together are the whole batch
                    _close(torch.cat([s[key] for s in steps]), ref[key], f"{case} {split} {key}")
                for key in ("dw", "db"):  # per process: DDP's all-reduce of these sums the ranks' parts
                    _close(sum(s[key] for s in steps), ref[key], f"{case} {split} {key}")
                empty = steps[split.index(0)]
                assert empty["y"].shape == (0, *case[1]) and empty["dx"].shape == (0, *case[1])
                assert not empty["dw"].any() and not empty["db"].any()
            _close(torch.cat([g["eval"] for g in got]), one["eval"], f"{case} {split} eval")
            for g in got:  # both ranks' running statistics move as the single process's do
                for key, value in one["state"].items():
                    _close(g["state"][key], value, f"{case} {split} {key}", tol=1e-12)


def _one_sample_worker(rank: int, world: int, port: int, path: str) -> None:
    _init_gloo(rank, world, port)
    try:
        res = {}
        for kind, sample in [("bn", (3, 1, 1)), ("l2bn", (3, 1, 1)), ("bn", (3,)), ("l2bn", (3,))]:
            layer = convert_sync_norm(_norm_layer(kind, sample))
            before = {k: v.clone() for k, v in layer.state_dict().items() if "running" in k}
            x = torch.ones((1 - rank, *sample), dtype=torch.float64, requires_grad=True)
            try:
                layer(x)
                res[kind, sample] = "no error"
            except ValueError as exc:
                res[kind, sample] = str(exc)
            assert all(torch.equal(layer.state_dict()[k], v) for k, v in before.items())
        # the ranks are still in step: one more collective completes
        total = torch.ones(1)
        dist.all_reduce(total)
        res["after"] = float(total)
        torch.save(res, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_one_sample_over_all_ranks_raises_on_every_rank(tmp_path):
    """1 sample on rank 0 and none on rank 1: the global count is 1, and torch's BatchNorm would raise
    on 1 value per channel; both ranks raise that ValueError instead of returning beta."""
    path = str(tmp_path / "res")
    _run_ranks(_one_sample_worker, path)
    for rank in range(2):
        res = torch.load(f"{path}.{rank}", weights_only=False)
        assert res.pop("after") == 2.0
        assert len(res) == 4
        for case, message in res.items():
            assert "more than 1 value per channel" in message, (rank, case, message)
