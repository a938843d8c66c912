"""`asc analyze`: the paper's mechanism measured layer by layer (Sec. 3.2, Fig. 5).

The paper argues that BN leaves the per-sample l2 norms of a class spread out, which scatters its
directions, and that L2BN removes that spread at every layer. On the evaluate split, for every norm
layer of a trained run in the order the forward pass meets them:

    norm_cv     spread of per-sample l2 norms of the layer's input within each class (coefficient
                of variation, std / mean), averaged over classes
    intra, inter, iir
                intra-/inter-class angles (degrees) and their ratio of the layer's output, pooled
                over space to one vector per sample, with class centres from the same split

Writes RUN/analysis/{analysis.json, analysis.md, layers.png} per run, and with several runs (BN and
L2BN of one model, say) an overlay figure and a combined page in the output folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from asc.errors import AscError
from asc.fileio import atomic_open, atomic_write_json, atomic_write_text

ANALYSIS_DIR = "analysis"


def _norm_layers(model) -> list[tuple[str, object]]:
    from asc.nn import norm_kind_of

    return [(name, m) for name, m in model.named_modules() if norm_kind_of(m) is not None]


def layer_statistics(model, loader, labels: np.ndarray, device: str) -> list[dict]:
    """Per norm layer: kind, input norm spread within classes, output angles and IIR."""
    import torch

    from asc.eval.inference import infer
    from asc.eval.metrics import angle_metrics
    from asc.nn import norm_kind_of

    layers = _norm_layers(model)
    if not layers:
        raise AscError("the model has no norm layers to analyze (norm 'none'?)")
    norms: dict[str, list] = {name: [] for name, _ in layers}
    pooled: dict[str, list] = {name: [] for name, _ in layers}
    order: list[str] = []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().float()
            norms[name].append(torch.linalg.vector_norm(x.flatten(1), dim=1).cpu())
            y = output.detach().float()
            pooled[name].append((y.mean(dim=tuple(range(2, y.dim()))) if y.dim() > 2 else y).cpu())
            if name not in order:
                order.append(name)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers]
    try:
        infer(model, loader, device=device)
    finally:
        for h in handles:
            h.remove()
    kinds = {name: norm_kind_of(m) for name, m in layers}
    keep = labels >= 0
    y = labels[keep]
    out = []
    for index, name in enumerate(order):
        n = torch.cat(norms[name]).numpy()[keep]
        cvs = [float(n[y == c].std() / n[y == c].mean()) for c in np.unique(y)
               if (y == c).sum() > 1 and n[y == c].mean() > 0]
        feats = torch.cat(pooled[name]).numpy()[keep]
        try:
            angles = angle_metrics(feats, y)
        except ValueError:
            angles = {"intra_train": None, "inter": None, "iir_train": None}
        out.append({"index": index, "layer": name, "kind": kinds[name], "channels": int(feats.shape[1]),
                    "norm_cv": float(np.mean(cvs)) if cvs else None,
                    "intra": angles["intra_train"], "inter": angles["inter"], "iir": angles["iir_train"]})
    return out


def analyze_run(run_dir: str | os.PathLike, *, device: str | None = "cpu", checkpoint: str = "best",
                batch_size: int = 64, split: str | None = None) -> dict:
    """Layer statistics of one run on its evaluate split (or `split`)."""
    from torch.utils.data import DataLoader

    from asc.eval.evaluate import load_split
    from asc.runs import load_run

    run_dir = Path(run_dir)
    trained = load_run(run_dir, checkpoint, device)
    recipe = trained.recipe
    split = split or (recipe.get("data") or {}).get("eval_split") or "evaluate"
    data = load_split(recipe, split, run_dir / "recipe.yaml")
    if not (data.labels >= 0).any():
        raise AscError(f"{run_dir}: split {split!r} has no labels; analyze needs a labelled split")
    loader = DataLoader(data.dataset, batch_size=batch_size, shuffle=False)
    layers = layer_statistics(trained.model, loader, data.labels, trained.device)
    return {"run": str(run_dir), "model": trained.spec.get("name"), "norm": trained.spec.get("norm"),
            "seed": recipe.get("seed"), "split": split, "clips": int((data.labels >= 0).sum()),
            "synthetic": data.synthetic, "dataset_root": data.root, "layers": layers}


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def render_markdown(results: Sequence[Mapping]) -> str:
    lines = []
    if any(r["synthetic"] for r in results):
        lines += ["> **Synthetic data: these layer statistics come from a synthetic set; they show the "
                  "mechanism on it and say nothing about real recordings.**", ""]
    lines += ["# Norm layers, input to output", "",
              "`norm CV`: spread of per-sample l2 norms of the layer's input within a class (std / mean, "
              "averaged over classes). `intra`, `inter` (degrees) and `IIR` = intra / inter: angles "
              "of the layer's output pooled over space, class centres from the same split.", ""]
    for r in results:
        lines += [f"## {r['model']} / {r['norm']} / seed {r['seed']} — {r['split']} split, "
                  f"{r['clips']} clips", "", f"`{r['run']}`", "",
                  "| # | layer | kind | channels | norm CV | intra ° | inter ° | IIR |",
                  "|---|---|---|---|---|---|---|---|"]
        for layer in r["layers"]:
            lines.append(f"| {layer['index']} | `{layer['layer']}` | {layer['kind']} | {layer['channels']} | "
                         f"{_fmt(layer['norm_cv'], 3)} | {_fmt(layer['intra'], 2)} | "
                         f"{_fmt(layer['inter'], 2)} | {_fmt(layer['iir'], 3)} |")
        lines.append("")
    return "\n".join(lines)


def draw(results: Sequence[Mapping], path: Path) -> None:
    """Norm CV and IIR against layer depth, one line per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    for i, (key, title) in enumerate((("norm_cv", "spread of sample l2 norms within a class (CV)"),
                                      ("iir", "IIR of the pooled output"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for r in results:
            xs = [layer["index"] for layer in r["layers"] if layer[key] is not None]
            ys = [layer[key] for layer in r["layers"] if layer[key] is not None]
            ax.plot(xs, ys, marker="o", ms=3, label=f"{r['model']} / {r['norm']} / seed {r['seed']}")
        ax.set_xlabel("norm layer (forward order)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    synthetic = any(r["synthetic"] for r in results)
    fig.suptitle(("SYNTHETIC DATA — " if synthetic else "") + "per norm layer, evaluate split", fontsize=10)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")


def write_analysis(results: Sequence[Mapping], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "analysis.json", list(results) if len(results) > 1 else results[0])
    atomic_write_text(out_dir / "analysis.md", render_markdown(results) + "\n![per layer](layers.png)\n")
    draw(results, out_dir / "layers.png")
    return [out_dir / "analysis.json", out_dir / "analysis.md", out_dir / "layers.png"]


def analyze_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                 **kw) -> tuple[list[dict], list[Path]]:
    """Each run's analysis in RUN/analysis/; with several runs, the overlay in `out_dir`
    (default: their common parent folder + /analysis)."""
    results = [analyze_run(r, **kw) for r in run_dirs]
    written = []
    for r in results:
        written += write_analysis([r], Path(r["run"]) / ANALYSIS_DIR)
    if len(results) > 1:
        from asc.eval.compare import default_out_dir

        out = Path(out_dir) if out_dir else default_out_dir(run_dirs, ANALYSIS_DIR)
        written += write_analysis(results, out)
    return results, written
