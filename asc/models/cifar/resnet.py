"""He et al.'s CIFAR ResNets (depth 6n+2: 20, 32, 44, 56, 110), widths 16/32/64.

Post-activation basic blocks (conv-norm-ReLU-conv-norm, add, ReLU). Shortcuts that change shape use
option A of He et al. (2016), the one of their CIFAR experiments: stride-2 subsampling plus zero
channels, no parameters; option B (1x1 conv + norm) is `shortcut="B"`. With option A the counts are
the quoted ones (ResNet-56 0.85 M, ResNet-110 1.7 M for 10 classes; 0.86 M / 1.73 M for 100).

`l2bn_parts` (the paper's Table 4, applying L2BN to parts of ResNet-56) puts "l2bn" norms in the named
parts and `norm` everywhere else. Parts:
    stem        the norm after the first 3x3 convolution
    stage1      blocks of the 16-channel stage ("ResStage 1");  stage2, stage3 likewise (32, 64 channels)
    stages2-3   stage2 and stage3
    all         stem and all stages: every norm of the network, the same model as norm="l2bn"
    classifier  an L2BN1d on the pooled features, the input of the classification layer
    last        the network's last existing norm (stage 3's last block, second norm), no layer added
Combine with "+" or ",", e.g. "stage1+classifier"; "none" (or None) names no part.

"Only classification layer" of Table 4 has two readings. `classifier`: L2BN on the features the final
linear layer classifies; the paper's analysis (its eqs. 1-2, vectors X_i in R^d, and the angle metrics
"only meaningful for the classification layer") is about exactly those features, but a CIFAR ResNet
has no norm there, so one is added, and `head_norm="bn"` (a plain BN1d there) is the control that
tells the l2 step's effect from the added layer's. `last`: L2BN in place of the last norm the network
already has, nearest the classifier, with nothing added.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn

from asc.models.cifar._base import CifarNet, conv1x1, conv3x3
from asc.models.registry import register_model
from asc.nn import make_norm

WIDTHS = (16, 32, 64)
PARTS = ("stem", "stage1", "stage2", "stage3", "classifier", "last")
_ALIASES = {"all": ("stem", "stage1", "stage2", "stage3"), "stages2-3": ("stage2", "stage3"),
            "stages1-3": ("stage1", "stage2", "stage3")}


def parse_parts(spec: str | Iterable[str] | None) -> frozenset[str]:
    """'stage1+classifier' / ['stage1', 'classifier'] / None -> a set of PARTS; ValueError if unknown."""
    if spec is None:
        return frozenset()
    tokens = spec.replace(",", "+").split("+") if isinstance(spec, str) else list(spec)
    out: set[str] = set()
    for tok in (t.strip().lower() for t in tokens):
        if tok in ("", "none"):
            continue
        if tok in _ALIASES:
            out.update(_ALIASES[tok])
        elif tok in PARTS:
            out.add(tok)
        else:
            known = ", ".join(PARTS + tuple(_ALIASES) + ("none",))
            raise ValueError(f"unknown l2bn part {tok!r}; known parts: {known}")
    return frozenset(out)


class ShortcutA(nn.Module):
    """Parameter-free shortcut: take every `stride`-th pixel, pad the new channels with zeros."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, shortcut: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = make_norm(norm, c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(c_in, c_out, stride)
        else:
            self.shortcut = nn.Sequential(conv1x1(c_in, c_out, stride), make_norm(norm, c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetBody(nn.Module):
    def __init__(self, depth: int, in_channels: int, part_norm: dict[str, str], shortcut: str) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, WIDTHS[0])
        self.bn1 = make_norm(part_norm["stem"], WIDTHS[0])
        c_in = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            stage = f"stage{i + 1}"
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(c_in, width, stride, part_norm[stage], shortcut))
                c_in = width
            self.add_module(stage, nn.Sequential(*blocks))
        if part_norm["last"] != part_norm["stage3"]:
            self.stage3[-1].bn2 = make_norm(part_norm["last"], WIDTHS[-1])

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.stage3(self.stage2(self.stage1(x)))


class CifarResNet(CifarNet):
    def __init__(self, depth: int, num_classes: int = 100, in_channels: int = 3, norm: str = "bn",
                 l2bn_parts: str | Iterable[str] | None = None, head_norm: str | None = None,
                 shortcut: str = "A") -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv), got {shortcut!r}")
        parts = parse_parts(l2bn_parts)
        if "stage3" in parts:
            parts = parts | {"last"}  # the last norm belongs to stage 3
        part_norm = {p: ("l2bn" if p in parts else norm) for p in PARTS}
        if "classifier" in parts:
            if head_norm not in (None, "l2bn"):
                raise ValueError(f"l2bn_parts names 'classifier' but head_norm is {head_norm!r}")
            head_norm = "l2bn"
        self.depth, self.l2bn_parts = depth, tuple(p for p in PARTS if p in parts)
        super().__init__(ResNetBody(depth, in_channels, part_norm, shortcut), WIDTHS[-1], num_classes,
                         head_norm=head_norm)


def _builder(depth: int):
    def build(num_classes: int = 100, in_channels: int = 3, norm: str = "bn", **kw) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, norm=norm, **kw)

    build.__name__ = f"cifar_resnet{depth}"
    build.__doc__ = (f"ResNet-{depth} for 32x32 images; kw: l2bn_parts, head_norm, shortcut "
                     "(see asc.models.cifar.resnet).")
    return build


for _depth in (20, 32, 44, 56, 110):
    register_model(_builder(_depth))


def stage_of(model: CifarResNet) -> dict[str, nn.Module]:
    """Named parts of a CIFAR ResNet, for inspecting which norm each part uses."""
    body = model.body
    return {"stem": body.bn1, "stage1": body.stage1, "stage2": body.stage2, "stage3": body.stage3,
            "classifier": model.head_norm, "last": body.stage3[-1].bn2}


__all__ = ["CifarResNet", "parse_parts", "stage_of"]
