"""`asc export` and predicting from an export: the ONNX graph (L2BN as plain operators) equals the run's
torch model on the same log-mel input, `Predictor.from_export` equals `Predictor.from_run` on a WAV,
TorchScript and float16 exports, and one-line refusals (exit code 2) for what must not be scored."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml

from asc.cli import main

from .tiny_tau import SR

TOL = 1e-4


def _tone(seconds: float, sr: int = SR, freq: float = 650.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    noise = 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (FCNN with L2BN, no features.yaml: its features come from the cache
    manifest), evaluated, with the training command env.json records."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run["run"], run, ignore=shutil.ignore_patterns("report", "*.lock"))
    assert not (run / "features.yaml").exists()
    (run / "env.json").write_text(json.dumps({"command": ["asc", "train", "--recipe", "tiny.yaml",
                                                          "--norm", "l2bn"]}))
    assert main(["evaluate", str(run), "--device", "cpu", "--no-angles"]) == 0
    return run


@pytest.fixture(scope="module")
def onnx_export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """A 2.5-s synthetic WAV at 16 kHz: resampled to the run's 8 kHz and cut into three windows."""
    path = tmp_path_factory.mktemp("audio") / "street.wav"
    sf.write(path, _tone(2.5, 16000), 16000, subtype="PCM_16")
    return path


def _copy(export, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(export, target)
    return target


def test_onnx_export_equals_the_run_on_the_same_logmel(run, onnx_export, tiny_run):
    import onnx
    import onnxruntime as ort
    import torch

    from asc.features.dataset import load_split_arrays
    from asc.nn.l2bn import L2BatchNorm2d
    from asc.runs import load_run

    x, _, _ = load_split_arrays(tiny_run["cache_dir"], "evaluate")
    model = load_run(run).model
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"logmel": x})[0]
    assert got.shape == expected.shape == (len(x), 10)
    diff = float(np.abs(got - expected).max())
    assert diff < TOL, diff  # measured: 1.5e-6 on logits up to 2.9 (float32 sums in another order)
    one = session.run(["logits"], {"logmel": x[:1]})[0]  # the batch axis is free
    assert np.abs(one - expected[:1]).max() < TOL

    graph = onnx.load(str(onnx_export / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # no native kernel, no custom operator
    # L2BN's sample norms as a standard operator: one RMSNormalization per norm of the model
    norms = sum(isinstance(m, L2BatchNorm2d) for m in model.modules())
    assert ops.count("RMSNormalization") == norms > 0 and "ReduceL2" not in ops
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == \
        ["batch", *x.shape[1:]]
    # the gains stay an Expand of one value per channel: the file holds the model's parameters, not
    # C·H·W floats per norm
    params = sum(p.numel() for p in model.parameters())
    stored = sum(int(np.prod(t.dims)) for t in graph.initializer)
    assert stored < 1.1 * params, (stored, params)

    # a silent window (all-zero features) and a zero feature map deep in the net stay finite and equal
    zero = np.zeros_like(x[:2])
    with torch.no_grad():
        expected = model(torch.from_numpy(zero)).numpy()
    got = session.run(["logits"], {"logmel": zero})[0]
    assert np.isfinite(got).all() and np.abs(got - expected).max() < TOL


def test_an_earlier_opset_writes_the_sample_norm_as_reduce_l2(run, tiny_run, tmp_path, capsys):
    import onnx
    import onnxruntime as ort
    import torch

    from asc.features.dataset import load_split_arrays
    from asc.runs import load_run

    out = tmp_path / "opset18"
    assert main(["export", str(run), "--opset", "18", "--out", str(out)]) == 0
    proto = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "ReduceL2" in ops and "RMSNormalization" not in ops
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert json.loads((out / "export.json").read_text())["software"]["opset"] == 18
    x, _, _ = load_split_arrays(tiny_run["cache_dir"], "evaluate")
    with torch.no_grad():
        expected = load_run(run).model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"logmel": x})[0]
    assert np.abs(got - expected).max() < TOL
    capsys.readouterr()
    _one_line_error(capsys, main(["export", str(run), "--format", "torchscript", "--opset", "18", "--out",
                                  str(tmp_path / "ts")]), "--opset 18", "TorchScript")


def test_the_folder_is_self_contained_and_checksummed(run, onnx_export, tiny_run):
    from asc.runs import feature_config, read_recipe

    names = sorted(p.name for p in onnx_export.iterdir())
    assert names == ["README.md", "SHA256SUMS", "dataset.json", "export.json", "features.yaml", "model.onnx"]
    lines = (onnx_export / "SHA256SUMS").read_text().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(listed) == [n for n in names if n != "SHA256SUMS"]
    for name, digest in listed.items():
        assert hashlib.sha256((onnx_export / name).read_bytes()).hexdigest() == digest

    # the features the run trained on, from the cache manifest since the run has no features.yaml
    features = yaml.safe_load((onnx_export / "features.yaml").read_text())
    assert features == feature_config(run, read_recipe(run))
    dataset = json.loads((onnx_export / "dataset.json").read_text())
    assert dataset["synthetic"] is True and len(dataset["classes"]) == 10
    meta = json.loads((onnx_export / "export.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 32, 55] and meta["classes"] == dataset["classes"]
    assert meta["source"]["norm"] == "l2bn" and meta["weights"] == "float32"
    assert meta["check"]["max_abs_logit_diff"] < TOL
    assert meta["complexity"]["clip_seconds"] == 1.0 and meta["complexity"]["fits_dcase_2022"]

    card = (onnx_export / "README.md").read_text()
    report = json.loads((run / "report" / "report.json").read_text())
    assert card.startswith("> **Synthetic data")
    assert f"{100 * report['overall']['accuracy']:.2f}" in card
    for device, scores in report["per_device"].items():
        shown = "-" if scores["accuracy"] is None else f"{100 * scores['accuracy']:.2f}"  # no clips: no score
        assert f"| device {device} | {shown} |" in card
    assert "`asc train --recipe tiny.yaml --norm l2bn`" in card
    assert f"{meta['complexity']['params']:,}" in card and "MACs per second of audio" in card


def test_predictor_from_export_equals_from_run(run, onnx_export, wav, tmp_path):
    from asc.predict import Predictor

    from_run = Predictor.from_run(run).predict(wav)
    from_export = Predictor.from_export(onnx_export).predict(wav)
    assert len(from_export.windows) == len(from_run.windows) == 3
    assert from_export.scene == from_run.scene
    diff = max(abs(from_export.probabilities[c] - from_run.probabilities[c]) for c in from_run.probabilities)
    assert diff < TOL, diff  # measured: about 1e-7
    for a, b in zip(from_export.windows, from_run.windows):
        assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < TOL

    # the command line, with the export folder in place of the run folder
    outs = {}
    for name, source in (("run", run), ("export", onnx_export)):
        outs[name] = tmp_path / f"{name}.csv"
        assert main(["predict", str(source), str(wav), "--out", str(outs[name]), "--device", "auto"]) == 0
    rows = {k: list(csv.reader(open(v, newline=""), delimiter="\t")) for k, v in outs.items()}
    assert rows["run"][0] == rows["export"][0] and rows["run"][1][:2] == rows["export"][1][:2]
    assert np.abs(np.array(rows["run"][1][2:], float) - np.array(rows["export"][1][2:], float)).max() < TOL


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_and_matches(run, wav, tmp_path, tiny_run):
    import torch

    from asc.features.dataset import load_split_arrays
    from asc.predict import Predictor
    from asc.runs import load_run

    out = tmp_path / "ts"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert (out / "model.pt").is_file() and not (out / "model.onnx").exists()
    x, _, _ = load_split_arrays(tiny_run["cache_dir"], "evaluate")
    with torch.no_grad():
        expected = load_run(run).model(torch.from_numpy(x))
        got = torch.jit.load(str(out / "model.pt")).eval()(torch.from_numpy(x))
    assert float((got - expected).abs().max()) < TOL
    a, b = Predictor.from_export(out).predict(wav), Predictor.from_run(run).predict(wav)
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < TOL


def test_float16_weights_halve_the_file(run, onnx_export, wav, tmp_path):
    import onnx
    from onnx import TensorProto

    from asc.predict import Predictor

    out = tmp_path / "fp16"
    assert main(["export", str(run), "--quantize", "float16", "--out", str(out)]) == 0
    model = onnx.load(str(out / "model.onnx"))
    stored = {i.data_type for i in model.graph.initializer if i.dims}
    assert stored <= {TensorProto.FLOAT16, TensorProto.INT64}
    full = onnx.load(str(onnx_export / "model.onnx"))
    weight_bytes = [sum(len(i.raw_data) for i in m.graph.initializer if i.data_type != TensorProto.INT64)
                    for m in (model, full)]
    assert weight_bytes[0] * 2 == weight_bytes[1]
    ratio = (out / "model.onnx").stat().st_size / (onnx_export / "model.onnx").stat().st_size
    assert ratio < 0.7, ratio  # measured 0.63: the graph itself stays
    meta = json.loads((out / "export.json").read_text())
    assert meta["weights"] == "float16" and meta["check"]["max_abs_probability_diff"] < 1e-2
    assert meta["quantization"]["accuracy"]["same_top_class"] > 0.9  # scored against float32 on data too
    a, b = Predictor.from_export(out).predict(wav), Predictor.from_run(run).predict(wav)
    assert a.scene == b.scene
    assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-2


def test_int8_export_is_scored_before_and_after_on_the_evaluation_split(run, onnx_export, wav, tiny_run,
                                                                        tmp_path, capsys):
    """Static int8: Convs on int8 weights (one scale per output channel, each weight within half a step
    of its float value), standard operators only, and the accuracy change in export.json and the model
    card equals what the float32 and int8 graphs score on the cache's evaluation clips, per device."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from asc.features.dataset import load_split_arrays
    from asc.predict import Predictor

    out = tmp_path / "int8"
    assert main(["export", str(run), "--quantize", "int8", "--calibration", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "int8 against float32 on split evaluate (40 clips): accuracy" in printed
    model = onnx.load(str(out / "model.onnx"))
    nodes = list(model.graph.node)
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}
    assert {"QuantizeLinear", "DequantizeLinear", "RMSNormalization"} <= {n.op_type for n in nodes}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    full = onnx.load(str(onnx_export / "model.onnx"))
    floats = {i.name: numpy_helper.to_array(i) for i in full.graph.initializer}
    conv_weights = [floats[n.input[1]] for n in full.graph.node if n.op_type == "Conv"]
    dequant = {n.output[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
    int8_convs = [dequant[n.input[1]] for n in nodes if n.op_type == "Conv"]  # weights come out of one
    assert len(int8_convs) == len(conv_weights)
    checked = 0
    for w, node in zip(conv_weights, int8_convs):  # the graphs keep the order of the layers
        q, scale = inits[node.input[0]], inits[node.input[1]]
        assert q.dtype == np.int8 and q.shape == w.shape and scale.shape == (q.shape[0],)  # per channel
        restored = q.astype(np.float64) * scale.reshape(-1, *[1] * (q.ndim - 1))
        assert np.all(np.abs(restored - w) <= scale.reshape(-1, *[1] * (q.ndim - 1)) / 2 + 1e-7)
        checked += 1
    assert checked == len(conv_weights) > 0

    meta = json.loads((out / "export.json").read_text())
    record = meta["quantization"]
    assert meta["weights"] == "int8" and record["calibration"]["clips"] == 12
    # int8 weights and no constants broadcast to whole feature maps: well under the float32 file
    # (measured 0.39; 0.50 when the quantizer's preprocessing folded the norms' gains to full maps)
    assert record["file_bytes"]["int8"] < 0.45 * record["file_bytes"]["float32"], record["file_bytes"]
    big = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT
           and np.prod(i.dims) > 4096]
    assert not big, big
    x, y, devices = load_split_arrays(tiny_run["cache_dir"], "evaluate")
    sessions = {name: ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
                for name, folder in (("before", onnx_export), ("after", out))}
    logits = {name: session.run(["logits"], {"logmel": x})[0] for name, session in sessions.items()}
    change = record["accuracy"]
    assert change["clips"] == len(y) == 40
    for when in ("before", "after"):
        pred = logits[when].argmax(1)
        assert change[when]["overall"]["accuracy"] == pytest.approx(float(np.mean(pred == y)))
        for device, scores in change[when]["per_device"].items():
            mask = np.asarray(devices) == device
            assert scores["n"] == int(mask.sum())
            if mask.any():
                assert scores["accuracy"] == pytest.approx(float(np.mean(pred[mask] == y[mask])))
    same = float(np.mean(logits["before"].argmax(1) == logits["after"].argmax(1)))
    assert change["same_top_class"] == pytest.approx(same)
    card = (out / "README.md").read_text()
    assert "## Quantization (int8)" in card and "| device s4 |" in card and "Calibrated on 12 clips" in card
    assert Predictor.from_export(out).predict(wav).probabilities  # scores audio like any export

    code = main(["export", str(run), "--quantize", "int8", "--calibration", "0",
                 "--out", str(tmp_path / "z")])
    _one_line_error(capsys, code, "--calibration 0")
    assert not (tmp_path / "z").exists()


def test_an_earlier_export_is_replaced_whole(run, onnx_export, tmp_path):
    out = _copy(onnx_export, tmp_path)
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    assert not (out / "model.onnx").exists() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


# ----------------------------------------------------------------------------------- refusals

def test_missing_or_edited_files_are_refused_naming_the_file(onnx_export, wav, tmp_path, capsys):
    from asc.errors import AscError
    from asc.predict import Predictor

    gone = _copy(onnx_export, tmp_path, "gone")
    (gone / "model.onnx").unlink()
    code = main(["predict", str(gone), str(wav), "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, f"{gone / 'model.onnx'}: missing")

    edited = _copy(onnx_export, tmp_path, "edited")
    with open(edited / "features.yaml", "a") as fh:
        fh.write("# a comment changes the bytes\n")
    code = main(["predict", str(edited), str(wav), "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, f"{edited / 'features.yaml'}: changed since it was exported")
    with pytest.raises(AscError, match="features.yaml: changed"):
        Predictor.from_export(edited)

    unsummed = _copy(onnx_export, tmp_path, "unsummed")
    (unsummed / "SHA256SUMS").unlink()
    code = main(["predict", str(unsummed), str(wav), "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, "SHA256SUMS: missing")
    assert not (tmp_path / "p.csv").exists()


def test_a_model_that_is_not_audio_is_refused(onnx_export, wav, tmp_path, capsys):
    from asc.export.read import sums_text

    image = _copy(onnx_export, tmp_path, "image")
    features = yaml.safe_load((image / "features.yaml").read_text())
    del features["sample_rate"]
    (image / "features.yaml").write_text(yaml.safe_dump(features))
    names = [n for n in sorted(p.name for p in image.iterdir()) if n != "SHA256SUMS"]
    (image / "SHA256SUMS").write_text(sums_text(image, names))  # consistent, so only the content is wrong
    code = main(["predict", str(image), str(wav), "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, "not an audio model", "features.yaml has no sample_rate")

    meta = json.loads((image / "export.json").read_text())
    (image / "features.yaml").write_text(yaml.safe_dump({**features, "sample_rate": SR}))
    (image / "export.json").write_text(json.dumps({**meta, "kind": "image"}))
    (image / "SHA256SUMS").write_text(sums_text(image, names))
    code = main(["predict", str(image), str(wav), "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, "not an audio model", "classifies image")


def test_another_window_than_the_export_takes_is_refused(onnx_export, wav, tmp_path, capsys):
    code = main(["predict", str(onnx_export), str(wav), "--window", "2", "--out", str(tmp_path / "p.csv")])
    _one_line_error(capsys, code, "--window 2", "leave --window out")
    code = main(["predict", str(onnx_export), str(wav), "--hop", "0.5", "--out", str(tmp_path / "p.csv")])
    assert code == 0  # any hop is fine


def test_a_run_still_training_is_refused(run, tmp_path, capsys):
    lock = run / ".training.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, socket, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0); os.write(fd, f'{os.getpid()} {socket.gethostname()}\\n'.encode())\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["export", str(run), "--out", str(tmp_path / "e")])
        _one_line_error(capsys, code, "is training in this folder", f"process {holder.pid}")
        assert not (tmp_path / "e").exists()
    finally:
        holder.kill()
        holder.wait()
        lock.unlink(missing_ok=True)


def test_export_refusals_are_one_line(run, tmp_path, capsys):
    code = main(["export", str(run), "--out", str(run)])
    _one_line_error(capsys, code, "is the run folder or holds it")
    code = main(["export", str(run), "--out", str(run.parent)])
    _one_line_error(capsys, code, "is the run folder or holds it")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    code = main(["export", str(run), "--out", str(other)])
    _one_line_error(capsys, code, "not an earlier export")
    assert (other / "thesis.tex").read_text() == "keep me"
    code = main(["export", str(run), "--format", "torchscript", "--quantize", "float16",
                 "--out", str(tmp_path / "e")])
    _one_line_error(capsys, code, "--format onnx only")
    code = main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e")])
    _one_line_error(capsys, code, "no such run folder")

    image_run = tmp_path / "image_run"
    shutil.copytree(run, image_run, ignore=shutil.ignore_patterns("report"))
    recipe = yaml.safe_load((image_run / "recipe.yaml").read_text())
    (image_run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "task": "cifar100"}))
    code = main(["export", str(image_run), "--out", str(tmp_path / "e")])
    _one_line_error(capsys, code, "classifies images")
    assert not (tmp_path / "e").exists()


def test_without_the_onnx_extra_export_and_predict_say_what_to_install(run, onnx_export, wav, monkeypatch,
                                                                         capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    code = main(["export", str(run), "--out", str(run.parent / "no_onnx")])
    _one_line_error(capsys, code, "asc export --format onnx needs onnx, onnxruntime, onnxscript",
                    'pip install "asc-l2bn[onnx]"')
    code = main(["predict", str(onnx_export), str(wav)])
    _one_line_error(capsys, code, "scoring an ONNX export needs onnxruntime", 'pip install "asc-l2bn[onnx]"')


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "asc export" in out and "--quantize" in out and "asc predict" in out
