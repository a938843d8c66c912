"""SGD as Keras runs it, for the paper profiles: the velocity is built from lr-scaled gradients.

PyTorch:  buf = m * buf + g;        p -= lr * buf
Keras:    v   = m * v - lr * g;     p += v          (nesterov: p += m * v - lr * g)

With a constant rate the two are the same. They part when the rate changes: after an SGDR restart
(1e-5 -> 0.1) PyTorch's buffer, built from raw gradients, is multiplied by the new large rate, so the
first step after a unit-gradient restart is 0.999 here against 0.10 in Keras. Hu et al. trained with
Keras, so the paper profiles use this one (`train.momentum_style: keras`).
"""

from __future__ import annotations

import torch


class KerasSGD(torch.optim.Optimizer):
    """SGD with Keras' momentum; weight decay added to the gradient (as torch.optim.SGD does)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings: lr {lr}, momentum {momentum}, "
                             f"weight_decay {weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if m == 0:
                    p.add_(g, alpha=-lr)
                    continue
                state = self.state[p]
                v = state.get("velocity")
                if v is None:
                    v = state["velocity"] = torch.zeros_like(p)
                v.mul_(m).add_(g, alpha=-lr)
                if group["nesterov"]:
                    p.add_(v, alpha=m).add_(g, alpha=-lr)
                else:
                    p.add_(v)
        return loss
