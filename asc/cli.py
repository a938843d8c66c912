"""The `asc` command. Each stage registers its own subcommand from `asc/<stage>/cli.py`.

Those modules import only argparse at top level, so `asc --help` stays fast; the work is imported
when a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from asc import __version__
from asc.errors import AscError

# (module that defines `register(subparsers)`), in the order shown by --help
_COMMAND_MODULES = (
    "asc.data.cli",
    "asc.features.cli",
    "asc.train.cli",
    "asc.train.teacher_cli",
    "asc.eval.cli",
    "asc.predict",
    "asc.export.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asc",
        description="Acoustic scene classification with BN and L2BN: data, features, training, reports.",
        epilog="example: asc data synth --out data/synth --preset small",
    )
    parser.add_argument("--version", action="version", version=f"asc-l2bn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _watch_interrupts() -> list[bool]:
    """A SIGINT handler that remembers it fired (then raises KeyboardInterrupt as Python's does): an
    interrupt can surface as another exception, which is then known to be the user's Ctrl-C."""
    import signal

    fired: list[bool] = []
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return fired  # someone else handles it (a test runner, an embedding program)

    def handler(signum, frame):
        fired.append(True)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        pass
    return fired


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 1
    interrupted = _watch_interrupts()
    try:
        result = func(args)
    except AscError as exc:
        print(f"asc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"asc {args.command}: interrupted", file=sys.stderr)
        return 130
    except ImportError:
        # Ctrl-C while a compiled extension initializes (torch at start-up) surfaces as an ImportError
        if not interrupted:
            raise
        print(f"asc {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a permission, a vanished file: the path and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"asc {args.command}: error: {where}{exc.strerror or exc}; fix this and rerun (files are "
              "written atomically: none is left half-written)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
