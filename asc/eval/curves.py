"""The paper's curves over epochs, BN against L2BN per model: validation accuracy and training loss
(Fig. 6), IIR on training and test data (Fig. 7), intra- and inter-class angles (Fig. 1).

Each curve is the mean over seeds at every epoch where all of a group's runs have the value, with a
band from the lowest to the highest seed. The histories are the per-epoch records that `asc train`
wrote and `asc evaluate` copied into each report.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from asc.fileio import atomic_open

#: figure file stem -> (title, [(panel title, value key, angles?)]). The curves come from training's
#: per-epoch records: validation and test-data angles on the validation clips (train.val_clips), class
#: centres and training-data angles from train.angle_clips, which may be subsets of what reports score.
FIGURES = {
    "accuracy_loss": ("validation accuracy and training loss (paper Fig. 6)",
                      [("validation accuracy, %", "val_acc", False), ("training loss", "train_loss", False)]),
    "iir": ("IIR = intra / inter angle (paper Fig. 7)",
            [("IIR, training data", "iir_train", True), ("IIR, validation clips", "iir_test", True)]),
    "angles": ("intra- and inter-class angles, degrees (paper Fig. 1)",
               [("intra-angle, training data", "intra_train", True),
                ("intra-angle, validation clips", "intra_test", True), ("inter-angle", "inter", True)]),
}
#: keys shown as percentages, as every table shows them
PERCENT_KEYS = {"val_acc"}


def safe_name(text: str) -> str:
    """A name read from a report, made safe as part of a file name: no folders, no leading dot."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(text)).lstrip(".") or "_"
    return cleaned[:80]


def series(histories: Sequence[Sequence[Mapping]], key: str, angles: bool) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values (runs, epochs)) at the epochs where every run has a finite value of `key`."""
    per_run = []
    for history in histories:
        values = {}
        for row in history:
            source = (row.get("angles") or {}) if angles else row
            value = source.get(key)
            if row.get("epoch") is not None and value is not None and math.isfinite(float(value)):
                values[int(row["epoch"])] = float(value)
        per_run.append(values)
    if not per_run:
        return np.zeros(0), np.zeros((0, 0))
    epochs = sorted(set.intersection(*(set(v) for v in per_run)))
    return np.asarray(epochs), np.asarray([[v[e] for e in epochs] for v in per_run])


def write_curves(groups: Sequence[Mapping], histories: Mapping[str, Sequence[Mapping]], out_dir: Path,
                 synthetic: bool = False) -> list[tuple[str, str]]:
    """One PNG per model and figure; returns [(title, file name)] of the figures that have data."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    written = []
    models = list(dict.fromkeys(g["model"] for g in groups))
    for model in models:
        members = [g for g in groups if g["model"] == model]
        for stem, (title, panels) in FIGURES.items():
            fig = Figure(figsize=(4.2 * len(panels), 3.4))
            drawn = False
            for i, (panel, key, angles) in enumerate(panels):
                ax = fig.add_subplot(1, len(panels), i + 1)
                for g in members:
                    epochs, values = series([histories.get(r, []) for r in g["runs"]], key, angles)
                    if not len(epochs):
                        continue
                    drawn = True
                    if key in PERCENT_KEYS:
                        values = 100 * values
                    line, = ax.plot(epochs, values.mean(0), marker="o", ms=3,
                                    label=f"{g['norm']} (n={values.shape[0]})")
                    if values.shape[0] > 1:
                        ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(),
                                        alpha=0.2)
                ax.set_title(panel, fontsize=9)
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
                ax.grid(alpha=0.3)
                if i == 0 and ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=8)
            if not drawn:
                continue
            fig.suptitle(("SYNTHETIC DATA — " if synthetic else "") + f"{model}: {title}", fontsize=10)
            name = f"curves_{safe_name(model)}_{stem}.png"
            with atomic_open(out_dir / name, "wb") as fh:
                fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
            written.append((f"{model}: {title}", name))
    return written
