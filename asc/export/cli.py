"""`asc export`: a trained audio run as a self-contained ONNX or TorchScript folder."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  asc export exp/dcase2020_quick/fcnn_quick_l2bn_seed0 --out exports/fcnn_l2bn
  asc export RUN --format onnx --quantize float16 --out exports/fcnn_l2bn_fp16   # weights stored in float16
  asc export RUN --quantize int8 --calibration 256 --out exports/fcnn_l2bn_int8  # int8, scored before/after
  asc export RUN --format torchscript --out exports/fcnn_l2bn_ts
  asc export RUN --opset 18 --out exports/fcnn_l2bn_op18                        # for an older runtime
  asc predict exports/fcnn_l2bn street.wav                                       # scores through onnxruntime
"""


def register(sub: argparse._SubParsersAction) -> None:
    from asc.export import CALIBRATION_CLIPS, MODEL_FILES, OPSET, OPSETS, QUANTIZE

    p = sub.add_parser(
        "export", help="write a trained audio run as a self-contained ONNX or TorchScript folder",
        description=(
            "Write a run's model as a folder that runs without the training code: the model file\n"
            "(model.onnx for onnxruntime, or model.pt for TorchScript) taking log-mel batches\n"
            "(batch, channels, mel bands, frames) of the run's clip length (the STFT stays on the host),\n"
            "features.yaml (how to compute them), dataset.json (classes and the data it trained on),\n"
            "export.json, a model card README.md (accuracy from RUN/report/report.json when the run was\n"
            "evaluated, size and MACs against the DCASE 2022-2025 Task 1 limits, the training command) and\n"
            "SHA256SUMS, which `asc predict DIR` checks before scoring. L2BN and every other norm export\n"
            "as standard operators. The exported file is run against the run's model on random inputs;\n"
            "a float32 export that differs by more than 1e-3 in a logit is refused. A run still training\n"
            "is refused; --out may be new, empty or an earlier export, which is replaced whole."),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder written by `asc train` (an audio run)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder to write")
    p.add_argument("--format", choices=tuple(MODEL_FILES), default="onnx",
                   help="onnx (default; onnxruntime) or torchscript (torch.jit)")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="float16: store the ONNX weights in float16 (half the file; computed in float32); "
                        "int8: static post-training quantization (onnxruntime, QDQ), activation ranges from "
                        "training clips of the run's feature cache. Either is scored against the float32 "
                        "graph on the run's evaluation split, overall and per device (in README.md)")
    p.add_argument("--calibration", type=int, default=CALIBRATION_CLIPS, metavar="N",
                   help=f"training clips that calibrate int8 activation ranges, spread over the classes "
                        f"(default: {CALIBRATION_CLIPS})")
    p.add_argument("--opset", type=int, choices=OPSETS, default=OPSET, metavar="N",
                   help=f"ONNX opset, {OPSETS[0]}-{OPSETS[-1]} (default: {OPSET}: L2BN's sample norm as "
                        "RMSNormalization, for onnxruntime >= 1.23; 18-22 write it as ReduceL2 and a "
                        "multiply for runtimes that stop at an earlier opset, about a tenth slower in "
                        "onnxruntime)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asc.complexity import describe
    from asc.export.write import export_run

    meta = export_run(args.run, args.out, args.format, checkpoint=args.checkpoint, quantize=args.quantize,
                      calibration=args.calibration, opset=args.opset)
    check = meta["check"]
    print(f"wrote {args.out} ({meta['model_file']}, weights in {meta['weights']}; input (batch, "
          f"{', '.join(map(str, meta['input']['shape'][1:]))}), {len(meta['classes'])} classes)")
    print(f"complexity: {describe(meta['complexity'])}")
    print(f"checked against the run's model: largest logit difference {check['max_abs_logit_diff']:.2e}, "
          f"probability {check['max_abs_probability_diff']:.2e}")
    change = (meta.get("quantization") or {}).get("accuracy") or {}
    if change.get("before"):
        before, after = change["before"]["overall"]["accuracy"], change["after"]["overall"]["accuracy"]
        print(f"{meta['weights']} against float32 on split {change['split']} ({change['clips']} clips): "
              f"accuracy {100 * before:.2f} % -> {100 * after:.2f} % ({100 * (after - before):+.2f} points), "
              f"same top class on {100 * change['same_top_class']:.2f} %; per device in {args.out}/README.md")
    return 0
