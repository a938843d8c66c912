"""Normalization layers: L2BN, the factory every model builds its norms with, synchronized BN/L2BN."""

from asc.nn.hybrid import BatchChannelNorm, BatchInstanceNorm, SwitchNorm
from asc.nn.kinds import norm_kind_of
from asc.nn.l2bn import L2_EPS, L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d, l2_batch_norm
from asc.nn.norms import NORM_KINDS, convert_norm, make_norm
from asc.nn.sync import SyncBatchNorm, SyncL2BatchNorm, convert_sync_norm

__all__ = [
    "L2_EPS",
    "BatchChannelNorm",
    "BatchInstanceNorm",
    "L2BatchNorm1d",
    "L2BatchNorm2d",
    "L2BatchNorm3d",
    "NORM_KINDS",
    "SwitchNorm",
    "SyncBatchNorm",
    "SyncL2BatchNorm",
    "convert_norm",
    "convert_sync_norm",
    "l2_batch_norm",
    "make_norm",
    "norm_kind_of",
]
