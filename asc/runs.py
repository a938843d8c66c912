"""A run folder, as `asc train` writes it and everything else reads it; the one way to rebuild a model.

    recipe.yaml        the resolved recipe
    features.yaml      the feature config the run trained on (audio runs), as the cache recorded it
    dataset.json       the description of the data it trained on (classes, devices, clip length, ...)
    env.json           versions, device, world size, training precision
    metrics.jsonl      one JSON object per epoch
    checkpoints/last.pt, checkpoints/best.pt
    COMPLETED          written when the last epoch is done (summary JSON)

Checkpoints are plain dicts of tensors and primitives, written atomically and read with
`weights_only=True`: {"format", "epoch", "model", "model_spec", "optimizer", "recipe", "metrics",
"best"}. `model_spec` ({name, num_classes, in_channels, norm, params}) is enough to rebuild the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asc.errors import AscError

FORMAT = "asc-checkpoint/1"
FEATURES_FILE = "features.yaml"
DATASET_FILE = "dataset.json"
LOCK_FILE = ".training.lock"


class RunFolder:
    """A run folder as one object: its paths, its lock, its status and its per-epoch metrics. Training,
    evaluation, compare and the stage scripts all reach the folder through it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # paths
    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def completed(self) -> Path:
        return self.path / "COMPLETED"

    @property
    def features(self) -> Path:
        return self.path / FEATURES_FILE

    @property
    def dataset(self) -> Path:
        return self.path / DATASET_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    def checkpoint(self, which: str = "last") -> Path:
        return self.path / "checkpoints" / f"{which}.pt"

    def report_dir(self, name: str = "report") -> Path:
        return self.path / name

    # status
    @property
    def is_complete(self) -> bool:
        return self.completed.is_file()

    def holder(self) -> str | None:
        """'process N on HOST' while a live process holds the folder's lock, else None. The lock is an
        advisory file lock (flock): the kernel drops it when its process dies, so a stale lock needs no
        clean-up and two processes can never both hold it."""
        import fcntl
        import socket

        if not self.lock.is_file():
            return None
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = self.lock.read_text(encoding="utf-8", errors="replace").split()
                who = f"process {text[0]} on {text[1]}" if len(text) >= 2 else "another process"
                mine = self._lock_fd is not None or (text[:2] == [str(os.getpid()), socket.gethostname()])
                return None if mine else who
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def take_lock(self) -> None:
        """Claim the folder for this process, atomically (flock on a file that is never deleted)."""
        import socket

        from asc.fileio import try_exclusive_lock

        fd = try_exclusive_lock(self.lock, create=True)
        if fd is None:
            raise AscError(f"{self.path}: {self.holder() or 'another process'} is training in this folder; "
                           "wait for it or stop it, or choose another --out")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # metrics
    def read_metrics(self, warn: bool = True) -> list[dict]:
        """Per-epoch records; a torn or malformed line (a crash mid-write of an older version, an edit)
        is dropped with a one-line notice rather than stopping a resume or a report."""
        import json
        import sys

        if not self.metrics.is_file():
            return []
        rows = []
        text = self.metrics.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row = None
                why = exc.msg
            else:
                why = "not a JSON object with an integer epoch"
            epoch = row.get("epoch") if isinstance(row, dict) else None
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                rows.append(row)
            elif warn:
                print(f"warning: {self.metrics}:{number}: dropped a malformed line ({why})", file=sys.stderr)
        return rows

    def write_metrics(self, rows: list[dict]) -> None:
        import json

        from asc.fileio import atomic_write_text

        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    from asc.fileio import atomic_torch_save

    atomic_torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint of ours with weights_only=True; one-line errors for anything else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise AscError(f"{path}: no such checkpoint")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # torch's zip format, or its legacy pickle
        what = "an empty file" if not head else "not a torch file (text or other data)"
        raise AscError(f"{path}: {what}, not an asc-l2bn checkpoint; retrain the run, or use the other "
                       "checkpoint (--checkpoint last/best)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        # torch's own message ends with advice to load unsafely: never pass that on
        why = ("it holds Python objects besides tensors and plain values, which are never loaded"
               if "weights only" in str(exc).lower() else "truncated, corrupt or not a torch file")
        raise AscError(f"{path}: not a readable asc-l2bn checkpoint ({why}); retrain the run, or use the "
                       "other checkpoint (--checkpoint last/best)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise AscError(f"{path}: not an asc-l2bn checkpoint (format {FORMAT} expected)")
    return ckpt


def build_model(spec: Mapping[str, Any]):
    """The untrained network a model_spec describes."""
    from asc.models import create_model

    return create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        norm=spec["norm"], **spec.get("params", {}))


def model_from_checkpoint(ckpt: Mapping[str, Any]):
    """Rebuild the network of a checkpoint, load its weights, and put it in eval mode."""
    model = build_model(ckpt["model_spec"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def checkpoint_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        if not run_dir.is_dir():
            raise AscError(f"{run_dir}: no such run folder")
        found = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        hint = (f"available: {', '.join(found)} (--checkpoint)" if found
                else "train the run first with `asc train`")
        raise AscError(f"{path}: no such checkpoint; {hint}")
    return path


def read_recipe(run_dir: str | os.PathLike, ckpt: Mapping[str, Any] | None = None) -> dict:
    """recipe.yaml of the run, or the copy its checkpoint carries."""
    from asc.config import load_yaml

    path = Path(run_dir) / "recipe.yaml"
    if path.is_file():
        return load_yaml(path)
    if ckpt is not None and isinstance(ckpt.get("recipe"), Mapping):
        return dict(ckpt["recipe"])
    raise AscError(f"{path}: missing, and the checkpoint carries no recipe; is {run_dir} a run folder "
                   "written by `asc train`?")


def feature_config(run_dir: str | os.PathLike, recipe: Mapping[str, Any],
                   expected_hash: str | None = None) -> dict:
    """The feature config an audio run trained on: RUN/features.yaml, else its cache's manifest, else the
    recipe's feature file (only if it still hashes as the cache did). With `expected_hash` (the one its
    checkpoint records), a features.yaml that was edited since is refused: other features would change
    predictions without a word."""
    from asc.config import load_yaml
    from asc.features.logmel import feature_hash, load_feature_config, resolve_feature_config

    path = Path(run_dir) / FEATURES_FILE
    if path.is_file():
        cfg = resolve_feature_config(load_yaml(path), str(path))
        if expected_hash and feature_hash(cfg) != expected_hash:
            raise AscError(f"{path}: these features (hash {feature_hash(cfg)}) are not the ones the run "
                           f"trained on (hash {expected_hash}, recorded in its checkpoint); restore the file "
                           "as training wrote it")
        return cfg
    cache_dir = (recipe.get("data") or {}).get("cache_dir")
    manifest = Path(cache_dir) / "manifest.json" if cache_dir else None
    if manifest is not None and manifest.is_file():
        from asc.features.cache import read_manifest

        found = read_manifest(cache_dir)
        if isinstance(found.get("feature_config"), Mapping):
            return resolve_feature_config(found["feature_config"], str(manifest))
    if recipe.get("features"):
        cfg = load_feature_config(recipe["features"])
        expected = Path(cache_dir).name.rsplit("-", 1)[-1] if cache_dir else None
        if expected is None or feature_hash(cfg) == expected:
            return cfg
    raise AscError(f"{run_dir}: cannot tell which features the run trained on (no {FEATURES_FILE}, no "
                   "feature cache); copy the run's feature config there as features.yaml")


@dataclass
class TrainedRun:
    """A run's model in eval mode on `device`, with what is needed to feed and describe it."""

    model: Any
    recipe: dict
    spec: dict
    checkpoint: Path
    epoch: int | None
    device: str
    run_dir: Path | None = None


def dataset_description(run_dir: str | os.PathLike, recipe: Mapping[str, Any]):
    """What the run trained on: RUN/dataset.json, else its cache's manifest, else (runs older than
    descriptions, all TAU 2020 Mobile) that dataset's description."""
    import json

    from asc.data.description import DatasetDescription, description_of, legacy_description

    path = Path(run_dir) / DATASET_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AscError(f"{path}: unreadable ({exc}); restore it or retrain the run") from None
        return DatasetDescription.from_dict(data, str(path))
    cache_dir = (recipe.get("data") or {}).get("cache_dir")
    manifest = Path(cache_dir) / "manifest.json" if cache_dir else None
    if manifest is not None and manifest.is_file():
        from asc.features.cache import read_manifest

        return description_of(read_manifest(cache_dir)["dataset"], str(manifest))
    return legacy_description({})


def class_names(trained: TrainedRun) -> list[str]:
    """Class names in the order of the model's outputs: the checkpoint's, else the run's dataset's."""
    names = trained.spec.get("classes")
    if names:
        return [str(n) for n in names]
    n = int(trained.spec.get("num_classes", 0))
    described = dataset_description(trained.run_dir, trained.recipe) if trained.run_dir else None
    if described is not None and len(described.classes) == n:
        return list(described.classes)
    return [str(i) for i in range(n)]


def pick_device(device: str | None) -> str:
    """auto/None: cuda when available, else cpu; an explicit cuda without one is an error."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AscError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best", device: str | None = "cpu") -> TrainedRun:
    """Rebuild a run's trained model from its folder."""
    device = pick_device(device)
    path = checkpoint_path(run_dir, checkpoint)
    ckpt = load_checkpoint(path)
    recipe = read_recipe(run_dir, ckpt)
    spec = dict(ckpt.get("model_spec") or {})
    if not spec:
        raise AscError(f"{path}: the checkpoint has no model_spec; it was not written by `asc train`")
    import torch

    bad = next((k for k, v in ckpt.get("model", {}).items()
                if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise AscError(f"{path}: {bad} holds NaN/Inf values: the run diverged before this checkpoint; "
                       "retrain it (e.g. lower train.lr), or try the other checkpoint (--checkpoint)")
    model_cfg = recipe.get("model") if isinstance(recipe.get("model"), Mapping) else {}
    claimed = {"model": model_cfg.get("name"), "norm": recipe.get("norm")}
    found = {"model": spec.get("name"), "norm": spec.get("norm")}
    differs = [k for k in claimed if claimed[k] is not None and claimed[k] != found[k]]
    if differs:
        raise AscError(f"{path}: holds a {found['model']} / {found['norm']} model, but the run's recipe is "
                       f"{claimed['model']} / {claimed['norm']}; this checkpoint belongs to another run")
    try:
        model = model_from_checkpoint(ckpt)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AscError(f"{path}: the weights do not fit the model it names ({first[:200]})") from None
    return TrainedRun(model=model.to(device), recipe=recipe, spec=spec, checkpoint=path,
                      epoch=ckpt.get("epoch"), device=device, run_dir=Path(run_dir))
