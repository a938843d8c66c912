"""Recipes: one YAML per experiment naming a feature config, a model config, the norm and the
training settings, with named profiles (e.g. `quick`) that override parts of it.

Resolution order: file -> profile -> --set overrides -> --norm/--seed -> validation -> paths made
absolute and the model config merged in. The resolved dict is what a run directory stores.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from asc.config import Field, apply_overrides, load_yaml, validate
from asc.errors import ConfigError
from asc.nn import NORM_KINDS

TASKS = ("dcase", "cifar100")
DEFAULT_PROFILE = "paper"

SCHEMA: dict[str, Any] = {
    "name": Field(str, help="experiment name, used for run directory names"),
    "description": Field(str, ""),
    "task": Field(str, "dcase", choices=TASKS),
    "features": Field(str, None, nullable=True, help="feature config (dcase), relative to the recipe"),
    "model": Field(str, help="model config, relative to the recipe"),
    "model_params": Field(dict, {}, help="overrides of the model config's params"),
    "norm": Field(str, "bn", choices=NORM_KINDS),
    "seed": Field(int, 0),
    "profile": Field(str, DEFAULT_PROFILE),
    "data": {
        "cache": Field(str, "cache", help="root folder of feature caches (dcase)"),
        "root": Field(str, None, nullable=True, help="dataset folder (cifar100)"),
        "train_split": Field(str, "train"),
        "eval_split": Field(str, "evaluate"),
        "num_workers": Field(int, 2, min=0),
    },
    "train": {
        "epochs": Field(int, min=1),
        "batch_size": Field(int, 32, min=2),
        "eval_batch_size": Field(int, 64, min=1),
        "lr": Field(float, 0.1, min=0.0, min_exclusive=True),
        "min_lr": Field(float, 1e-5, min=0.0),
        "momentum": Field(float, 0.9, min=0.0, max=1.0),
        "nesterov": Field(bool, False),
        "lr_decay": Field(float, 0.0, min=0.0,
                          help="Keras SGD decay: the scheduled rate times 1 / (1 + lr_decay * step)"),
        "weight_decay": Field(float, 0.0, min=0.0),
        "weight_decay_on": Field(str, "conv", choices=("conv", "weights", "all")),
        "schedule": Field(str, "sgdr", choices=("sgdr", "cosine", "step", "constant")),
        "sgdr_first_cycle": Field(int, 2, min=1),
        "sgdr_mult": Field(int, 2, min=1),
        "milestones": Field(list, []),
        "gamma": Field(float, 0.1, min=0.0),
        "warmup_epochs": Field(float, 0.0, min=0.0),
        "label_smoothing": Field(float, 0.0, min=0.0, max=1.0),
        "micro_batches": Field(int, 1, min=1,
                               help="gradient accumulation: the batch runs in this many chunks, each "
                                    "normalized with its own batch statistics (as in every framework)"),
        "sync_norm": Field(bool, True, help="several processes: BN/L2BN statistics over the global batch"),
        "grad_clip": Field(float, None, nullable=True, min=0.0, min_exclusive=True),
        "amp": Field((str, bool), "off", choices=("auto", "bf16", "fp16", "off", False),
                     help="autocast: off (float32, as the papers trained), bf16, fp16, auto (bf16 on GPU)"),
        "channels_last": Field((str, bool), "auto", choices=("auto", "on", "off", True, False)),
        "compile": Field(bool, False),
        "eval_every": Field(int, 1, min=1),
        "angles_every": Field(int, 0, min=0),
        "max_steps_per_epoch": Field(int, None, nullable=True, min=1),
    },
    "augment": {
        "crop_frames": Field(int, None, nullable=True, min=1),
        "mixup_alpha": Field(float, 0.0, min=0.0),
        "freq_masks": Field(int, 0, min=0),
        "freq_mask_width": Field(int, 13, min=1),
        "time_masks": Field(int, 0, min=0),
        "time_mask_width": Field(int, 40, min=1),
        "crop_pad": Field(int, 0, min=0, help="images: zero padding of the random crop"),
        "hflip": Field(bool, False),
    },
}


def deep_merge(base: Mapping, over: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_path(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = base / p
    return str(p.resolve())


def load_recipe(path: str | os.PathLike, *, profile: str | None = None, overrides: Iterable[str] = (),
                norm: str | None = None, seed: int | None = None) -> dict:
    """Read, override, validate and resolve a recipe; returns the dict a run stores as recipe.yaml."""
    path = Path(path)
    raw = load_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{path}: profiles must map a profile name to overrides")
    profile = profile or raw.get("profile") or DEFAULT_PROFILE
    if profile != DEFAULT_PROFILE:
        if profile not in profiles:
            known = ", ".join([DEFAULT_PROFILE, *profiles])
            raise ConfigError(f"{path}: unknown profile {profile!r} (this recipe has: {known})")
        raw = deep_merge(raw, profiles[profile])
    raw["profile"] = profile
    raw = apply_overrides(raw, overrides)
    if norm is not None:
        raw["norm"] = norm
    if seed is not None:
        raw["seed"] = seed
    cfg = validate(raw, SCHEMA, source=str(path))
    # YAML reads on/off as booleans: keep one spelling
    tr = cfg["train"]
    tr["amp"] = "off" if tr["amp"] is False else tr["amp"]
    if isinstance(tr["channels_last"], bool):
        tr["channels_last"] = "on" if tr["channels_last"] else "off"
    return resolve(cfg, path.parent)


def resolve(cfg: dict, base: Path) -> dict:
    """Make paths absolute, merge the model config, and (dcase) locate the feature cache."""
    from asc.models.common import load_model_config

    src = f"recipe {cfg['name']}"
    out = copy.deepcopy(cfg)
    model_path = _resolve_path(cfg["model"], base)
    model_cfg = load_model_config(model_path)
    out["model"] = {
        "config": model_path,
        "name": model_cfg["name"],
        "params": deep_merge(model_cfg.get("params") or {}, cfg["model_params"]),
    }
    data = out["data"]
    if cfg["task"] == "dcase":
        if not cfg["features"]:
            raise ConfigError(f"{src}: features: a feature config is required for task dcase")
        from asc.features.cache import cache_path

        out["features"] = _resolve_path(cfg["features"], base)
        data["cache"] = str(Path(os.path.expanduser(cfg["data"]["cache"])).resolve())
        data["cache_dir"] = str(cache_path(data["cache"], out["features"]))
    else:
        if not cfg["data"]["root"]:
            raise ConfigError(f"{src}: data.root: the CIFAR-100 folder is required for task cifar100 "
                              "(set it with --set data.root=DIR)")
        data["root"] = str(Path(os.path.expanduser(cfg["data"]["root"])).resolve())
    if cfg["train"]["batch_size"] % cfg["train"]["micro_batches"]:
        raise ConfigError(f"{src}: train.batch_size {cfg['train']['batch_size']} is not divisible by "
                          f"train.micro_batches {cfg['train']['micro_batches']}")
    for key in ("sgdr_first_cycle", "sgdr_mult"):
        out["train"][key] = int(out["train"][key])
    out["train"]["milestones"] = [int(m) for m in out["train"]["milestones"]]
    return out


def run_name(recipe: Mapping) -> str:
    return f"{recipe['name']}_{recipe['profile']}_{recipe['norm']}_seed{recipe['seed']}"


# keys that may differ between an interrupted run and its resumption
RESUME_FREE_KEYS = {("data", "num_workers"), ("train", "eval_batch_size"), ("train", "compile")}


def resume_mismatch(saved: Mapping, new: Mapping, prefix: tuple = ()) -> str | None:
    """The first dotted key whose value differs (ignoring RESUME_FREE_KEYS), or None."""
    for key in sorted(set(saved) | set(new)):
        here = (*prefix, key)
        if here in RESUME_FREE_KEYS:
            continue
        a, b = saved.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found = resume_mismatch(a, b, here)
            if found:
                return found
        elif a != b:
            return ".".join(here)
    return None
