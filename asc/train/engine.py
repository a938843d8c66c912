"""The training loop: one process or many (torchrun), CPU or GPU, resumable at epoch boundaries.

Run directory:
    recipe.yaml        the resolved recipe
    env.json           versions, device, world size
    metrics.jsonl      one JSON object per epoch
    checkpoints/last.pt, checkpoints/best.pt
    COMPLETED          written when the last epoch is done (summary JSON)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import asc
from asc.config import dump_yaml, load_yaml
from asc.errors import AscError
from asc.eval.inference import infer
from asc.fileio import atomic_write_json, atomic_write_text
from asc.models.dropout import global_batch_rows
from asc.progress import progress
from asc.runs import DATASET_FILE, FEATURES_FILE, RunFolder, build_model, load_checkpoint, save_checkpoint
from asc.train import data as tdata
from asc.train import distill
from asc.train.optim import KerasSGD
from asc.train.recipe import EXTENDABLE_KEYS, resume_mismatch
from asc.train.schedule import keras_decay, learning_rate


class TrainingDiverged(AscError):
    """The loss became NaN or infinite."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str | None) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise AscError("--device cuda: no CUDA device is available")
    if world > 1:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        dev = torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")
        if want_cuda:
            torch.cuda.set_device(dev)
        return Dist(rank, world, local_rank, dev)
    return Dist(device=torch.device("cuda" if want_cuda else "cpu"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment(ctx: Dist) -> dict[str, Any]:
    env: dict[str, Any] = {
        "asc_l2bn": asc.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(ctx.device),
        "world_size": ctx.world,
        "threads": torch.get_num_threads(),
    }
    with contextlib.suppress(Exception):
        import torchaudio

        env["torchaudio"] = torchaudio.__version__
    env["command"] = [Path(sys.argv[0]).name, *sys.argv[1:]]
    env.update(_git_state())
    if torch.version.cuda:
        env["cuda"] = torch.version.cuda
    if torch.backends.cudnn.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
    if ctx.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(ctx.device)
    return env


def _git_state() -> dict[str, Any]:
    """The commit of the checkout that trained, and whether its tree had changes; nothing outside git."""
    import subprocess

    root = Path(asc.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def _decay_params(model: nn.Module, which: str) -> tuple[list, list]:
    """Split parameters into (decayed, not decayed). 'conv': conv kernels (the Keras l2 regularizers of
    the DCASE models); 'weights': conv and linear weights; 'all': everything."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_conv = isinstance(module, nn.modules.conv._ConvNd) and name == "weight"
            is_weight = is_conv or (isinstance(module, nn.Linear) and name == "weight")
            chosen = which == "all" or (which == "conv" and is_conv) or (which == "weights" and is_weight)
            (decay if chosen else no_decay).append(p)
    return decay, no_decay


def _lr_mults(model: nn.Module) -> dict[int, float]:
    """id(parameter) -> the learning-rate multiplier its layer asks for (`param_lr_mult`: BIN's gate)."""
    out = {}
    for module in model.modules():
        for name, mult in getattr(module, "param_lr_mult", {}).items():
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter):
                out[id(p)] = float(mult)
    return out


def make_optimizer(model: nn.Module, tr: dict) -> torch.optim.Optimizer:
    decay, no_decay = _decay_params(model, tr["weight_decay_on"])
    mults = _lr_mults(model)
    groups = []
    for params, wd in ((decay, tr["weight_decay"]), (no_decay, 0.0)):
        for mult in sorted({mults.get(id(p), 1.0) for p in params}):
            chosen = [p for p in params if mults.get(id(p), 1.0) == mult]
            groups.append({"params": chosen, "weight_decay": wd if mult == 1.0 else 0.0, "lr_mult": mult})
    nesterov = tr["nesterov"] and tr["momentum"] > 0
    if tr.get("momentum_style", "torch") == "keras":
        return KerasSGD(groups, lr=tr["lr"], momentum=tr["momentum"], nesterov=nesterov)
    return torch.optim.SGD(groups, lr=tr["lr"], momentum=tr["momentum"], nesterov=nesterov)


def sync_norms(model: nn.Module) -> nn.Module:
    """BN and L2BN with statistics over all processes; refuses a model whose norm kinds would change
    (torch's own convert_sync_batchnorm, for one, turns L2BN into plain BN)."""
    from asc.nn import convert_sync_norm, norm_kind_of

    before = [norm_kind_of(m) for m in model.modules()]
    model = convert_sync_norm(model)
    after = [norm_kind_of(m) for m in model.modules()]
    if before != after:
        raise AscError("synchronizing the norm layers changed their kinds; this is a bug, please report it")
    return model


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


class Trainer:
    def __init__(self, recipe: dict, run_dir: str | os.PathLike, *, resume: bool = False,
                 device: str | None = None) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.ctx = setup_distributed(device)
        self.resume = resume
        tr = recipe["train"]
        cuda = self.ctx.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            "bf16" if tr["amp"] == "auto" and cuda else tr["amp"])
        if self.amp_dtype is not None and not cuda and tr["amp"] == "fp16":
            raise AscError("train.amp=fp16 needs a GPU; use bf16 or off on CPU")
        self.channels_last = tr["channels_last"] == "on" or (tr["channels_last"] == "auto" and cuda)
        #: what the run trained in, for env.json and every report
        names = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
        self.precision = names.get(self.amp_dtype, "float32")

    # ------------------------------------------------------------------ set-up
    def _prepare_run_dir(self) -> int:
        """Create or validate the run directory; returns the first epoch to train."""
        folder = self.folder
        ckpt_path, saved_recipe = folder.checkpoint("last"), folder.recipe
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise AscError(f"{self.run_dir}: exists and is not a folder; choose another --out")
        holder = folder.holder()
        if holder:
            raise AscError(f"{self.run_dir}: {holder} is training in this folder; wait for it or stop it, "
                           "or choose another --out")
        fresh_start = False
        if ckpt_path.exists():
            if not self.resume:
                raise AscError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                               "choose another --out")
            if saved_recipe.exists():
                diff = resume_mismatch(load_yaml(saved_recipe), self.recipe, ignore=EXTENDABLE_KEYS)
                if diff:
                    raise AscError(f"{saved_recipe}: the recipe differs from the run being resumed at "
                                   f"{diff}; resume with the same recipe and options or use a new --out")
        elif saved_recipe.exists():
            # an attempt that stopped before its first checkpoint (a typo, a missing cache) is not a
            # run yet: the next attempt, with or without --resume, takes the folder over
            fresh_start = True
        if self.ctx.enabled:
            dist.barrier()  # every rank has checked the folder before the first one writes to it
        if self.ctx.main:
            if fresh_start:
                print(f"{self.run_dir}: no checkpoint yet from an earlier attempt; starting afresh",
                      flush=True)
                for stale in (folder.completed, folder.metrics):
                    stale.unlink(missing_ok=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            folder.take_lock()
            atomic_write_text(folder.recipe, dump_yaml(self.recipe))
            env = {**environment(self.ctx), "precision": self.precision}
            atomic_write_json(folder.env, env)
        return 0

    def _wrap(self, model: nn.Module) -> nn.Module:
        model = model.to(self.ctx.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        recipe, ctx, tr = self.recipe, self.ctx, self.recipe["train"]
        self._prepare_run_dir()
        seed_everything(recipe["seed"])
        if tr["deterministic"]:  # torch's deterministic algorithms (slower on GPUs; CUDA needs its workspace)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        task = self._task = tdata.subsets_for(tdata.load_task_data(recipe), recipe,
                                              log=(lambda m: print(m, flush=True)) if ctx.main else None)
        #: softened teacher distributions of the training clips (train.distill), checked against the cache
        self._teacher = distill.teacher_targets(recipe, task)
        if ctx.main and task.feature_config is not None:
            # what predictions on new audio must compute, whatever becomes of the cache or the YAML
            atomic_write_text(self.run_dir / FEATURES_FILE, dump_yaml(task.feature_config))
        if ctx.main and task.description is not None:
            # what the run was trained on: classes, devices and groups, clip length, synthetic or not
            atomic_write_json(self.run_dir / DATASET_FILE, task.description.to_dict())
        spec = {"name": recipe["model"]["name"], "num_classes": task.num_classes,
                "in_channels": task.in_channels, "norm": recipe["norm"], "params": recipe["model"]["params"],
                "classes": list(task.class_names)}
        if task.feature_config is not None:  # what predictions must compute, checked against features.yaml
            from asc.features.logmel import feature_hash

            spec["feature_hash"] = feature_hash(task.feature_config)
        model = self._wrap(build_model(spec))
        self._check_input_fits(model, task)
        optimizer = make_optimizer(model, tr)
        start_epoch, best = 0, {"val_acc": -1.0, "epoch": 0}
        last_path = self.folder.checkpoint("last")
        if self.resume and last_path.exists():
            ckpt = load_checkpoint(last_path, map_location=ctx.device)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start_epoch, best = int(ckpt["epoch"]), dict(ckpt["best"])
            if ctx.main:
                print(f"resuming {self.run_dir} after epoch {start_epoch}", flush=True)
        if ctx.main:
            self._truncate_metrics(start_epoch)
        if self.folder.is_complete and start_epoch >= tr["epochs"]:
            if ctx.main:
                print(f"{self.run_dir}: already complete ({tr['epochs']} epochs)")
            return json.loads(self.folder.completed.read_text())
        if ctx.main and self.folder.is_complete:  # more epochs asked of a finished run: it goes on
            print(f"{self.run_dir}: extending the finished run from {start_epoch} to {tr['epochs']} epochs",
                  flush=True)
            self.folder.completed.unlink()

        train_model = model
        if ctx.enabled:
            if tr["sync_norm"]:
                model = sync_norms(model)
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                broadcast_buffers=not tr["sync_norm"])
        if tr["compile"]:
            train_model = torch.compile(train_model)
        writer = self._tensorboard() if ctx.main else None

        n_train = len(task.train)
        steps = tdata.steps_per_epoch(n_train, recipe)
        record: dict[str, Any] = {}
        for epoch in range(start_epoch, tr["epochs"]):
            t0 = time.perf_counter()
            train_stats = self._train_epoch(train_model, optimizer, task, epoch, steps)
            record = {"epoch": epoch + 1, **train_stats, "train_s": round(time.perf_counter() - t0, 3)}
            self._check_weights(model, epoch)
            last = epoch + 1 == tr["epochs"]
            if ctx.main and ((epoch + 1) % tr["eval_every"] == 0 or last):
                angles = bool(tr["angles_every"]) and ((epoch + 1) % tr["angles_every"] == 0 or last)
                record.update(self._evaluate(model, task, angles))
            record["time_s"] = round(time.perf_counter() - t0, 3)
            if ctx.main:
                improved = record.get("val_acc", -1.0) > best["val_acc"]
                if improved:
                    best = {"val_acc": record["val_acc"], "epoch": epoch + 1}
                self._append_metrics(record)
                state = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "model_spec": spec, "recipe": recipe, "metrics": record, "best": best}
                self._save(state, last_path)
                if improved:
                    self._save(state, self.folder.checkpoint("best"))
                self._log_epoch(record, best, steps, writer)
            if ctx.enabled:
                dist.barrier()
        summary = {"epochs": tr["epochs"], "final": record, "best": best, "run_dir": str(self.run_dir)}
        if ctx.main:
            atomic_write_json(self.folder.completed, summary)
            if writer is not None:
                writer.close()
        return summary

    def _check_input_fits(self, model: nn.Module, task: tdata.TaskData) -> None:
        """A model whose pooling would exhaust the training input (a crop of a 1-s clip) is refused before
        training, naming the setting, instead of failing deep inside the first step."""
        shape = getattr(task.train, "shape", None)
        if task.kind != "spectrogram" or not shape:
            return
        c, f, t = (int(v) for v in shape)
        crop = (task.augment or {}).get("crop_frames") or t
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(2, c, f, min(crop, t), device=self.ctx.device))
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or ["error"])[0][:160]
            setting = "augment.crop_frames" if crop < t else "the clip length (features duration)"
            raise AscError(f"{self.recipe['model']['name']} cannot take inputs of {min(crop, t)} frames "
                           f"({first}); raise {setting}, or choose a model with less pooling") from None
        finally:
            model.train()

    def _train_epoch(self, model: nn.Module, optimizer, task: tdata.TaskData, epoch: int, steps: int) -> dict:
        recipe, ctx, tr = self.recipe, self.ctx, self.recipe["train"]
        model.train()
        loader = tdata.train_loader(task, recipe, epoch, ctx.rank, ctx.world,
                                    pin_memory=ctx.device.type == "cuda", teacher=self._teacher)
        kd = tr.get("distill")
        local = min(tr["batch_size"], len(task.train)) // ctx.world
        micro = tr["micro_batches"]
        losses = torch.zeros(steps, device=ctx.device)
        grad_norms = torch.zeros(steps, device=ctx.device)
        params = [p for p in model.parameters() if p.requires_grad]
        correct = torch.zeros((), device=ctx.device)
        seen = 0
        bar = progress(total=steps * local, desc=f"epoch {epoch + 1}/{tr['epochs']}", unit="sample",
                       enabled=ctx.main)
        sched = dict(schedule=tr["schedule"], lr=tr["lr"], min_lr=tr["min_lr"], epochs=tr["epochs"],
                     warmup_epochs=tr["warmup_epochs"], first_cycle=tr["sgdr_first_cycle"],
                     mult=tr["sgdr_mult"], milestones=tr["milestones"], gamma=tr["gamma"])
        lr = tr["lr"]
        for step, items in enumerate(loader):
            x, y = items[0], items[1]
            teacher = items[2] if len(items) > 2 else None
            # Keras SGD(decay=d) scales whatever rate the schedule sets by 1 / (1 + d · iterations)
            lr = keras_decay(learning_rate(epoch + step / steps, **sched), tr["lr_decay"],
                             epoch * steps + step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            x, targets, teacher = tdata.prepare_batch_teacher(x, y, teacher, task=task, recipe=recipe,
                                                              epoch=epoch, step=step, rank=ctx.rank,
                                                              world=ctx.world)
            x = x.to(ctx.device, non_blocking=True)
            targets = targets.to(ctx.device, non_blocking=True)
            if teacher is not None:
                teacher = teacher.to(ctx.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            teacher_chunks = teacher.chunk(micro) if teacher is not None else [None] * micro
            chunks = zip(x.chunk(micro), targets.chunk(micro), teacher_chunks)
            step_loss = torch.zeros((), device=ctx.device)
            start = 0
            for i, (xc, tc, pc) in enumerate(chunks):
                # random draws inside the model depend only on (seed, epoch, step, chunk), so a resumed run
                # draws the same; dropout masks are drawn for the global batch and sliced to this process's
                # rows, so the same global batch split over processes drops the same units
                torch.manual_seed(hash((recipe["seed"], epoch, step, ctx.rank * micro + i)) % 2**62)
                rows = torch.arange(ctx.rank * len(x) + start, ctx.rank * len(x) + start + len(xc))
                start += len(xc)
                sync = contextlib.nullcontext() if (i == micro - 1 or not hasattr(model, "no_sync")) \
                    else model.no_sync()
                key = hash((recipe["seed"], epoch, step))
                with sync, global_batch_rows(key, rows, len(x) * ctx.world):
                    with torch.autocast(ctx.device.type, dtype=self.amp_dtype or torch.float32,
                                        enabled=self.amp_dtype is not None):
                        logits = model(xc)
                    if pc is None:
                        loss = soft_cross_entropy(logits, tc)
                    else:
                        loss = distill.distill_loss(logits, tc, pc, weight=kd["lambda"],
                                                    temperature=kd["temperature"])
                    loss = loss * (len(xc) / len(x))
                    loss.backward()
                step_loss += loss.detach()
                correct += (logits.argmax(1) == tc.argmax(1)).sum()
            losses[step] = step_loss
            # the total gradient norm (clipped when train.grad_clip is set) is also the finite check
            grad_norms[step] = nn.utils.clip_grad_norm_(params, tr["grad_clip"] or float("inf"))
            if ctx.device.type == "cpu" or step % 10 == 9 or step == steps - 1:
                self._check_finite(losses, grad_norms, epoch, step)
            optimizer.step()
            seen += len(x)
            bar.update(len(x))
            if step % 5 == 0:
                bar.set_postfix(loss=f"{float(step_loss):.4f}", lr=f"{lr:.2e}", refresh=False)
        bar.close()
        mean_loss = float(losses.mean())
        stats = torch.tensor([mean_loss, float(correct), float(seen)], device=ctx.device)
        if ctx.enabled:
            dist.all_reduce(stats)
            stats[0] /= ctx.world
        return {"lr": lr, "train_loss": round(float(stats[0]), 6),
                "train_acc": round(float(stats[1] / max(stats[2], 1)), 6)}

    def _save(self, state: dict, path: Path) -> None:
        try:
            save_checkpoint(state, path)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:120]
            raise AscError(f"{path}: cannot write the checkpoint ({why}); the previous checkpoints are "
                           "intact: free some space and rerun with --resume") from None

    def _kept(self) -> str:
        last = self.run_dir / "checkpoints" / "last.pt"
        return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"

    def _check_finite(self, losses: torch.Tensor, grad_norms: torch.Tensor, epoch: int, step: int) -> None:
        """Stop at a non-finite loss or gradient: checked at every step on a CPU (before the step that would
        spread it to the weights), every 10 steps on a GPU (where each check waits for the device); a
        weight made non-finite in between is caught by the check after the epoch, before any checkpoint."""
        for what, values in (("loss", losses), ("gradient norm", grad_norms)):
            done = values[: step + 1]
            bad = (~torch.isfinite(done)).nonzero()
            if len(bad):
                first = int(bad[0])
                raise TrainingDiverged(f"{what} is {float(done[first])} at epoch {epoch + 1}, step "
                                       f"{first + 1}; stopping ({self._kept()}); try a lower train.lr or "
                                       "train.grad_clip")

    def _check_weights(self, model: nn.Module, epoch: int) -> None:
        """No checkpoint, and no COMPLETED, for a model whose weights or statistics are not finite."""
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TrainingDiverged(f"{name} holds non-finite values after epoch {epoch + 1}; stopping "
                                       f"({self._kept()}); try a lower train.lr or train.grad_clip")

    def _predict(self, model: nn.Module, dataset, *, logits: bool = True, embed: bool = False):
        """(logits, embeddings, labels) of a dataset through the one inference function."""
        workers = self.recipe["data"]["num_workers"] if hasattr(dataset, "records") else 0
        loader = tdata.eval_loader(dataset, self.recipe["train"]["eval_batch_size"], workers,
                                   pin_memory=self.ctx.device.type == "cuda")
        return infer(model, loader, device=self.ctx.device, transform=self._task.transform, logits=logits,
                     embed=embed)

    def _evaluate(self, model: nn.Module, task: tdata.TaskData, angles: bool = False) -> dict:
        """Validation loss and accuracy; with `angles`, the paper's angles and IIR of the classification-
        layer features too, from the same pass over the evaluation split plus one over the training split."""
        logits, test_feats, labels = self._predict(model, task.val, embed=angles)
        if logits is None:
            return {}
        keep = labels >= 0
        if not keep.any():
            return {}
        out: dict[str, Any] = {
            "val_loss": round(float(F.cross_entropy(logits[keep], labels[keep])), 6),
            "val_acc": round(float((logits[keep].argmax(1) == labels[keep]).float().mean()), 6)}
        if angles:
            from asc.eval.metrics import angle_metrics

            _, train_feats, train_labels = self._predict(model, task.angle_train, logits=False, embed=True)
            res = angle_metrics(train_feats.numpy(), train_labels.numpy(), test_feats[keep].numpy(),
                                labels[keep].numpy())
            out["angles"] = {k: (None if v is None else round(float(v), 4)) for k, v in res.items()}
        return out

    # ------------------------------------------------------------------ logging
    def _truncate_metrics(self, epoch: int) -> None:
        rows = [r for r in self.folder.read_metrics() if r["epoch"] <= epoch]
        if self.folder.metrics.exists():
            self.folder.write_metrics(rows)

    def _append_metrics(self, record: dict) -> None:
        self.folder.write_metrics(self.folder.read_metrics(warn=False) + [record])

    def _tensorboard(self):
        """Event files in RUN/tensorboard (`tensorboard --logdir exp/`), appended to on --resume."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _log_epoch(self, r: dict, best: dict, steps: int, writer) -> None:
        rate = steps * self.recipe["train"]["batch_size"] / r["train_s"] if r["train_s"] else float("nan")
        val = f"  val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}" if "val_acc" in r else ""
        angles = f"  IIR {r['angles']['iir_train']:.3f}" if r.get("angles") else ""
        print(f"epoch {r['epoch']}/{self.recipe['train']['epochs']}  lr {r['lr']:.2e}  "
              f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}{val}{angles}  "
              f"best {best['val_acc']:.4f}@{best['epoch']}  {r['time_s']:.1f}s "
              f"(training {rate:.0f} samples/s)",
              flush=True)
        if writer is not None:
            for k, v in r.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    writer.add_scalar(k, v, r["epoch"])
            for k, v in (r.get("angles") or {}).items():
                if v is not None:
                    writer.add_scalar(f"angles/{k}", v, r["epoch"])
            writer.flush()  # an interrupted run keeps its curves up to the last epoch


def train(recipe: dict, run_dir: str | os.PathLike, *, resume: bool = False,
          device: str | None = None) -> dict[str, Any]:
    """Train `recipe` into `run_dir`; returns the summary (final and best metrics)."""
    trainer = Trainer(recipe, run_dir, resume=resume, device=device)
    try:
        return trainer.fit()
    finally:
        trainer.folder.release_lock()
        if trainer.ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()


