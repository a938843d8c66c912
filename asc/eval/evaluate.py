"""`asc evaluate RUN`: score a trained checkpoint and write RUN/report/.

The run folder written by `asc train` holds recipe.yaml (the resolved recipe), metrics.jsonl (one
JSON object per epoch) and checkpoints/{best,last}.pt. Evaluation runs the checkpoint over the
recipe's evaluation split at full length (no crop, no augmentation), and over the training split for
the class centres of the paper's angle measures, then builds and writes the report. A split without
labels gets only predictions.csv (DCASE submission format) and a page saying so.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asc.errors import AscError, DataError
from asc.tasks import EvalData, recipe_value, task_of

REPORT_DIR = "report"


@dataclass
class EvalResult:
    report: dict
    out_dir: Path
    files: list[Path]


# ----------------------------------------------------------------------------- run folder

def read_history(path: Path) -> list[dict]:
    """Per-epoch metrics of the run; a torn, malformed or ill-typed line is skipped with a warning,
    since the history only feeds the curves and must not stop an evaluation."""
    from asc.eval.validate import check_record
    from asc.runs import RunFolder

    history = []
    for row in RunFolder(path.parent).read_metrics():
        try:
            history.append(check_record(path, row, f"epoch {row['epoch']}"))
        except DataError as exc:
            print(f"warning: {str(exc).split('; re-run')[0]}: skipped", file=sys.stderr)
    return history


def training_precision(run_dir: Path, recipe: Mapping) -> str:
    """What the run trained in, as its env.json says (runs without it: float32 unless autocast was asked)."""
    try:
        env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        env = {}
    if isinstance(env, dict) and isinstance(env.get("precision"), str):
        return env["precision"]
    amp = (recipe.get("train") or {}).get("amp", "off")
    return "float32" if amp in ("off", False) else f"{amp} autocast (assumed)"


# ----------------------------------------------------------------------------- data

def load_split(recipe: Mapping, split: str, recipe_path: Path, cache_dir: str | None = None) -> EvalData:
    """One split of the run's data, from its task; `cache_dir` points audio runs at another feature
    cache (e.g. the official evaluation set, extracted with the same feature config)."""
    return task_of(recipe, recipe_path).split(recipe, split, recipe_path, cache_dir)


# ----------------------------------------------------------------------------- inference

def run_model(model, dataset, *, device: str, batch_size: int, workers: int = 0, logits: bool = True,
              desc: str = "evaluate") -> tuple[np.ndarray | None, np.ndarray]:
    """(logits (N, K) or None, embeddings (N, D)) of every item of `dataset`, in order, float32,
    through the one inference function."""
    from torch.utils.data import DataLoader

    from asc.eval.inference import infer

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device == "cuda", persistent_workers=False)
    z, e, _ = infer(model, loader, device=device,
                    logits=logits, embed=True, progress_desc=desc, total=len(loader))
    if e is None:
        raise DataError(f"{desc}: the split has no clips")
    return (z.numpy() if z is not None else None), e.numpy()


# ----------------------------------------------------------------------------- evaluate

def evaluate_run(run_dir: str | os.PathLike, *, checkpoint: str = "best", device: str | None = None,
                 batch_size: int | None = None, workers: int | None = None, angles: bool = True,
                 split: str | None = None, cache_dir: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None) -> EvalResult:
    """Score one run's checkpoint on its evaluation split and write the report folder.

    batch_size and workers default to the recipe's train.eval_batch_size and data.num_workers;
    split to the recipe's data.eval_split. The report goes to RUN/report, or RUN/report_<split> for
    another split or cache, unless `out_dir` says otherwise.
    """
    import torch

    from asc.eval.report import build_report, write_predictions, write_report
    from asc.runs import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AscError(f"{run_dir}: no such run folder")
    from asc.runs import RunFolder

    folder = RunFolder(run_dir)
    holder = folder.holder()
    if holder:
        raise AscError(f"{run_dir}: {holder} is still training this run; evaluate it when it has finished "
                       "(or stop it and evaluate its last checkpoint)")
    trained = load_run(run_dir, checkpoint, device)
    device, recipe, spec = trained.device, trained.recipe, trained.spec
    recipe_path = run_dir / "recipe.yaml"

    if batch_size is None:
        batch_size = int((recipe.get("train") or {}).get("eval_batch_size") or 64)
    if workers is None:
        workers = int((recipe.get("data") or {}).get("num_workers") or 0)
    recipe_split = recipe_value(recipe, "data.eval_split", recipe_path, default="evaluate")
    eval_split = split or recipe_split
    train_split = recipe_value(recipe, "data.train_split", recipe_path, default="train")
    data = load_split(recipe, eval_split, recipe_path, None if cache_dir is None else str(cache_dir))
    from asc.data.description import class_mismatch

    trained_classes = spec.get("classes")
    differs = class_mismatch(trained_classes, data.class_names) if trained_classes else None
    if differs or spec.get("num_classes") not in (None, len(data.class_names)):
        where = data.extra.get("cache_dir") or data.root
        differs = differs or f"{spec.get('num_classes')} classes against {len(data.class_names)}"
        raise AscError(f"{where}: the run {run_dir} was trained on other classes than this data has "
                       f"({differs}); score it on data of the dataset it was trained on")

    model = trained.model
    from asc.models.common import model_size

    size = model_size(model, tuple(int(v) for v in data.dataset[0][0].shape))
    logits, embeddings = run_model(model, data.dataset, device=device, batch_size=batch_size,
                                   workers=workers, desc=f"evaluate {eval_split}")
    labelled = bool((data.labels >= 0).any())

    train_embeddings = train_labels = None
    if angles and labelled:
        from asc.data.sampling import Subset, stratified_indices

        train = load_split(recipe, train_split, recipe_path)
        # class centres from the training clips the run's curves used (train.angle_clips; null: all)
        keep = stratified_indices([int(v) for v in train.labels],
                                  (recipe.get("train") or {}).get("angle_clips"))
        dataset = train.dataset if len(keep) == len(train.labels) else Subset(train.dataset, keep)
        _, train_embeddings = run_model(model, dataset, device=device, batch_size=batch_size,
                                        workers=workers, logits=False, desc=f"features {train_split}")
        train_labels = train.labels[keep]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()

    model_cfg = recipe.get("model") if isinstance(recipe.get("model"), Mapping) else {}
    run_info = {
        "dir": str(run_dir.resolve()),
        "recipe": recipe.get("name"),
        "profile": recipe.get("profile"),
        "task": task_of(recipe, recipe_path).name,
        "model": model_cfg.get("name") or spec.get("name"),
        "norm": recipe.get("norm") or spec.get("norm"),
        "seed": recipe.get("seed"),
        "checkpoint": checkpoint,
        "epoch": trained.epoch,
        "model_params": model_cfg.get("params") or spec.get("params"),
        "device": device,
        "epochs": (recipe.get("train") or {}).get("epochs"),
        "angle_clips": (recipe.get("train") or {}).get("angle_clips"),
        "precision": training_precision(run_dir, recipe),
        "finished": folder.is_complete,  # an interrupted run is scored as it is, and says so
    }
    described = data.description
    name = described.display_name
    dataset_info = {"name": name, "root": data.root, "synthetic": data.synthetic, "split": data.split,
                    "train_split": train_split, "description": described.to_dict(), **data.extra}
    trained_on = _trained_on(run_dir, recipe)
    if trained_on is not None and (trained_on.name, trained_on.root) != (described.name, described.root):
        dataset_info["trained_on"] = trained_on.to_dict()
        # a model trained on synthetic data keeps its banner wherever it is scored
        dataset_info["synthetic"] = described.synthetic or trained_on.synthetic
    report = build_report(
        logits, data.labels, data.devices, data.class_names, dataset=dataset_info, run=run_info,
        history=read_history(run_dir / "metrics.jsonl"), train_embeddings=train_embeddings,
        train_labels=train_labels, test_embeddings=embeddings, device_order=list(described.devices),
        device_groups={k: list(v) for k, v in described.device_groups.items()},
        unit=task_of(recipe, recipe_path).unit,
    )
    report["model"] = size
    if described.duration:
        # what DCASE Task 1 limits, per second of audio, and whether the model fits (asc.complexity)
        from asc.complexity import complexity_of_size

        report["complexity"] = complexity_of_size(size, float(described.duration))
    # what `asc compare` checks before putting runs side by side
    report["scored_on"] = {"split": data.split, "dataset": name, "dataset_root": data.root,
                           "feature_hash": data.extra.get("feature_hash"), "epochs": run_info["epochs"],
                           "precision": run_info["precision"]}
    if out_dir is None:
        default = eval_split == recipe_split and cache_dir is None
        out_dir = run_dir / (REPORT_DIR if default else f"{REPORT_DIR}_{eval_split}")
    out = Path(out_dir)
    # the report folder is written as a whole: every file into a hidden folder first, moved in only when
    # all are written, so an interrupted evaluation leaves the old report as it was
    import shutil

    staging = out.parent / f".{out.name}.writing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written = write_report(report, staging)
        write_predictions(staging / "predictions.csv", data.filenames, logits, data.class_names)
        written.append(staging / "predictions.csv")
        out.mkdir(parents=True, exist_ok=True)
        for path in written:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EvalResult(report=report, out_dir=out, files=[out / p.name for p in written])


def _trained_on(run_dir: Path, recipe: Mapping):
    """The description of the data the run was trained on, when the run folder knows it."""
    from asc.runs import DATASET_FILE, dataset_description

    if not (run_dir / DATASET_FILE).is_file():
        return None
    return dataset_description(run_dir, recipe)


def summary_lines(result: EvalResult) -> list[str]:
    """A few lines for the terminal: what was scored, the headline numbers, where the files are."""
    r = result.report
    run, ds = r.get("run") or {}, r.get("dataset") or {}
    lines = []
    if r.get("synthetic"):
        lines.append(r["notice"])
    if run.get("finished") is False:
        lines.append(f"note: the run stopped before its last epoch ({run.get('epoch')} of "
                     f"{run.get('epochs')}); this scores its checkpoint as it is")
    lines.append(f"{run.get('model')} / {run.get('norm')} / seed {run.get('seed')}, checkpoint "
                 f"{run.get('checkpoint')} (epoch {run.get('epoch')}), split {ds.get('split')}: "
                 f"{r['n_clips']} clips")
    overall = r["overall"]
    if overall.get("n"):
        def pct(value: float | None) -> str:
            return "–" if value is None else f"{100 * value:.2f}"

        loss = "–" if overall.get("log_loss") is None else f"{overall['log_loss']:.3f}"
        lines.append(f"accuracy {pct(overall.get('accuracy'))} %, macro accuracy "
                     f"{pct(overall.get('macro_accuracy'))} %, log loss {loss}")
        shown = [f"{d} {100 * s['accuracy']:.1f}" for d, s in r["per_device"].items() if s.get("n")]
        groups = [f"{g} {100 * s['accuracy']:.1f}" for g, s in r["device_groups"].items() if s.get("n")]
        if shown:
            lines.append("per device %: " + ", ".join(shown) + (" | " + ", ".join(groups) if groups else ""))
        a = r.get("angles") or {}
        if a.get("inter") is not None:
            def fmt(key: str, digits: int) -> str:
                return "–" if a.get(key) is None else f"{a[key]:.{digits}f}"

            lines.append(f"angles (degrees): intra train {fmt('intra_train', 2)}, intra test "
                         f"{fmt('intra_test', 2)}, inter {fmt('inter', 2)}; IIR train {fmt('iir_train', 3)}, "
                         f"IIR test {fmt('iir_test', 3)}")
        elif a.get("note"):
            lines.append(f"angles {a['note']}")
    else:
        lines.append("no labels in this split: wrote predictions only")
    if isinstance(r.get("complexity"), Mapping):
        from asc.complexity import describe

        lines.append(f"complexity: {describe(r['complexity'])}")
    lines.append(f"wrote {result.out_dir / 'report.md'} (+ report.json, "
                 f"{sum(1 for f in result.files if f.suffix == '.png')} figures, predictions.csv)")
    return lines
