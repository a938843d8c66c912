"""`asc evaluate` end to end on a stored tiny run: TAU-format folder -> `asc extract` -> checkpoint in
the training engine's format -> report, checked against the model run independently."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from asc.cli import main
from asc.data.tau2020 import DEVICES, SCENES
from asc.errors import AscError

from .tiny_tau import FEATURES, SR, run_extract


def _reference(tiny_run):
    """The model run directly, batch by batch, on the arrays of the cache."""
    from asc.features.dataset import load_split_arrays

    model = tiny_run["model"].eval()
    out = {}
    for split in ("train", "evaluate"):
        x, y, devices = load_split_arrays(tiny_run["cache_dir"], split)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).double().numpy()
            emb = model.embed(torch.from_numpy(x)).double().numpy()
        out[split] = (logits, y, devices, emb)
    return out


def test_evaluate_writes_a_report_that_matches_the_model(tiny_run, capsys):
    from asc.eval.metrics import angle_metrics, log_loss, softmax

    run = tiny_run["run"]
    assert main(["evaluate", str(run), "--device", "cpu", "--batch-size", "7"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("Synthetic data:")
    assert "fcnn / l2bn / seed 7, checkpoint best (epoch 2), split evaluate: 40 clips" in printed.out
    assert "metrics.jsonl:3: dropped a malformed line" in printed.err

    out = run / "report"
    report = json.loads((out / "report.json").read_text())
    ref = _reference(tiny_run)
    logits, y, devices, emb = ref["evaluate"]
    pred = logits.argmax(1)
    assert report["synthetic"] is True
    assert report["overall"]["n"] == 40
    assert report["overall"]["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    assert report["overall"]["log_loss"] == pytest.approx(log_loss(y, softmax(logits)), rel=1e-5)
    assert list(report["per_device"]) == list(DEVICES)
    for device in DEVICES:
        mask = np.array(devices) == device
        assert report["per_device"][device]["n"] == int(mask.sum())
        if mask.any():
            assert report["per_device"][device]["accuracy"] == pytest.approx(
                float(np.mean(pred[mask] == y[mask]))
            )
    # the fixture's noisy unseen device is harder, so the per-device split is not uniform
    assert report["per_device"]["a"]["accuracy"] > report["per_device"]["s4"]["accuracy"]
    assert report["device_groups"]["real"]["n"] == 20
    assert report["device_groups"]["seen_simulated"]["n"] == 10
    assert report["device_groups"]["unseen"]["n"] == 10
    assert np.array(report["confusion"]["matrix"]).sum() == 40
    assert report["confusion"]["labels"] == list(SCENES)
    assert (
        report["run"]["model"] == "fcnn" and report["run"]["norm"] == "l2bn" and report["run"]["epoch"] == 2
    )
    assert report["run"]["precision"] == "float32"  # the default everywhere; bf16 autocast is an opt-in
    assert "precision float32" in (out / "report.md").read_text()
    assert report["dataset"]["split"] == "evaluate" and report["dataset"]["synthetic"] is True
    # DCASE's complexity count: the clip's MACs spread over its seconds, parameter bytes per precision
    c, clip = report["complexity"], report["dataset"]["description"]["duration"]
    assert c["clip_seconds"] == clip and c["params"] == report["model"]["params"]
    assert c["macs_per_second"] == pytest.approx(report["model"]["macs"] / clip)
    assert c["bytes"] == {"float32": 4 * c["params"], "float16": 2 * c["params"], "int8": c["params"]}
    assert c["fits_dcase_2022"] == (c["params"] <= 128 * 1024 and c["macs_per_second"] <= 30e6)
    verdict = "fits DCASE 2022-2025 Task 1" if c["fits_dcase_2022"] else "does not fit DCASE 2022-2025 Task 1"
    assert verdict in (out / "report.md").read_text()
    assert f"complexity: {c['params']:,} parameters" in printed.out

    t_logits, t_y, _, t_emb = ref["train"]
    expected = angle_metrics(t_emb, t_y, emb, y)
    for key, value in expected.items():
        assert report["angles"][key] == pytest.approx(value, rel=1e-4, abs=1e-4)
    assert len(report["history"]) == 2

    md = (out / "report.md").read_text()
    assert md.splitlines()[0].startswith("> **Synthetic data")
    for png in (
        "confusion_overall.png",
        "confusion_unseen.png",
        "per_device_accuracy.png",
        "angles.png",
        "training.png",
    ):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["filename", "scene_label", *SCENES] and len(rows) == 41
    assert [r[1] for r in rows[1:]] == [SCENES[i] for i in pred]
    assert all(r[0].startswith("audio/") for r in rows[1:])  # as the fold file lists them
    from_file = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert log_loss(y, from_file) == report["overall"]["log_loss"]


def test_evaluate_then_compare(tiny_run, capsys):
    from asc.eval.compare import compare_runs

    run = tiny_run["run"]
    if not (run / "report" / "report.json").is_file():
        assert main(["evaluate", str(run), "--device", "cpu", "--no-angles"]) == 0
    summary, markdown, out = compare_runs([run])
    assert out == (run.parent / "compare").resolve()
    assert summary["groups"][0]["model"] == "fcnn" and summary["groups"][0]["norm"] == "l2bn"
    assert markdown.startswith("> **Synthetic data")


def test_evaluate_errors_name_the_problem(tiny_run, tmp_path, capsys):
    from asc.eval.evaluate import evaluate_run

    with pytest.raises(AscError, match="no such run folder"):
        evaluate_run(tmp_path / "nothing")
    with pytest.raises(AscError, match=r"last.pt: no such checkpoint; available: best"):
        evaluate_run(tiny_run["run"], checkpoint="last", device="cpu")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert main(["evaluate", str(empty), "--device", "cpu"]) == 2
    assert "train the run first" in capsys.readouterr().err


def test_evaluate_a_cifar_run(tmp_path, capsys):
    """Image runs have no devices: the report has per-class scores and angles, no per-device rows."""
    from asc.data.cifar import CifarDataset, write_synthetic_cifar100
    from asc.eval.metrics import angle_metrics
    from asc.models import create_model
    from asc.runs import save_checkpoint

    root = write_synthetic_cifar100(tmp_path / "cifar", preset="tiny", seed=0)
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=100, norm="l2bn").eval()
    spec = {"name": "cifar_resnet20", "num_classes": 100, "in_channels": 3, "norm": "l2bn", "params": {}}
    recipe = {
        "name": "c20",
        "task": "cifar100",
        "profile": "quick",
        "norm": "l2bn",
        "seed": 1,
        "model": {"name": "cifar_resnet20", "params": {}},
        "data": {"root": str(root), "train_split": "train", "eval_split": "evaluate"},
    }
    run = tmp_path / "runs" / "c20"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    save_checkpoint(
        {"epoch": 1, "model": model.state_dict(), "model_spec": spec, "recipe": recipe},
        run / "checkpoints" / "last.pt",
    )
    assert main(["evaluate", str(run), "--checkpoint", "last", "--device", "cpu"]) == 0
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["per_device"] == {} and report["device_groups"] == {}
    assert "complexity" not in report  # images have no seconds of audio to count MACs per
    assert report["dataset"]["split"] == "test" and report["synthetic"] is True
    assert report["overall"]["n"] == 200 and len(report["per_scene"]) == 100

    def arrays(split):
        ds = CifarDataset(root, split)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.no_grad():
            logits, emb = model.forward_with_embedding(x)
        return logits.numpy(), emb.double().numpy(), ds.labels

    logits, emb, y = arrays("test")
    _, train_emb, train_y = arrays("train")
    assert report["overall"]["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))
    expected = angle_metrics(train_emb, train_y, emb, y)
    assert report["angles"]["iir_test"] == pytest.approx(expected["iir_test"], rel=1e-4)
    md = (run / "report" / "report.md").read_text()
    assert "## Per class" in md and "## Per device" not in md
    assert not (run / "report" / "per_device_accuracy.png").exists()


def test_official_evaluation_set_gets_predictions_only(tiny_run, capsys):
    """Anonymous, unlabelled clips (audio/0.wav, ...) from another cache: predictions, no scores."""
    from asc.features.cache import cache_path

    base = tiny_run["base"]
    root = base / "tau-eval"
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    rng = np.random.default_rng(1)
    names = [f"audio/{i}.wav" for i in range(6)]
    for name in names:
        sf.write(root / name, (0.1 * rng.standard_normal(SR)).astype(np.float32), SR, subtype="PCM_16")
    (root / "evaluation_setup" / "fold1_test.csv").write_text("filename\n" + "\n".join(names) + "\n")
    features = tiny_run["features"]
    run_extract(root, features, base / "cache-eval")
    cache_dir = cache_path(base / "cache-eval", features)
    run = tiny_run["run"]
    assert main(["evaluate", str(run), "--cache", str(cache_dir), "--split", "test", "--device", "cpu"]) == 0
    assert "no labels in this split" in capsys.readouterr().out
    out = run / "report_test"
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["n"] == 0 and report["n_unlabelled"] == 6 and report["per_device"] == {}
    assert report["synthetic"] is False and report["dataset"]["root"] == str(root.resolve())
    assert "predictions.csv" in (out / "report.md").read_text()
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert [r[0] for r in rows[1:]] == [f"audio/{i}.wav" for i in range(6)]  # as fold1_test.csv lists them
    assert all(r[1] in SCENES for r in rows[1:])

    # a cache of other features is refused
    other = base / "other_logmel.yaml"
    other.write_text(yaml.safe_dump({**FEATURES, "n_mels": 16}))
    run_extract(root, other, base / "cache-eval")
    capsys.readouterr()
    other_dir = cache_path(base / "cache-eval", other)
    assert main(["evaluate", str(run), "--cache", str(other_dir), "--split", "test", "--device", "cpu"]) == 2
    assert "features of another config" in capsys.readouterr().err


def test_a_run_with_nan_metrics_or_weights_gives_one_line(tiny_run, tmp_path, capsys):
    """NaN in metrics.jsonl only feeds the curves; NaN in the weights is refused, naming the tensor."""
    import shutil

    from asc.runs import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:2]]
    rows[1].update(val_loss=float("nan"), train_loss=float("inf"))
    rows[1]["angles"]["inter"] = float("nan")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", str(run), "--device", "cpu", "--no-angles"]) == 0
    assert json.loads((run / "report" / "report.json").read_text())["history"][1]["val_loss"] is None

    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    name = next(k for k in ckpt["model"] if k.endswith("weight"))
    ckpt["model"][name].view(-1)[0] = float("nan")
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format"}, run / "checkpoints" / "best.pt")
    before = (run / "report" / "report.json").read_bytes()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "NaN/Inf" in err[0], err
    assert (run / "report" / "report.json").read_bytes() == before  # the earlier report is kept
