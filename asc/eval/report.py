"""Evaluation reports: a JSON document of every number, a Markdown page and PNG figures.

`build_report` turns a model's outputs (logits, labels, devices, optional features) into a plain
dict whose keys other tools rely on (see docs: `overall`, `per_device`, `device_groups`,
`per_scene`, `confusion`, `angles`, plus `run` and `dataset`); `write_report` writes it to a folder.
Accuracies are fractions in the JSON and percentages on the page. A report on synthetic data says
so at its top, in both files, so its numbers are never mistaken for results on real recordings.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asc.eval import metrics as M
from asc.fileio import atomic_open, atomic_write_json, atomic_write_text

REPORT_FORMAT = 1
ANGLE_KEYS = ("intra_train", "intra_test", "inter", "iir_train", "iir_test")


def group_title(name: str, members: Sequence[str] | None = None) -> str:
    """A device group as reports name it: "seen simulated (s1, s2, s3)"."""
    words = str(name).replace("_", " ")
    return f"{words} ({', '.join(members)})" if members else words


def _group_title(report: Mapping, name: str) -> str:
    return group_title(name, (report.get("device_group_members") or {}).get(name))


def synthetic_notice(dataset: Mapping[str, Any]) -> str:
    where = dataset.get("root") or "an unnamed folder"
    what = str(dataset.get("name") or "synthetic dataset")
    if not what.startswith("synthetic"):
        what = f"synthetic {what}"
    return (f"Synthetic data: these numbers come from the {what} set at {where}; "
            "they check the pipeline and say nothing about accuracy on real data.")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def _compute_angles(train_embeddings, train_labels, test_embeddings, test_labels) -> dict:
    angles: dict[str, Any] = dict.fromkeys(ANGLE_KEYS)
    if train_embeddings is None or train_labels is None:
        angles["note"] = "not computed (no training features given)"
        return angles
    train_labels = np.asarray(train_labels)
    keep = train_labels >= 0
    try:
        angles.update(M.angle_metrics(np.asarray(train_embeddings)[keep], train_labels[keep],
                                      test_embeddings, test_labels))
    except ValueError as exc:
        angles["note"] = f"not computed: {exc}"
    return angles


def build_report(logits: np.ndarray, labels: Sequence[int] | np.ndarray, devices: Sequence[str] | None,
                 scene_names: Sequence[str], *, dataset: Mapping[str, Any] | None = None,
                 run: Mapping[str, Any] | None = None, history: Sequence[Mapping] | None = None,
                 train_embeddings: np.ndarray | None = None, train_labels: np.ndarray | None = None,
                 test_embeddings: np.ndarray | None = None,
                 device_order: Sequence[str] | None = None,
                 device_groups: Mapping[str, Sequence[str]] | None = None, unit: str = "clips") -> dict:
    """Score the outputs of one model on one split.

    logits (N, K) and labels (N,) in the order of `scene_names`; a label of -1 marks an unlabelled
    clip, which is left out of every score. devices (N,) name the recording device of each clip
    (None for data without devices, e.g. images: no per-device scores).
    Train/test embeddings are classification-layer features for the paper's angle measures.
    Devices are listed in `device_order` (default: as they first appear), then any others; device groups
    (named lists of devices, e.g. those never heard in training) come from the dataset's description.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    has_devices = devices is not None
    devices = [str(d) for d in devices] if has_devices else [""] * len(labels)
    scene_names = [str(s) for s in scene_names]
    n, k = logits.shape if logits.ndim == 2 else (None, None)
    if logits.ndim != 2 or k != len(scene_names):
        raise ValueError(f"logits must be (N, {len(scene_names)}), got shape {logits.shape}")
    if labels.shape != (n,) or len(devices) != n:
        raise ValueError(f"{n} logit rows but {labels.shape[0]} labels and {len(devices)} devices")
    if not has_devices:
        device_order, device_groups = [], {}
    else:
        order = list(device_order or [])  # the dataset's devices, each listed even when absent here
        device_order = order + [d for d in dict.fromkeys(devices) if d not in order]
        device_groups = dict(device_groups or {})

    dataset = dict(dataset or {})
    synthetic = bool(dataset.get("synthetic", False))
    dataset["synthetic"] = synthetic
    prob = M.softmax(logits)
    labelled = labels >= 0
    y, p, dev = labels[labelled], prob[labelled], [d for d, keep in zip(devices, labelled) if keep]
    pred = p.argmax(axis=1)

    per_device = {}
    if has_devices:
        per_device = {name: {key: s[key] for key in ("accuracy", "log_loss", "n")}
                      for name, s in M.scores_by(y, p, dev, order=device_order).items()}
    groups = M.group_scores(y, p, dev, device_groups)
    per_scene = {}
    for index, scene in enumerate(scene_names):
        s = M.subset_scores(y, p, y == index)
        per_scene[scene] = {"accuracy": s["accuracy"], "log_loss": s["log_loss"], "n": s["n"]}
    dev_arr = np.asarray(dev, dtype=object)
    confusion = {
        "labels": scene_names,
        "matrix": M.confusion_matrix(y, pred, k),
        "groups": {name: M.confusion_matrix(y[np.isin(dev_arr, list(members))],
                                            pred[np.isin(dev_arr, list(members))], k)
                   for name, members in device_groups.items()},
    }
    test_emb = None if test_embeddings is None else np.asarray(test_embeddings)[labelled]
    angles = _compute_angles(train_embeddings, train_labels, test_emb if y.size else None,
                             y if y.size else None)

    report = {
        "synthetic": synthetic,
        "notice": synthetic_notice(dataset) if synthetic else None,
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "run": dict(run or {}),
        "labels": scene_names,
        "unit": unit,
        "n_clips": int(n),
        "n_unlabelled": int((~labelled).sum()),
        "overall": M.subset_scores(y, p),
        "per_device": per_device,
        "device_groups": groups,
        "device_group_members": {name: list(members) for name, members in device_groups.items()},
        "per_scene": per_scene,
        "confusion": confusion,
        "angles": angles,
        "history": list(history or []),
    }
    return _clean(report)


# ----------------------------------------------------------------------------- predictions

def write_predictions(path: str | os.PathLike, filenames: Sequence[str], logits: np.ndarray,
                      scene_names: Sequence[str]) -> None:
    """DCASE 2020 Task 1a system output of a model's logits (see write_submission)."""
    write_submission(path, filenames, M.softmax(logits), scene_names)


def write_submission(path: str | os.PathLike, filenames: Sequence[str], prob: np.ndarray,
                     scene_names: Sequence[str]) -> None:
    """Write `submission_text` to `path` atomically."""
    atomic_write_text(path, submission_text(filenames, prob, scene_names))


def submission_text(filenames: Sequence[str], prob: np.ndarray, scene_names: Sequence[str]) -> str:
    """DCASE 2020 Task 1a system output: tab-separated filename (as given: the fold file's or the user's),
    scene_label (the most probable), one probability per class in full precision (shortest round-trip
    form), so scores recomputed from the file equal the report's."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.shape != (len(filenames), len(scene_names)):
        raise ValueError(f"probabilities {prob.shape} do not fit {len(filenames)} files x {len(scene_names)}")
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["filename", "scene_label", *scene_names])
    for name, row in zip(filenames, prob):
        writer.writerow([str(name), scene_names[int(row.argmax())], *(repr(float(v)) for v in row)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- Markdown

def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _title(report: Mapping) -> str:
    run = report.get("run") or {}
    parts = [str(run[key]) for key in ("model", "norm") if run.get(key)]
    if run.get("seed") is not None:
        parts.append(f"seed {run['seed']}")
    return "Evaluation" + (": " + " / ".join(parts) if parts else "")


def _unit(report: Mapping) -> str:
    return str(report.get("unit") or "clips")


def render_markdown(report: Mapping, figures: Sequence[str] = ()) -> str:
    """The report as a Markdown page; when the data is synthetic its first line says so."""
    lines: list[str] = []
    if report.get("synthetic"):
        lines += [f"> **{report['notice']}**", ""]
    lines += [f"# {_title(report)}", ""]
    ds, run = report.get("dataset") or {}, report.get("run") or {}
    kind = "SYNTHETIC" if report.get("synthetic") else "real data"
    unit = _unit(report)
    lines.append(f"- Dataset: {ds.get('name', 'unnamed')} ({kind}) at `{ds.get('root', '?')}`, "
                 f"split `{ds.get('split', '?')}`: {report['n_clips']} {unit}"
                 + (f", {report['n_unlabelled']} without labels" if report.get("n_unlabelled") else ""))
    other = ds.get("trained_on")
    if isinstance(other, Mapping):
        kind_other = "synthetic " if other.get("synthetic") else ""
        title = other.get("title", other.get("name"))
        lines.append(f"- **Trained on another dataset**: {kind_other}{title} at "
                     f"`{other.get('root', '?')}`")
    if run:
        shown = ", ".join(f"{key} {run[key]}" for key in ("recipe", "profile", "model", "norm", "seed",
                                                           "checkpoint", "epoch", "epochs", "precision",
                                                           "angle_clips")
                          if run.get(key) is not None)
        lines.append(f"- Run: {shown}" + (f" (`{run['dir']}`)" if run.get("dir") else ""))
        if run.get("finished") is False:
            lines.append("- **Unfinished run**: it stopped before its last epoch; these are the scores of "
                         "its checkpoint as it is")
    size = report.get("model") or {}
    if size.get("params"):
        shape = " × ".join(str(v) for v in size.get("input_shape") or [])
        lines.append(f"- Model size: {size['params']:,} parameters ({size['bytes_fp32'] / 1024:,.0f} KiB in "
                     f"float32, {size['bytes_fp16'] / 1024:,.0f} KiB in float16), "
                     f"{size['macs'] / 1e6:,.1f} M multiply-accumulates per {shape} input")
    if isinstance(report.get("complexity"), Mapping):
        from asc.complexity import describe

        lines.append(f"- Complexity ({report['complexity']['limits'].get('task', 'DCASE')} counting, "
                     f"{report['complexity']['clip_seconds']:g}-s clips): {describe(report['complexity'])}")
    scored = report.get("scored_on") or {}
    if scored.get("feature_hash"):
        lines.append(f"- Features: config hash `{scored['feature_hash']}`")
    lines.append(f"- Written: {report.get('created', '?')}")
    lines.append("")

    overall = report["overall"]
    if not overall.get("n"):
        lines += ["No clip of this split has a label, so there are no scores; the predictions are in "
                  "`predictions.csv` (DCASE submission format).", ""]
        return "\n".join(lines) + "\n"

    lines += ["## Overall", ""]
    lines += _table(["accuracy %", "macro accuracy %", "log loss", unit],
                    [[_pct(overall["accuracy"]), _pct(overall["macro_accuracy"]),
                      _num(overall["log_loss"]), overall["n"]]])
    if report["per_device"]:
        lines += ["", "## Per device", ""]
        rows = [[name, _pct(s["accuracy"]), _num(s["log_loss"]), s["n"]]
                for name, s in report["per_device"].items()]
        rows += [[f"**{_group_title(report, name)}**", _pct(s["accuracy"]), _num(s["log_loss"]), s["n"]]
                 for name, s in report["device_groups"].items()]
        lines += _table(["device", "accuracy %", "log loss", "clips"], rows)
    lines += ["", "## Per class", ""]
    lines += _table(["class", "accuracy %", "log loss", unit],
                    [[name, _pct(s["accuracy"]), _num(s["log_loss"]), s["n"]]
                     for name, s in report["per_scene"].items()])

    conf = report["confusion"]
    lines += ["", "## Confusion matrix (rows: true class, columns: predicted)", ""]
    short = [str(i) for i in range(len(conf["labels"]))]
    named_rows = enumerate(zip(conf["labels"], conf["matrix"]))
    lines += _table(["true \\ predicted", *short], [[f"{i} {name}", *row] for i, (name, row) in named_rows])

    angles = report.get("angles") or {}
    lines += ["", "## Angles of classification-layer features (degrees)", ""]
    if angles.get("inter") is not None:
        lines += _table(["intra (train)", "intra (test)", "inter", "IIR train", "IIR test"],
                        [[_num(angles.get("intra_train"), 2), _num(angles.get("intra_test"), 2),
                          _num(angles.get("inter"), 2), _num(angles.get("iir_train")),
                          _num(angles.get("iir_test"))]])
        lines += ["", "Class centres from the training features; IIR = intra / inter (smaller is better)."]
    else:
        lines.append(f"Angles {angles.get('note', 'not computed')}.")

    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")


def _confusion_figure(matrix: np.ndarray, labels: Sequence[str], title: str):
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(1.2 + 0.55 * len(labels), 12.0)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if len(labels) <= 30:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
    else:  # too many classes to name: index ticks only
        ax.set_xlabel("predicted class index")
    if len(labels) <= 30:
        ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return fig


def _device_figure(report: Mapping, suptitle: str):
    from matplotlib.figure import Figure

    names = [d for d, s in report["per_device"].items() if s["n"]]
    values = [100 * report["per_device"][d]["accuracy"] for d in names]
    groups = report.get("device_groups") or {}
    # one colour per device group, in the order the dataset lists its groups
    cycle = ("tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple", "tab:brown")
    palette = {g: cycle[i % len(cycle)] for i, g in enumerate(_group_members(report))}
    colour = {}
    for gname, members in _group_members(report).items():
        for d in members:
            colour[d] = palette.get(gname, "tab:gray")
    fig = Figure(figsize=(1.5 + 0.6 * max(len(names), 3), 3.6))
    ax = fig.add_subplot()
    bars = ax.bar(names, values, color=[colour.get(d, "tab:gray") for d in names])
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    overall = report["overall"]["accuracy"]
    if overall is not None:
        ax.axhline(100 * overall, color="black", linestyle="--", linewidth=1, label="overall")
    for gname, s in groups.items():
        if s.get("n"):
            ax.plot([], [], color=palette.get(gname, "tab:gray"), linewidth=6,
                    label=f"{_group_title(report, gname)}: {100 * s['accuracy']:.1f}")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy %")
    ax.set_title(f"Accuracy per device — {suptitle}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _group_members(report: Mapping) -> dict[str, list[str]]:
    return dict(report.get("device_group_members") or {})


def _history_series(history: Sequence[Mapping], key: str, sub: str | None = None):
    xs, ys = [], []
    for i, entry in enumerate(history):
        value = entry.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(entry.get("epoch", i))
            ys.append(value)
    return xs, ys


def _integer_epochs(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")


def _angles_figure(history: Sequence[Mapping], suptitle: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    for sub, label in (("intra_train", "intra (train)"), ("intra_test", "intra (test)"), ("inter", "inter")):
        xs, ys = _history_series(history, "angles", sub)
        if xs:
            left.plot(xs, ys, marker=".", label=label)
    left.set_ylabel("degrees")
    left.set_title("Intra- and inter-angle")
    left.legend(fontsize=8)
    for sub, label in (("iir_train", "IIR train"), ("iir_test", "IIR test")):
        xs, ys = _history_series(history, "angles", sub)
        if xs:
            right.plot(xs, ys, marker=".", label=label)
    right.set_ylabel("intra / inter")
    right.set_title("IIR (smaller is better)")
    right.legend(fontsize=8)
    _integer_epochs(left, right)
    fig.suptitle(suptitle, fontsize=9)
    return fig


def _training_figure(history: Sequence[Mapping], suptitle: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    for key in ("train_loss", "val_loss"):
        xs, ys = _history_series(history, key)
        if xs:
            left.plot(xs, ys, label=key.replace("_", " "))
    left.set_title("Loss")
    left.legend(fontsize=8)
    for key in ("train_acc", "val_acc"):
        xs, ys = _history_series(history, key)
        if xs:
            scale = 100 if max(ys) <= 1.0 else 1
            right.plot(xs, [scale * v for v in ys], label=key.replace("_", " "))
    right.set_ylabel("accuracy %")
    right.set_title("Accuracy")
    right.legend(fontsize=8)
    _integer_epochs(left, right)
    fig.suptitle(suptitle, fontsize=9)
    return fig


def _has_angle_history(history: Sequence[Mapping]) -> bool:
    return any(_history_series(history, "angles", key)[0] for key in ANGLE_KEYS)


def write_figures(report: Mapping, out_dir: str | os.PathLike) -> list[str]:
    """PNG figures of the report; returns their file names (relative to `out_dir`)."""
    out = Path(out_dir)
    written: list[str] = []
    prefix = "SYNTHETIC DATA — " if report.get("synthetic") else ""
    title = prefix + _title(report)
    if report["overall"].get("n"):
        conf = report["confusion"]
        scope = "all devices" if report["per_device"] else "all samples"
        fig = _confusion_figure(conf["matrix"], conf["labels"], f"{title}\n{scope}")
        _save(fig, out / "confusion_overall.png")
        written.append("confusion_overall.png")
        for name, matrix in conf.get("groups", {}).items():
            if np.asarray(matrix).sum() == 0:
                continue
            fig = _confusion_figure(matrix, conf["labels"], f"{title}\n{_group_title(report, name)}")
            _save(fig, out / f"confusion_{name}.png")
            written.append(f"confusion_{name}.png")
        if report["per_device"]:
            _save(_device_figure(report, title), out / "per_device_accuracy.png")
            written.append("per_device_accuracy.png")
    history = report.get("history") or []
    if _has_angle_history(history):
        _save(_angles_figure(history, title), out / "angles.png")
        written.append("angles.png")
    if any(_history_series(history, key)[0] for key in ("train_loss", "val_loss", "train_acc", "val_acc")):
        _save(_training_figure(history, title), out / "training.png")
        written.append("training.png")
    return written


def write_report(report: Mapping, out_dir: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and the figures into `out_dir`, each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out)
    atomic_write_json(out / "report.json", _clean(report))
    atomic_write_text(out / "report.md", render_markdown(report, figures))
    return [out / "report.json", out / "report.md", *(out / f for f in figures)]
