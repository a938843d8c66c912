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
        help="BN vs L2BN (or any variants against a baseline) over evaluated runs: mean ± std, paired "
             "differences with 95 %% CI, p-value and Holm-adjusted p-value",
        description=(
            "Read RUN/report/report.json of each run, group the runs by model and variant, and write\n"
            "compare.md, compare.json and figures: accuracy (mean ± std over seeds), the seen - unseen\n"
            "device gap, macro accuracy, log loss, per-device accuracy, angles and IIR side by side; per\n"
            "model the paired differences variant - baseline over runs that share a seed, with a 95 %\n"
            "Student-t interval, a paired t-test p-value and, for accuracy, the p-value Holm-adjusted over\n"
            "the model's comparisons; model sizes; the paper's curves over epochs (accuracy and loss, IIR,\n"
            "angles). A run's variant is its norm plus the transforms its recipe adds to the recipe's own\n"
            "augmentation (RUN/recipe.yaml), e.g. bn+freq_mixstyle.\n"
            "Runs scored on different splits, datasets, feature configs or numbers of epochs are refused\n"
            "unless --allow-mixed. The main and paired tables are also printed."
        ),
        epilog=("examples:\n  asc compare runs/resnet17_paper_*_seed* --out runs/compare\n"
                "  asc compare exp/dcase2020_quick/fcnn_quick_*_seed* --baseline bn  "
                "# bn, l2bn, bn+freq_mixstyle, ..."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders")
    compare.add_argument("--out", metavar="DIR", default=None,
                         help="output folder (default: the runs' common parent folder + /compare)")
    compare.add_argument("--allow-mixed", action="store_true",
                         help="compare runs scored on different splits, datasets, features or epochs anyway")
    compare.add_argument("--baseline", metavar="NAME", default=None,
                         help="the variant every other is paired with, e.g. bn or bn+freq_mixstyle "
                              "(default: bn)")
    compare.add_argument("--unseen-group", metavar="NAME", default="unseen",
                         help="the device group held out of training: the main table's gap column is the "
                              "accuracy on the other groups' devices minus this group's (default: unseen; "
                              "no column when the reports have no such group)")
    compare.set_defaults(func=_compare)

    analyze = subparsers.add_parser(
        "analyze",
        help="per norm layer: spread of sample l2 norms within classes, angles and IIR (the mechanism)",
        description=(
            "On the evaluate split of each run, at every norm layer in forward order: the spread of\n"
            "per-sample l2 norms of the layer's input within each class (coefficient of variation,\n"
            "averaged over classes), and the intra/inter-class angles and IIR of its output pooled over\n"
            "space. The paper (Sec. 3.2, Fig. 5) argues that L2BN removes the spread that BN leaves,\n"
            "layer after layer. Writes RUN/analysis/{analysis.json,analysis.md,layers.png}; with\n"
            "several runs also an overlay (e.g. BN against L2BN) in --out."),
        epilog=("examples:\n"
                "  asc analyze exp/dcase2020_quick/fcnn_quick_bn_seed0 \\\n"
                "              exp/dcase2020_quick/fcnn_quick_l2bn_seed0\n"
                "  asc analyze runs/r17_l2bn --checkpoint last --device cuda"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("runs", nargs="+", metavar="RUN", help="trained run folders")
    analyze.add_argument("--out", metavar="DIR", default=None,
                         help="folder of the overlay with several runs (default: their parent + /analysis)")
    analyze.add_argument("--checkpoint", choices=("best", "last"), default="best")
    analyze.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    analyze.add_argument("--split", default=None,
                         help="labelled split (default: the recipe's evaluation split)")
    analyze.add_argument("--batch-size", type=int, default=64, metavar="N")
    analyze.set_defaults(func=_analyze)


def _evaluate(args: argparse.Namespace) -> int:
    from asc.errors import ConfigError
    from asc.eval.evaluate import evaluate_run, summary_lines

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}")
    from asc.features.compute import keep_large_buffers

    keep_large_buffers(every_size=True)  # the model's activations, reused batch after batch: 1.35x
    result = evaluate_run(args.run, checkpoint=args.checkpoint, device=args.device,
                          batch_size=args.batch_size, workers=args.workers, angles=args.angles,
                          split=args.split, cache_dir=args.cache, out_dir=args.out)
    print("\n".join(summary_lines(result)))
    return 0


def _profile(layers: list, key: str, name: str) -> str:
    """First, peak and last value of a per-layer statistic: the peak is where the paper's argument
    (BN leaves sample norms spread in the middle of the network) shows, so it is never left out."""
    values = [(i, layer.get(key)) for i, layer in enumerate(layers) if layer.get(key) is not None]
    if not values:
        return f"{name} –"
    peak = max(values, key=lambda v: v[1])
    return (f"{name} {values[0][1]:.3f} (first) .. {peak[1]:.3f} (peak, layer {peak[0] + 1}) .. "
            f"{values[-1][1]:.3f} (last)")


def _analyze(args: argparse.Namespace) -> int:
    from asc.errors import ConfigError
    from asc.eval.analyze import analyze_runs

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    results, written = analyze_runs(args.runs, args.out, device=args.device, checkpoint=args.checkpoint,
                                    batch_size=args.batch_size, split=args.split)
    for r in results:
        print(f"{r['model']} / {r['norm']} / seed {r['seed']}: {len(r['layers'])} norm layers; "
              + "; ".join(_profile(r["layers"], key, name) for key, name in (("norm_cv", "norm CV"),
                                                                           ("iir", "IIR"))))
    print("wrote " + ", ".join(str(p) for p in written if p.suffix == ".md"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from asc.eval.compare import compare_runs, main_table, paired_table

    summary, _, out = compare_runs(args.runs, args.out, allow_mixed=args.allow_mixed, baseline=args.baseline,
                                   unseen_group=args.unseen_group)
    if summary.get("notice"):
        print(summary["notice"])
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")
    print("\n".join(main_table(summary)))
    if summary["differences"]:
        print()
        print("\n".join(paired_table(summary)))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'} and {len(summary['figures'])} figures "
          f"in {out}")
    return 0
