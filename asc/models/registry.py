"""Model registry: `@register_model` on a builder, `create_model(name, ...)` to build one.

Every builder takes (num_classes, in_channels, norm, **kw) and builds all of its norm layers with
`asc.nn.make_norm(norm, ...)`, so the norm kind is one argument for every model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from asc.nn import NORM_KINDS

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a model builder under its function name (or `name`)."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key] is not f:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


_BUILTIN = ("asc.models.resnet17", "asc.models.fcnn", "asc.models.cifar")


def _load_builtin() -> None:
    """Import the model modules so that their @register_model decorators run."""
    for module in _BUILTIN:
        importlib.import_module(module)


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, norm: str = "bn", **kw) -> nn.Module:
    """Build a registered model; unknown names and norm kinds raise ValueError listing the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    if norm not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {norm!r}; known kinds: {', '.join(NORM_KINDS)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)
