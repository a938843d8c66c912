"""`asc data {synth,download,check,synth-cifar}`: build, fetch and validate datasets.

Only argparse is imported here; each handler imports its work when it runs.
"""

from __future__ import annotations

import argparse
import sys

_SYNTH_TEXT = """\
Write a synthetic acoustic-scene set, plus SYNTHETIC.json, which makes every report say the
data is synthetic. Layouts (--layout):
  tau2020  exactly the TAU Urban Acoustic Scenes 2020 Mobile layout: meta.csv,
           evaluation_setup/fold1_*.csv and audio/*.wav (mono, 44.1 kHz, 24-bit)
  tau2022  the TAU 2022 Mobile layout: each recording of --duration seconds cut into 1-s
           segments named scene-city-location-segment-subsegment-device.wav
  folder   a folder dataset of your own kind: five classes with names of their own
           (subfolders), device-a recordings only, no devices and no splits

10 scenes built from seeded noise, tones and events; 10 cities whose recording locations
keep their own level, room and background; devices a, b, c, s1-s6 capture the same
sources; s4-s6 only in evaluate; train and evaluate share no location.

presets: tiny   116 clips (tests; use --duration 1-2)
         small  1,850 clips: train a 650, b/c/s1-s3 40 each; evaluate 100 per device
         full   23,035 clips: the counts of the real development set
(tau2022: one 1-s clip per second of each of them; folder: the device-a clips of five scenes)

The output depends only on preset, seed and duration (not on --workers). Rerunning the
same command resumes an interrupted build, or does nothing when it is complete."""

_DOWNLOAD_TEXT = """\
Download TAU Urban Acoustic Scenes 2020 Mobile, verify each archive against its published
md5 and extract it into DIR:

  --set dev   development set (Zenodo record 3819968: doc, meta and 16 audio archives,
              about 28 GiB); DIR holds audio/, meta.csv and evaluation_setup/fold1_*.csv
  --set eval  official evaluation set (Zenodo record 3685828: doc, meta and 8 audio
              archives, about 12 GiB, no labels); DIR holds audio/0.wav ... and
              evaluation_setup/fold1_test.csv (the `test` split)

Use one folder per set. An interrupted run resumes where it stopped (HTTP Range); a
finished one is not repeated."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _duration(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.1 and 60, got {text}")
    return value


def _synth(args: argparse.Namespace) -> int:
    from asc.data.synth import synthesize

    result = synthesize(args.out, preset=args.preset, seed=args.seed, duration=args.duration,
                        workers=args.workers, force=args.force, layout=args.layout)
    if args.write_irs:
        from asc.data.synth import write_device_irs

        irs = write_device_irs(args.write_irs)
        names = ", ".join(path.stem for path in irs)
        print(f"wrote {len(irs)} device impulse responses ({names}) to {args.write_irs}")
    if result.written == 0 and result.files:
        print(f"{result.root}: synthetic set already complete ({result.files} clips, preset {args.preset}, "
              f"seed {args.seed})")
        return 0
    for split, devices in result.counts.items():
        print(f"{split:<9}" + "  ".join(f"{d} {n}" for d, n in devices.items()))
    rate = result.written / result.seconds if result.seconds else 0.0
    print(f"wrote {result.written} clips in {result.seconds:.1f} s ({rate:.1f} clips/s) to {result.root}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from asc.data.download import download_tau2020
    from asc.data.readers import load_dataset

    key = args.dataset if args.reader == "tau2020" else f"{args.reader}-{args.dataset}"
    root = download_tau2020(args.to, base_url=args.base_url, dataset=key, keep_archives=args.keep_archives)
    data = load_dataset(root, args.reader)
    if args.dataset == "eval":
        print(f"{root}: {len(data.clips)} clips ({data.version}); test {len(data.split('test'))}")
    else:
        print(f"{root}: {len(data.clips)} clips ({data.version}); train {len(data.split('train'))}, "
              f"evaluate {len(data.split('evaluate'))}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from asc.data.check import check_dataset, format_report

    report = check_dataset(args.dir, audio=args.audio, sample=args.sample, reader=args.reader,
                           train_subset=args.train_subset)
    print(format_report(report))
    return 0 if report.ok else 1


def _synth_cifar(args: argparse.Namespace) -> int:
    try:
        from asc.data.cifar import write_synthetic_cifar100
    except ImportError as exc:
        print(f"asc data synth-cifar: not available in this installation ({exc})", file=sys.stderr)
        return 2
    result = write_synthetic_cifar100(args.out, preset=args.preset, seed=args.seed)
    print(f"wrote a synthetic CIFAR-100 set to {result}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser(
        "data", help="build, download or check a dataset", formatter_class=fmt,
        description="Datasets: synthetic sets (TAU 2020/2022 layout, a folder per class), the real TAU Urban "
                    "Acoustic Scenes 2020 and 2022 Mobile sets, checks, and a synthetic CIFAR-100.",
        epilog="examples:\n  asc data synth --out data/synth --preset small\n"
               "  asc data download --to data/tau2020\n  asc data check data/tau2020")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "synth", help="write a synthetic set (TAU 2020 or 2022 Mobile layout, or a folder per class)",
        formatter_class=fmt,
        description=_SYNTH_TEXT,
        epilog="example:\n  asc data synth --out data/synth --preset small --seed 0\n"
               "  asc data synth --out /tmp/tiny --preset tiny --duration 2\n"
               "  asc data synth --out data/synth2022 --layout tau2022 --duration 2   # two 1-s clips each\n"
               "  asc data synth --out data/my_sounds --layout folder --duration 3")
    p.add_argument("--out", required=True, help="output folder: new, empty, or an earlier synthetic build")
    p.add_argument("--preset", choices=("tiny", "small", "full"), default="small",
                   help="size (default small)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--duration", type=_duration, default=10.0, help="clip length in seconds (default 10)")
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: CPUs, at most 8)")
    p.add_argument("--force", action="store_true", help="replace a synthetic set built with other settings")
    p.add_argument("--layout", choices=("tau2020", "tau2022", "folder"), default="tau2020",
                   help="folder layout (default tau2020)")
    p.add_argument("--write-irs", metavar="DIR", default=None,
                   help="also write the linear responses of devices b, c, s1-s3 as WAV impulse responses "
                        "into DIR (for `asc data augment --transforms dir --ir-folder DIR`)")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "download", help="download the real development (Zenodo 3819968) or evaluation (3685828) set",
        formatter_class=fmt, description=_DOWNLOAD_TEXT,
        epilog="examples:\n  asc data download --to data/tau2020\n"
               "  asc data download --set eval --to data/tau2020-eval\n"
               "  asc data download --dataset tau2022 --to data/tau2022")
    p.add_argument("--to", required=True, metavar="DIR", help="dataset folder to create or complete")
    p.add_argument("--set", dest="dataset", choices=("dev", "eval"), default="dev",
                   help="dev: development set (default); eval: official evaluation set, unlabelled")
    p.add_argument("--dataset", dest="reader", choices=("tau2020", "tau2022"), default="tau2020",
                   help="which TAU Mobile set (default tau2020; tau2022: Zenodo 6337421 dev, 6591203 eval)")
    p.add_argument("--base-url", default=None,
                   help="where the archives are (default: the set's Zenodo record)")
    p.add_argument("--keep-archives", action="store_true", help="keep the zip files after extraction")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "check", help="validate a dataset folder and print its counts", formatter_class=fmt,
        description="Validate a dataset (TAU 2020/2022 Mobile, a folder per class, a CSV): metadata\n"
                    "(labels, splits, duplicates), audio files present (a looping or broken link is named\n"
                    "as such), and of all or a sample of files: usable (readable, no NaN/Inf samples, not\n"
                    "cut short: the verdict `asc extract` gives) and in the format the dataset states\n"
                    "(TAU: 44.1 kHz, mono, 10 s or 1 s). Prints counts per split x device (when the data\n"
                    "has devices) and per class. Exit status 1 when there are problems.",
        epilog="examples:\n  asc data check data/tau2020 --audio all\n  asc data check my_sounds/\n"
               "  asc data check data/tau2022 --train-subset split25.csv")
    p.add_argument("dir", help="dataset folder or manifest CSV")
    from asc.data.readers import READERS

    p.add_argument("--dataset", dest="reader", choices=tuple(READERS), default=None,
                   help="dataset reader (default: detected)")
    p.add_argument("--train-subset", metavar="FILE", help="TAU 2022: a training subset, e.g. split25.csv")
    p.add_argument("--audio", choices=("all", "sample", "none"), default="sample",
                   help="which audio files to check (default sample)")
    p.add_argument("--sample", type=_positive_int, default=200, help="files checked with --audio sample")
    p.set_defaults(func=_check)

    from asc.data.devicesim_cli import register as register_augment

    register_augment(sub)

    p = sub.add_parser(
        "synth-cifar", help="write a synthetic CIFAR-100 in the original format", formatter_class=fmt,
        description="Write a small synthetic CIFAR-100 (pickle batches in the original format) for the\n"
                    "image recipe and tests.",
        epilog="example:\n  asc data synth-cifar --out data/cifar-synth --preset small")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", choices=("tiny", "small"), default="small", help="size (default small)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_synth_cifar)
