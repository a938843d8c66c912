"""Normalization layers: L2BN, the norm registry every model builds its norms from, synchronized BN/L2BN,
and the frequency-wise norms against device shift (IFN, RFN)."""

from asc.nn.freqnorm import InstanceFreqNorm, RelaxedFreqNorm
from asc.nn.hybrid import BatchChannelNorm, BatchInstanceNorm, SwitchNorm
from asc.nn.l2bn import L2_EPS, L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d, l2_batch_norm
from asc.nn.norms import NORM_KINDS, NORMS, NormSpec, convert_norm, convert_sync_norm, make_norm, norm_kind_of
from asc.nn.sync import SyncBatchNorm, SyncL2BatchNorm

__all__ = [
    "L2_EPS",
    "BatchChannelNorm",
    "BatchInstanceNorm",
    "InstanceFreqNorm",
    "L2BatchNorm1d",
    "L2BatchNorm2d",
    "L2BatchNorm3d",
    "NORMS",
    "NORM_KINDS",
    "NormSpec",
    "RelaxedFreqNorm",
    "SwitchNorm",
    "SyncBatchNorm",
    "SyncL2BatchNorm",
    "convert_norm",
    "convert_sync_norm",
    "l2_batch_norm",
    "make_norm",
    "norm_kind_of",
]
