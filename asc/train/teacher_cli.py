"""`asc teacher`: the teacher logits a student distills from (`asc.train.distill`)."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  asc teacher runs/r17_seed0 runs/r17_seed1 runs/r17_seed2 --out teachers/r17x3
  asc train --recipe recipes/dcase2020/fcnn.yaml --set train.distill.teacher=teachers/r17x3
  asc train --recipe recipes/dcase2020/fcnn.yaml \\
      --set "train.distill={teacher: teachers/r17x3, lambda: 0.02, temperature: 2.0}"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="write an ensemble's teacher logits for distillation",
                       description="Score every training clip of the runs' feature cache (whole clips, eval "
                                   "mode) and write the mean of the runs' logits as DIR/teacher_logits.npy "
                                   "with DIR/teacher.json (clip ids, classes, cache, config hash, runs, "
                                   "checksum). The runs must share the feature cache, split and classes.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="trained run folders (the ensemble)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the teacher logits")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of each run (default: best)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="data loader workers (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asc.train.distill import LOGITS_FILE, write_teacher

    meta = write_teacher(args.runs, args.out, checkpoint=args.checkpoint, device=args.device,
                         batch_size=args.batch_size, workers=args.workers)
    n, k = meta["shape"]
    runs = len(meta["runs"])
    acc = meta["train_accuracy"]
    acc = "" if acc is None else f"; the ensemble's accuracy on them {acc:.4f}"
    print(f"wrote {args.out}/{LOGITS_FILE}: mean logits of {runs} run{'s' * (runs > 1)} for {n} clips x {k} "
          f"classes of split {meta['split']!r}{acc}")
    return 0
