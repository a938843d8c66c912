"""Progress bars with rates, quiet when stderr is not a terminal (logs, CI) unless forced."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    env = os.environ.get("ASC_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar (rate, ETA) that is disabled off-terminal; set ASC_PROGRESS=1 to force it on.

    `enabled=False` silences it regardless (e.g. on every rank but the first)."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not (enabled and progress_enabled()),
                dynamic_ncols=True, leave=False, **kw)
