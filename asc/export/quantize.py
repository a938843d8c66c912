"""Post-training quantization of an exported ONNX graph, and the accuracy it costs on the run's data.

int8 is onnxruntime's static quantizer in QDQ form: weights in int8, symmetric, one scale per output
channel; activations in uint8 with ranges from MinMax calibration on `clips` training clips of the
run's feature cache (spread over the classes, whole clips as evaluation sees them). Convolutions and
matrix products then run on int8 kernels, everything else in float32 between QuantizeLinear and
DequantizeLinear nodes, all standard ONNX operators. Only those operators are quantized
(QUANTIZED_OPS): the norms, the attention gate and the activations stay in float32, because L2BN's
per-sample scaling in uint8 changed a third of the quick FCNN's decisions.

Either precision (int8 or float16 weights) is then scored against the float32 graph it came from, on
the run's evaluation split, overall, per device and per device group, so the cost of the smaller file
is measured on the data, not only on the random inputs of the export check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asc.errors import AscError

#: clips per calibration batch: onnxruntime keeps every intermediate tensor of a batch to find its range
CALIBRATION_BATCH = 8
#: the operators that run in int8; norms, attention gates and activations stay in float32
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
METHOD = ("onnxruntime static quantization, QDQ: int8 weights (symmetric, per output channel), uint8 "
          "activations, MinMax calibration")


def quantize_int8(src: Path, dst: Path, batches: Iterator[np.ndarray], input_name: str) -> None:
    """Write `src` quantized to int8 as `dst`, activation ranges from the float32 `batches`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            batch = next(batches, None)
            return None if batch is None else {input_name: batch}

    prepared = dst.with_name(f".{dst.name}.prepared")
    try:
        # infers shapes; torch.export's graphs carry value infos onnxruntime's symbolic shape inference
        # cannot read, and the shapes are static apart from the batch anyway. No graph optimization: its
        # constant folding would store RMSNormalization's gains broadcast to whole feature maps (the quick
        # ResNet-17's int8 file: 2.3 MB, more than its float32 one; 0.7 MB without); onnxruntime
        # optimizes the graph when it loads the file
        quant_pre_process(str(src), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS))
    except (AscError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the quantizer raises many types; one line names the cause
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AscError(f"{src.name}: onnxruntime's quantizer failed ({first}); export with --quantize "
                       "float16 or without --quantize") from None
    finally:
        prepared.unlink(missing_ok=True)


def calibration_batches(dataset: Any, labels: Sequence[int], clips: int,
                        batch: int = CALIBRATION_BATCH) -> tuple[Iterator[np.ndarray], int]:
    """Float32 batches of `clips` items of `dataset` spread over the classes, and how many there are."""
    from asc.data.sampling import stratified_indices

    picked = stratified_indices([int(v) for v in labels], clips)

    def batches() -> Iterator[np.ndarray]:
        for start in range(0, len(picked), batch):
            items = [dataset[i] for i in picked[start:start + batch]]
            x = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
            yield np.ascontiguousarray(np.stack([np.asarray(v, dtype=np.float32) for v in x]))

    return batches(), len(picked)


def scores(logits: np.ndarray, data: Any) -> dict:
    """Overall, per-device and per-group scores of `logits` on `data`, as the run's report computes them."""
    from asc.eval.report import build_report

    described = data.description
    report = build_report(logits, data.labels, data.devices, data.class_names,
                          device_order=list(described.devices),
                          device_groups={k: list(v) for k, v in described.device_groups.items()})
    return {key: report[key] for key in ("overall", "per_device", "device_groups")}


def compare_precisions(before: Path, after: Path, data: Any, input_shape: tuple[int, ...], *,
                       batch_size: int = 32, desc: str = "") -> dict:
    """Score the float32 graph `before` and the quantized `after` on `data` (an EvalData): accuracy
    before and after, overall and per device, and how often the two pick the same class."""
    from torch.utils.data import DataLoader

    from asc.eval.inference import infer
    from asc.export.read import OnnxModel

    logits = {}
    for name, path in (("float32", before), ("quantized", after)):
        loader = DataLoader(data.dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        z, _, _ = infer(OnnxModel(path, input_shape), loader, device="cpu", progress_desc=f"{desc} {name}",
                        total=len(loader), names=data.filenames)
        logits[name] = z.numpy()
    same = float(np.mean(logits["float32"].argmax(1) == logits["quantized"].argmax(1)))
    out = {"split": data.split, "clips": int(len(data.labels)), "same_top_class": same,
           "max_abs_logit_diff": float(np.abs(logits["float32"] - logits["quantized"]).max())}
    if bool((data.labels >= 0).any()):
        out["before"] = scores(logits["float32"], data)
        out["after"] = scores(logits["quantized"], data)
    return out


def accuracy_rows(change: Mapping) -> list[tuple[str, float | None, float | None, int]]:
    """(row name, accuracy before, after, clips) for the overall, per-device and per-group scores."""
    before, after = change.get("before") or {}, change.get("after") or {}
    rows = [("overall", before.get("overall", {}).get("accuracy"), after.get("overall", {}).get("accuracy"),
             int(before.get("overall", {}).get("n") or 0))]
    for section, prefix in (("per_device", "device "), ("device_groups", "")):
        for name, s in (before.get(section) or {}).items():
            a = (after.get(section) or {}).get(name) or {}
            rows.append((f"{prefix}{name}".replace("_", " "), s.get("accuracy"), a.get("accuracy"),
                         int(s.get("n") or 0)))
    return rows
