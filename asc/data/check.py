"""Validate a dataset folder: metadata through the reader, structure facts, and audio.

What makes an audio file unusable is decided by two shared functions, so `asc data check` and
`asc extract` never disagree: `unopenable_audio` (missing, a looping or broken link, a folder) and
`asc.data.audio.check_audio` (unreadable, empty, NaN/Inf samples, shorter than a clip).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asc.data.audio import MISSING_FILE, audio_info, check_audio, file_problem
from asc.data.clips import SPLITS, AudioDataset, Clip
from asc.data.readers import load_dataset
from asc.errors import DataError

AUDIO_MODES = ("all", "sample", "none")


@dataclass
class CheckReport:
    dataset: AudioDataset
    problems: list[str] = field(default_factory=list)     # make the check fail
    warnings: list[str] = field(default_factory=list)     # worth knowing, not fatal
    audio_checked: int = 0
    audio_mode: str = "none"
    formats: Counter = field(default_factory=Counter)     # (sr, channels, seconds, subtype) -> files

    @property
    def ok(self) -> bool:
        return not self.problems


def _structure_warnings(data: AudioDataset) -> list[str]:
    out = []
    train, evaluate = data.split("train"), data.split("evaluate")
    if data.version != "eval" and (not train or not evaluate):
        out.append(f"split sizes: train {len(train)}, evaluate {len(evaluate)}; both are needed for a recipe")
    unseen = set(data.description.device_groups.get("unseen", ()))
    unseen_in_train = sorted({c.device for c in train if c.device in unseen})
    if unseen_in_train:
        out.append(f"devices {', '.join(unseen_in_train)} appear in train "
                   f"(in {data.description.title} they are only in evaluate)")
    shared = {c.location for c in train} & {c.location for c in evaluate} - {None}
    if shared:
        out.append(f"{len(shared)} recording location(s) in both train and evaluate, "
                   f"e.g. {sorted(shared)[0]}")
    bases_with_a = {c.base for c in data.clips if c.device == "a"}
    orphans = [c for c in data.clips if c.device not in (None, "a") and c.base is not None
               and c.base not in bases_with_a]
    if orphans:
        out.append(f"{len(orphans)} clip(s) of devices b/c/s* without a device-a parallel, "
                   f"e.g. {orphans[0].filename}")
    return out


def unopenable_audio(data: AudioDataset, clips: Iterable[Clip] | None = None) -> list[tuple[str, str]]:
    """(file name, why) for each clip (default: all) whose audio file cannot be opened: missing,
    a symbolic link that loops or points nowhere, a folder. The one presence check of every stage."""
    out = []
    for clip in data.clips if clips is None else clips:
        problem = file_problem(data.path(clip))
        if problem is not None:
            out.append((clip.filename, problem))
    return out


def describe_unopenable(problems: Sequence[tuple[str, str]], total: int) -> list[str]:
    """Sentences for `unopenable_audio`'s findings: missing files apart from other causes, so a link
    loop is not reported as a missing file."""
    missing = [name for name, why in problems if why == MISSING_FILE]
    other = [(name, why) for name, why in problems if why != MISSING_FILE]
    out = []
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        out.append(f"{len(missing)} of {total} audio files listed in the metadata are missing ({shown})")
    if other:
        more = ", ..." if len(other) > 1 else ""
        out.append(f"{len(other)} of {total} audio files listed in the metadata cannot be opened "
                   f"({other[0][0]}: {other[0][1]}{more})")
    return out


def check_dataset(root: str | os.PathLike, audio: str = "sample", sample: int = 200, *,
                  seed: int = 0, reader: str | None = None, train_subset: str | None = None) -> CheckReport:
    """Read `root` with its reader (DataError on broken metadata), then check files and audio.

    Counts are those of the metadata; audio files that are missing or cannot be opened are a problem.
    Each audio file checked must be usable by `check_audio`, the verdict `asc extract` uses (readable,
    not empty, no NaN/Inf samples, not shorter than a clip), and have the sample rate, channel count
    and clip length the dataset's description states (or the duration a synthetic set declares).
    Float files are read in full for NaN/Inf; PCM only by header.
    """
    from asc.progress import progress

    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}")
    data = load_dataset(root, reader, check_audio=False, allow_missing=True, train_subset=train_subset)
    report = CheckReport(dataset=data, audio_mode=audio)
    unopenable = unopenable_audio(data) + [(name, file_problem(Path(data.root) / name) or MISSING_FILE)
                                           for name in data.missing]
    report.problems.extend(describe_unopenable(unopenable, len(data.clips) + len(data.missing)))
    report.warnings.extend(_structure_warnings(data))
    described = data.description
    seconds = described.duration
    if data.synthetic and data.synthetic_info and described.name in ("tau2020",):
        seconds = float(data.synthetic_info.get("duration_s", seconds))
    expected_sr, channels = described.sample_rate, described.channels
    absent = {name for name, _ in unopenable}
    clips = [c for c in data.clips if c.filename not in absent]
    if audio == "sample" and len(clips) > sample:
        clips = random.Random(seed).sample(clips, sample)
    elif audio == "none":
        clips = []
    unusable: list[str] = []
    bad: list[str] = []
    expected_frames = None if seconds is None or expected_sr is None else int(round(seconds * expected_sr))
    for clip in progress(clips, desc="audio", unit="file"):
        path = data.path(clip)
        try:
            info = check_audio(path, seconds)  # the verdict `asc extract` gives the same file
        except DataError as exc:
            unusable.append(str(exc))
            with contextlib.suppress(DataError):
                info = audio_info(path)
                report.formats[(info.samplerate, info.channels, round(info.duration, 3), info.subtype)] += 1
            continue
        report.formats[(info.samplerate, info.channels, round(info.duration, 3), info.subtype)] += 1
        issues = []
        if expected_sr is not None and info.samplerate != expected_sr:
            issues.append(f"{info.samplerate} Hz")
        if channels is not None and info.channels != channels:
            issues.append(f"{info.channels} channels")
        if expected_frames is not None and info.frames != expected_frames and info.samplerate == expected_sr:
            issues.append(f"{info.duration:.3f} s")
        if issues:
            want = [f"{expected_sr} Hz" if expected_sr else None, "mono" if channels == 1 else
                    (f"{channels} channels" if channels else None), f"{seconds:g} s" if seconds else None]
            bad.append(f"{path}: {', '.join(issues)} (expected {', '.join(w for w in want if w)})")
    report.audio_checked = len(clips)
    if unusable:
        report.problems.append(f"{len(unusable)} of {len(clips)} checked audio file(s) are unusable "
                               f"(`asc extract` refuses them too); first: {unusable[0]}")
    if bad:
        report.problems.append(f"{len(bad)} of {len(clips)} checked audio file(s) are not in the expected "
                               f"format; first: {bad[0]}")
    return report


def _table(rows: dict[str, dict[str, int]], columns: list[str], first: str) -> list[str]:
    width = max([len(first), *(len(r) for r in rows)])
    cols = [*columns, "total"]
    lines = [f"{first:<{width}}  " + " ".join(f"{c:>6}" for c in cols)]
    for name, counts in rows.items():
        cells = [counts.get(c, 0) for c in columns]
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>6}" for v in [*cells, sum(cells)]))
    return lines


def format_report(report: CheckReport) -> str:
    """Human-readable summary: dataset kind, counts per split x device and per scene, audio, problems."""
    data = report.dataset
    counts = data.counts()
    described = data.description
    kind = f"{described.title} ({data.version})"
    if data.synthetic:
        info = data.synthetic_info or {}
        kind = (f"SYNTHETIC set in the layout of {described.title} (preset {info.get('preset', '?')}, seed "
                f"{info.get('seed', '?')}); not real recordings")
    if described.split_rule:
        kind += f"; split: {described.split_rule}"
    sizes = ", ".join(f"{s} {len(data.split(s))}" for s in SPLITS)
    if data.test_repeats_evaluate:
        sizes += (f"; fold1_test.csv lists the {data.test_repeats_evaluate} evaluate clips again, "
                  "counted under evaluate")
    lines = [f"dataset: {Path(data.root)}", f"kind: {kind}", f"clips: {len(data.clips)} ({sizes})", ""]
    devices = [d for d in described.devices if any(d in c for c in counts["device"].values())]
    if any("unknown" in c for c in counts["device"].values()):
        devices.append("unknown")
    if described.devices:
        lines += _table(counts["device"], devices, "split / device")
        lines.append("")
    scenes = [s for s in described.classes if any(s in c for c in counts["scene"].values())]
    if any("unknown" in c for c in counts["scene"].values()):
        scenes.append("unknown")
    per_scene = {s: {split: counts["scene"][split].get(s, 0) for split in counts["scene"]} for s in scenes}
    lines += _table(per_scene, list(counts["scene"]), "class / split")
    lines.append("")
    if report.audio_mode == "none":
        lines.append("audio: not checked (--audio none)")
    else:
        fmt = "; ".join(f"{n} x {sr} Hz {ch} ch {sec:g} s {sub}" for (sr, ch, sec, sub), n in
                        report.formats.most_common(4))
        lines.append(f"audio: {report.audio_checked} file(s) checked ({report.audio_mode}): {fmt or '-'}")
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"problem: {p}" for p in report.problems] or ["problems: none"]
    return "\n".join(lines)
