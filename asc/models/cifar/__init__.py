"""CIFAR-sized image classifiers of the paper's Table 1 (32x32 inputs), registered as `cifar_*`.

Every model has `embed(x)` -> (B, D), the features the final linear classifier sees (the paper's
angle metrics use them), and `forward(x)` -> logits (B, num_classes). All norm layers come from
`asc.nn.make_norm(norm, ...)`.
"""

from asc.models.cifar import densenet, regnet, resnet, resnext, vgg  # noqa: F401 - registers the builders
from asc.models.cifar._base import CifarNet

__all__ = ["CifarNet"]
