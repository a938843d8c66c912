"""DCASE complexity: a hand count on a tiny conv net, the limits' verdicts, and the width presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from asc.complexity import DCASE_2022_LIMITS, TAU2022_INPUT_SHAPE, complexity, describe
from asc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    """conv 2->4 (3x3, same size, bias), BN, global mean, linear 4->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=True)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean(dim=(2, 3)))


def test_hand_count_of_a_tiny_conv_net():
    c = complexity(TinyNet(), (2, 5, 6), clip_seconds=0.5)
    # parameters: conv 4*2*3*3 weights + 4 biases, BN 4 gammas + 4 betas (running statistics are buffers),
    # linear 4*3 weights + 3 biases
    params = (4 * 2 * 3 * 3 + 4) + (4 + 4) + (4 * 3 + 3)
    assert params == 99
    # MACs: each of the 4 * 5 * 6 conv outputs takes 2 * 3 * 3 products; the linear layer 4 * 3 (biases,
    # the norm and the mean are additions, which the challenge's counting leaves out as torch's does)
    macs = 4 * 5 * 6 * (2 * 3 * 3) + 4 * 3
    assert macs == 2172
    assert c["params"] == params
    assert c["macs_per_clip"] == macs
    assert c["macs_per_second"] == macs * 2  # a 0.5-s clip: two clips per second of audio
    assert c["bytes"] == {"float32": 4 * params, "float16": 2 * params, "int8": params}
    assert c["input_shape"] == [2, 5, 6]
    assert c["fits_dcase_2022"] and c["fits_in"] == ["float32", "float16", "int8"]
    assert c["limits"]["param_bytes"] == 131072 and c["limits"]["macs_per_second"] == 30_000_000


def test_which_precision_makes_it_fit():
    net = TinyNet()
    c = complexity(net, (2, 5, 6), 0.5, limits={**DCASE_2022_LIMITS, "param_bytes": 150})
    assert c["fits_in"] == ["int8"] and c["fits_dcase_2022"]
    assert "fits DCASE 2022-2025 Task 1 with parameters in int8" in describe(c)
    c = complexity(net, (2, 5, 6), 0.5, limits={**DCASE_2022_LIMITS, "param_bytes": 50})
    assert c["fits_in"] == [] and not c["fits_dcase_2022"]
    assert "even in int8" in describe(c)
    c = complexity(net, (2, 5, 6), 0.5, limits={**DCASE_2022_LIMITS, "macs_per_second": 4000})
    assert c["fits_in"] and not c["macs_fit"] and not c["fits_dcase_2022"]
    assert "over 0.004 M MACs per second" in describe(c)


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), "x"])
def test_clip_length_must_be_positive(seconds):
    with pytest.raises(ConfigError, match="clip length"):
        complexity(TinyNet(), (2, 5, 6), seconds)


@pytest.mark.parametrize("config, next_width", [("fcnn_dcase2022", 0.11), ("fsfcnn_dcase2022", 0.09),
                                                ("resnet17_dcase2022", None)])
def test_dcase2022_presets_fit_and_are_the_largest(config, next_width):
    """The preset model configs fit 128 KiB in int8 and 30 M MACs per 1-s TAU 2022 clip; one grid step
    wider (one more base_width channel for ResNet-17) does not."""
    from asc.models import create_model
    from asc.models.common import load_model_config

    cfg = load_model_config(ROOT / "models" / f"{config}.yaml")
    torch.manual_seed(0)
    model = create_model(cfg["name"], num_classes=10, in_channels=3, norm="l2bn", **cfg["params"])
    c = complexity(model, TAU2022_INPUT_SHAPE, 1.0)
    assert c["fits_dcase_2022"] and "int8" in c["fits_in"], describe(c)
    wider = dict(cfg["params"])
    if next_width is None:
        wider["base_width"] += 1
    else:
        wider["width_mult"] = next_width
    bigger = complexity(create_model(cfg["name"], num_classes=10, in_channels=3, norm="l2bn", **wider),
                        TAU2022_INPUT_SHAPE, 1.0)
    assert not bigger["fits_dcase_2022"], describe(bigger)
