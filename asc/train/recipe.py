"""Recipes: one YAML per experiment naming a feature config, a model config, the norm and the
training settings, with named profiles (e.g. `quick`) that override parts of it.

Resolution order: file -> profile -> --set overrides -> --norm/--seed -> validation -> paths made
absolute and the model config merged in. The resolved dict is what a run directory stores.

Relative paths (`features`, `model`, `data.cache`, `data.root`) are taken from where they were written:
- in a YAML file (the recipe or one of its profiles): relative to that file's folder, so a recipe
  works from any current folder (`model: ../../models/resnet17.yaml`, `data.cache: ../../cache`);
- on the command line (`--set data.cache=DIR`, `--set model=Y.yaml`, ...): relative to the current
  folder, like any other command-line path;
- not written anywhere (the schema default `data.cache: cache`): relative to the current folder.
`~` is expanded in all of them. Errors name where the value was written: "recipes/x.yaml:12: ..."
or "--set train.lr=abc: ...".
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from asc.config import (
    ConfigDict,
    Field,
    Origin,
    apply_overrides,
    describe,
    find_origin,
    load_yaml,
    validate,
)
from asc.errors import ConfigError
from asc.nn import NORM_KINDS
from asc.train.augment import TRANSFORMS

TASKS = ("dcase", "cifar100")
DEFAULT_PROFILE = "paper"

SCHEMA: dict[str, Any] = {
    "name": Field(str, help="experiment name, used for run directory names"),
    "description": Field(str, ""),
    "task": Field(str, "dcase", choices=TASKS),
    "features": Field(str, None, nullable=True, help="feature config (dcase); see the module doc for paths"),
    "model": Field(str, help="model config; see the module doc for relative paths"),
    "model_params": Field(dict, {}, help="overrides of the model config's params"),
    "norm": Field(str, "bn", choices=NORM_KINDS),
    "seed": Field(int, 0),
    "profile": Field(str, DEFAULT_PROFILE),
    "data": {
        "cache": Field(str, "cache", help="root folder of feature caches (dcase)"),
        "cache_dir": Field(str, None, nullable=True,
                           help="the feature cache itself (default: found under data.cache by the feature "
                                "config)"),
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
        "momentum_style": Field(str, "torch", choices=("torch", "keras"),
                                help="keras: velocity = momentum * velocity - lr * grad, as the published "
                                     "Keras scripts (they differ from torch right after an SGDR restart)"),
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
        "deterministic": Field(bool, False, help="torch.use_deterministic_algorithms(True): the same results "
                                                 "on the same machine and thread count, at some speed"),
        "eval_every": Field(int, 1, min=1),
        "angles_every": Field(int, 0, min=0),
        "val_clips": Field(int, None, nullable=True, min=1,
                           help="validate during training on this many clips of the evaluation split, "
                                "spread evenly over devices and scenes (null: all); reports use all"),
        "angle_clips": Field(int, None, nullable=True, min=1,
                             help="class centres and training-data angles from this many training clips, "
                                  "spread evenly over classes (null: all), in training and in reports"),
        "max_steps_per_epoch": Field(int, None, nullable=True, min=1),
        "distill": Field(dict, None, nullable=True,
                         help="knowledge distillation: {teacher: DIR written by `asc teacher`, lambda: 0.02, "
                              "temperature: 2.0} (asc.train.distill); null: none"),
    },
    "augment": {
        "transforms": Field(list, None, nullable=True,
                            help="the batch transforms in order, each {name: NAME, its parameters}, e.g. "
                                 "[{name: crop, frames: 400}, {name: mixup, alpha: 0.4}]; names: "
                                 f"{', '.join(TRANSFORMS)} (asc.train.augment); null: the list the keys "
                                 "below describe (masks, crop, crop_pad/hflip, then mixup), which must "
                                 "then keep their defaults"),
        "crop_frames": Field(int, None, nullable=True, min=1),
        "reference_frames": Field(int, None, nullable=True, min=1,
                                  help="the time axis (frames) crop_frames and time_mask_width are written "
                                       "for; clips of another length scale both (null: used as written)"),
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


def _path_base(origins: Mapping[tuple, Origin], key: tuple) -> tuple[Path, str]:
    """The folder a relative path at `key` is relative to, and that rule in words (for errors)."""
    origin, _ = find_origin(origins, key)
    if origin is None or origin.command_line:
        return Path.cwd(), "a relative path on the command line is taken from the current folder"
    return origin.base, f"a relative path in {origin.file} is taken from that file's folder"


def _resolve_path(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = base / p
    return str(p.resolve())


def _config_file(cfg: Mapping, key: str, origins: Mapping, source: str, what: str) -> str:
    """The absolute path of the config file named at `key`; a clear error if there is none."""
    base, rule = _path_base(origins, (key,))
    path = _resolve_path(cfg[key], base)
    if not os.path.isfile(path):
        raise ConfigError(f"{describe((key,), origins, source)}: no such {what} {path} ({rule}); "
                          "fix the path")
    return path


def _check_profiles(path: Path, raw: ConfigDict) -> dict:
    """The recipe's `profiles` section: profile name -> mapping of overrides."""
    origins = raw.origins
    profiles = raw.pop("profiles", None)
    if profiles is None:
        return {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{describe(('profiles',), origins, str(path))}: must map each profile name to "
                          "the settings it overrides, e.g. profiles: {quick: {train: {epochs: 2}}}")
    for name, over in profiles.items():
        where = describe(("profiles", str(name)), origins, str(path))
        if not isinstance(name, str):
            raise ConfigError(f"{where}: a profile name must be a word, got {name!r}")
        if name == DEFAULT_PROFILE:
            raise ConfigError(f"{where}: '{DEFAULT_PROFILE}' is the recipe itself without a profile; "
                              "give this profile another name")
        if over is not None and not isinstance(over, Mapping):
            raise ConfigError(f"{where}: a profile must be a mapping of the settings it overrides "
                              f"(e.g. train: {{epochs: 2}}), got {over!r}")
    return {name: over or {} for name, over in profiles.items()}


def _apply_profile(raw: ConfigDict, name: str, over: Mapping) -> ConfigDict:
    """`raw` with profile `name` merged in; origins of its values point at their lines in the profile."""
    out = ConfigDict(deep_merge(raw, over), origins=raw.origins)
    prefix = ("profiles", name)
    for p in sorted((p for p in raw.origins if len(p) > 2 and p[:2] == prefix), key=len):
        key, value, node = p[2:], over, raw
        for k in key:
            value = value.get(k) if isinstance(value, Mapping) else None
            node = node.get(k) if isinstance(node, Mapping) else None
        if isinstance(value, Mapping) and isinstance(node, Mapping):
            out.origins[key] = raw.origins[p]  # a section merged into the recipe's own
        else:
            out.set_origin(key, raw.origins[p])  # replaced: the file's lines below it are gone
    return out


def load_recipe(path: str | os.PathLike, *, profile: str | None = None, overrides: Iterable[str] = (),
                norm: str | None = None, seed: int | None = None) -> dict:
    """Read, override, validate and resolve a recipe; returns the dict a run stores as recipe.yaml."""
    path = Path(path)
    raw = load_yaml(path)
    profiles = _check_profiles(path, raw)
    if profile is not None:
        chosen = Origin(arg=f"--profile {profile}")
    else:
        profile = raw.get("profile") or DEFAULT_PROFILE
        chosen = find_origin(raw.origins, ("profile",))[0] or Origin(str(path))
    if not isinstance(profile, str):
        raise ConfigError(f"{chosen}: profile: expected a profile name, got {profile!r}")
    if profile != DEFAULT_PROFILE:
        if profile not in profiles:
            known = ", ".join([DEFAULT_PROFILE, *profiles])
            raise ConfigError(f"{chosen}: unknown profile {profile!r} in {path} (this recipe has: {known})")
        raw = _apply_profile(raw, profile, profiles[profile])
    raw["profile"] = profile
    raw.set_origin(("profile",), chosen)
    raw = apply_overrides(raw, overrides)
    if raw.get("profile") != profile:
        raise ConfigError(f"{raw.origins[('profile',)]}: a profile is chosen with --profile NAME, not with "
                          "--set (a --set applies after the profile)")
    if norm is not None:
        raw["norm"] = norm
        raw.set_origin(("norm",), Origin(arg=f"--norm {norm}"))
    if seed is not None:
        raw["seed"] = seed
        raw.set_origin(("seed",), Origin(arg=f"--seed {seed}"))
    cfg = validate(raw, SCHEMA, source=str(path))
    # YAML reads on/off as booleans: keep one spelling
    tr = cfg["train"]
    tr["amp"] = "off" if tr["amp"] is False else tr["amp"]
    if isinstance(tr["channels_last"], bool):
        tr["channels_last"] = "on" if tr["channels_last"] else "off"
    return resolve(cfg, path.parent, origins=raw.origins, source=str(path))


def resolve(cfg: dict, base: Path, origins: Mapping[tuple, Origin] | None = None,
            source: str | None = None) -> dict:
    """Make paths absolute, merge the model config, and (dcase) locate the feature cache.

    `origins` say where each value was written (see the module doc); without them every path is
    taken as written in a recipe in `base`.
    """
    from asc.models.common import load_model_config

    source = source or f"recipe {cfg['name']}"
    if origins is None:
        origins = {(k,): Origin(str(Path(base) / "recipe.yaml")) for k in ("features", "model")}
        origins.update({("data", k): Origin(str(Path(base) / "recipe.yaml")) for k in ("cache", "root")})
    out = copy.deepcopy(cfg)
    model_path = _config_file(cfg, "model", origins, source, "model config")
    model_cfg = load_model_config(model_path)
    out["model"] = {
        "config": model_path,
        "name": model_cfg["name"],
        "params": deep_merge(model_cfg.get("params") or {}, cfg["model_params"]),
    }
    data = out["data"]
    if cfg["task"] == "dcase":
        if not cfg["features"]:
            raise ConfigError(f"{describe(('features',), origins, source)}: a feature config is required for "
                              "task dcase (e.g. features: ../../features/logmel128_deltas.yaml)")
        from asc.errors import DataError
        from asc.features.cache import cache_path

        out["features"] = _config_file(cfg, "features", origins, source, "feature config")
        data["cache"] = _resolve_path(cfg["data"]["cache"], _path_base(origins, ("data", "cache"))[0])
        if cfg["data"]["cache_dir"]:
            data["cache_dir"] = _resolve_path(cfg["data"]["cache_dir"],
                                              _path_base(origins, ("data", "cache_dir"))[0])
        else:
            try:  # a config that takes the clip length from the data is found among the caches made with it
                data["cache_dir"] = str(cache_path(data["cache"], out["features"]))
            except DataError:
                data["cache_dir"] = None  # training says why (`load_task_data`)
    else:
        if not cfg["data"]["root"]:
            raise ConfigError(f"{describe(('data', 'root'), origins, source)}: the CIFAR-100 folder is "
                              "required for task cifar100 (set it with --set data.root=DIR)")
        data["root"] = _resolve_path(cfg["data"]["root"], _path_base(origins, ("data", "root"))[0])
    tr = cfg["train"]
    if tr.get("distill") is not None:  # checked here, so its teacher path is taken from where it was written
        from asc.train.distill import check_section

        out["train"]["distill"] = section = check_section(tr["distill"], source, origins)
        section["teacher"] = _resolve_path(section["teacher"],
                                           _path_base(origins, ("train", "distill", "teacher"))[0])
    if tr["batch_size"] % tr["micro_batches"]:
        key = ("train", "micro_batches") if find_origin(origins, ("train", "micro_batches"))[0] \
            else ("train", "batch_size")
        raise ConfigError(f"{describe(key, origins, source)}: train.batch_size {tr['batch_size']} is not "
                          f"divisible by train.micro_batches {tr['micro_batches']}; choose a divisor")
    milestones = tr["milestones"]
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
        raise ConfigError(f"{describe(('train', 'milestones'), origins, source)}: expected a list of epoch "
                          f"numbers (whole numbers >= 1), e.g. [100, 150], got {milestones!r}")
    for key in ("sgdr_first_cycle", "sgdr_mult"):
        out["train"][key] = int(out["train"][key])
    out["train"]["milestones"] = list(milestones)
    return out


def run_name(recipe: Mapping) -> str:
    return f"{recipe['name']}_{recipe['profile']}_{recipe['norm']}_seed{recipe['seed']}"


# keys that may differ between an interrupted run and its resumption
RESUME_FREE_KEYS = {("data", "num_workers"), ("train", "eval_batch_size"), ("train", "compile")}
# keys a resumption may change on purpose: more epochs extend a run (SGDR goes on with its cycles)
EXTENDABLE_KEYS = {("train", "epochs")}


def recipe_differences(saved: Mapping, new: Mapping, prefix: tuple = (),
                       ignore: frozenset | set = frozenset()) -> list[str]:
    """Every dotted key whose value differs, as "key: saved -> new" (keys in `ignore` left out)."""
    out = []
    for key in sorted(set(saved) | set(new), key=str):
        here = (*prefix, key)
        if here in ignore:
            continue
        a, b = saved.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += recipe_differences(a, b, here, ignore)
        elif a != b:
            out.append(f"{'.'.join(map(str, here))}: {a!r} -> {b!r}")
    return out


def resume_recipe(run_dir: str | os.PathLike, recipe: str | os.PathLike | None = None, *,
                  profile: str | None = None, overrides: Iterable[str] = (), norm: str | None = None,
                  seed: int | None = None) -> dict:
    """The recipe to resume a run with: the run's own (RUN/recipe.yaml is the truth). Options given
    beside it must agree with it, except train.epochs (more epochs extend the run) and the keys that
    may change on a resumption; otherwise a ConfigError lists every difference in one line."""
    path = Path(run_dir) / "recipe.yaml"
    saved = dict(load_yaml(path))
    if recipe is not None:
        new = load_recipe(recipe, profile=profile, overrides=overrides, norm=norm, seed=seed)
    else:
        new = copy.deepcopy(saved)
        given = {"profile": profile, "norm": norm, "seed": seed}
        new.update({k: v for k, v in given.items() if v is not None})
        new = dict(apply_overrides(new, overrides))
    differences = recipe_differences(saved, new, ignore=RESUME_FREE_KEYS | EXTENDABLE_KEYS)
    if differences:
        more = f"; and {len(differences) - 6} more" if len(differences) > 6 else ""
        shown = "; ".join(differences[:6]) + more
        raise ConfigError(f"{path}: the run was trained with other settings ({shown}); resume with no other "
                          "options than --out and --resume (and --set train.epochs=N to extend it), or "
                          "choose a new --out")
    out = copy.deepcopy(saved)
    for section, key in RESUME_FREE_KEYS | EXTENDABLE_KEYS:
        if key in (new.get(section) or {}):
            out.setdefault(section, {})[key] = new[section][key]
    epochs = out["train"]["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"--set train.epochs={epochs}: expected a whole number of epochs >= 1")
    return out


def resume_mismatch(saved: Mapping, new: Mapping, prefix: tuple = (),
                    ignore: frozenset | set = frozenset()) -> str | None:
    """The first dotted key whose value differs (ignoring RESUME_FREE_KEYS and `ignore`), or None."""
    for key in sorted(set(saved) | set(new)):
        here = (*prefix, key)
        if here in RESUME_FREE_KEYS or here in ignore:
            continue
        a, b = saved.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found = resume_mismatch(a, b, here, ignore)
            if found:
                return found
        elif a != b:
            return ".".join(here)
    return None
