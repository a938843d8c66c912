"""`asc compare` on hand-made report.json files: grouping, mean ± std over seeds, L2BN - BN."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asc.errors import AscError, DataError
from asc.eval.compare import compare_runs, default_out_dir, load_run_report

DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]


def _fake_run(root, name, model, norm, seed, acc, device_a, iir_test, synthetic=True):
    run = root / name
    (run / "report").mkdir(parents=True)
    per_device = {d: {"accuracy": acc, "log_loss": 1.0, "n": 10} for d in DEVICES}
    per_device["a"]["accuracy"] = device_a
    report = {
        "synthetic": synthetic,
        "dataset": {"name": "tiny", "root": "/data/tiny", "synthetic": synthetic},
        "run": {"model": model, "norm": norm, "seed": seed},
        "overall": {"accuracy": acc, "macro_accuracy": acc - 0.01, "log_loss": 1.0 - acc, "n": 90},
        "per_device": per_device,
        "device_groups": {
            g: {"accuracy": acc, "log_loss": 1.0, "n": 30} for g in ("real", "seen_simulated", "unseen")
        },
        "angles": {
            "intra_train": 20.0,
            "intra_test": 25.0,
            "inter": 40.0,
            "iir_train": 0.5,
            "iir_test": iir_test,
        },
    }
    (run / "report" / "report.json").write_text(json.dumps(report))
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    return [
        _fake_run(root, "r17-bn-0", "resnet17", "bn", 0, 0.70, 0.80, 0.90),
        _fake_run(root, "r17-bn-1", "resnet17", "bn", 1, 0.72, 0.82, 0.80),
        _fake_run(root, "r17-bn-2", "resnet17", "bn", 2, 0.74, 0.84, 0.70),
        _fake_run(root, "r17-l2bn-0", "resnet17", "l2bn", 0, 0.73, 0.85, 0.60),
        _fake_run(root, "r17-l2bn-1", "resnet17", "l2bn", 1, 0.75, 0.87, 0.70),
        _fake_run(root, "fcnn-l2bn-0", "fcnn", "l2bn", 0, 0.69, 0.79, 0.75),
    ]


def test_means_stds_and_differences(runs, tmp_path):
    summary, markdown, out = compare_runs(runs, tmp_path / "cmp")
    groups = {(g["model"], g["norm"]): g for g in summary["groups"]}
    assert [(g["model"], g["norm"]) for g in summary["groups"]] == [
        ("fcnn", "l2bn"),
        ("resnet17", "bn"),
        ("resnet17", "l2bn"),
    ]
    bn, l2 = groups[("resnet17", "bn")], groups[("resnet17", "l2bn")]
    assert bn["n"] == 3 and bn["seeds"] == [0, 1, 2]
    assert bn["accuracy"]["mean"] == pytest.approx(0.72)
    assert bn["accuracy"]["std"] == pytest.approx(0.02)  # sample std of 0.70, 0.72, 0.74
    assert l2["accuracy"]["mean"] == pytest.approx(0.74)
    assert l2["accuracy"]["std"] == pytest.approx(np.std([0.73, 0.75], ddof=1))
    assert l2["per_device"]["a"]["mean"] == pytest.approx(0.86)
    assert groups[("fcnn", "l2bn")]["accuracy"]["std"] is None
    assert len(summary["differences"]) == 1  # fcnn has no BN baseline
    diff = summary["differences"][0]
    assert (diff["model"], diff["norm"], diff["baseline"]) == ("resnet17", "l2bn", "bn")
    assert diff["accuracy"] == pytest.approx(0.02)
    assert diff["per_device"]["a"] == pytest.approx(0.86 - 0.82)
    assert diff["angles"]["iir_test"] == pytest.approx(0.65 - 0.80)
    assert diff["log_loss"] == pytest.approx(-0.02)

    assert markdown.splitlines()[0].startswith("> **Synthetic data")
    assert "| resnet17 | bn | 3 | 72.00 ± 2.00 |" in markdown
    assert "| resnet17 | **l2bn − bn** |  | +2.00" in markdown
    assert "| fcnn | l2bn | 1 | 69.00 |" in markdown
    assert (out / "compare.md").read_text() == markdown
    saved = json.loads((out / "compare.json").read_text())
    assert saved["differences"][0]["accuracy"] == pytest.approx(0.02)
    assert (out / "per_device.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_default_out_dir_is_common_parent(runs, tmp_path):
    assert default_out_dir(runs) == (tmp_path / "runs" / "compare").resolve()
    assert default_out_dir(runs[:1]) == (tmp_path / "runs" / "compare").resolve()
    _, _, out = compare_runs(runs[:2])
    assert out == (tmp_path / "runs" / "compare").resolve() and (out / "compare.json").is_file()


def test_missing_report_names_the_run(tmp_path):
    run = tmp_path / "runs" / "fresh"
    run.mkdir(parents=True)
    with pytest.raises(AscError, match=r"fresh: no report/report.json; run `asc evaluate .*fresh` first"):
        load_run_report(run)
    with pytest.raises(AscError, match="no such run folder"):
        load_run_report(tmp_path / "nope")
    (run / "report").mkdir()
    (run / "report" / "report.json").write_text("{\n  broken")
    with pytest.raises(DataError, match=r"report.json:2: invalid JSON"):
        load_run_report(run)


def test_mixed_datasets_and_shared_seeds_are_flagged(tmp_path):
    root = tmp_path / "runs"
    runs = [
        _fake_run(root, "x0", "fcnn", "bn", 0, 0.5, 0.6, 1.0, synthetic=False),
        _fake_run(root, "x1", "fcnn", "bn", 0, 0.6, 0.7, 1.0, synthetic=True),
    ]
    summary, markdown, _ = compare_runs(runs, tmp_path / "out")
    assert any("share a seed" in w for w in summary["warnings"])
    assert summary["synthetic"] is True
    assert markdown.startswith("> **Synthetic data")


def test_paired_statistics_against_a_hand_computed_t_interval():
    from asc.eval.compare import paired_test

    # differences 1, 2, 3: mean 2, sample sd 1, se 1/sqrt(3); t(0.975, df 2) = 4.302652729911275,
    # t = 2 sqrt(3) = 3.4641, two-sided p = 0.07418 (t tables)
    r = paired_test([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)
    assert r["n"] == 3 and r["diff_mean"] == pytest.approx(2.0)
    assert r["diff_ci95"] == pytest.approx([2 - half, 2 + half])
    assert r["p_value"] == pytest.approx(0.07418, abs=1e-4)
    one = paired_test([0.5])
    assert one["diff_ci95"] is None and one["p_value"] is None and "single pair" in one["note"]


def test_runs_sharing_a_seed_are_pairs_and_the_table_marks_clear_differences(tmp_path):
    root = tmp_path / "runs"
    accs = {"bn": [0.70, 0.72, 0.71, 0.69], "l2bn": [0.74, 0.75, 0.745, 0.73]}
    runs = [_fake_run(root, f"fcnn-{norm}-{seed}", "fcnn", norm, seed, acc, acc, 0.8 - 0.1 * (norm == "l2bn"))
            for norm, values in accs.items() for seed, acc in enumerate(values)]
    runs.append(_fake_run(root, "fcnn-l2bn-9", "fcnn", "l2bn", 9, 0.5, 0.5, 0.7))  # no BN partner
    summary, markdown, out = compare_runs(runs, tmp_path / "cmp")
    paired = summary["differences"][0]["paired"]
    d = np.array(accs["l2bn"]) - np.array(accs["bn"])
    assert paired["n"] == 4 and paired["seeds"] == [0, 1, 2, 3]
    assert paired["diff_mean"] == pytest.approx(d.mean())
    from scipy import stats

    assert paired["p_value"] == pytest.approx(stats.ttest_rel(accs["l2bn"], accs["bn"]).pvalue)
    lo, hi = paired["diff_ci95"]
    assert lo > 0 and hi > lo
    assert set(paired) >= {"log_loss", "iir_train", "iir_test", "device_groups"}
    saved = json.loads((out / "compare.json").read_text())["differences"][0]["paired"]
    assert saved["n"] == 4 and saved["diff_ci95"] == pytest.approx([lo, hi]) and "p_value" in saved
    assert "## Paired differences" in markdown and " †" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| fcnn | l2bn − bn | 4 |"))
    assert f"{100 * d.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] †" in row


def test_runs_scored_on_different_things_are_refused_unless_allowed(tmp_path, capsys):
    from asc.cli import main

    root = tmp_path / "runs"
    a = _fake_run(root, "a", "fcnn", "bn", 0, 0.5, 0.5, 1.0)
    b = _fake_run(root, "b", "fcnn", "l2bn", 0, 0.6, 0.6, 0.9)
    report = json.loads((b / "report" / "report.json").read_text())
    report["scored_on"] = {"split": "test", "dataset": "tiny", "dataset_root": "/data/tiny",
                           "feature_hash": "abc", "epochs": 6}
    (b / "report" / "report.json").write_text(json.dumps(report))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split:" in err[0] and "--allow-mixed" in err[0]
    assert "feature_hash" in err[0] and "epochs" in err[0]
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--allow-mixed"]) == 0
    assert "allow-mixed" in (tmp_path / "c" / "compare.md").read_text()


def test_cli_prints_the_table(runs, tmp_path, capsys):
    from asc.cli import main

    assert main(["compare", *map(str, runs[:5]), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "| resnet17 | l2bn | 2 | 74.00 ± 1.41 |" in printed
    assert (tmp_path / "c" / "compare.md").is_file()
    assert main(["compare", str(tmp_path / "missing")]) == 2


def test_curves_over_epochs_mean_over_seeds_and_are_linked(tmp_path):
    from asc.eval.curves import series

    root = tmp_path / "runs"
    runs = []
    for norm in ("bn", "l2bn"):
        for seed in (0, 1):
            run = _fake_run(root, f"fcnn-{norm}-{seed}", "fcnn", norm, seed, 0.5, 0.5, 1.0)
            report = json.loads((run / "report" / "report.json").read_text())
            report["history"] = [{"epoch": e, "val_acc": 0.1 * e + 0.01 * seed, "train_loss": 2.0 - 0.1 * e,
                                  **({"angles": {"iir_train": 1.0 - 0.1 * e, "iir_test": 1.1 - 0.1 * e,
                                                 "intra_train": 30.0, "intra_test": 35.0, "inter": 40.0}}
                                     if e % 2 == 0 else {})} for e in (1, 2, 3, 4)]
            (run / "report" / "report.json").write_text(json.dumps(report))
            runs.append(run)
    summary, markdown, out = compare_runs(runs, tmp_path / "cmp")
    for stem in ("accuracy_loss", "iir", "angles"):
        assert (out / f"curves_fcnn_{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert f"(curves_fcnn_{stem}.png)" in markdown
    histories = [json.loads((r / "report" / "report.json").read_text())["history"] for r in runs]
    epochs, values = series(histories[:2], "val_acc", False)
    assert list(epochs) == [1, 2, 3, 4] and values.mean(0) == pytest.approx([0.105, 0.205, 0.305, 0.405])
    epochs, _ = series(histories[:1], "iir_test", True)
    assert list(epochs) == [2, 4]  # angles only where they were measured


def test_epochs_and_features_must_agree_within_a_model_not_across_models(tmp_path):
    """The paper profile trains ResNet-17 for 126 epochs and the FCNNs for 254: one comparison."""
    root = tmp_path / "runs"

    def scored(run, epochs):
        report = json.loads((run / "report" / "report.json").read_text())
        report["scored_on"] = {"split": "evaluate", "dataset": "tiny", "dataset_root": "/data/tiny",
                               "feature_hash": "abc", "epochs": epochs}
        (run / "report" / "report.json").write_text(json.dumps(report))
        return run

    runs = [scored(_fake_run(root, f"{m}-{n}", m, n, 0, 0.5, 0.5, 1.0), e)
            for m, e in (("resnet17", 126), ("fcnn", 254)) for n in ("bn", "l2bn")]
    compare_runs(runs, tmp_path / "ok")
    runs.append(scored(_fake_run(root, "fcnn-l2bn-1", "fcnn", "l2bn", 1, 0.5, 0.5, 1.0), 6))
    with pytest.raises(AscError, match=r"epochs: 254 .*fcnn-bn.*, 6 .*fcnn-l2bn-1"):
        compare_runs(runs, tmp_path / "mixed")


def test_differences_equal_up_to_rounding_get_no_interval_and_no_mark(tmp_path):
    from asc.eval.compare import paired_test

    r = paired_test([0.2 - 0.1, 0.3 - 0.2, 0.5 - 0.4])  # 0.1 each, up to float rounding
    assert r["diff_ci95"] is None and r["p_value"] is None and r["diff_mean"] == pytest.approx(0.1)
    root = tmp_path / "runs"
    runs = [_fake_run(root, f"f-{n}-{s}", "fcnn", n, s, acc + (0.1 if n == "l2bn" else 0.0), 0.5, 1.0)
            for s, acc in enumerate((0.1, 0.2, 0.4)) for n in ("bn", "l2bn")]
    _, markdown, _ = compare_runs(runs, tmp_path / "cmp")
    row = next(line for line in markdown.splitlines() if line.startswith("| fcnn | l2bn − bn | 3 |"))
    assert "(no interval)" in row and "†" not in row
