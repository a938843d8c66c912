"""Reports and training histories as read back from disk: checked in one place, so a file of the wrong
shape (a string accuracy, a list where an object belongs, a percentage where a fraction belongs) is one
line naming the file and the key, never a traceback in compare or a "+5672 points" difference."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asc.errors import DataError

FRACTIONS = ("accuracy", "macro_accuracy")
ANGLE_RANGES = {"intra_train": (0, 180), "intra_test": (0, 180), "inter": (0, 180),
                "iir_train": (0, math.inf), "iir_test": (0, math.inf)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(path: Path | str, key: str, what: str, value: Any) -> DataError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return DataError(f"{path}: {key} is {shown}, {what}; re-run `asc evaluate` for that run")


def _scores(path: Path | str, key: str, scores: Any, *, required: bool = True) -> None:
    """A {accuracy, log_loss, n, ...} entry: fractions in [0, 1], log loss >= 0, n a count."""
    if not isinstance(scores, Mapping):
        raise _fail(path, key, "not an object of scores", scores)
    for name in FRACTIONS:
        value = scores.get(name)
        if value is None:
            continue
        if not _number(value) or not 0 <= value <= 1:
            raise _fail(path, f"{key}.{name}", "not a fraction in [0, 1] (a percentage?)", value)
    loss = scores.get("log_loss")
    if loss is not None and (not _number(loss) or loss < 0):
        raise _fail(path, f"{key}.log_loss", "not a non-negative number", loss)
    n = scores.get("n")
    if (n is not None or required) and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise _fail(path, f"{key}.n", "not a count of clips", n)


def check_record(path: Path | str, row: Any, where: str) -> dict:
    """One per-epoch record: an object with an integer epoch and numeric values (angles an object)."""
    if not isinstance(row, Mapping):
        raise _fail(path, where, "not an object", row)
    epoch = row.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
        raise _fail(path, f"{where}.epoch", "not an epoch number", epoch)
    for name, value in row.items():
        if name == "angles":
            if value is not None and not isinstance(value, Mapping):
                raise _fail(path, f"{where}.angles", "not an object", value)
            for a, v in (value or {}).items():
                if v is not None and not _numeric(v):  # NaN is a value a diverging run may have
                    raise _fail(path, f"{where}.angles.{a}", "not a number", v)
        elif value is None or name == "epoch":
            continue
        elif not _numeric(value):
            raise _fail(path, f"{where}.{name}", "not a number", value)
        elif name in FRACTIONS + ("val_acc", "train_acc") and math.isfinite(value) and not 0 <= value <= 1:
            raise _fail(path, f"{where}.{name}", "not a fraction in [0, 1] (a percentage?)", value)
    return dict(row)


def check_history(path: Path | str, history: Any, key: str = "history") -> list[dict]:
    """Per-epoch records (see `check_record`)."""
    if not isinstance(history, list):
        raise _fail(path, key, "not a list of per-epoch records", history)
    return [check_record(path, row, f"{key}[{i}]") for i, row in enumerate(history)]


def check_report(path: Path | str, report: Any) -> dict:
    """The report.json of `asc evaluate`, checked for every key compare and the curves read."""
    if not isinstance(report, Mapping):
        raise _fail(path, "the file", "not a JSON object", type(report).__name__)
    missing = [k for k in ("overall", "per_device", "run") if k not in report]
    if missing:
        raise DataError(f"{path}: not an evaluation report (missing {', '.join(missing)}); re-run "
                        "`asc evaluate` for that run")
    run = report["run"]
    if not isinstance(run, Mapping):
        raise _fail(path, "run", "not an object", run)
    for name in ("model", "norm"):
        if run.get(name) is not None and not isinstance(run[name], str):
            raise _fail(path, f"run.{name}", "not a name", run[name])
    _scores(path, "overall", report["overall"], required=False)
    for group in ("per_device", "device_groups"):
        entries = report.get(group) or {}
        if not isinstance(entries, Mapping):
            raise _fail(path, group, "not an object", entries)
        for name, scores in entries.items():
            _scores(path, f"{group}.{name}", scores)
    angles = report.get("angles") or {}
    if not isinstance(angles, Mapping):
        raise _fail(path, "angles", "not an object", angles)
    for name, (lo, hi) in ANGLE_RANGES.items():
        value = angles.get(name)
        if value is not None and (not _number(value) or not lo <= value <= hi):
            raise _fail(path, f"angles.{name}", f"not a number in [{lo}, {hi}]", value)
    if "history" in report and report["history"] is not None:
        check_history(path, report["history"])
    return dict(report)
