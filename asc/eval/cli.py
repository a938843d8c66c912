"""`asc evaluate` and `asc compare`. Only argparse at import time; the work is imported on use."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a trained run per device and per scene; write RUN/report/",
        description=(
            "Run a trained checkpoint over the recipe's evaluation split and write RUN/report/report.json,\n"
            "report.md and PNG figures: accuracy, macro accuracy and log loss overall, per device (a, b, c,\n"
            "s1-s6) and device group, per scene, confusion matrices, and the paper's intra/inter angles and\n"
            "IIR of the classification-layer features (class centres from the training split).\n"
            "Class probabilities of every clip go to predictions.csv (DCASE submission format); a split\n"
            "without labels (the official evaluation set) gets only those, no scores."
        ),
        epilog=("examples:\n  asc evaluate runs/resnet17_paper_l2bn_seed0 --checkpoint best --device cuda\n"
                "  asc evaluate runs/resnet17_paper_l2bn_seed0 --cache cache_eval/logmel128_deltas-<hash> "
                "--split test\n"
                "      (official evaluation set: writes RUN/report_test/predictions.csv)"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("run", metavar="RUN", help="run folder written by `asc train`")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best",
                          help="which checkpoint to score (default: best)")
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default=None,
                          help="where the model runs (default: cuda when available, else cpu)")
    evaluate.add_argument("--batch-size", type=int, default=None, metavar="N",
                          help="clips per forward pass (default: the recipe's train.eval_batch_size)")
    evaluate.add_argument("--workers", type=int, default=None, metavar="N",
                          help="data-loading worker processes (default: the recipe's data.num_workers)")
    evaluate.add_argument("--split", default=None, metavar="NAME",
                          help="split to score (default: the recipe's data.eval_split, e.g. evaluate)")
    evaluate.add_argument("--cache", default=None, metavar="DIR",
                          help="another feature cache folder (the one holding manifest.json), e.g. the "
                               "official evaluation set extracted with the run's feature config")
    evaluate.add_argument("--out", default=None, metavar="DIR",
                          help="report folder (default: RUN/report; RUN/report_<split> with --split/--cache)")
    evaluate.add_argument("--no-angles", dest="angles", action="store_false",
                          help="skip the angle measures (saves a pass over the training split)")
    evaluate.set_defaults(func=_evaluate)

    compare = subparsers.add_parser(
        "compare",
        help="BN vs L2BN table over evaluated runs (mean ± std over seeds)",
        description=(
            "Read RUN/report/report.json of each run, group the runs by model and norm, and write\n"
            "compare.md, compare.json and per_device.png: accuracy (mean ± std over seeds), macro\n"
            "accuracy, log loss, per-device accuracy and IIR side by side, with the L2BN - BN difference\n"
            "of each model. The main table is also printed."
        ),
        epilog="example:\n  asc compare runs/resnet17_paper_*_seed* --out runs/compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders")
    compare.add_argument("--out", metavar="DIR", default=None,
                         help="output folder (default: the runs' common parent folder + /compare)")
    compare.set_defaults(func=_compare)


def _evaluate(args: argparse.Namespace) -> int:
    from asc.errors import ConfigError
    from asc.eval.evaluate import evaluate_run, summary_lines

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}")
    result = evaluate_run(args.run, checkpoint=args.checkpoint, device=args.device,
                          batch_size=args.batch_size, workers=args.workers, angles=args.angles,
                          split=args.split, cache_dir=args.cache, out_dir=args.out)
    print("\n".join(summary_lines(result)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from asc.eval.compare import compare_runs, main_table

    summary, _, out = compare_runs(args.runs, args.out)
    if summary.get("notice"):
        print(summary["notice"])
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")
    print("\n".join(main_table(summary)))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'per_device.png'}")
    return 0
