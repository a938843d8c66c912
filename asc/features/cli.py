"""`asc extract`: audio of a TAU-format folder -> cached log-mel shards for training.

Only argparse at top level; the work is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os

_EPILOG = """\
examples:
  asc extract --data data/tau2020 --features features/logmel128_deltas.yaml --out cache
  asc extract --data data/synth --features features/logmel128_deltas.yaml --out cache \\
      --splits train,evaluate --workers 4 --skip-bad
  # two machines, same dataset; then bring the parts into one folder and merge:
  asc extract --data D --features F --out cache --num-shards 2 --shard-index 0   # machine 1
  asc extract --data D --features F --out cache --num-shards 2 --shard-index 1   # machine 2
  asc extract --features F --out cache --merge

The cache folder is CACHE/<config-stem>-<hash12>/; re-running with the same config and audio does
nothing, changed or new audio files are extracted incrementally, and an interrupted run resumes.
The last line printed is the cache folder.
"""


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract log-mel features into a cache of shards",
        description="Extract features (log-mel, deltas) of every clip of a TAU-format dataset into "
                    "fixed-size shards with a manifest, keyed by the feature config's hash.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder (TAU 2020 Mobile layout)")
    p.add_argument("--features", metavar="YAML", required=True,
                   help="feature config, e.g. features/logmel128_deltas.yaml")
    p.add_argument("--out", metavar="CACHE", default="cache", help="cache root (default: cache)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a feature config value, e.g. --set duration=2 (repeatable)")
    p.add_argument("--workers", type=int, default=_default_workers(), metavar="N",
                   help="processes that decode (and on CPU compute) clips (default: cores, at most 8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where features are computed; cuda computes batches on the GPU")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="clips per GPU batch")
    p.add_argument("--splits", metavar="S1,S2",
                   help="only these splits (train, evaluate, test, unused); default: every clip")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable or missing audio (listed in the manifest) instead of stopping")
    p.add_argument("--dtype", choices=("float16", "float32"), help="array type in the shards "
                   "(default: the config's storage.dtype, float16)")
    p.add_argument("--shard-size", type=int, metavar="N",
                   help="clips per shard (default: the config's storage.shard_size, 1024)")
    p.add_argument("--num-shards", type=int, default=1, metavar="K",
                   help="split the work into K parts (one per machine)")
    p.add_argument("--shard-index", type=int, default=0, metavar="I", help="which part this run does, 0..K-1")
    p.add_argument("--merge", action="store_true",
                   help="write the manifest of a multi-part run whose parts are all in CACHE")
    p.set_defaults(func=run_extract)


def _resolve_config(args: argparse.Namespace) -> tuple[dict, str]:
    from pathlib import Path

    from asc.config import apply_overrides, load_yaml
    from asc.features.logmel import resolve_feature_config

    path = Path(args.features)
    raw = apply_overrides(load_yaml(path), args.overrides)
    storage = dict(raw.get("storage") or {})
    if args.dtype:
        storage["dtype"] = args.dtype
    if args.shard_size is not None:
        storage["shard_size"] = args.shard_size
    if storage:
        raw["storage"] = storage
    return resolve_feature_config(raw, str(path)), path.stem


def run_extract(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asc.errors import AscError, DataError
    from asc.features.cache import clips_from_dataset, extract, merge_parts
    from asc.features.logmel import feature_hash

    if args.workers < 1:
        raise AscError(f"--workers {args.workers}: must be >= 1")
    if args.batch_size < 1:
        raise AscError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        raise AscError(f"--shard-index {args.shard_index} must be in 0..{args.num_shards - 1} "
                       f"(--num-shards {args.num_shards})")
    cfg, stem = _resolve_config(args)
    cache_dir = Path(args.out) / f"{stem}-{feature_hash(cfg)}"

    if args.merge:
        manifest = merge_parts(cache_dir)
        shards = len(manifest["shards"])
        print(f"{manifest['num_clips']} clips, {len(manifest['skipped'])} skipped, {shards} "
              f"shard{'s' if shards != 1 else ''}")
        print(cache_dir)
        return 0
    if not args.data:
        raise AscError("--data DIR is required (the dataset folder), except with --merge")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise AscError("--device cuda: no CUDA device is available here; use --device cpu")

    from asc.data.tau2020 import SPLITS, load_tau2020

    splits = None
    if args.splits:
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise AscError(f"--splits: unknown split {unknown[0]!r}; expected some of {', '.join(SPLITS)}")
    # with --skip-bad, missing files stay in the list and end up in the manifest's `skipped`
    dataset = load_tau2020(args.data, check_audio=not args.skip_bad)
    clips = clips_from_dataset(dataset, splits)
    if not clips:
        raise DataError(f"{args.data}: no clips{' in splits ' + ','.join(splits) if splits else ''}")
    result = extract(clips, cfg, cache_dir, name=stem, dataset_root=str(Path(args.data).resolve()),
                     synthetic=dataset.synthetic, workers=args.workers, device=args.device,
                     skip_bad=args.skip_bad, num_shards=args.num_shards, shard_index=args.shard_index,
                     batch_size=args.batch_size)
    if result.complete:
        from asc.features.cache import read_manifest

        manifest = read_manifest(cache_dir)
        shards = len(manifest["shards"])
        print(f"{manifest['num_clips']} clips ({len(manifest['skipped'])} skipped) in {shards} "
              f"shard{'s' if shards != 1 else ''}, shape {tuple(manifest['shape'])}, {manifest['dtype']}")
    print(cache_dir)
    return 0
