"""Reports built from arrays: JSON keys, the synthetic notice, figures and the predictions file."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from asc.eval import metrics as M
from asc.eval.report import build_report, write_predictions, write_report

SCENES = ["airport", "bus", "park"]
DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
GROUPS = {"real": ["a", "b", "c"], "seen_simulated": ["s1", "s2", "s3"], "unseen": ["s4", "s5", "s6"]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _example():
    # 8 clips; logits make argmax obvious: predictions [0, 1, 2, 0, 1, 1, 2, 0]
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 1])
    devices = ["a", "a", "a", "b", "s1", "s1", "s4", "s4"]
    preds = np.array([0, 1, 2, 0, 1, 1, 2, 0])
    logits = np.full((8, 3), -1.0)
    logits[np.arange(8), preds] = 2.0
    return logits, labels, devices


def _report(synthetic=True, **kw):
    logits, labels, devices = _example()
    history = [
        {
            "epoch": 1,
            "train_loss": 1.0,
            "val_loss": 1.1,
            "train_acc": 0.5,
            "val_acc": 0.4,
            "angles": {
                "intra_train": 40.0,
                "intra_test": 45.0,
                "inter": 30.0,
                "iir_train": 1.33,
                "iir_test": 1.5,
            },
        },
        {
            "epoch": 2,
            "train_loss": 0.8,
            "val_loss": 1.0,
            "train_acc": 0.6,
            "val_acc": 0.5,
            "angles": {
                "intra_train": 35.0,
                "intra_test": 42.0,
                "inter": 35.0,
                "iir_train": 1.0,
                "iir_test": 1.2,
            },
        },
    ]
    return build_report(
        logits,
        labels,
        devices,
        SCENES,
        dataset={"name": "tiny", "root": "/data/tiny", "synthetic": synthetic, "split": "evaluate"},
        run={"model": "fcnn", "norm": "l2bn", "seed": 3, "recipe": "fcnn", "checkpoint": "best", "epoch": 2},
        history=history,
        device_order=DEVICES,
        device_groups=GROUPS,
        **kw,
    )


def test_report_numbers_by_hand():
    report = _report()
    assert report["overall"]["accuracy"] == pytest.approx(6 / 8)
    # recalls: airport 2/2, bus 2/3 (clip 7 wrong), park 2/3 (clip 5 wrong)
    assert report["overall"]["macro_accuracy"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert report["overall"]["n"] == 8
    p_right = math.exp(2) / (math.exp(2) + 2 * math.exp(-1))
    p_wrong = math.exp(-1) / (math.exp(2) + 2 * math.exp(-1))
    assert report["overall"]["log_loss"] == pytest.approx(
        -(6 * math.log(p_right) + 2 * math.log(p_wrong)) / 8
    )
    assert list(report["per_device"]) == DEVICES
    assert report["per_device"]["a"] == {
        "accuracy": 1.0,
        "log_loss": pytest.approx(-math.log(p_right)),
        "n": 3,
    }
    assert report["per_device"]["s1"]["accuracy"] == 0.5
    assert report["per_device"]["c"] == {"accuracy": None, "log_loss": None, "n": 0}
    assert report["device_groups"]["real"]["accuracy"] == 1.0 and report["device_groups"]["real"]["n"] == 4
    assert report["device_groups"]["seen_simulated"]["n"] == 2
    assert report["device_groups"]["unseen"]["accuracy"] == 0.5
    assert report["per_scene"]["bus"] == {
        "accuracy": pytest.approx(2 / 3),
        "log_loss": pytest.approx(-(2 * math.log(p_right) + math.log(p_wrong)) / 3),
        "n": 3,
    }
    assert report["confusion"]["labels"] == SCENES
    assert report["confusion"]["matrix"] == [[2, 0, 0], [1, 2, 0], [0, 1, 2]]
    assert report["confusion"]["groups"]["unseen"] == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert report["run"]["norm"] == "l2bn" and report["dataset"]["root"] == "/data/tiny"


def test_angles_in_report_match_angle_metrics():
    rng = np.random.default_rng(0)
    train_labels = np.array([0, 1, 2] * 10)
    train = rng.normal(size=(30, 6)) + 4 * np.eye(6)[train_labels]
    test = rng.normal(size=(8, 6)) + 4 * np.eye(6)[_example()[1]]
    report = _report(train_embeddings=train, train_labels=train_labels, test_embeddings=test)
    expected = M.angle_metrics(train, train_labels, test, _example()[1])
    for key, value in expected.items():
        assert report["angles"][key] == pytest.approx(value)


def test_angles_absent_without_features_and_noted_on_missing_class():
    assert _report()["angles"]["inter"] is None
    train = np.eye(3)[:2]
    report = _report(train_embeddings=train, train_labels=np.array([0, 1]), test_embeddings=np.ones((8, 3)))
    assert report["angles"]["intra_test"] is None and "no training samples" in report["angles"]["note"]


def test_written_files_json_md_and_pngs(tmp_path):
    import matplotlib.image

    report = _report(synthetic=True)
    written = write_report(report, tmp_path / "report")
    out = tmp_path / "report"
    data = json.loads((out / "report.json").read_text())
    for key in (
        "overall",
        "per_device",
        "device_groups",
        "per_scene",
        "confusion",
        "angles",
        "run",
        "dataset",
    ):
        assert key in data
    assert set(data["angles"]) >= {"intra_train", "intra_test", "inter", "iir_train", "iir_test"}
    assert set(data["overall"]) == {"accuracy", "macro_accuracy", "log_loss", "n"}
    assert set(data["device_groups"]) == {"real", "seen_simulated", "unseen"}
    # the synthetic flag is the first field of the JSON and the first line of the page
    assert (out / "report.json").read_text().splitlines()[1].strip() == '"synthetic": true,'
    md = (out / "report.md").read_text().splitlines()
    assert md[0].startswith("> **Synthetic data") and "/data/tiny" in md[0]
    assert any("| s1 | 50.00 |" in line for line in md)
    pngs = {p.name for p in written if p.suffix == ".png"}
    assert {
        "confusion_overall.png",
        "confusion_real.png",
        "confusion_seen_simulated.png",
        "confusion_unseen.png",
        "per_device_accuracy.png",
        "angles.png",
        "training.png",
    } <= pngs
    for name in pngs:
        raw = (out / name).read_bytes()
        assert raw.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert f"({name})" in "\n".join(md)
    assert not list(out.glob("*.tmp"))


def test_real_data_report_has_no_notice(tmp_path):
    report = _report(synthetic=False)
    write_report(report, tmp_path)
    assert report["synthetic"] is False and report["notice"] is None
    first = (tmp_path / "report.md").read_text().splitlines()[0]
    assert first.startswith("# Evaluation: fcnn / l2bn / seed 3")
    assert "Synthetic" not in (tmp_path / "report.md").read_text()


def test_unlabelled_split_gives_scores_none_and_no_confusion_figure(tmp_path):
    logits, _, devices = _example()
    report = build_report(
        logits,
        np.full(8, -1),
        devices,
        SCENES,
        dataset={"name": "eval", "root": "/x"},
        device_order=DEVICES,
        device_groups=GROUPS,
    )
    assert report["overall"]["n"] == 0 and report["overall"]["accuracy"] is None
    assert report["n_unlabelled"] == 8
    write_report(report, tmp_path)
    assert not (tmp_path / "confusion_overall.png").exists()
    assert "predictions.csv" in (tmp_path / "report.md").read_text()


def test_bad_shapes_are_rejected():
    logits, labels, devices = _example()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        build_report(logits, labels, devices, SCENES + ["tram"], device_order=DEVICES, device_groups=GROUPS)
    with pytest.raises(ValueError, match="labels"):
        build_report(logits, labels[:5], devices, SCENES, device_order=DEVICES, device_groups=GROUPS)


def test_predictions_file_in_dcase_format(tmp_path):
    logits, _, _ = _example()
    names = [f"audio/{i}.wav" for i in range(8)]
    write_predictions(tmp_path / "predictions.csv", names, logits, SCENES)
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["filename", "scene_label", *SCENES]
    assert len(rows) == 9
    assert rows[1][:2] == ["audio/0.wav", "airport"] and rows[8][:2] == ["audio/7.wav", "airport"]
    assert rows[2][1] == "bus"
    for row in rows[1:]:
        assert sum(float(v) for v in row[2:]) == pytest.approx(1.0, abs=1e-12)


def test_predictions_file_keeps_full_precision_so_log_loss_recomputes_exactly(tmp_path):
    """A confident mistake (p of the true class ~ 3e-7) must score from the file as in the report."""
    from asc.eval.metrics import log_loss, softmax

    logits = np.array([[15.0, 0.0, 0.0], [0.0, 15.0, 0.0], [0.0, 0.0, 3.0]])
    labels = np.array([1, 1, 2])
    write_predictions(tmp_path / "p.csv", [f"audio/{i}.wav" for i in range(3)], logits, SCENES[:3])
    with open(tmp_path / "p.csv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    from_file = np.array([[float(v) for v in r[2:]] for r in rows])
    assert from_file[0, 1] < 1e-6
    np.testing.assert_array_equal(from_file, softmax(logits))
    assert log_loss(labels, from_file) == log_loss(labels, softmax(logits))


def test_devices_come_from_the_description_and_can_be_absent():
    from asc.data.tau2020 import DEVICE_GROUPS
    from asc.data.tau2020 import DEVICES as TAU_DEVICES

    logits, labels, devices = _example()
    report = build_report(logits, labels, devices, SCENES, device_order=list(TAU_DEVICES),
                          device_groups=DEVICE_GROUPS)
    # without an order, the devices the clips name, as they come
    assert list(build_report(logits, labels, devices, SCENES)["per_device"]) == list(dict.fromkeys(devices))
    assert list(report["per_device"]) == list(TAU_DEVICES)
    assert report["device_group_members"] == {k: list(v) for k, v in DEVICE_GROUPS.items()}
    assert report["device_groups"]["unseen"]["n"] == 2
    images = build_report(logits, labels, None, SCENES)
    assert images["per_device"] == {} and images["device_groups"] == {}
    assert images["overall"]["accuracy"] == pytest.approx(6 / 8)
