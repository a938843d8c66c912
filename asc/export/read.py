"""Reading an export folder: checksums first, then the model behind the interface the one inference
function uses, so `Predictor` scores an export with exactly the features and windows of a run."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asc.errors import AscError
from asc.export import (
    DATASET_FILE,
    EXPORT_FORMAT,
    FEATURES_FILE,
    INPUT_NAME,
    META_FILE,
    MODEL_FILES,
    OUTPUT_NAME,
    SUMS_FILE,
    require_onnx,
)

_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_AGAIN = "export the run again with `asc export`"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sums_text(folder: str | os.PathLike, names: list[str]) -> str:
    """SHA256SUMS of `names` in `folder`, in the layout `sha256sum -c` reads."""
    folder = Path(folder)
    return "".join(f"{sha256_file(folder / name)}  {name}\n" for name in sorted(names))


def read_sums(folder: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} of the folder's SHA256SUMS; one-line errors for a missing or malformed list."""
    folder = Path(folder)
    path = folder / SUMS_FILE
    if not folder.is_dir():
        raise AscError(f"{folder}: no such export folder")
    if not path.is_file():
        raise AscError(f"{path}: missing, so nothing in {folder} can be checked; {_AGAIN}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AscError(f"{path}: unreadable ({exc}); {_AGAIN}") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line)
        name = match.group(2) if match else ""
        if not match or name in (SUMS_FILE, ".", "..") or "/" in name or "\\" in name:
            raise AscError(f"{path}:{number}: not a '<sha256>  <file in this folder>' line; {_AGAIN}")
        sums[name] = match.group(1)
    return sums


def verify_export(folder: str | os.PathLike) -> dict:
    """export.json of a folder whose every listed file is present and unchanged; the first file that is
    missing, edited or unlisted is refused in one line naming it."""
    folder = Path(folder)
    sums = read_sums(folder)
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            raise AscError(f"{path}: missing (SHA256SUMS lists it); restore it or {_AGAIN}")
        if sha256_file(path) != expected:
            raise AscError(f"{path}: changed since it was exported (its sha256 is not the one SHA256SUMS "
                           f"lists); restore it or {_AGAIN}")
    if META_FILE not in sums:
        raise AscError(f"{folder / META_FILE}: not listed in {SUMS_FILE}; {_AGAIN}")
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AscError(f"{path}: unreadable ({exc}); {_AGAIN}") from None
    if not isinstance(meta, Mapping) or meta.get("format") != EXPORT_FORMAT:
        raise AscError(f"{path}: not an asc export ({EXPORT_FORMAT} expected); {_AGAIN}")
    model_file = MODEL_FILES.get(str(meta.get("model_format")))
    if model_file is None or meta.get("model_file") != model_file:
        raise AscError(f"{path}: names no model file this version reads ({', '.join(MODEL_FILES.values())}); "
                       f"{_AGAIN}")
    for name in (model_file, DATASET_FILE):
        if name not in sums:
            raise AscError(f"{folder / name}: not listed in {SUMS_FILE}; {_AGAIN}")
    return dict(meta)


class OnnxModel:
    """An onnxruntime session behind the calls the inference function makes on a torch model (eval,
    train(False), a forward on a float32 (B, C, F, T) tensor), so Predictor needs no second code path.

    On the CPU a batch runs in chunks of `CPU_CHUNK` windows: onnxruntime converts every conv's output
    out of its blocked layout and back around each norm, and those passes run from the cache when a
    chunk's activations fit (4 windows of the quick FCNN: 3.5 MB a layer): 1.09x the clips per second
    of whole batches of 32 (`scripts/bench_onnx.py`). Windows are independent, so the logits are those
    of the whole batch."""

    training = False
    CPU_CHUNK = 4

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...], device: str = "cpu") -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise AscError("--device cuda: this onnxruntime has no CUDA provider; use --device cpu "
                               "(or install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        # one thread, as the torch model in asc predict: the other core computes the features, and the
        # probabilities do not depend on how many cores the machine has
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.path = Path(path)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.chunk = self.CPU_CHUNK if device == "cpu" else None
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for files it cannot load
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if "opset" in str(exc).lower():
                raise AscError(f"{path}: onnxruntime {ort.__version__} does not run this file's opset "
                               f"({first}); upgrade it (pip install -U onnxruntime; opset 23 needs 1.23) or "
                               "export the run again with `asc export --opset 18`") from None
            raise AscError(f"{path}: onnxruntime cannot load it ({first}); {_AGAIN}") from None

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise AscError(f"{self.path}: an exported model cannot be trained; train the run folder instead")
        return self

    def __call__(self, x: Any) -> Any:
        import numpy as np
        import torch

        if tuple(x.shape[1:]) != self.input_shape:
            raise AscError(f"{self.path}: takes inputs (batch, {', '.join(map(str, self.input_shape))}), got "
                           f"{tuple(x.shape)}; score windows of the export's clip length")
        feed = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        step = self.chunk or len(feed) or 1
        outs = [self.session.run([OUTPUT_NAME], {INPUT_NAME: feed[i:i + step]})[0]
                for i in range(0, max(len(feed), 1), step)]
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))


@dataclass
class LoadedExport:
    """A verified export: its model (behind the torch call signature), features, classes and record."""

    folder: Path
    meta: dict
    model: Any
    features: dict
    classes: list[str]
    description: Any
    input_shape: tuple[int, ...]
    device: str


def load_export(folder: str | os.PathLike, device: str | None = "cpu") -> LoadedExport:
    """Verify the folder's checksums, refuse a model that does not take audio features, and load it:
    ONNX through onnxruntime, TorchScript through torch.jit."""
    from asc.config import load_yaml
    from asc.data.description import DatasetDescription
    from asc.features.logmel import resolve_feature_config

    folder = Path(folder)
    meta = verify_export(folder)
    sums = read_sums(folder)
    features_path = folder / FEATURES_FILE
    raw = load_yaml(features_path) if FEATURES_FILE in sums else None
    why = None
    if meta.get("kind") != "spectrogram":
        why = f"{META_FILE} says it classifies {meta.get('kind') or 'something else'}"
    elif not isinstance(raw, Mapping) or raw.get("sample_rate") is None:
        why = (f"{FEATURES_FILE} has no sample_rate" if isinstance(raw, Mapping)
               else f"it has no {FEATURES_FILE} listed in {SUMS_FILE}")
    if why is not None:
        raise AscError(f"{folder}: not an audio model ({why}); asc predict scores audio with models "
                       "trained on log-mel features")
    features = resolve_feature_config(raw, str(features_path))
    try:
        description = DatasetDescription.from_dict(
            json.loads((folder / DATASET_FILE).read_text(encoding="utf-8")), str(folder / DATASET_FILE))
    except (OSError, ValueError) as exc:
        raise AscError(f"{folder / DATASET_FILE}: unreadable ({exc}); {_AGAIN}") from None
    classes = [str(c) for c in meta.get("classes") or description.classes]
    shape = tuple(int(v) for v in (meta.get("input") or {}).get("shape", [None])[1:])
    model_path = folder / str(meta["model_file"])
    if meta["model_format"] == "onnx":
        require_onnx(f"{folder}: scoring an ONNX export", ("onnxruntime",))
        device = "cpu" if device in (None, "auto") else device
        model: Any = OnnxModel(model_path, shape, device)
    else:
        import warnings

        import torch

        from asc.runs import pick_device

        device = pick_device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            try:
                model = torch.jit.load(str(model_path), map_location=device).eval()
            except Exception as exc:  # torch raises several types for files it cannot read
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise AscError(f"{model_path}: torch.jit cannot load it ({first}); {_AGAIN}") from None
    return LoadedExport(folder=folder, meta=meta, model=model, features=features, classes=classes,
                        description=description, input_shape=shape, device=device)
