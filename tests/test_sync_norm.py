"""Synchronized BN and L2BN: 2 processes (gloo, CPU) with a global batch B train like 1 process with B."""

from __future__ import annotations

import os
import socket

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
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
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


@pytest.mark.parametrize("norm", ["bn", "l2bn"])
def test_two_processes_train_like_one(norm, tmp_path):
    x, y = _data()
    one = _train(_model(norm), x, y, slice(0, BATCH))
    path = str(tmp_path / "res")
    mp.spawn(_worker, args=(2, _free_port(), norm, path), nprocs=2, join=True)
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
