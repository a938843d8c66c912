"""`asc data augment`: device simulation on waveforms, written as extra training clips.

Only argparse is imported here; the work is imported when the command runs.
"""

from __future__ import annotations

import argparse

_TEXT = """\
Simulate recording devices (and Hu et al.'s waveform augmentations) on a dataset's device-a
training clips (all training clips when the data has no devices) and write the results as
WAVs into a new folder OUT, which is a dataset of its own:

  OUT/list.csv      filename,label,device,split: the augmented clips (split train, device
                    e.g. "a+dir") and every original clip with its own split and device
  OUT/augmented/    the augmented WAVs (32-bit float, the dataset's rate and clip length)
  OUT/<original>    relative symbolic links to the original files, at their own paths
  OUT/augment.json  what made each augmented file (source clip, transform, parameters, seed)

`asc extract --data OUT/list.csv` then gives one cache in which the augmented clips are extra
training rows; evaluation rows are the untouched originals, with the same ids as in a cache of
the source. The links are relative: keep OUT beside the dataset when moving them.

transforms (--transforms, comma-separated; k copies of each clip unless said otherwise):
{transforms}

Every output depends only on (--seed, the source clip, the transform, the copy), not on --workers."""


def _augment(args: argparse.Namespace) -> int:
    from asc.data.devicesim import LIST_FILE, augment_dataset

    result = augment_dataset(args.data, args.out, args.transforms, reader=args.reader, k=args.k,
                             ir_folder=args.ir_folder, seed=args.seed, source_device=args.source_device,
                             workers=args.workers)
    for name, count in result.counts.items():
        extra = f" ({result.skipped[name]} clips without a partner skipped)" if result.skipped[name] else ""
        print(f"{name:<20} {count} clips{extra}")
    print(f"wrote {result.written} augmented clips and linked {result.originals} original clips")
    print(result.out / LIST_FILE)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `augment` to the `asc data` subcommands."""
    from asc.data.devicesim import TRANSFORMS
    from asc.data.readers import READERS

    listing = "\n".join(f"  {name:<20} {t.help}" for name, t in TRANSFORMS.items())
    p = sub.add_parser(
        "augment", help="device simulation on waveforms: write augmented training clips as a new dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=_TEXT.format(transforms=listing),
        epilog="examples:\n"
               "  asc data synth --out data/synth --preset small --write-irs data/device_irs\n"
               "  asc data augment --data data/synth --out data/synth_aug \\\n"
               "      --transforms dir,spectrum_correction --k 2 --ir-folder data/device_irs\n"
               "  asc extract --data data/synth_aug/list.csv --features features/logmel128_deltas.yaml "
               "--out cache/synth_aug")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder or manifest CSV")
    p.add_argument("--dataset", dest="reader", choices=tuple(READERS), default=None, metavar="NAME",
                   help=f"dataset reader: {', '.join(READERS)} (default: detected from --data)")
    p.add_argument("--out", required=True, metavar="AUG", help="new folder for the augmented dataset")
    p.add_argument("--transforms", required=True, metavar="T1,T2",
                   help=f"comma-separated: {', '.join(TRANSFORMS)}")
    p.add_argument("--k", type=_positive_int, default=1,
                   help="copies of each clip per transform (default 1; spectrum_correction: one per device)")
    p.add_argument("--ir-folder", metavar="IRDIR", default=None,
                   help="folder of impulse-response WAVs for dir (e.g. from `asc data synth --write-irs`)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--source-device", default="a", metavar="DEV",
                   help="device whose training clips are augmented, and the reference of "
                        "spectrum_correction (default a)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes (default 1); the output is the same for any number")
    p.set_defaults(func=_augment)
