"""`asc train`: train one recipe (one model x norm x seed) into a run directory."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  asc train --recipe recipes/dcase2020/resnet17.yaml --profile quick --norm l2bn --seed 0
  asc train --recipe recipes/dcase2020/fcnn.yaml --set train.epochs=30 --set data.cache=/data/cache
  asc train --out runs/r17 --resume                          # the run's own recipe and options
  asc train --out runs/r17 --resume --set train.epochs=30    # extend a run (SGDR goes on with its cycles)
  torchrun --nproc_per_node 4 -m asc train --recipe recipes/dcase2020/fsfcnn.yaml   # 4 GPUs
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a recipe",
                       description="Train a registered model on cached features (or CIFAR-100) with a "
                                   "recipe; checkpoints every epoch and resumes with --resume.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="recipe YAML, e.g. recipes/dcase2020/resnet17.yaml (with --resume: "
                                   "optional, the run folder holds its recipe)")
    p.add_argument("--profile", help="recipe profile: paper (default) or one the recipe defines, e.g. quick")
    from asc.norm_kinds import NORM_KINDS, NORM_LABELS

    p.add_argument("--norm", choices=NORM_KINDS, metavar="KIND",
                   help="norm kind for every norm layer (default: the recipe's): "
                        + "; ".join(f"{k}: {v}" for k, v in NORM_LABELS.items()))
    p.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    p.add_argument("--out", help="run directory (default: RUNS/<name>_<profile>_<norm>_seed<seed>)")
    p.add_argument("--runs", default="runs", help="parent of default run directories (default: runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--estimate", action="store_true",
                   help="train nothing: time two steps of the model and print the seconds that training "
                        "and evaluating this run should take here (JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from asc.errors import AscError
    from asc.train.engine import train
    from asc.train.recipe import load_recipe, resume_recipe, run_name

    # a folder before its first checkpoint is no run yet: the next attempt takes it over
    started = bool(args.out) and (Path(args.out) / "recipe.yaml").is_file() and \
        (Path(args.out) / "checkpoints" / "last.pt").is_file()
    if args.resume and started:
        recipe = resume_recipe(args.out, args.recipe, profile=args.profile, overrides=args.overrides,
                               norm=args.norm, seed=args.seed)
    elif args.recipe is None:
        hint = f" ({args.out} holds no run to resume)" if args.resume and args.out else ""
        raise AscError(f"--recipe YAML is required{hint}; e.g. asc train --recipe "
                       "recipes/dcase2020/fcnn.yaml")
    else:
        recipe = load_recipe(args.recipe, profile=args.profile, overrides=args.overrides, norm=args.norm,
                             seed=args.seed)
    if args.estimate:
        import json

        from asc.runs import pick_device
        from asc.tasks import task_of
        from asc.train.estimate import estimate

        if task_of(recipe).kind != "spectrogram":
            from asc.errors import AscError

            raise AscError("--estimate needs an audio recipe (it reads the feature cache's split sizes)")
        print(json.dumps(estimate(recipe, pick_device(args.device))))
        return 0
    out = args.out or os.path.join(args.runs, run_name(recipe))
    summary = train(recipe, out, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        print(f"done: {out}  best val acc {best['val_acc']:.4f} at epoch {best['epoch']}")
    return 0
