"""The norm registry: one name -> factory map (`NORMS`) that every model, the converters and the CLI read.

`make_norm(kind, C)` builds a kind, `convert_norm` swaps every BatchNorm of a model for one,
`convert_sync_norm` swaps each layer whose kind has a synchronized twin for it, and `norm_kind_of`
names the kind of a layer. Each norm class declares its kind (`norm_kind`); the entries' `recognizes`
name the kind of torch's own layers, which declare none. `asc.norm_kinds` reads the names and labels
from this file without importing torch, for argument parsers and scripts.

Adding a norm is one entry here (and its class, here or in a module of its own). Keep `NORMS` a dict
literal with a string `label=` in every entry: `asc.norm_kinds` parses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from asc.nn.freqnorm import InstanceFreqNorm, RelaxedFreqNorm
from asc.nn.hybrid import BatchChannelNorm, BatchInstanceNorm, SwitchNorm
from asc.nn.l2bn import L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d
from asc.nn.prenorm import PreNormBatchNorm1d, PreNormBatchNorm2d, PreNormBatchNorm3d
from asc.nn.sync import SyncBatchNorm, SyncL2BatchNorm


@dataclass(frozen=True)
class NormSpec:
    """One registered kind.

    build(num_features, dim, *, affine, eps, momentum, track_running_stats, **options) -> the layer;
    `options` are the extra keyword arguments the kind takes (make_norm passes them on), `sync` its
    layer with statistics over all processes (None: per-process statistics, or none at all), and
    `recognizes` tells a torch layer of this kind that declares no `norm_kind` (built outside make_norm).
    """

    build: Callable[..., nn.Module]
    label: str
    options: tuple[str, ...] = ()
    sync: type[SyncBatchNorm] | None = None
    recognizes: Callable[[nn.Module], bool] | None = None


def _per_dim(classes: dict[int, type], **fixed: Any) -> Callable[..., nn.Module]:
    """A BatchNorm-like class per input dimension (1: (N, C[, L]), 2: (N, C, H, W), 3: 5-D)."""

    def build(c: int, dim: int, **kw: Any) -> nn.Module:
        return classes[dim](c, **fixed, **kw)

    return build


def _any_dim(cls: type) -> Callable[..., nn.Module]:
    def build(c: int, dim: int, **kw: Any) -> nn.Module:
        return cls(c, **kw)

    return build


def _stateless(cls: type) -> Callable[..., nn.Module]:
    """A layer without running statistics: momentum and track_running_stats do not apply."""

    def build(c: int, dim: int, *, affine: bool, eps: float, momentum: float | None,
              track_running_stats: bool, **options: Any) -> nn.Module:
        return cls(c, eps=eps, affine=affine, **options)

    return build


def _group_norm(per_group: int | None = None, groups: Callable[[int], int] | None = None
                ) -> Callable[..., nn.Module]:
    """GroupNorm with `per_group` channels per group, or `groups(C)` groups."""

    def build(c: int, dim: int, *, affine: bool, eps: float, **_: Any) -> nn.Module:
        if per_group is not None and c % per_group:
            raise ValueError(f"gn{per_group}: {c} channels are not divisible into groups of {per_group}")
        return nn.GroupNorm(groups(c) if groups else c // per_group, c, eps=eps, affine=affine)

    return build


def _identity(c: int, dim: int, **_: Any) -> nn.Module:
    return nn.Identity()


def _is_group_norm(groups: Callable[[nn.GroupNorm], bool]) -> Callable[[nn.Module], bool]:
    return lambda m: isinstance(m, nn.GroupNorm) and groups(m)


NORMS: dict[str, NormSpec] = {
    "bn": NormSpec(build=_per_dim({1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}),
                   label="BatchNorm", sync=SyncBatchNorm,
                   recognizes=lambda m: isinstance(m, _BatchNorm)),  # torch's BN classes, SyncBatchNorm
    "l2bn": NormSpec(build=_per_dim({1: L2BatchNorm1d, 2: L2BatchNorm2d, 3: L2BatchNorm3d}),
                     label="l2 norm of each sample, then BN (the paper's method)", sync=SyncL2BatchNorm),
    "lnbn": NormSpec(build=_per_dim({1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d},
                                    pre="ln"), label="layer norm (no affine), then BN"),
    "inbn": NormSpec(build=_per_dim({1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d},
                                    pre="in"), label="instance norm (no affine), then BN"),
    "pnbn": NormSpec(build=_per_dim({1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d},
                                    pre="pn"), label="positional norm over channels (no affine), then BN"),
    "ln": NormSpec(build=_group_norm(groups=lambda c: 1), label="layer norm, GroupNorm(1, C)",
                   recognizes=_is_group_norm(lambda m: m.num_groups == 1)),
    "in": NormSpec(build=_group_norm(groups=lambda c: c), label="instance norm, GroupNorm(C, C)",
                   recognizes=_is_group_norm(lambda m: m.num_groups == m.num_channels)),
    "gn4": NormSpec(build=_group_norm(per_group=4), label="GroupNorm, 4 channels a group",
                    recognizes=_is_group_norm(lambda m: m.num_channels == 4 * m.num_groups)),
    "gn8": NormSpec(build=_group_norm(per_group=8), label="GroupNorm, 8 channels a group",
                    recognizes=_is_group_norm(lambda m: m.num_channels == 8 * m.num_groups)),
    "sn": NormSpec(build=_any_dim(SwitchNorm), label="Switchable Normalization"),
    "bcn": NormSpec(build=_any_dim(BatchChannelNorm), label="Batch-Channel Normalization"),
    "bin": NormSpec(build=_any_dim(BatchInstanceNorm), label="Batch-Instance Normalization"),
    "ifn": NormSpec(build=_stateless(InstanceFreqNorm), label="instance frequency-wise norm"),
    "rfn": NormSpec(build=_stateless(RelaxedFreqNorm), options=("relax",),
                    label="relaxed instance frequency-wise norm, 0.5 LN + 0.5 IFN"),
    "ifnbn": NormSpec(build=_per_dim({1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d},
                                     pre="ifn"), label="IFN (no affine), then BN"),
    "rfnbn": NormSpec(build=_per_dim({1: PreNormBatchNorm1d, 2: PreNormBatchNorm2d, 3: PreNormBatchNorm3d},
                                     pre="rfn"), label="RFN (no affine, 0.5 LN + 0.5 IFN), then BN"),
    "none": NormSpec(build=_identity, label="no normalization"),
}

#: the registered kinds, in the registry's order
NORM_KINDS: tuple[str, ...] = tuple(NORMS)


def _spec(kind: str) -> NormSpec:
    if kind not in NORMS:
        raise ValueError(f"unknown norm kind {kind!r}; known kinds: {', '.join(NORMS)}")
    return NORMS[kind]


def make_norm(kind: str, num_features: int, dim: int = 2, affine: bool = True, *, eps: float = 1e-5,
              momentum: float | None = 0.1, track_running_stats: bool = True, **options: Any) -> nn.Module:
    """Build one normalization layer of `kind` for `num_features` channels.

    `dim` is 1 for (N, C[, L]) inputs, 2 for (N, C, H, W), 3 for (N, C, D, H, W); kinds without a
    class per dimension accept any. `options` are the kind's own settings (rfn: relax).
    """
    spec = _spec(kind)
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = f"it takes: {', '.join(spec.options)}" if spec.options else "it takes none"
        raise ValueError(f"norm kind {kind!r} has no option {unknown[0]!r} ({takes})")
    layer = spec.build(num_features, dim, affine=affine, eps=eps, momentum=momentum,
                       track_running_stats=track_running_stats, **options)
    if not isinstance(layer, nn.Identity) and getattr(layer, "norm_kind", None) is None:
        layer.norm_kind = kind  # torch's GroupNorm: gn8 on 8 channels is one group, like ln
    return layer


def norm_kind_of(module: nn.Module) -> str | None:
    """The registered kind of `module`, or None if it is not a norm layer of one.

    A layer's own `norm_kind` first; torch's layers, which declare none, by the entries' `recognizes`
    in registry order (a GroupNorm with one group is `ln`, one with a channel a group `in`; one whose
    group size no entry names is None). The BN step inside a composite norm (`part_of_norm`) is None.
    """
    if getattr(module, "part_of_norm", False):
        return None
    kind = getattr(module, "norm_kind", None)
    if kind:
        return kind
    return next((name for name, spec in NORMS.items() if spec.recognizes and spec.recognizes(module)), None)


def _replacement(old: _BatchNorm, kind: str) -> nn.Module:
    dim = 1 if isinstance(old, nn.BatchNorm1d) else 3 if isinstance(old, nn.BatchNorm3d) else 2
    new = make_norm(kind, old.num_features, dim=dim, affine=old.affine, eps=old.eps, momentum=old.momentum,
                    track_running_stats=old.track_running_stats)
    target = new.bn if isinstance(new, BatchChannelNorm) else new  # BCN's BN part takes BN's state
    own = target.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(kept, strict=False)
    new.train(old.training)
    param = next(old.parameters(), None)
    if param is None and old.running_mean is not None:
        param = old.running_mean
    return new.to(param.device) if param is not None else new


def convert_norm(module: nn.Module, kind: str) -> nn.Module:
    """Replace every BatchNorm in `module` (in place) by `kind`; returns the converted module.

    Keeps affine, eps, momentum and track_running_stats, and copies weight, bias and running
    statistics wherever the new layer has them with the same shape.
    """
    _spec(kind)
    if isinstance(module, _BatchNorm):
        return _replacement(module, kind)
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and not getattr(child, "part_of_norm", False):
            setattr(module, name, _replacement(child, kind))
        elif norm_kind_of(child) is None:  # not into other norm layers
            convert_norm(child, kind)
    return module


def convert_sync_norm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Swap every layer whose kind has a synchronized layer (`NormSpec.sync`: bn, l2bn) for it, in place
    and sharing parameters and buffers (the state dict is unchanged); returns the module.

    Only layers of exactly the classes the synchronized layer `replaces` are swapped (a subclass may
    change forward: the pre-norm kinds subclass BatchNorm). Every other norm layer (lnbn, inbn, pnbn,
    sn, bcn, bin, with the BN parts inside them) keeps per-process batch statistics; ifn and rfn have
    none.
    """

    def swap(m: nn.Module) -> nn.Module | None:
        kind = norm_kind_of(m)
        sync = NORMS[kind].sync if kind in NORMS else None
        if sync is None or isinstance(m, sync) or type(m) not in sync.replaces:
            return None
        return sync.from_layer(m, process_group)

    top = swap(module)
    if top is not None:
        return top
    for name, child in list(module.named_children()):
        new = swap(child)
        if new is not None:
            setattr(module, name, new)
        elif norm_kind_of(child) is None:  # not into other norm layers
            convert_sync_norm(child, process_group)
    return module
