"""`asc analyze` on the stored tiny run: per norm layer statistics against a hand computation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from asc.cli import main


def _bn_copy(run, dest):
    """The same run folder with an untrained BN model of the same shape in its checkpoint."""
    from asc.models import create_model
    from asc.runs import load_checkpoint, save_checkpoint

    shutil.copytree(run, dest)
    ckpt = load_checkpoint(dest / "checkpoints" / "best.pt")
    spec = {**ckpt["model_spec"], "norm": "bn"}
    torch.manual_seed(1)
    model = create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                         norm="bn", **spec["params"])
    save_checkpoint({**{k: v for k, v in ckpt.items() if k != "format"}, "model_spec": spec,
                     "model": model.state_dict()}, dest / "checkpoints" / "best.pt")
    recipe = yaml.safe_load((dest / "recipe.yaml").read_text())  # a BN run says so in its recipe too
    (dest / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "norm": "bn"}))
    return dest


def test_analyze_measures_every_norm_layer_and_overlays_runs(tiny_run, tmp_path, capsys):
    from asc.features.dataset import load_split_arrays
    from asc.nn import norm_kind_of
    from asc.runs import load_run

    run = tiny_run["run"]
    bn = _bn_copy(run, tmp_path / "runs" / "fcnn-bn")
    out = tmp_path / "overlay"
    assert main(["analyze", str(run), str(bn), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "norm layers" in printed and "IIR" in printed
    result = json.loads((run / "analysis" / "analysis.json").read_text())
    model = load_run(run).model
    kinds = [norm_kind_of(m) for _, m in model.named_modules() if norm_kind_of(m) is not None]
    assert [layer["kind"] for layer in result["layers"]] == kinds and len(kinds) > 5
    assert result["norm"] == "l2bn" and result["split"] == "evaluate" and result["clips"] == 40

    # the first norm layer sees the features themselves: its norm spread by hand, from the cache
    x, y, _ = load_split_arrays(tiny_run["cache_dir"], "evaluate")
    norms = np.linalg.norm(x.reshape(len(x), -1), axis=1)
    cv = np.mean([norms[y == c].std() / norms[y == c].mean() for c in np.unique(y)])
    assert result["layers"][0]["norm_cv"] == pytest.approx(cv, rel=1e-4)
    for layer in result["layers"]:
        assert layer["iir"] is None or layer["iir"] == pytest.approx(layer["intra"] / layer["inter"])

    for folder in (run / "analysis", bn / "analysis", out):
        assert (folder / "layers.png").read_bytes().startswith(b"\x89PNG")
        assert (folder / "analysis.md").is_file()
    both = json.loads((out / "analysis.json").read_text())
    assert [r["norm"] for r in both] == ["l2bn", "bn"]
    assert both[0]["synthetic"] and (out / "analysis.md").read_text().startswith("> **Synthetic data")


def test_analyze_summary_names_the_peak_layer():
    from asc.eval.cli import _profile

    layers = [{"norm_cv": 0.1, "iir": 1.0}, {"norm_cv": 0.9, "iir": None}, {"norm_cv": 0.2, "iir": 0.5}]
    assert _profile(layers, "norm_cv", "norm CV") == \
        "norm CV 0.100 (first) .. 0.900 (peak, layer 2) .. 0.200 (last)"
    assert _profile(layers, "iir", "IIR") == "IIR 1.000 (first) .. 1.000 (peak, layer 1) .. 0.500 (last)"
    assert _profile([{"iir": None}], "iir", "IIR") == "IIR –"
