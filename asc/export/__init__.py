"""Exported models: a trained audio run as a self-contained folder that runs without this package's
training code (ONNX for onnxruntime, or TorchScript), for deployment and for the DCASE low-complexity
workflow (`asc.complexity` counts what the challenge limits).

    model.onnx | model.pt   the network: log-mel batches (B, C, F, T) in, logits (B, K) out; the STFT and
                            the log-mel stay on the host, computed as features.yaml says
    features.yaml           the feature config the run trained on
    dataset.json            what it trained on (classes, devices, clip length, synthetic or not)
    export.json             format, input shape, class order, complexity, the source run, the measured
                            difference between the exported graph and the run's torch model
    README.md               model card: accuracy from the run's report, complexity, training command, data
    SHA256SUMS              sha256 of every other file, checked before a prediction

`asc export` writes it (asc.export.write), `asc predict DIR` and `Predictor.from_export(DIR)` read it
(asc.export.read). This module imports only the standard library, so `asc --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPORT_FORMAT = "asc-export/1"
#: format -> model file name
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
#: what `--quantize` offers: float16 weights (float32 arithmetic), static int8 (asc.export.quantize)
QUANTIZE = ("float16", "int8")
#: training clips that calibrate int8 activation ranges (spread over the classes)
CALIBRATION_CLIPS = 256
#: ONNX opset of an export: 23 writes L2BN's sample norm as RMSNormalization (onnxruntime >= 1.23);
#: 18-22 as ReduceL2 and a multiply, for runtimes that stop at an earlier opset
OPSET = 23
OPSETS = range(18, 24)
SUMS_FILE = "SHA256SUMS"
META_FILE = "export.json"
FEATURES_FILE = "features.yaml"
DATASET_FILE = "dataset.json"
CARD_FILE = "README.md"
INPUT_NAME = "logmel"
OUTPUT_NAME = "logits"


def require_onnx(why: str, modules: tuple[str, ...] = ("onnx", "onnxruntime", "onnxscript")) -> None:
    """AscError in one line when optional ONNX packages are missing (`pip install "asc-l2bn[onnx]"`)."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        from asc.errors import AscError

        raise AscError(f"{why} needs {', '.join(missing)}, an optional part of asc-l2bn: pip install "
                       "\"asc-l2bn[onnx]\" (or use --format torchscript)")


def is_export(path: str | os.PathLike) -> bool:
    """Whether `path` is (or claims to be) an export folder rather than a run folder."""
    path = Path(path)
    return path.is_dir() and ((path / SUMS_FILE).is_file() or (path / META_FILE).is_file())


__all__ = ["CALIBRATION_CLIPS", "CARD_FILE", "DATASET_FILE", "EXPORT_FORMAT", "FEATURES_FILE", "INPUT_NAME",
           "META_FILE", "MODEL_FILES", "OPSET", "OPSETS", "OUTPUT_NAME", "QUANTIZE", "SUMS_FILE", "is_export",
           "require_onnx"]
