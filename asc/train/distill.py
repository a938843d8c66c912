"""Knowledge distillation from a teacher ensemble, as the DCASE Task 1 top systems (CPJKU) do it.

`asc teacher RUN [RUN ...] --out DIR` scores every training clip of the runs' feature cache with the one
inference function (full clips, eval mode) and stores the ensemble's mean logits:

    DIR/teacher_logits.npy   float32 (N clips, K classes), rows in the order of teacher.json's ids
    DIR/teacher.json         ids, classes, the cache folder and its manifest's config_hash, the split,
                             the runs (and checkpoints), the .npy's shape and sha256

A student trained with `train.distill: {teacher: DIR, lambda: 0.02, temperature: 2.0}` minimizes

    lambda * CE(student, labels) + (1 - lambda) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(KL summed over classes, averaged over the batch; T^2 keeps the soft term's gradients at the scale of
the hard one's as T changes, Hinton et al. 2015).

What goes through the batch is the teacher's softened distribution softmax(teacher / T), computed once
when training starts. Mixup mixes it with the same per-sample lambda as the labels, so each mixed input
has as teacher target the mix of its two clips' teacher distributions, just as its label is the mix of
their labels (mixing logits instead would give a softmax that is not the mix of the two distributions).
Crops, masks and MixStyle leave it as it is: the teacher saw the whole clip, as in the published systems,
whose teacher predictions are computed once per clip, before training.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asc.config import Field, validate
from asc.errors import AscError, DataError

FORMAT = "asc-teacher/1"
LOGITS_FILE = "teacher_logits.npy"
META_FILE = "teacher.json"

#: the train.distill section (null: no distillation)
SCHEMA: dict[str, Field] = {
    "teacher": Field(str, help="folder written by `asc teacher` (teacher_logits.npy, teacher.json)"),
    "lambda": Field(float, 0.02, min=0.0, max=1.0, help="the label loss's weight; 1 - lambda: the teacher's"),
    "temperature": Field(float, 2.0, min=0.0, min_exclusive=True, help="softens teacher and student alike"),
}


def check_section(section: Any, source: str, origins: Mapping | None = None) -> dict:
    """train.distill checked against SCHEMA, every key filled in; errors name the key and where it was set."""
    return validate(section, SCHEMA, source=source, prefix="train.distill", origins=origins)


# ------------------------------------------------------------------------------------------ the loss


def distill_loss(logits: Tensor, targets: Tensor, teacher_probs: Tensor, *, weight: float,
                 temperature: float) -> Tensor:
    """weight * CE(logits, targets) + (1 - weight) * T^2 * KL(teacher_probs || softmax(logits / T)).

    `targets` and `teacher_probs` are distributions (mixed by mixup alike); the teacher's already
    softened at temperature T. With weight 1 the value and the gradients are the label loss's exactly."""
    logits = logits.float()
    hard = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    p = teacher_probs.float()
    log_q = F.log_softmax(logits / temperature, dim=1)
    # p log p with 0 log 0 = 0 (xlogy), so a teacher certain of one class gives no NaN
    kl = (torch.special.xlogy(p, p) - p * log_q).sum(1).mean()
    return weight * hard + (1.0 - weight) * temperature ** 2 * kl


def soften(logits: np.ndarray | Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) in float64, returned as float32 rows that sum to 1."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return torch.softmax(z / temperature, dim=1).float()


# ------------------------------------------------------------------------------------- writing


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_teacher(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, checkpoint: str = "best",
                  device: str | None = None, batch_size: int = 64, workers: int = 0) -> dict:
    """Score the runs' training clips (full length, eval mode, `asc.eval.inference.infer`), average the
    logits over the runs and write them to `out`; returns the sidecar. The runs must share one feature
    cache, training split and class list: otherwise their rows would not describe the same clips."""
    from asc.eval.inference import infer
    from asc.features.cache import read_manifest
    from asc.features.dataset import FeatureDataset
    from asc.runs import class_names, load_run, pick_device
    from asc.tasks import SceneTask, task_of
    from asc.train.data import eval_loader

    if not runs:
        raise AscError("asc teacher: name at least one trained run")
    device = pick_device(device)
    first: dict | None = None
    total: Tensor | None = None
    dataset = None
    described = []
    for run in runs:
        trained = load_run(run, checkpoint=checkpoint, device=device)
        recipe = trained.recipe
        task = task_of(recipe, run)
        if task.kind != "spectrogram":
            raise AscError(f"{run}: a {recipe.get('task')} run; teacher logits are written for audio runs "
                           "(feature caches) only")
        here = {"run": str(run),
                "cache_dir": str(Path(SceneTask.cache_dir(recipe, run)).resolve()),
                "split": str((recipe.get("data") or {}).get("train_split", "train")),
                "classes": class_names(trained)}
        if first is None:
            first = here
            dataset = FeatureDataset(here["cache_dir"], split=here["split"])
            if len(dataset) == 0:
                raise DataError(f"{here['cache_dir']}: no clips of split {here['split']!r} to score; "
                                "extract the training split first")
            if list(dataset.scenes) != here["classes"]:
                raise AscError(f"{run}: the model's classes ({', '.join(here['classes'][:6])}, ...) are not "
                               f"the cache's ({', '.join(dataset.scenes[:6])}, ...); train it on this cache")
        else:
            for key, what in (("cache_dir", "feature cache"), ("split", "training split"),
                              ("classes", "classes")):
                if here[key] != first[key]:
                    shown = (lambda v: ", ".join(v) if isinstance(v, list) else v)  # noqa: E731
                    raise AscError(f"{run}: its {what} ({shown(here[key])}) is not {first['run']}'s "
                                   f"({shown(first[key])}); an ensemble's runs must share the feature cache, "
                                   "split and classes")
        loader = eval_loader(dataset, batch_size, workers, pin_memory=torch.device(device).type == "cuda")
        logits, _, _ = infer(trained.model, loader, device=device, progress_desc=f"teacher {Path(run).name}",
                             total=len(loader))
        logits = logits.double()
        total = logits if total is None else total + logits
        described.append({"run": str(Path(run).resolve()), "checkpoint": str(trained.checkpoint.resolve()),
                          "epoch": trained.epoch})
    assert first is not None and total is not None and dataset is not None
    mean = (total / len(runs)).float().numpy().astype(np.float32)
    labelled = dataset.labels >= 0  # how good a teacher it is, on the clips it will teach
    accuracy = (float((mean[labelled].argmax(1) == dataset.labels[labelled]).mean()) if labelled.any()
                else None)
    buffer = io.BytesIO()
    np.save(buffer, mean, allow_pickle=False)
    data = buffer.getvalue()
    manifest = read_manifest(first["cache_dir"])
    meta = {"format": FORMAT, "ids": list(dataset.ids), "classes": first["classes"],
            "cache_dir": first["cache_dir"], "config_hash": manifest["config_hash"], "split": first["split"],
            "runs": described, "aggregate": "mean of logits", "train_accuracy": accuracy,
            "shape": list(mean.shape),
            "dtype": "float32", "sha256": _sha256(data)}
    from asc.fileio import atomic_write_bytes, atomic_write_json

    out = Path(out)
    atomic_write_bytes(out / LOGITS_FILE, data)  # the sidecar last: its checksum vouches for this file
    atomic_write_json(out / META_FILE, meta)
    return meta


# ------------------------------------------------------------------------------------- reading


def read_teacher(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(logits float32 (N, K), sidecar) of a folder written by `asc teacher`, checked against its
    own sidecar (format, shape, checksum)."""
    folder = Path(folder)
    meta_path, logits_path = folder / META_FILE, folder / LOGITS_FILE
    redo = "write them again with `asc teacher RUN ... --out DIR`"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{meta_path}: no teacher logits there; {redo}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: unreadable ({str(exc).splitlines()[0][:120]}); {redo}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: not a teacher-logit sidecar (format {FORMAT} expected); {redo}")
    try:
        data = logits_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{logits_path}: missing beside {META_FILE}; {redo}") from None
    if _sha256(data) != meta.get("sha256"):
        raise DataError(f"{logits_path}: its checksum is not the one {META_FILE} records (damaged, or from "
                        f"another `asc teacher` run); {redo}")
    try:
        logits = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{logits_path}: not a readable .npy ({str(exc)[:120]}); {redo}") from None
    ids, classes = meta.get("ids"), meta.get("classes")
    if not isinstance(ids, list) or not isinstance(classes, list) or logits.dtype != np.float32 or \
            logits.shape != (len(ids), len(classes)):
        raise DataError(f"{meta_path}: logits of shape {logits.shape} ({logits.dtype}) do not fit its "
                        f"{len(ids or [])} ids and {len(classes or [])} classes; {redo}")
    if len(set(ids)) != len(ids):
        raise DataError(f"{meta_path}: lists a clip id twice; {redo}")
    if not np.isfinite(logits).all():
        raise DataError(f"{logits_path}: holds NaN/Inf logits; {redo} from runs that did not diverge")
    return logits, meta


def teacher_for(folder: str | os.PathLike, dataset: Any) -> np.ndarray:
    """The teacher logits in the row order of `dataset` (a FeatureDataset of a cache's training split).

    Refused in one line, naming what differs, unless the file describes exactly these clips: the same
    ids, the same classes in the same order and features of the same config hash."""
    from asc.features.cache import read_manifest

    logits, meta = read_teacher(folder)
    meta_path = Path(folder) / META_FILE
    redo = "write them with `asc teacher` from runs trained on this cache"
    cache_hash = read_manifest(dataset.cache_dir).get("config_hash")
    if meta.get("config_hash") != cache_hash:
        raise DataError(f"{meta_path}: teacher logits of features with config hash "
                        f"{meta.get('config_hash')}, the cache {dataset.cache_dir} has {cache_hash}; {redo}")
    if list(meta["classes"]) != list(dataset.scenes):
        raise DataError(f"{meta_path}: classes {', '.join(map(str, meta['classes'][:6]))}, ... are not the "
                        f"cache's {', '.join(dataset.scenes[:6])}, ... (same names, same order); {redo}")
    row = {clip: i for i, clip in enumerate(meta["ids"])}
    missing = [c for c in dataset.ids if c not in row]
    extra = len(row) - (len(dataset.ids) - len(missing))
    if missing or extra:
        example = f", e.g. {missing[0]!r}" if missing else ""
        raise DataError(f"{meta_path}: teacher logits of {len(row)} clips do not match the "
                        f"{len(dataset.ids)} clips of split {dataset.split!r} in {dataset.cache_dir} "
                        f"({len(missing)} missing{example}; {extra} not in the split); {redo}")
    return logits[[row[c] for c in dataset.ids]]


def teacher_targets(recipe: Mapping, task: Any) -> Tensor | None:
    """The softened teacher distribution of every training clip, in the training set's row order, or
    None when the recipe does not distill."""
    section = (recipe.get("train") or {}).get("distill")
    if not section:
        return None
    if task.kind != "spectrogram" or not hasattr(task.train, "ids"):
        raise AscError("train.distill: teacher logits are read for audio tasks (feature caches) only; set "
                       "train.distill=null")
    return soften(teacher_for(section["teacher"], task.train), section["temperature"])
