"""Reader for TAU Urban Acoustic Scenes 2022 Mobile (DCASE 2022-2025 Task 1).

The 2020 Mobile recordings cut into 1-s segments: `audio/scene-city-location-segment-subsegment-device.wav`
(e.g. `airport-barcelona-0-0-0-a.wav`), with the 2020 layout of `meta.csv` and
`evaluation_setup/fold1_{train,evaluate,test}.csv`, the same ten scenes and the same devices (s4-s6
only in evaluate). The DCASE 2024-2025 training subsets (`split5.csv` ... `split100.csv`: 5 to 100 %
of the training clips) are given with `train_subset`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from asc.data.clips import AudioDataset
from asc.data.tau2020 import DEVICES, SCENES, TauLayout, load_tau_layout

TITLE = "TAU Urban Acoustic Scenes 2022 Mobile"
CLIP_SECONDS = 1.0
# (train, evaluate) rows of fold1 of the development set: ten 1-s segments of each 2020 v2 clip
KNOWN_VERSIONS: dict[tuple[int, int], str] = {(139620, 29680): "development"}
TRAIN_SUBSETS = ("split5.csv", "split10.csv", "split25.csv", "split50.csv", "split100.csv")

_SCENES, _DEVICES = frozenset(SCENES), frozenset(DEVICES)


def parse_clip_name(filename: str) -> dict[str, str] | None:
    """Fields of "audio/scene-city-location-segment-subsegment-device.wav", or None if not one. The
    segment field is "segment-subsegment", so parallel captures of all devices share `Clip.base`."""
    parts = PurePosixPath(filename).stem.split("-")
    if len(parts) != 6 or parts[0] not in _SCENES or parts[5] not in _DEVICES:
        return None
    scene, city, loc, segment, sub, device = parts
    if not (city and loc and segment and sub):
        return None
    return {"scene": scene, "city": city, "location": f"{city}-{loc}", "segment": f"{segment}-{sub}",
            "device": device}


TAU2022 = TauLayout("tau2022", TITLE, parse_clip_name, CLIP_SECONDS, KNOWN_VERSIONS)


def load_tau2022(root: str | os.PathLike, *, allow_missing: bool = False, check_audio: bool = True,
                 train_subset: str | os.PathLike | None = None) -> AudioDataset:
    """Read a TAU 2022 Mobile folder; `train_subset` is a path, or the bare name of a subset file in the
    folder or its `evaluation_setup/` (e.g. "split25.csv")."""
    if train_subset is not None and not Path(train_subset).is_file():
        name = str(train_subset)
        for candidate in (Path(root) / name, Path(root) / "evaluation_setup" / name):
            if candidate.is_file():
                train_subset = candidate
                break
    return load_tau_layout(root, TAU2022, allow_missing=allow_missing, check_audio=check_audio,
                           train_subset=train_subset)


def looks_like(root: Path) -> bool:
    """A TAU layout folder whose first listed clip has the 2022 name."""
    from asc.data.tau2020 import FOLD_FILES, META_FILE

    for rel in (META_FILE, *FOLD_FILES.values()):
        path = root / rel
        if path.is_file():
            try:
                with open(path, encoding="utf-8-sig") as fh:
                    for line in fh:
                        name = line.split("\t", 1)[0].strip()
                        if name and name != "filename":
                            return parse_clip_name(name) is not None
            except (OSError, UnicodeDecodeError):
                return False
    return False
