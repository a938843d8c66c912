"""`norm_kind_of`: which make_norm kind a layer is, read from the layer itself.

Every norm class of this package declares its kind (`norm_kind`), so this module needs none of
them, and both the factory (norms.py) and the synchronized layers (sync.py) can import it without
importing each other.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def norm_kind_of(module: nn.Module) -> str | None:
    """The make_norm kind that built `module`, or None if it is not a norm layer."""
    if getattr(module, "part_of_norm", False):  # the BN step inside a composite norm
        return None
    kind = getattr(module, "norm_kind", None)
    if kind:
        return kind
    if isinstance(module, _BatchNorm):  # torch's BatchNorm1d/2d/3d and SyncBatchNorm
        return "bn"
    if isinstance(module, nn.GroupNorm):
        if module.num_groups == 1:
            return "ln"
        if module.num_groups == module.num_channels:
            return "in"
        return f"gn{module.num_channels // module.num_groups}"
    return None
