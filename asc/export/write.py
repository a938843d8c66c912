"""`asc export`: a trained audio run as a self-contained folder (see asc.export).

The graph is traced with L2BN's native CPU passes switched off, so every norm exports as plain
operators: at opset 23 L2BN's sample norm as RMSNormalization with the running-statistics gain as its
scale, then the shift (`asc.nn.l2bn.traced_as_rms_norm`); at opsets 18-22 its torch-op fallback, a
ReduceL2 and a multiply before the affine.
ONNX goes through torch.export (`dynamo=True`): the batch axis stays free while the mel bands and
frames are fixed at the run's clip length, where the 'same' padding of the models is computed. The
exported file is then run on random inputs and compared with the run's own torch model; a float32
export that disagrees by more than 1e-3 in any logit is refused, and the measured difference is
recorded in export.json and the model card either way. The folder is built beside --out and renamed
into place, so --out holds a whole export or the previous one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from asc.errors import AscError, ConfigError
from asc.export import (
    CALIBRATION_CLIPS,
    CARD_FILE,
    DATASET_FILE,
    EXPORT_FORMAT,
    FEATURES_FILE,
    INPUT_NAME,
    META_FILE,
    MODEL_FILES,
    OPSET,
    OPSETS,
    OUTPUT_NAME,
    QUANTIZE,
    SUMS_FILE,
    is_export,
    require_onnx,
)
from asc.fileio import atomic_write_text

#: the most a float32 export's logits may differ from the run's torch model on the check inputs
FLOAT32_TOLERANCE = 1e-3
#: random inputs the exported file is checked on (a batch size the tracing did not see)
CHECK_BATCH = 3


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "onnx", *,
               checkpoint: str = "best", quantize: str | None = None,
               calibration: int = CALIBRATION_CLIPS, opset: int = OPSET) -> dict:
    """Export the run's `checkpoint` to the folder `out` as `fmt` (onnx or torchscript). `quantize`
    "float16" stores ONNX weights in float16 (computed in float32), "int8" quantizes the graph
    statically with activation ranges from `calibration` training clips; either is then scored against
    the float32 graph on the run's evaluation split. `opset` (ONNX) 23 writes L2BN's sample norms as
    RMSNormalization, an earlier one as ReduceL2 and a multiply. Returns export.json's record."""
    from asc import runs
    from asc.complexity import complexity
    from asc.features.logmel import feature_hash, feature_shape
    from asc.tasks import task_of

    if fmt not in MODEL_FILES:
        raise ConfigError(f"--format must be one of {', '.join(MODEL_FILES)}, got {fmt!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if quantize == "int8" and (isinstance(calibration, bool) or not isinstance(calibration, int)
                               or calibration < 1):
        raise ConfigError(f"--calibration {calibration}: needs at least one training clip")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ConfigError(f"--opset {opset}: this version writes ONNX opsets {OPSETS[0]} to {OPSETS[-1]}")
    if opset != OPSET and fmt != "onnx":
        raise ConfigError(f"--opset {opset}: an opset is a property of --format onnx; a TorchScript "
                          "export has none")
    if quantize is not None and fmt != "onnx":
        raise ConfigError(f"--quantize {quantize}: quantized weights are offered for --format onnx only; a "
                          "TorchScript export keeps float32")
    if fmt == "onnx":
        require_onnx("asc export --format onnx")
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise AscError(f"{run_dir}: no such run folder")
    holder = runs.RunFolder(run_dir).holder()
    if holder is not None:
        raise AscError(f"{run_dir}: {holder} is training in this folder, so its checkpoints are still "
                       "changing; export it when training has finished")
    _check_out(out, run_dir)
    trained = runs.load_run(run_dir, checkpoint, "cpu")
    task = task_of(trained.recipe, run_dir)
    if task.kind != "spectrogram":
        raise AscError(f"{run_dir}: a {task.name} run classifies {task.unit}; asc export writes models that "
                       "take log-mel features of audio (an image model's input normalization lives outside "
                       "its network)")
    features = runs.feature_config(run_dir, trained.recipe, trained.spec.get("feature_hash"))
    description = runs.dataset_description(run_dir, trained.recipe)
    classes = runs.class_names(trained)
    shape = tuple(int(v) for v in feature_shape(features))
    model = trained.model.eval()
    size = complexity(model, shape, float(features["duration"]))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        model_file = MODEL_FILES[fmt]
        if quantize is None:
            _write_model(model, shape, tmp / model_file, fmt, run_dir, opset)
            quantized = None
        else:
            quantized = _quantized_model(model, shape, tmp, tmp / model_file, quantize, calibration,
                                         run_dir, trained.recipe, task, opset)
        check = _check_export(model, shape, tmp / model_file, fmt, quantize, run_dir)
        meta = _record(run_dir, trained, task, features, classes, shape, size, fmt, quantize, check,
                       feature_hash(features), tmp / model_file, checkpoint)
        if quantized is not None:
            meta["quantization"] = quantized
        report = _report(run_dir)
        files = _write_texts(tmp, features, description, meta, report, out)
        _fsync(tmp / model_file)
        atomic_write_text(tmp / SUMS_FILE, _sums(tmp, [model_file, *files]))
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


# ------------------------------------------------------------------------------------- the model file

def _write_model(model: Any, shape: tuple[int, ...], path: Path, fmt: str, run_dir: Path,
                 opset: int = OPSET) -> None:
    import torch

    from asc.nn import _kernels, l2bn

    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    # the native L2BN passes are C calls a tracer cannot see; their torch-op fallback is the same algebra
    norm_form = l2bn.traced_as_rms_norm() if fmt == "onnx" and opset >= 23 else contextlib.nullcontext()
    with _kernels.disabled(), norm_form, torch.no_grad(), _quiet():
        try:
            if fmt == "onnx":
                batch = torch.export.Dim("batch", min=1)
                program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                            opset_version=opset, optimize=False, verbose=False)
                _fold_constants(program)
                program.save(str(path), external_data=False)
            else:
                traced = torch.jit.trace(model, (example,), check_trace=False)
                torch.jit.save(traced, str(path))
        except (AscError, KeyboardInterrupt):
            raise
        except Exception as exc:  # the exporters raise many types; one line names the model and the cause
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise AscError(f"{run_dir}: the model does not export to {fmt} ({first}); try the other --format"
                           ) from None
    if fmt == "onnx":
        _check_plain_operators(path)


def _fold_constants(program: Any) -> None:
    """torch.onnx's own optimization, except that no Expand is folded: RMSNormalization's per-channel
    gains broadcast to the whole feature map would be stored as C·H·W floats per norm (the quick FCNN's
    file: 5.3 MB instead of 0.9 MB); onnxruntime folds them in memory when it loads the file."""
    from onnxscript.optimizer import optimize_ir

    optimize_ir(program.model, should_fold=lambda node: False if node.op_type == "Expand" else None)


def _quantized_model(model: Any, shape: tuple[int, ...], folder: Path, path: Path, quantize: str,
                     calibration: int, run_dir: Path, recipe: Mapping, task: Any, opset: int) -> dict:
    """Write the float32 graph beside `path`, check it as any float32 export, quantize it into `path`,
    score both on the run's evaluation split and return export.json's `quantization` record."""
    from asc.export.quantize import METHOD, calibration_batches, compare_precisions, quantize_int8
    from asc.tasks import recipe_value

    recipe_path = run_dir / "recipe.yaml"
    plain = folder / f".float32.{path.name}"
    _write_model(model, shape, plain, "onnx", run_dir, opset)
    _check_export(model, shape, plain, "onnx", None, run_dir)
    record: dict[str, Any] = {"weights": quantize}
    if quantize == "int8":
        split = recipe_value(recipe, "data.train_split", recipe_path, default="train")
        train = task.split(recipe, split, recipe_path)
        batches, n = calibration_batches(train.dataset, train.labels, calibration)
        quantize_int8(plain, path, batches, INPUT_NAME)
        _check_plain_operators(path)
        record.update(method=METHOD, calibration={"split": split, "clips": n,
                                                   "selection": "spread over the classes, whole clips"})
    else:
        shutil.copyfile(plain, path)
        _float16_weights(path)
        record["method"] = "float32 weights stored as float16, cast back to float32 in the graph"
    split = recipe_value(recipe, "data.eval_split", recipe_path, default="evaluate")
    try:
        data = task.split(recipe, split, recipe_path)
    except AscError as exc:
        if quantize == "int8":
            raise
        print(f"warning: {exc}; the float16 export is not scored on data", file=sys.stderr)
        record["accuracy"] = None
    else:
        record["accuracy"] = compare_precisions(plain, path, data, shape, desc=f"score {split}")
    record["file_bytes"] = {"float32": plain.stat().st_size, quantize: path.stat().st_size}
    plain.unlink()
    return record


def _check_plain_operators(path: Path) -> None:
    """Every node is a standard ONNX operator: no custom domain (a native kernel) in the graph."""
    import onnx

    model = onnx.load(str(path))
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")})
    if custom:
        raise AscError(f"{path.name}: the graph holds non-standard operators ({', '.join(custom[:4])}); "
                       "onnxruntime alone could not run it")


def _float16_weights(path: Path) -> None:
    """Store every float32 initializer as float16 with a Cast back to float32 in front of its users:
    half the file, the same float32 arithmetic."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            inits.append(init)
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.isfinite(half).all():
            raise AscError(f"{path.name}: weight {init.name} exceeds the float16 range (65504); export "
                           "without --quantize")
        stored = numpy_helper.from_array(half, f"{init.name}__float16")
        inits.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_float32"))
    nodes = list(graph.node)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _check_export(model: Any, shape: tuple[int, ...], path: Path, fmt: str, quantize: str | None,
                  run_dir: Path) -> dict:
    """The exported file against the run's torch model on random inputs of another batch size."""
    import torch

    from asc.export.read import OnnxModel

    x = torch.rand((CHECK_BATCH, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).float()
        if fmt == "onnx":
            got = OnnxModel(path, shape)(x)
        else:
            with _quiet():
                got = torch.jit.load(str(path), map_location="cpu").eval()(x).float()
    if not bool(torch.isfinite(got).all()):
        raise AscError(f"{path.name}: the exported model gives NaN/Inf on the check inputs; export without "
                       "--quantize, or report the model")
    logit = float((got - expected).abs().max())
    prob = float((got.softmax(1) - expected.softmax(1)).abs().max())
    if quantize is None and logit > FLOAT32_TOLERANCE:
        raise AscError(f"{run_dir}: the exported {fmt} graph differs from the run's model by {logit:.3g} in "
                       f"a logit (at most {FLOAT32_TOLERANCE:g} expected); try the other --format")
    agree = float((got.argmax(1) == expected.argmax(1)).float().mean())
    return {"inputs": CHECK_BATCH, "input": "uniform [0, 1) random features", "max_abs_logit_diff": logit,
            "max_abs_probability_diff": prob, "same_top_class": agree}


# ------------------------------------------------------------------------------------- the records

def _record(run_dir: Path, trained: Any, task: Any, features: Mapping, classes: Sequence[str],
            shape: tuple[int, ...], size: dict, fmt: str, quantize: str | None, check: dict, fhash: str,
            model_path: Path, checkpoint: str) -> dict:
    import torch

    from asc.runs import RunFolder

    software = {"torch": torch.__version__, "python": sys.version.split()[0]}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        software.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__,
                        opset=max(o.version for o in onnx.load(str(model_path)).opset_import
                                  if o.domain in ("", "ai.onnx")))
    spec = trained.spec
    return {
        "format": EXPORT_FORMAT,
        "model_format": fmt,
        "model_file": MODEL_FILES[fmt],
        "weights": quantize or "float32",
        "kind": task.kind,
        "task": task.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", *shape], "dtype": "float32",
                  "layout": "(batch, channels, mel bands, frames): features.yaml computed on the host"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(classes)],
                   "meaning": "logits in the order of classes; softmax gives the probabilities"},
        "classes": list(classes),
        "clip_seconds": float(features["duration"]),
        "feature_hash": fhash,
        "complexity": size,
        "check": check,
        "source": {"run": str(run_dir.resolve()), "checkpoint": checkpoint, "epoch": trained.epoch,
                   "completed": RunFolder(run_dir).is_complete, "model": spec.get("name"),
                   "norm": spec.get("norm"), "params": dict(spec.get("params") or {}),
                   "recipe": trained.recipe.get("name"), "profile": trained.recipe.get("profile"),
                   "seed": trained.recipe.get("seed"), "command": _command(run_dir)},
        "software": software,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _command(run_dir: Path) -> str | None:
    """The training command env.json recorded, as one shell line."""
    from asc.runs import RunFolder

    path = RunFolder(run_dir).env
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = env.get("command") if isinstance(env, Mapping) else None
    if isinstance(command, list) and command:
        return " ".join(shlex.quote(str(part)) for part in command)
    return str(command) if isinstance(command, str) and command else None


def _report(run_dir: Path) -> dict | None:
    """RUN/report/report.json when the run has been evaluated (checked as compare checks it); a report
    that fails the check is left out of the card with a warning, not exported."""
    from asc.eval.compare import REPORT_PATH, load_run_report

    if not (run_dir / REPORT_PATH).is_file():
        return None
    try:
        return load_run_report(run_dir)
    except AscError as exc:
        print(f"warning: {exc}; the model card has no accuracy", file=sys.stderr)
        return None


def _write_texts(folder: Path, features: Mapping, description: Any, meta: dict, report: dict | None,
                 out: Path) -> list[str]:
    from asc.config import dump_yaml

    texts = {
        FEATURES_FILE: dump_yaml(dict(features)),
        DATASET_FILE: json.dumps(description.to_dict(), indent=2) + "\n",
        META_FILE: json.dumps(meta, indent=2) + "\n",
        CARD_FILE: model_card(meta, description, report, out),
    }
    for name, text in texts.items():
        atomic_write_text(folder / name, text)
    return list(texts)


def _sums(folder: Path, names: list[str]) -> str:
    from asc.export.read import sums_text

    return sums_text(folder, names)


# ------------------------------------------------------------------------------------- the model card

def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def model_card(meta: Mapping, description: Any, report: Mapping | None, out: Path) -> str:
    """README.md of an export: what it is, how to run it, its size against the DCASE limits, its
    accuracy from the run's report, and the command and data it was trained on."""
    from asc.complexity import describe

    src, size, check = meta["source"], meta["complexity"], meta["check"]
    shape = ", ".join(map(str, meta["input"]["shape"][1:]))
    lines: list[str] = []
    if description.synthetic:
        lines += [f"> **Synthetic data: this model was trained on a synthetic set ({description.title}, "
                  f"`{description.root or '?'}`); its numbers check the pipeline and say nothing about "
                  "real recordings.**", ""]
    done = "training completed" if src["completed"] else "training NOT completed"
    lines += [f"# {src['model']} / {src['norm']}: exported model", "",
              f"Exported by `asc export` on {meta['created']} from `{src['run']}` (checkpoint "
              f"{src['checkpoint']}, epoch {src['epoch']}, {done}).", ""]
    fmt = "ONNX" if meta["model_format"] == "onnx" else "TorchScript"
    opset = meta["software"].get("opset")
    kib = {k: f"{v / 1024:,.1f} KiB" for k, v in size["bytes"].items()}
    lines += [
        "## Use", "", "```bash", f"asc predict {out} recording.wav --out predictions.csv", "```", "",
        f"From Python: `Predictor.from_export(\"{out}\")` (asc.predict). Both check `{SUMS_FILE}` first.", "",
        f"- File: `{meta['model_file']}`, {fmt}" + (f" (opset {opset})" if opset else "")
        + f", weights stored in {meta['weights']}, "
        + ("convolutions and matrix products computed in int8, the rest in float32."
           if meta["weights"] == "int8" else "computed in float32."),
        f"- Input `{meta['input']['name']}`: float32 (batch, {shape}) log-mel features of "
        f"{meta['clip_seconds']:g}-s windows, computed on the host as `{FEATURES_FILE}` says (the STFT is "
        "not in the graph).",
        f"- Output `{meta['output']['name']}`: (batch, {len(meta['classes'])}) logits in this class order: "
        + ", ".join(meta["classes"]) + "; softmax gives the probabilities.",
        f"- Checked against the run's torch model on {check['inputs']} random inputs: largest logit "
        f"difference {check['max_abs_logit_diff']:.2e}, largest probability difference "
        f"{check['max_abs_probability_diff']:.2e}, same top class on {100 * check['same_top_class']:.0f} %.",
        ""]
    limits = size["limits"]
    lines += [
        f"## Complexity ({limits.get('task', 'DCASE')} counting)", "",
        "| parameters | float32 | float16 | int8 | MACs per clip | MACs per second of audio |",
        "|---|---|---|---|---|---|",
        f"| {size['params']:,} | {kib['float32']} | {kib['float16']} | {kib['int8']} | "
        f"{size['macs_per_clip'] / 1e6:,.2f} M | {size['macs_per_second'] / 1e6:,.2f} M |", "",
        f"Limits: {limits['param_bytes'] // 1024} KiB of parameters, "
        f"{limits['macs_per_second'] / 1e6:g} M MACs per second of audio. {describe(size)}. MACs per "
        f"second are the MACs of one {size['clip_seconds']:g}-s clip divided by its length.", ""]
    lines += _quantization(meta.get("quantization"))
    lines += _accuracy(report, src)
    lines += ["## Training", ""]
    lines.append(f"- Command: `{src['command']}`" if src.get("command") else
                 "- Command: not recorded (the run folder has no env.json command)")
    shown = ", ".join(f"{k} {src[k]}" for k in ("recipe", "profile", "seed") if src.get(k) is not None)
    if shown:
        lines.append(f"- Recipe: {shown}; model parameters: {json.dumps(src['params'])}")
    kind = "SYNTHETIC" if description.synthetic else "real recordings"
    lines.append(f"- Data: {description.display_name} ({kind}) at `{description.root or '?'}`, version "
                 f"{description.version}; {len(description.classes)} classes"
                 + (f"; devices {', '.join(description.devices)}" if description.devices else "")
                 + (f"; {description.duration:g}-s clips" if description.duration else "")
                 + (f" at {description.sample_rate} Hz" if description.sample_rate else "") + ".")
    lines += ["", "## Files", "", f"`{SUMS_FILE}` holds the sha256 of every other file (`sha256sum -c "
              f"{SUMS_FILE}` checks them); `{META_FILE}` records all of the above as JSON.", ""]
    return "\n".join(lines) + "\n"


def _quantization(record: Mapping | None) -> list[str]:
    """The quantized graph against the float32 one it came from, on the run's evaluation split."""
    from asc.export.quantize import accuracy_rows

    if not record:
        return []
    lines = [f"## Quantization ({record['weights']})", "", f"{record['method']}."]
    sizes = record.get("file_bytes") or {}
    if len(sizes) == 2:
        lines[-1] += (f" Model file: {sizes['float32'] / 1024:,.0f} KiB in float32, "
                      f"{sizes[record['weights']] / 1024:,.0f} KiB {record['weights']}.")
    cal = record.get("calibration")
    if cal:
        lines[-1] += f" Calibrated on {cal['clips']} clips of split `{cal['split']}` ({cal['selection']})."
    change = record.get("accuracy")
    if not change:
        return lines + ["", "Not scored on data: the run's feature cache was not found at export time.", ""]
    lines += ["", f"Both graphs scored on split `{change['split']}` ({change['clips']} whole clips): "
              f"same top class on {100 * change['same_top_class']:.2f} %, largest logit difference "
              f"{change['max_abs_logit_diff']:.3g}.", ""]
    if not change.get("before"):
        return lines + ["The split has no labels, so there are no accuracies.", ""]
    lines += ["| | float32 accuracy % | " + f"{record['weights']} accuracy % | change (points) | clips |",
              "|---|---|---|---|---|"]
    for name, before, after, n in accuracy_rows(change):
        diff = "-" if before is None or after is None else f"{100 * (after - before):+.2f}"
        lines.append(f"| {name} | {_pct(before)} | {_pct(after)} | {diff} | {n} |")
    return lines + [""]


def _accuracy(report: Mapping | None, src: Mapping) -> list[str]:
    if report is None:
        return ["## Accuracy", "", "The run had no `report/report.json` when it was exported: run "
                f"`asc evaluate {src['run']}` and export again to have its accuracy here.", ""]
    ds, run, overall = report.get("dataset") or {}, report.get("run") or {}, report.get("overall") or {}
    lines = ["## Accuracy (from the run's `report/report.json`)", ""]
    if report.get("synthetic"):
        lines += ["Scored on synthetic data: these numbers check the pipeline only.", ""]
    scored = run.get("checkpoint")
    note = (f" **Scored with checkpoint {scored}, not the exported {src['checkpoint']}.**"
            if scored and scored != src["checkpoint"] else "")
    lines += [f"Split `{ds.get('split', '?')}` of {ds.get('name', '?')}: {report.get('n_clips', '?')} clips."
              + note, "", "| | accuracy % | log loss | clips |", "|---|---|---|---|"]

    def row(name: str, s: Mapping) -> str:
        return f"| {name} | {_pct(s.get('accuracy'))} | {_num(s.get('log_loss'))} | {s.get('n', '-')} |"

    lines.append(row("overall", overall))
    lines += [row(f"device {name}", s) for name, s in (report.get("per_device") or {}).items()]
    members = report.get("device_group_members") or {}
    for name, s in (report.get("device_groups") or {}).items():
        group = str(name).replace("_", " ") + (f" ({', '.join(members[name])})" if members.get(name) else "")
        lines.append(row(f"**{group}**", s))
    return lines + [""]


# ------------------------------------------------------------------------------------- the folder

def _check_out(out: Path, run_dir: Path) -> None:
    """--out may be new, empty or an earlier export; never the run folder, a folder holding it, a file or
    a folder of other things."""
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or resolved in run.parents:
        raise AscError(f"{out}: is the run folder or holds it; write the export elsewhere (e.g. "
                       f"{run_dir}/export)")
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise AscError(f"{out}: exists and is not a folder; choose another --out")
    if any(out.iterdir()) and not is_export(out):
        raise AscError(f"{out}: a folder of other files, not an earlier export; choose another --out (an "
                       "export replaces only an earlier export)")


def _swap(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place; an earlier export there is replaced whole."""
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation notices and progress logging are not the user's concern."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo",
                                                    "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
