"""Normalization layers: L2BN and the factory every model builds its norms with."""

from asc.nn.l2bn import L2_EPS, L2BatchNorm1d, L2BatchNorm2d, L2BatchNorm3d, l2_batch_norm
from asc.nn.norms import NORM_KINDS, convert_norm, make_norm, norm_kind_of

__all__ = [
    "L2_EPS",
    "L2BatchNorm1d",
    "L2BatchNorm2d",
    "L2BatchNorm3d",
    "NORM_KINDS",
    "convert_norm",
    "l2_batch_norm",
    "make_norm",
    "norm_kind_of",
]
