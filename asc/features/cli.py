"""`asc extract`: audio of a dataset (TAU 2020/2022 Mobile, a folder per class, a CSV) -> cached
log-mel shards for training.

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
  asc extract --data data/tau2022 --train-subset split25.csv --features features/logmel128_deltas.yaml \\
      --out cache/tau2022                     # 1-s clips: the config's `duration: null` takes the data's
  asc extract --data my_sounds/ --features features/logmel128_deltas.yaml --out cache/my_sounds
  asc extract --data my_list.csv --features features/logmel128_deltas.yaml --out cache/my_list
  # re-hash every shard of a cache against the checksums written with it:
  asc extract --features features/logmel128_deltas.yaml --out cache --verify
  # two machines, same dataset; then bring the parts into one folder and merge:
  asc extract --data D --features F --out cache --num-shards 2 --shard-index 0   # machine 1
  asc extract --data D --features F --out cache --num-shards 2 --shard-index 1   # machine 2
  asc extract --features F --out cache --merge

The reader is detected from --data (or named with --dataset); the dataset's description (classes,
devices, clip length, synthetic or not) goes into the manifest, and every later stage reads it from
there. The cache folder is CACHE/<config-stem>-<hash12>/; one folder holds one dataset.
Re-running with the same config and audio does nothing, changed or new audio files are
extracted incrementally, and an interrupted or failed run (a full disk) resumes. A shard
that is cut short or does not match its sidecar is rebuilt by a plain re-run; --verify also
re-hashes every shard (without --data it only reports, exit status 2 if any is bad; with
--data it rebuilds the bad ones). Audio shorter than the config's duration (by more than
0.05 s) is an error: --pad-short zero-pads such clips and lists them in the manifest, --skip-bad
leaves them out. The last line printed is the cache folder.
"""


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract log-mel features into a cache of shards",
        description="Extract features (log-mel, deltas) of every clip of a dataset into "
                    "fixed-size shards with a manifest, keyed by the feature config's hash.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder (TAU 2020/2022 Mobile layout, a folder per "
                   "class) or manifest CSV")
    from asc.data.readers import READERS

    p.add_argument("--dataset", choices=tuple(READERS), metavar="NAME",
                   help=f"dataset reader: {', '.join(READERS)} (default: detected from --data)")
    p.add_argument("--train-subset", metavar="FILE",
                   help="TAU 2022: train on the clips this file lists (e.g. split25.csv); the rest of train "
                        "is unused")
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
                   help="leave out unreadable, missing or short audio (listed in the manifest) instead of "
                        "stopping")
    p.add_argument("--pad-short", action="store_true",
                   help="zero-pad clips shorter than the config's duration (listed in the manifest as "
                        "`padded`) instead of refusing them as truncated")
    p.add_argument("--dtype", choices=("float16", "float32"), help="array type in the shards "
                   "(default: the config's storage.dtype, float16)")
    p.add_argument("--shard-size", type=int, metavar="N",
                   help="clips per shard (default: the config's storage.shard_size, 1024)")
    p.add_argument("--num-shards", type=int, default=1, metavar="K",
                   help="split the work into K parts (one per machine)")
    p.add_argument("--shard-index", type=int, default=0, metavar="I", help="which part this run does, 0..K-1")
    p.add_argument("--merge", action="store_true",
                   help="write the manifest of a multi-part run whose parts are all in CACHE (every shard "
                        "is re-hashed first)")
    p.add_argument("--rehash", action="store_true",
                   help="also compare every audio file's content (a hash of its bytes) with what each shard "
                        "was built from, and rebuild what changed; without it a file counts as unchanged "
                        "while its size and modification time are")
    p.add_argument("--verify", action="store_true",
                   help="re-hash every shard against its checksum; without --data only report (exit 2 if "
                        "any is bad), with --data also rebuild the bad ones")
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


def _repair_command(args: argparse.Namespace) -> str:
    """This run as the manifest records it, the command that rebuilds the cache: absolute paths, and
    only the options that decide what is written (not --workers, --device or the part options)."""
    import shlex
    from pathlib import Path

    argv = ["asc", "extract", "--data", str(Path(args.data).resolve()), *(["--dataset", args.dataset]
                                                                         if args.dataset else []),
            "--features", str(Path(args.features).resolve()), "--out", str(Path(args.out).resolve())]
    for item in args.overrides:
        argv += ["--set", item]
    subset = args.train_subset
    if subset and Path(subset).is_file():
        subset = str(Path(subset).resolve())
    chosen = (("--dtype", args.dtype), ("--shard-size", args.shard_size), ("--splits", args.splits),
              ("--train-subset", subset))
    for flag, value in chosen:
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--skip-bad", args.skip_bad), ("--pad-short", args.pad_short)) if on]
    return shlex.join(argv)


def lock_cache(cache_dir):
    """One `asc extract` writes a cache folder at a time: an advisory lock on the folder itself (the
    system drops it when the process ends, and it adds no file), so a second is refused in one line
    instead of failing on temp files the first one clears. Returns an object whose close() releases it."""
    from asc.errors import AscError
    from asc.fileio import try_exclusive_lock

    fd = try_exclusive_lock(cache_dir)
    if fd is None:
        raise AscError(f"{cache_dir}: another asc extract is writing this cache; wait for it to finish, then "
                       "re-run (finished shards are kept)")
    return _FolderLock(fd)


class _FolderLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        import os

        if self.fd >= 0:
            os.close(self.fd)  # closing drops the lock
            self.fd = -1


def _verify_only(cache_dir: object) -> int:
    from asc.errors import DataError
    from asc.features.cache import read_manifest, verify_cache

    report = verify_cache(cache_dir, log=print)
    if report.bad:
        command = read_manifest(cache_dir).get("command")
        fix = (f"rebuild them with `{command} --verify`" if command else
               "rebuild them by re-running `asc extract` with the --data that built them and --verify")
        raise DataError(f"{cache_dir}: {len(report.bad)} of {report.shards} shards are bad (first: "
                        f"{report.bad[0]}); {fix}")
    print(f"{report.shards} shard{'s' if report.shards != 1 else ''}, {report.clips} clips: checksums match")
    print(cache_dir)
    return 0


def _require_audio_files(dataset: object, clips: list) -> None:
    """Stop before any work when audio files cannot be opened, naming the real cause (a missing file,
    a looping link), with the options this command has."""
    from asc.data.audio import MISSING_FILE
    from asc.data.check import describe_unopenable, unopenable_audio
    from asc.errors import DataError

    wanted = {c.file for c in clips}
    problems = unopenable_audio(dataset, [c for c in dataset.clips if c.filename in wanted])
    if problems:
        fix = ("complete the download" if all(why == MISSING_FILE for _, why in problems) else
               "restore or replace those files")
        raise DataError(f"{dataset.root}: {'; '.join(describe_unopenable(problems, len(clips)))}; {fix}, "
                        "or pass --skip-bad to leave them out")


def run_extract(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asc.errors import AscError, DataError
    from asc.features.cache import merge_parts, read_manifest
    from asc.features.extract import clips_from_dataset
    from asc.features.logmel import feature_hash

    if args.workers < 1:
        raise AscError(f"--workers {args.workers}: must be >= 1")
    if args.batch_size < 1:
        raise AscError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        raise AscError(f"--shard-index {args.shard_index} must be in 0..{args.num_shards - 1} "
                       f"(--num-shards {args.num_shards})")
    cfg, stem = _resolve_config(args)
    if not args.data:  # --merge, --verify: the cache that config names (looked up if the data set its length)
        from asc.features.cache import cache_path

        cache_dir = cache_path(args.out, cfg, stem)

    if args.merge:
        manifest = merge_parts(cache_dir)
        shards = len(manifest["shards"])
        print(f"{manifest['num_clips']} clips, {len(manifest['skipped'])} skipped, {shards} "
              f"shard{'s' if shards != 1 else ''}")
        print(cache_dir)
        return 0
    if args.verify and not args.data:
        return _verify_only(cache_dir)
    if not args.data:
        raise AscError("--data DIR is required (the dataset folder), except with --merge or --verify")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise AscError("--device cuda: no CUDA device is available here; use --device cpu")

    from asc.data.clips import SPLITS
    from asc.data.readers import load_dataset
    from asc.features.logmel import bind_duration

    splits = None
    if args.splits:
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise AscError(f"--splits: unknown split {unknown[0]!r}; expected some of {', '.join(SPLITS)}")
    dataset = load_dataset(args.data, args.dataset, check_audio=False, train_subset=args.train_subset)
    described = dataset.description
    requested = cfg
    cfg = bind_duration(cfg, described.duration, args.features, f"{described.display_name} at {args.data}")
    cache_dir = Path(args.out) / f"{stem}-{feature_hash(cfg)}"
    if splits and (cache_dir / "manifest.json").is_file():  # splits accumulate: never drop what is cached
        try:
            cached = {str(r.get("split")) for r in read_manifest(cache_dir)["clips"]} & set(SPLITS)
        except DataError:
            cached = set()
        kept = sorted(cached - set(splits))
        if kept:
            print(f"keeping the split(s) already in the cache: {', '.join(kept)}")
            splits = [*splits, *kept]
    clips = clips_from_dataset(dataset, splits)
    if args.rehash:
        from asc.features.extract import with_content

        clips = with_content(clips)
    if not clips:
        raise DataError(f"{args.data}: no clips{' in splits ' + ','.join(splits) if splits else ''}")
    if not args.skip_bad:  # with --skip-bad they end up in the manifest's `skipped`
        _require_audio_files(dataset, clips)
    source = {"name": described.name, "root": str(Path(args.data).resolve())}
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # the parts of a multi-machine run write disjoint shards at once, by design: no lock for them
    lock = lock_cache(cache_dir) if args.num_shards == 1 else None
    try:
        _extract_locked(args, dataset, clips, cfg, cache_dir, stem, requested, source, described)
    finally:
        if lock is not None:
            lock.close()
    print(cache_dir)
    return 0


def _extract_locked(args, dataset, clips, cfg, cache_dir, stem, requested, source, described) -> None:
    from pathlib import Path

    from asc.features.cache import check_source, read_manifest, write_source
    from asc.features.extract import extract

    check_source(cache_dir, source)
    write_source(cache_dir, requested, source)
    result = extract(clips, cfg, cache_dir, name=stem, dataset_root=str(Path(args.data).resolve()),
                     synthetic=dataset.synthetic, workers=args.workers, device=args.device,
                     skip_bad=args.skip_bad, pad_short=args.pad_short, verify=args.verify,
                     num_shards=args.num_shards, shard_index=args.shard_index, batch_size=args.batch_size,
                     command=_repair_command(args), description=described.to_dict())
    if result.complete:
        manifest = read_manifest(cache_dir)
        shards = len(manifest["shards"])
        padded = len(manifest.get("padded", []))
        extra = f", {padded} zero-padded" if padded else ""
        print(f"{manifest['num_clips']} clips ({len(manifest['skipped'])} skipped{extra}) in {shards} "
              f"shard{'s' if shards != 1 else ''}, shape {tuple(manifest['shape'])}, {manifest['dtype']}")
