"""The model part of `asc predict` on an export against the run folder: clips/s on one thread.

    python scripts/bench_onnx.py --run exp/dcase2020_quick/fcnn_quick_l2bn_seed0

Exports the run to ONNX at the default opset (L2BN's sample norm as RMSNormalization) and at opset 18
(ReduceL2 and a multiply), then times, on the same uniform [0, 1) log-mel batches and one thread each:
the run's torch model as `asc predict` calls it (batches in channels_last, native L2BN passes), and the
exports through `OnnxModel` (what `asc predict DIR` runs) with batches of --batch windows run in chunks
of each --chunks size. Rounds interleave every case (median over --rounds, after one round to warm up),
since this shared machine's speed drifts by a fifth over minutes. Ends with onnxruntime's own profile of
both exports at the chunk size `OnnxModel` uses: milliseconds per --batch clips by operator type.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from asc.export import OPSET
from asc.export.read import OnnxModel, load_export
from asc.export.write import export_run
from asc.features.compute import keep_large_buffers
from asc.runs import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained audio run folder")
    ap.add_argument("--batch", type=int, default=32, help="windows per model call, as asc predict")
    ap.add_argument("--chunks", default="1,2,4,8,16,32", help="chunk sizes for onnxruntime (default opset)")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    keep_large_buffers(every_size=True)  # as asc predict does
    torch.set_num_threads(1)
    chunks = [int(c) for c in args.chunks.split(",")]
    model = load_run(args.run).model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        exports = {}
        for opset in (OPSET, 18):
            export_run(args.run, Path(tmp) / f"op{opset}", opset=opset)
            exports[opset] = load_export(Path(tmp) / f"op{opset}").model
        shape = exports[OPSET].input_shape
        x = torch.from_numpy(np.random.default_rng(0).random((2 * args.batch, *shape), dtype=np.float32))
        batches = x.split(args.batch)

        def torch_model() -> None:
            with torch.inference_mode():
                for b in batches:
                    model(b.contiguous(memory_format=torch.channels_last))

        def onnx_model(m: OnnxModel, chunk: int) -> None:
            m.chunk = chunk
            for b in batches:
                m(b)

        cases = {"torch (run folder)": torch_model}
        for chunk in chunks:
            cases[f"onnx opset {OPSET}, chunks of {chunk}"] = lambda c=chunk: onnx_model(exports[OPSET], c)
        for chunk in sorted({OnnxModel.CPU_CHUNK, args.batch}):
            cases[f"onnx opset 18, chunks of {chunk}"] = lambda c=chunk: onnx_model(exports[18], c)
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(args.rounds + 1):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                if r:
                    rates[name].append(len(x) / (time.perf_counter() - start))
        base = statistics.median(rates["torch (run folder)"])
        print(f"torch {torch.__version__}, one thread, batches of {args.batch}, {shape}, median of "
              f"{args.rounds} rounds")
        print(f"{'model':<34} {'clips/s':>8} {'vs run':>7}  range")
        for name, values in rates.items():
            med = statistics.median(values)
            print(f"{name:<34} {med:>8.1f} {med / base:>6.2f}x  {min(values):.0f}-{max(values):.0f}")
        for opset, m in exports.items():
            print(f"onnxruntime profile, opset {opset}, chunks of {OnnxModel.CPU_CHUNK}, ms per {args.batch} "
                  f"clips: {_profile(m, batches, Path(tmp))}")


def _profile(m: OnnxModel, batches, tmp: Path) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(str(m.path), options, providers=["CPUExecutionProvider"])
    m.chunk, m.session = OnnxModel.CPU_CHUNK, session
    for b in batches:
        m(b)
    spent: collections.Counter = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
    total = sum(spent.values())
    per = len(batches) * 1e3
    top = ", ".join(f"{op} {us / per:.1f}" for op, us in spent.most_common(7))
    return f"{total / per:.1f} in all: {top}"


if __name__ == "__main__":
    main()
