"""Side-by-side comparison of evaluated runs: variants (a norm, perhaps with extra augmentation) against a
baseline per model, with the statistics that make a difference a claim.

Reads each run's `report/report.json` (written by `asc evaluate`), groups the runs by model and variant
(`variant_label`), and writes compare.md, compare.json, a per-device bar chart and the paper's curves
over epochs. Per group: mean ± sample std over seeds (n - 1; empty for a single run). Runs of one model
that differ only in the variant and share a seed are pairs: per model and variant, the paired
differences (variant − baseline, BN unless told) get their mean, a 95 % Student-t confidence interval
over the pairs and a paired t-test's p-value (no interval from a single pair); with several variants the
accuracy p-values of a model are also Holm-adjusted over its comparisons, since k − 1 tests at 5 % find
something by chance far more often than one. Runs scored on different splits, datasets, feature
configs or numbers of epochs are refused unless allow_mixed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import AscError, DataError
from asc.eval.curves import safe_name
from asc.eval.validate import check_report
from asc.fileio import atomic_open, atomic_write_json, atomic_write_text

BASELINE_NORM = "bn"
#: what a report must share with the others to stand beside them (report.json "scored_on"); the last
#: ones only within a model, since models of one study may train for different numbers of epochs
SCORED_ON_KEYS = ("split", "dataset", "dataset_root", "feature_hash", "epochs")
PER_MODEL_KEYS = ("feature_hash", "epochs")
SCORE_KEYS = ("accuracy", "macro_accuracy", "log_loss")
ANGLE_KEYS = ("intra_train", "intra_test", "inter", "iir_train", "iir_test")
#: the transforms an augment section's flat keys can write, in the order they write them
#: (asc.train.augment's flat list; eval cannot import train, and a test holds the two together)
FLAT_TRANSFORMS = ("crop_flip", "specaugment", "crop", "mixup")


def group_keys(reports: Sequence[Mapping]) -> list[str]:
    """The device groups the reports score (from their datasets' descriptions), in first-seen order;
    none for data without devices."""
    keys: list[str] = []
    for report in reports:
        for key in report.get("device_groups") or {}:
            if key not in keys:
                keys.append(key)
    return keys


REPORT_PATH = Path("report") / "report.json"
RECIPE_FILE = "recipe.yaml"


def load_run_report(run_dir: str | os.PathLike) -> dict:
    """The report.json of one run; a clear error when the run has not been evaluated yet."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_PATH
    if not run_dir.is_dir():
        raise AscError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise AscError(f"{run_dir}: no {REPORT_PATH}; run `asc evaluate {run_dir}` first")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); "
                        f"rerun `asc evaluate {run_dir}`") from None
    return check_report(path, report)


def _stats(values: Sequence[float | None]) -> dict:
    """mean, sample std and count of the values that are present (None is skipped)."""
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(present, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def _norm_order(norm: str) -> tuple[int, str]:
    return (0 if norm == BASELINE_NORM else 1 if norm == "l2bn" else 2, norm)


def _model_of(report: Mapping) -> str:
    return str((report.get("run") or {}).get("model") or "?")


def _norm_of(report: Mapping) -> str:
    return str((report.get("run") or {}).get("norm") or "?")


def variant_of_recipe(recipe: Mapping) -> str:
    """A recipe's variant: its norm, then `+NAME` for each transform of its augment.transforms list after
    the start that the flat keys could have written (FLAT_TRANSFORMS, in their order). The run that
    `--variants bn+freq_mixstyle` trains (the recipe's own list spelled out, then freq_mixstyle) thus
    reads back as bn+freq_mixstyle, and a run without a list as bn. A student trained with a teacher
    (train.distill) ends in `+distill`, so it pairs with the same student trained without one."""
    norm = str(recipe.get("norm") or "?")
    train = recipe.get("train")
    distilled = ["distill"] if isinstance(train, Mapping) and train.get("distill") else []
    augment = recipe.get("augment")
    listed = augment.get("transforms") if isinstance(augment, Mapping) else None
    if not isinstance(listed, list):
        return safe_name("+".join([norm, *distilled]))
    names = [str(t.get("name")) if isinstance(t, Mapping) else "?" for t in listed]
    start, last = 0, -1
    while start < len(names) and names[start] in FLAT_TRANSFORMS[last + 1:]:
        last = FLAT_TRANSFORMS.index(names[start])
        start += 1
    return safe_name("+".join([norm, *names[start:], *distilled]))


def variant_label(run_dir: str | os.PathLike, report: Mapping) -> str:
    """The variant a run stands for, as a plain name: report.run.variant when the report names one, else
    what RUN/recipe.yaml beside the report says (`variant_of_recipe`, with the report's norm), else the
    norm. evaluate writes no variant, so the run's own recipe is where a variant is found."""
    run = report.get("run") or {}
    given = run.get("variant")
    if isinstance(given, str) and given.strip():
        return safe_name(given.strip())
    path = Path(run_dir) / RECIPE_FILE
    if path.is_file():
        from asc.config import load_yaml

        recipe = load_yaml(path)  # a broken file is one ConfigError naming it and the line
        if isinstance(recipe, Mapping):
            return variant_of_recipe({**recipe, "norm": run.get("norm") or recipe.get("norm")})
    return safe_name(_norm_of(report))


def _device_accuracy(report: Mapping, devices: Sequence[str]) -> float | None:
    """Accuracy over the clips of `devices`: their per-device accuracies weighted by clip counts."""
    hits = total = 0.0
    for device in devices:
        scores = (report.get("per_device") or {}).get(device) or {}
        acc, n = scores.get("accuracy"), scores.get("n")
        if acc is not None and isinstance(n, int) and n > 0:
            hits, total = hits + float(acc) * n, total + n
    return hits / total if total else None


def unseen_gap(report: Mapping, held_out: str | None) -> float | None:
    """Accuracy on the devices of every group but `held_out` minus accuracy on `held_out`'s devices
    (per-device scores weighted by clips): how much a model loses on devices it never heard. The groups'
    members come from the report (device_group_members, else its dataset description); a report without
    them weighs its group scores by their clips instead. None when the report has no such group."""
    if not held_out or held_out not in (report.get("device_groups") or {}):
        return None
    members = report.get("device_group_members") or \
        ((report.get("dataset") or {}).get("description") or {}).get("device_groups")
    if isinstance(members, Mapping) and isinstance(members.get(held_out), list):
        unseen = [str(d) for d in members[held_out]]
        seen = [str(d) for name, group in members.items() if name != held_out and isinstance(group, list)
                for d in group if str(d) not in unseen]
        a, b = _device_accuracy(report, list(dict.fromkeys(seen))), _device_accuracy(report, unseen)
    else:  # no members recorded: the groups' own scores, weighted by their clips
        groups = report["device_groups"]
        seen_scores = [(float(g["accuracy"]), g["n"]) for name, g in groups.items()
                       if name != held_out and g.get("accuracy") is not None and g.get("n")]
        total = sum(n for _, n in seen_scores)
        a = sum(acc * n for acc, n in seen_scores) / total if total else None
        b = groups[held_out].get("accuracy")
    return None if a is None or b is None else a - float(b)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order (None stays None and is no test): the i-th
    smallest of m is multiplied by m - i + 1, then made non-decreasing, at most 1. It holds the chance of
    any false claim among a model's k - 1 comparisons at the level one test would have."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out


def summarise(runs: Sequence[tuple[str, Mapping]], baseline: str | None = None,
              held_out: str | None = None) -> dict:
    """Group (run_dir, report) pairs by model x variant, reduce every score over the seeds, and pair each
    variant with the model's `baseline` variant (BN when None; a named baseline no run has is an error).
    `held_out`: the device group never heard in training, for the seen − unseen gap (none: no gap)."""
    if not runs:
        raise AscError("no runs to compare")
    base_name = baseline or BASELINE_NORM
    by_group: dict[tuple[str, str], list[tuple[str, Mapping]]] = {}
    norms: dict[tuple[str, str], str] = {}
    for run_dir, report in runs:
        key = (_model_of(report), variant_label(run_dir, report))
        by_group.setdefault(key, []).append((run_dir, report))
        norms.setdefault(key, _norm_of(report))
    labels = {v for _, v in by_group}
    if baseline is not None and baseline not in labels:
        raise AscError(f"--baseline {baseline}: no run is that variant (the runs are "
                       f"{', '.join(sorted(labels))}); name one of them")

    def order(key: tuple[str, str]) -> tuple:
        return (key[1] != base_name, _norm_order(norms[key]), key[1].count("+"), key[1])

    models = sorted({model for model, _ in by_group})
    ordered = [k for m in models for k in sorted((k for k in by_group if k[0] == m), key=order)]

    devices: list[str] = []
    for _, report in runs:
        for name, scores in report.get("per_device", {}).items():
            if name not in devices and scores.get("n"):
                devices.append(name)

    keys = group_keys([r for _, r in runs])
    held = held_out if held_out in keys else None
    groups = []
    warnings = []
    for model, variant in ordered:
        members = by_group[(model, variant)]
        reports = [r for _, r in members]
        seeds = [(r.get("run") or {}).get("seed") for r in reports]
        if len([s for s in seeds if s is not None]) != len({s for s in seeds if s is not None}):
            warnings.append(f"{model} / {variant}: several runs share a seed ({seeds})")
        entry: dict[str, Any] = {
            "model": model, "norm": norms[(model, variant)], "variant": variant,
            "runs": [d for d, _ in members], "seeds": seeds, "n": len(members),
        }
        for key in SCORE_KEYS:
            entry[key] = _stats([r["overall"].get(key) for r in reports])
        if held:
            entry["unseen_gap"] = _stats([unseen_gap(r, held) for r in reports])
        entry["per_device"] = {d: _stats([r["per_device"].get(d, {}).get("accuracy") for r in reports])
                               for d in devices}
        entry["device_groups"] = {g: _stats([(r.get("device_groups") or {}).get(g, {}).get("accuracy")
                                             for r in reports]) for g in keys}
        entry["angles"] = {a: _stats([(r.get("angles") or {}).get(a) for r in reports]) for a in ANGLE_KEYS}
        entry["model_size"] = next((r["model"] for r in reports if isinstance(r.get("model"), Mapping)), None)
        groups.append(entry)

    differences = []
    for model in models:
        base = next((g for g in groups if g["model"] == model and g["variant"] == base_name), None)
        others = [g for g in groups if g["model"] == model and g["variant"] != base_name]
        if base is None:
            if others and len(others) > 1:
                warnings.append(f"{model}: no {base_name} runs to compare "
                                f"{', '.join(g['variant'] for g in others)} with (name one: --baseline NAME)")
            continue
        diffs = []
        for other in others:
            diff = _difference(base, other, keys)
            diff["paired"] = paired_statistics(by_group[(model, base_name)],
                                               by_group[(model, other["variant"])], held_out=held)
            diffs.append(diff)
        # the family of a model's accuracy tests against its baseline: Holm over its k - 1 comparisons
        adjusted = holm([d["paired"].get("p_value") for d in diffs])
        family = sum(d["paired"].get("p_value") is not None for d in diffs)
        for diff, p in zip(diffs, adjusted):
            diff["paired"]["p_holm"] = p
            diff["paired"]["holm_family"] = family
        differences += diffs

    datasets = []
    for _, report in runs:
        ds = report.get("dataset") or {}
        info = {"name": ds.get("name"), "root": ds.get("root"), "synthetic": bool(report.get("synthetic"))}
        if info not in datasets:
            datasets.append(info)
    if len(datasets) > 1:
        warnings.append("the runs were evaluated on different datasets: "
                        + "; ".join(f"{d['name']} at {d['root']}" for d in datasets))
    synthetic = any(d["synthetic"] for d in datasets)
    notice = None
    if synthetic:
        where = ", ".join(str(d["root"] or d["name"]) for d in datasets if d["synthetic"])
        notice = (f"Synthetic data: runs evaluated on a synthetic set ({where}); "
                  "these numbers check the pipeline and say nothing about accuracy on real data.")
    return {
        "synthetic": synthetic,
        "notice": notice,
        "datasets": datasets,
        "devices": devices,
        "group_keys": keys,
        "baseline": base_name,
        "unseen_group": held,
        "std": "sample standard deviation over seeds (n - 1); null for a single run",
        "groups": groups,
        "differences": differences,
        "warnings": warnings,
    }


def paired_test(diffs: Sequence[float]) -> dict:
    """Mean of paired differences, its 95 % Student-t interval and the two-sided paired t-test p-value.

    One pair has no interval (n - 1 = 0 degrees of freedom); identical differences have a zero-width
    interval and no p-value (the t statistic is undefined).
    """
    from scipy import stats

    d = np.asarray([float(v) for v in diffs], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return {"n": 0, "diff_mean": None, "diff_ci95": None, "p_value": None,
                "note": "no pairs (no BN run shares a seed with these runs)"}
    mean = float(d.mean())
    if n == 1:
        return {"n": 1, "diff_mean": mean, "diff_ci95": None, "p_value": None,
                "note": "a single pair: no interval; train more seeds (e.g. --seeds \"0 1 2\")"}
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal up to rounding: no spread, so no interval and no test
        return {"n": n, "diff_mean": mean, "diff_ci95": None, "p_value": None,
                "note": "identical differences: no spread to build an interval or a test from"}
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(d, np.zeros_like(d)).pvalue)
    return {"n": n, "diff_mean": mean, "diff_ci95": [mean - half, mean + half], "p_value": p, "note": None}


def _seed_values(members: Sequence[tuple[str, Mapping]], get) -> dict:
    out = {}
    for _, report in members:
        seed = (report.get("run") or {}).get("seed")
        value = get(report)
        if seed is not None and value is not None and math.isfinite(float(value)):
            out.setdefault(seed, float(value))
    return out


def paired_statistics(base: Sequence[tuple[str, Mapping]], other: Sequence[tuple[str, Mapping]], *,
                      held_out: str | None = None) -> dict:
    """Paired differences other − base over shared seeds: accuracy at the top level (n, diff_mean,
    diff_ci95, p_value), log loss, IIR, angles, device groups and (with `held_out`) the seen − unseen
    gap under their names."""

    def paired(get) -> dict:
        a, b = _seed_values(base, get), _seed_values(other, get)
        seeds = sorted(set(a) & set(b), key=str)
        return {**paired_test([b[s] - a[s] for s in seeds]), "seeds": seeds}

    out = paired(lambda r: r["overall"].get("accuracy"))
    out["log_loss"] = paired(lambda r: r["overall"].get("log_loss"))
    out["macro_accuracy"] = paired(lambda r: r["overall"].get("macro_accuracy"))
    for key in ANGLE_KEYS:
        out[key] = paired(lambda r, k=key: (r.get("angles") or {}).get(k))
    def group_accuracy(report: Mapping, group: str) -> float | None:
        return (report.get("device_groups") or {}).get(group, {}).get("accuracy")

    keys = group_keys([r for _, r in (*base, *other)])
    out["device_groups"] = {g: paired(lambda r, g=g: group_accuracy(r, g)) for g in keys}
    if held_out:
        out["unseen_gap"] = paired(lambda r: unseen_gap(r, held_out))
    return out


def scored_on(report: Mapping) -> dict:
    """What a report was scored on (reports older than the `scored_on` key: from their dataset/run)."""
    if isinstance(report.get("scored_on"), Mapping):
        return {k: report["scored_on"].get(k) for k in SCORED_ON_KEYS}
    ds, run = report.get("dataset") or {}, report.get("run") or {}
    return {"split": ds.get("split"), "dataset": ds.get("name"), "dataset_root": ds.get("root"),
            "feature_hash": None, "epochs": run.get("epochs")}


def check_comparable(runs: Sequence[tuple[str, Mapping]]) -> list[str]:
    """Each SCORED_ON_KEYS item on which the runs differ, as 'key: value (run), value (run)': split and
    dataset across all runs, feature config and epochs among the runs of each model."""
    problems = []
    models = sorted({_model_of(report) for _, report in runs})
    for key in SCORED_ON_KEYS:
        groups = [[(d, r) for d, r in runs if _model_of(r) == m] for m in models] \
            if key in PER_MODEL_KEYS else [list(runs)]
        for members in groups:
            seen: dict[str, str] = {}
            for run_dir, report in members:
                seen.setdefault(json.dumps(scored_on(report).get(key), default=str), run_dir)
            if len(seen) > 1:
                problems.append(f"{key}: " + ", ".join(f"{json.loads(v)} ({r})" for v, r in seen.items()))
    return problems


def _diff(a: Mapping, b: Mapping) -> float | None:
    if a.get("mean") is None or b.get("mean") is None:
        return None
    return b["mean"] - a["mean"]


def _difference(base: Mapping, other: Mapping, keys: Sequence[str]) -> dict:
    """Mean of `other` minus mean of the baseline, for every score."""
    out: dict[str, Any] = {"model": base["model"], "norm": other["norm"], "variant": other["variant"],
                           "baseline": base["variant"]}
    for key in SCORE_KEYS:
        out[key] = _diff(base[key], other[key])
    if "unseen_gap" in base:
        out["unseen_gap"] = _diff(base["unseen_gap"], other["unseen_gap"])
    out["per_device"] = {d: _diff(base["per_device"][d], other["per_device"][d]) for d in base["per_device"]}
    out["device_groups"] = {g: _diff(base["device_groups"][g], other["device_groups"][g]) for g in keys}
    out["angles"] = {a: _diff(base["angles"][a], other["angles"][a]) for a in ANGLE_KEYS}
    return out


# ----------------------------------------------------------------------------- Markdown

def _fmt(stats: Mapping, scale: float = 1.0, digits: int = 2) -> str:
    if stats.get("mean") is None:
        return "–"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def _fmt_diff(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{scale * value:+.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _excludes_zero(stats: Mapping | None) -> bool:
    ci = (stats or {}).get("diff_ci95")
    return bool(ci) and (ci[0] > 0 or ci[1] < 0)


def _marked(text: str, stats: Mapping | None) -> str:
    """A difference whose 95 % interval excludes zero is marked †."""
    return text + " †" if _excludes_zero(stats) else text


def _label(entry: Mapping) -> str:
    """A group's or difference's variant (summaries written before variants: its norm)."""
    return str(entry.get("variant") or entry["norm"])


def _all_paired(diff: Mapping, summary: Mapping) -> bool:
    """The main table shows mean(variant) − mean(baseline) over all runs; its † is only meaningful when
    every run of both groups is in a pair (otherwise the paired table holds the claim)."""
    sizes = {(g["model"], _label(g)): g["n"] for g in summary["groups"]}
    n = (diff.get("paired") or {}).get("n", 0)
    return n == sizes.get((diff["model"], diff["baseline"])) == sizes.get((diff["model"], _label(diff)))


def _fmt_paired(stats: Mapping, scale: float = 1.0, digits: int = 2) -> str:
    if not stats or stats.get("diff_mean") is None:
        return "–"
    text = f"{scale * stats['diff_mean']:+.{digits}f}"
    ci = stats.get("diff_ci95")
    text += f" [{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]" if ci else " (no interval)"
    return _marked(text, stats)


def _fmt_p(stats: Mapping, key: str = "p_value") -> str:
    p = (stats or {}).get(key)
    return "–" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def paired_table(summary: Mapping) -> list[str]:
    """Per model: paired differences over shared seeds with 95 % intervals and p-values; for accuracy
    also the p-value Holm-adjusted over the model's comparisons against its baseline."""
    header = ["model", "difference", "pairs", "Δ accuracy (points) [95 % CI]", "p", "p Holm",
              "Δ log loss [95 % CI]", "p", "Δ IIR train [95 % CI]", "p", "Δ IIR test [95 % CI]", "p"]
    rows = []
    for d in summary["differences"]:
        p = d.get("paired") or {}
        rows.append([d["model"], f"{_label(d)} − {d['baseline']}", str(p.get("n", 0)),
                     _fmt_paired(p, 100), _fmt_p(p), _fmt_p(p, "p_holm"),
                     _fmt_paired(p.get("log_loss"), 1, 3), _fmt_p(p.get("log_loss")),
                     _fmt_paired(p.get("iir_train"), 1, 3), _fmt_p(p.get("iir_train")),
                     _fmt_paired(p.get("iir_test"), 1, 3), _fmt_p(p.get("iir_test"))])
    return _table(header, rows)


def _gap_title(summary: Mapping) -> str | None:
    held = summary.get("unseen_group")
    return f"gap seen − {held.replace('_', ' ')}" if held else None


def group_paired_table(summary: Mapping) -> list[str]:
    keys = summary.get("group_keys") or []
    if not keys:
        return []
    gap = _gap_title(summary)
    header = ["model", "difference", "pairs", *([f"Δ {gap} (points) [95 % CI]"] if gap else []),
              *(f"Δ {k.replace('_', ' ')} (points) [95 % CI]" for k in keys)]
    rows = []
    for d in summary["differences"]:
        p = d.get("paired") or {}
        groups = p.get("device_groups") or {}
        rows.append([d["model"], f"{_label(d)} − {d['baseline']}", str(p.get("n", 0)),
                     *([_fmt_paired(p.get("unseen_gap"), 100)] if gap else []),
                     *(_fmt_paired(groups.get(k), 100) for k in keys)])
    return _table(header, rows)


def size_table(summary: Mapping) -> list[str]:
    rows = []
    for g in summary["groups"]:
        m = g.get("model_size") or {}
        if not m:
            continue
        macs = f"{m['macs'] / 1e6:,.1f} M" if m.get("macs") else "–"
        shape = " × ".join(str(v) for v in m.get("input_shape") or []) or "–"
        rows.append([g["model"], _label(g), f"{m['params']:,}", macs, f"{m['bytes_fp32'] / 1024:,.0f} KiB",
                     f"{m['bytes_fp16'] / 1024:,.0f} KiB", shape])
    if not rows:
        return []
    return _table(["model", _column(summary), "parameters", "MACs per clip", "size fp32", "size fp16",
                   "input"], rows)


def _column(summary: Mapping) -> str:
    """The groups' column: "norm" while every variant is a plain norm, as BN vs L2BN tables always were."""
    return "norm" if all(_label(g) == g["norm"] for g in summary["groups"]) else "variant"


def _rows_with_differences(summary: Mapping, cells, diff_cells) -> list[list[str]]:
    """One row per group, each model's variant − baseline rows right after it."""
    rows = []
    models = list(dict.fromkeys(g["model"] for g in summary["groups"]))
    for model in models:
        for group in (g for g in summary["groups"] if g["model"] == model):
            rows.append([model, _label(group), str(group["n"]), *cells(group)])
        for diff in (d for d in summary["differences"] if d["model"] == model):
            rows.append([model, f"**{_label(diff)} − {diff['baseline']}**", "", *diff_cells(diff)])
    return rows


def main_table(summary: Mapping) -> list[str]:
    """Accuracy, the seen − unseen gap (when the reports have the held-out group), macro accuracy, log
    loss, device groups and IIR: the table printed on the terminal."""
    keys = summary.get("group_keys") or []
    gap = _gap_title(summary)
    header = ["model", _column(summary), "runs", "accuracy %", *([f"{gap} (points)"] if gap else []),
              "macro acc. %", "log loss", *(f"{k.replace('_', ' ')} %" for k in keys),
              "IIR train", "IIR test"]

    def cells(g):
        return [_fmt(g["accuracy"], 100), *([_fmt(g["unseen_gap"], 100)] if gap else []),
                _fmt(g["macro_accuracy"], 100), _fmt(g["log_loss"], 1, 3),
                *(_fmt(g["device_groups"][k], 100) for k in keys),
                _fmt(g["angles"]["iir_train"], 1, 3), _fmt(g["angles"]["iir_test"], 1, 3)]

    def diff_cells(d):
        p = (d.get("paired") or {}) if _all_paired(d, summary) else {}
        groups = p.get("device_groups") or {}
        return [_marked(_fmt_diff(d["accuracy"], 100), p),
                *([_marked(_fmt_diff(d.get("unseen_gap"), 100), p.get("unseen_gap"))] if gap else []),
                _marked(_fmt_diff(d["macro_accuracy"], 100), p.get("macro_accuracy")),
                _marked(_fmt_diff(d["log_loss"], 1, 3), p.get("log_loss")),
                *(_marked(_fmt_diff(d["device_groups"][k], 100), groups.get(k)) for k in keys),
                _marked(_fmt_diff(d["angles"]["iir_train"], 1, 3), p.get("iir_train")),
                _marked(_fmt_diff(d["angles"]["iir_test"], 1, 3), p.get("iir_test"))]

    return _table(header, _rows_with_differences(summary, cells, diff_cells))


def device_table(summary: Mapping) -> list[str]:
    devices = summary["devices"]

    def cells(g):
        return [_fmt(g["per_device"][d], 100, 1) for d in devices]

    def diff_cells(d):
        return [_fmt_diff(d["per_device"].get(dev), 100, 1) for dev in devices]

    return _table(["model", _column(summary), "runs", *devices],
                  _rows_with_differences(summary, cells, diff_cells))


def angle_table(summary: Mapping) -> list[str]:
    names = {"intra_train": "intra train °", "intra_test": "intra test °", "inter": "inter °",
             "iir_train": "IIR train", "iir_test": "IIR test"}

    def cells(g):
        return [_fmt(g["angles"][a], 1, 3 if a.startswith("iir") else 2) for a in ANGLE_KEYS]

    def diff_cells(d):
        return [_fmt_diff(d["angles"][a], 1, 3 if a.startswith("iir") else 2) for a in ANGLE_KEYS]

    return _table(["model", _column(summary), "runs", *(names[a] for a in ANGLE_KEYS)],
                  _rows_with_differences(summary, cells, diff_cells))


def render_markdown(summary: Mapping, figure: str | None = None,
                    curves: Sequence[tuple[str, str]] = ()) -> str:
    lines: list[str] = []
    if summary.get("synthetic"):
        lines += [f"> **{summary['notice']}**", ""]
    baseline = summary.get("baseline") or BASELINE_NORM
    labels = {_label(g) for g in summary["groups"]}
    title = "BN vs L2BN" if baseline == BASELINE_NORM and labels <= {BASELINE_NORM, "l2bn"} \
        else f"Variants against {baseline}"
    gap = _gap_title(summary)
    lines += [f"# {title}", "",
              "Mean ± std over seeds (sample std, n − 1); accuracies in %; difference rows are "
              f"mean(variant) − mean({baseline}) of the same model; † marks a difference whose paired 95 % "
              "interval excludes zero."
              + (f" The {gap} is the accuracy on the devices of the other groups minus the accuracy on "
                 f"the {summary['unseen_group'].replace('_', ' ')} ones, in points: smaller is better."
                 if gap else ""), ""]
    for warning in summary.get("warnings", []):
        lines += [f"> Warning: {warning}", ""]
    lines += ["## Overall", "", *main_table(summary), ""]
    if summary["differences"]:
        lines += ["## Paired differences", "",
                  "Runs of a model that differ only in the variant (norm and augmentation) and share a "
                  "seed are pairs. Mean of the paired differences, 95 % Student-t interval over the pairs, "
                  "two-sided paired t-test p-value; a single pair has no interval. p Holm: the accuracy "
                  "p-value Holm-Bonferroni-adjusted over the model's comparisons against "
                  f"{baseline} (with one comparison, the p-value itself); cite it when several variants "
                  "were tried.", "", *paired_table(summary), "",
                  *group_paired_table(summary), ""]
    if summary["devices"]:
        lines += ["## Accuracy per device (%)", "", *device_table(summary), ""]
    lines += ["## Angles of classification-layer features", "", *angle_table(summary), ""]
    sizes = size_table(summary)
    if sizes:
        lines += ["## Model size", "", "Parameters (trainable), multiply-accumulates for one clip at the "
                  "evaluation input shape, and weight storage.", "", *sizes, ""]
    if curves:
        lines += ["## Curves over epochs", "",
                  "Mean over seeds, band from the lowest to the highest seed; the variants side by side "
                  "per model. "
                  "The curves are training's per-epoch records: validation accuracy and test-data angles on "
                  "the validation clips (train.val_clips), class centres from train.angle_clips; the tables "
                  "above score every clip of the split, so the last point can differ from them.", ""]
        lines += [f"![{title}]({name})" for title, name in curves] + [""]
    lines += ["## Runs", ""]
    for group in summary["groups"]:
        lines.append(f"- {group['model']} / {_label(group)}: " + ", ".join(f"`{r}`" for r in group["runs"]))
    if figure:
        lines += ["", f"![per-device accuracy]({figure})"]
    return "\n".join(lines) + "\n"


def _device_chart(summary: Mapping, path: Path) -> None:
    from matplotlib.figure import Figure

    devices = summary["devices"]
    groups = summary["groups"]
    width = 0.8 / max(len(groups), 1)
    fig = Figure(figsize=(2 + 0.9 * max(len(devices), 3), 4))
    ax = fig.add_subplot()
    x = np.arange(len(devices))
    for i, group in enumerate(groups):
        means = [100 * (group["per_device"][d]["mean"] or 0.0) for d in devices]
        stds = [100 * (group["per_device"][d]["std"] or 0.0) for d in devices]
        ax.bar(x - 0.4 + (i + 0.5) * width, means, width, yerr=stds, capsize=2,
               label=f"{group['model']} / {_label(group)} (n={group['n']})")
    ax.set_xticks(x, devices)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy %")
    title = "Accuracy per device, mean ± std over seeds"
    ax.set_title(("SYNTHETIC DATA — " if summary.get("synthetic") else "") + title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")


def default_out_dir(run_dirs: Sequence[str | os.PathLike], name: str = "compare") -> Path:
    """`<common parent of the runs>/<name>`."""
    parents = [os.path.abspath(Path(r).resolve().parent) for r in run_dirs]
    return Path(os.path.commonpath(parents)) / name


def _earlier_figures(out: Path) -> set[str]:
    """The figures an earlier comparison recorded in out/compare.json (plain file names only)."""
    try:
        figures = json.loads((out / "compare.json").read_text(encoding="utf-8")).get("figures") or []
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in figures if isinstance(f, str) and f == Path(f).name and f.endswith(".png")
            and not f.startswith(".")}


def compare_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                 *, allow_mixed: bool = False, baseline: str | None = None,
                 unseen_group: str | None = None) -> tuple[dict, str, Path]:
    """Load, summarise and write compare.{md,json} and figures; returns (summary, markdown, out).
    `baseline`: the variant the others are paired with (None: bn, and no error when absent);
    `unseen_group`: the device group held out of training, for the gap column (None: no gap)."""
    if not run_dirs:
        raise AscError("no runs to compare")
    runs = [(str(r), load_run_report(r)) for r in run_dirs]
    problems = check_comparable(runs)
    if problems and not allow_mixed:
        raise AscError("the runs were not scored alike, so they cannot stand side by side: "
                       + "; ".join(problems) + " (re-evaluate them alike, or pass --allow-mixed)")
    summary = summarise(runs, baseline, unseen_group)
    if problems:
        summary["warnings"].append("compared with --allow-mixed although they differ in "
                                   + "; ".join(problems))
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    chart = "per_device.png" if summary["devices"] else None
    if chart:
        _device_chart(summary, out / chart)
    from asc.eval.curves import write_curves

    # the curves' legends name each group's "norm": the variant, so bn and bn+freq_mixstyle differ
    curves = write_curves([{**g, "norm": _label(g)} for g in summary["groups"]],
                          {d: r.get("history") or [] for d, r in runs}, out, synthetic=summary["synthetic"])
    for stale in _earlier_figures(out) - {name for _, name in curves} - ({chart} if chart else set()):
        (out / stale).unlink(missing_ok=True)  # figures an earlier comparison wrote here, and only those
    summary["figures"] = [*([chart] if chart else []), *(name for _, name in curves)]
    markdown = render_markdown(summary, chart, curves)
    atomic_write_json(out / "compare.json", summary)
    atomic_write_text(out / "compare.md", markdown)
    return summary, markdown, out
