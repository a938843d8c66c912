"""Variants beyond BN vs L2BN: Holm's correction, runs grouped by norm plus augmentation, pairs per seed
against a named baseline, and the seen − unseen device gap as a column of the main table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scipy import stats

from asc.errors import AscError
from asc.eval.compare import FLAT_TRANSFORMS, compare_runs, holm, unseen_gap, variant_of_recipe

GROUPS = {"real": ["a", "b", "c"], "seen_simulated": ["s1", "s2", "s3"], "unseen": ["s4", "s5", "s6"]}
#: clips per device: unequal, so a plain mean of device accuracies would differ from the clip-weighted one
CLIPS = {"a": 40, "b": 20, "c": 20, "s1": 10, "s2": 10, "s3": 10, "s4": 10, "s5": 10, "s6": 20}
LISTED = [{"name": "specaugment", "freq_masks": 1, "freq_mask_width": 13, "time_masks": 1,
           "time_mask_width": 40}, {"name": "crop", "frames": 200}, {"name": "mixup", "alpha": 0.4}]


def _accuracies(seen: float, unseen: float) -> dict[str, float]:
    """Per device: the real devices spread around `seen`, the unseen ones around `unseen`."""
    spread = {"a": 0.1, "b": -0.1, "c": 0.0, "s1": 0.05, "s2": -0.05, "s3": 0.0, "s4": 0.02, "s5": -0.02,
              "s6": 0.0}
    return {d: (unseen if d in GROUPS["unseen"] else seen) + spread[d] for d in CLIPS}


def _run(root, name, norm, seed, seen, unseen, *, transforms=None, variant=None, groups=True):
    """A run folder with report/report.json and, for listed augmentation, the recipe.yaml beside it."""
    run = root / name
    (run / "report").mkdir(parents=True)
    acc = _accuracies(seen, unseen)
    per_device = {d: {"accuracy": acc[d], "log_loss": 1.0, "n": CLIPS[d]} for d in CLIPS}
    total = sum(CLIPS.values())
    overall = sum(acc[d] * CLIPS[d] for d in CLIPS) / total
    report = {
        "synthetic": True, "dataset": {"name": "tiny", "root": "/data/tiny"},
        "run": {"model": "fcnn", "norm": norm, "seed": seed, **({"variant": variant} if variant else {})},
        "overall": {"accuracy": overall, "macro_accuracy": overall, "log_loss": 1.0, "n": total},
        "per_device": per_device,
        "angles": {"intra_train": 20.0, "intra_test": 25.0, "inter": 40.0, "iir_train": 0.5, "iir_test": 0.6},
    }
    if groups:
        report["device_groups"] = {
            g: {"accuracy": sum(acc[d] * CLIPS[d] for d in ds) / sum(CLIPS[d] for d in ds), "log_loss": 1.0,
                "n": sum(CLIPS[d] for d in ds)} for g, ds in GROUPS.items()}
        report["device_group_members"] = GROUPS
    (run / "report" / "report.json").write_text(json.dumps(report))
    augment = {"transforms": transforms, "crop_frames": None if transforms else 200}
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "fcnn", "norm": norm, "seed": seed,
                                                     "augment": augment}))
    return run


def _gap(seen: float, unseen: float) -> float:
    """The gap by hand: clip-weighted accuracy of a, b, c, s1-s3 minus that of s4-s6."""
    acc = _accuracies(seen, unseen)
    seen_devices = GROUPS["real"] + GROUPS["seen_simulated"]
    a = sum(acc[d] * CLIPS[d] for d in seen_devices) / sum(CLIPS[d] for d in seen_devices)
    b = sum(acc[d] * CLIPS[d] for d in GROUPS["unseen"]) / sum(CLIPS[d] for d in GROUPS["unseen"])
    return a - b


def test_holm_against_a_hand_computed_example():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 raised to 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]  # one comparison: the p-value itself
    assert holm([0.5, None, 0.4]) == [pytest.approx(0.8), None, pytest.approx(0.8)]  # None is no test
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # at most 1


def test_the_flat_transforms_are_the_ones_the_flat_keys_write_in_their_order():
    from asc.train.augment import _flat_list

    every = {"crop_pad": 4, "hflip": True, "freq_masks": 1, "time_masks": 1, "crop_frames": 10,
             "mixup_alpha": 0.4}
    assert tuple(t["name"] for t in _flat_list(every)) == FLAT_TRANSFORMS


def test_a_variant_is_the_norm_plus_what_the_list_adds_to_the_flat_keys_start():
    def label(names):
        return variant_of_recipe({"norm": "bn", "augment": {"transforms": [{"name": n} for n in names]}})

    assert variant_of_recipe({"norm": "l2bn", "augment": {"transforms": None}}) == "l2bn"
    assert label(["specaugment", "crop", "mixup", "freq_mixstyle"]) == "bn+freq_mixstyle"
    assert label(["crop", "mixup", "freq_mixstyle"]) == "bn+freq_mixstyle"
    assert label(["specaugment", "crop", "mixup", "crop"]) == "bn+crop"  # out of the flat order
    assert label(["freq_mixstyle", "crop"]) == "bn+freq_mixstyle+crop"
    assert label(["specaugment", "crop", "mixup"]) == "bn"  # what the flat keys would have said
    odd = {"norm": "bn", "augment": {"transforms": [{"name": "a/../b c"}]}}
    assert variant_of_recipe(odd) == "bn+a_.._b_c"  # a plain name, whatever the file says
    teacher = {"teacher": "teachers/x3", "lambda": 0.02, "temperature": 2.0}
    assert variant_of_recipe({"norm": "l2bn", "train": {"distill": teacher}}) == "l2bn+distill"
    mixstyle = {"transforms": [{"name": "freq_mixstyle"}]}
    assert variant_of_recipe({"norm": "bn", "train": {"distill": teacher}, "augment": mixstyle}) == \
        "bn+freq_mixstyle+distill"
    assert variant_of_recipe({"norm": "bn", "train": {"distill": None}}) == "bn"


def test_three_variants_paired_per_seed_with_holm_and_the_unseen_gap(tmp_path, capsys):
    root = tmp_path / "runs"
    accs = {  # (seen, unseen) per seed
        "bn": [(0.60, 0.30), (0.62, 0.33), (0.58, 0.28)],
        "l2bn": [(0.63, 0.36), (0.66, 0.38), (0.60, 0.35)],
        "bn+freq_mixstyle": [(0.61, 0.42), (0.64, 0.43), (0.60, 0.40)],
    }
    runs = []
    for variant, values in accs.items():
        norm, *extra = variant.split("+")
        listed = [*LISTED, {"name": "freq_mixstyle", "p": 0.4, "alpha": 0.3}] if extra else None
        for seed, (seen, unseen) in enumerate(values):
            runs.append(_run(root, f"fcnn_{variant}_seed{seed}", norm, seed, seen, unseen, transforms=listed))
    runs.append(_run(root, "fcnn_bn+freq_mixstyle_seed7", "bn", 7, 0.5, 0.5,  # no bn partner: not paired
                     transforms=[*LISTED, {"name": "freq_mixstyle", "p": 0.4, "alpha": 0.3}]))
    # a report that names its variant itself; the recipe beside it says bn+freq_mixstyle
    runs.append(_run(root, "named", "bn", 0, 0.5, 0.2, variant="bn+tta", transforms=LISTED))

    summary, markdown, out = compare_runs(runs, tmp_path / "cmp", unseen_group="unseen")
    assert [(g["variant"], g["norm"], g["n"]) for g in summary["groups"]] == [
        ("bn", "bn", 3), ("bn+freq_mixstyle", "bn", 4), ("bn+tta", "bn", 1), ("l2bn", "l2bn", 3)]
    assert summary["baseline"] == "bn" and summary["unseen_group"] == "unseen"

    diffs = {d["variant"]: d for d in summary["differences"]}
    assert set(diffs) == {"bn+freq_mixstyle", "bn+tta", "l2bn"}
    assert all(d["baseline"] == "bn" for d in diffs.values())
    fm, l2, tta = diffs["bn+freq_mixstyle"]["paired"], diffs["l2bn"]["paired"], diffs["bn+tta"]["paired"]
    assert fm["n"] == 3 and fm["seeds"] == [0, 1, 2]  # seed 7 has no bn run
    assert tta["n"] == 1 and tta["p_value"] is None and tta["p_holm"] is None

    def overall(variant):
        return [json.loads((root / f"fcnn_{variant}_seed{s}" / "report" / "report.json").read_text())
                ["overall"]["accuracy"] for s in range(3)]

    p_fm = stats.ttest_rel(overall("bn+freq_mixstyle"), overall("bn")).pvalue
    p_l2 = stats.ttest_rel(overall("l2bn"), overall("bn")).pvalue
    assert fm["p_value"] == pytest.approx(p_fm) and l2["p_value"] == pytest.approx(p_l2)
    low, high = sorted([p_fm, p_l2])  # Holm over the two tests (the single pair is none)
    expected = {low: 2 * low, high: max(2 * low, high)}
    assert fm["p_holm"] == pytest.approx(min(1.0, expected[p_fm]))
    assert l2["p_holm"] == pytest.approx(min(1.0, expected[p_l2]))
    assert fm["holm_family"] == l2["holm_family"] == 2

    groups = {g["variant"]: g for g in summary["groups"]}
    gaps = {v: [_gap(*sv) for sv in values] for v, values in accs.items()}
    assert groups["bn"]["unseen_gap"]["mean"] == pytest.approx(np.mean(gaps["bn"]))
    assert groups["bn"]["unseen_gap"]["std"] == pytest.approx(np.std(gaps["bn"], ddof=1))
    paired_gap = np.array(gaps["bn+freq_mixstyle"]) - np.array(gaps["bn"])
    assert fm["unseen_gap"]["diff_mean"] == pytest.approx(paired_gap.mean())
    assert fm["unseen_gap"]["p_value"] == pytest.approx(stats.ttest_1samp(paired_gap, 0).pvalue)

    lines = markdown.splitlines()
    assert "# Variants against bn" in lines
    header = next(line for line in lines if line.startswith("| model | variant | runs | accuracy %"))
    assert header.startswith("| model | variant | runs | accuracy % | gap seen − unseen (points) |")
    row = next(line for line in lines if line.startswith("| fcnn | bn | 3 |"))
    gap = 100 * np.mean(gaps["bn"])
    assert f"| {gap:.2f} ± {100 * np.std(gaps['bn'], ddof=1):.2f} |" in row
    paired = next(line for line in lines if line.startswith("| fcnn | bn+freq_mixstyle − bn | 3 |"))
    assert f"| {fm['p_value']:.3f} | {fm['p_holm']:.3f} |" in paired
    saved = json.loads((out / "compare.json").read_text())
    holm_saved = {d["variant"]: d["paired"]["p_holm"] for d in saved["differences"]}
    assert holm_saved["l2bn"] == pytest.approx(l2["p_holm"])

    # the command line: another baseline, and the table printed
    from asc.cli import main

    assert main(["compare", *map(str, runs[:9]), "--out", str(tmp_path / "c2"), "--baseline", "l2bn"]) == 0
    printed = capsys.readouterr().out
    assert "| fcnn | **bn − l2bn** |" in printed and "| fcnn | **bn+freq_mixstyle − l2bn** |" in printed
    assert "gap seen − unseen (points)" in printed and "p Holm" in printed
    assert main(["compare", *map(str, runs[:9]), "--out", str(tmp_path / "c3"), "--baseline", "gn4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--baseline gn4: no run is that variant" in err and "l2bn" in err


def test_two_variants_holm_is_the_p_value_and_no_group_means_no_gap(tmp_path):
    root = tmp_path / "runs"
    runs = [_run(root, f"{n}-{s}", n, s, seen + (0.02 * s if n == "l2bn" else 0), 0.3, groups=False)
            for n in ("bn", "l2bn") for s, seen in enumerate((0.5, 0.55, 0.6))]
    summary, markdown, _ = compare_runs(runs, tmp_path / "cmp", unseen_group="unseen")
    paired = summary["differences"][0]["paired"]
    assert paired["p_holm"] == paired["p_value"] is not None and paired["holm_family"] == 1
    assert summary["unseen_group"] is None and "unseen_gap" not in summary["groups"][0]
    assert "gap seen" not in markdown and "# BN vs L2BN" in markdown and "| model | norm | runs |" in markdown


def test_the_gap_without_members_weighs_the_groups_by_their_clips():
    report = {"device_groups": {"real": {"accuracy": 0.6, "n": 30},
                                "seen_simulated": {"accuracy": 0.3, "n": 10},
                                "unseen": {"accuracy": 0.2, "n": 30}}, "per_device": {}}
    assert unseen_gap(report, "unseen") == pytest.approx((0.6 * 30 + 0.3 * 10) / 40 - 0.2)
    assert unseen_gap(report, None) is None and unseen_gap(report, "elsewhere") is None


def test_a_broken_recipe_beside_the_report_is_one_line(tmp_path):
    run = _run(tmp_path, "r", "bn", 0, 0.5, 0.3)
    (run / "recipe.yaml").write_text("norm: [bn\n")
    with pytest.raises(AscError, match=r"recipe.yaml:\d+: ") as info:
        compare_runs([run], tmp_path / "cmp")
    assert "\n" not in str(info.value)
