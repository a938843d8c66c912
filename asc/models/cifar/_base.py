"""Shared shape of the CIFAR models: body -> global average pool -> [head norm] -> linear."""

from __future__ import annotations

from torch import Tensor, nn

from asc.nn import make_norm


class CifarNet(nn.Module):
    """`body` maps images to a feature map (B, D, h, w); `embed` pools it to (B, D); `fc` classifies.

    `head_norm` (a make_norm kind or None) inserts a 1-d norm on the pooled features, i.e. on the input
    of the classification layer; `embed` returns the features after it, exactly what `fc` sees.
    """

    def __init__(self, body: nn.Module, embed_dim: int, num_classes: int,
                 head_norm: str | None = None) -> None:
        super().__init__()
        self.body = body
        self.embed_dim = embed_dim
        self.head_norm = make_norm(head_norm, embed_dim, dim=1) if head_norm else nn.Identity()
        self.fc = nn.Linear(embed_dim, num_classes)
        init_weights(self)

    def embed(self, x: Tensor) -> Tensor:
        return self.head_norm(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, embedding) from one pass, for the angle metrics during training."""
        emb = self.embed(x)
        return self.fc(emb), emb


def init_weights(model: nn.Module) -> None:
    """He-normal (fan_out) convolutions, as in the CIFAR ResNet/DenseNet/ResNeXt papers' code.

    Norm layers keep their own defaults (weight 1, bias 0) and linear layers torch's default.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
