"""Knowledge distillation: the loss against a float64 hand computation, teacher targets through mixup,
the teacher-logit file (round trip and refusals), and a tiny teacher -> student run end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from asc.cli import main
from asc.errors import AscError, ConfigError, DataError
from asc.runs import load_checkpoint
from asc.tasks import TaskData
from asc.train import distill
from asc.train.data import prepare_batch, prepare_batch_teacher
from asc.train.recipe import load_recipe

from .tiny_tau import FEATURES, make_feature_cache

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- the loss


def _softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_loss_matches_a_float64_hand_computation():
    student = np.array([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]])
    teacher = np.array([[3.0, 0.0, -1.0], [-0.5, 1.5, 0.2]])
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.7, 0.3]])  # the second one mixed
    lam, t = 0.3, 2.0
    ce = -(targets * np.log(_softmax64(student))).sum(1).mean()
    p, q = _softmax64(teacher / t), _softmax64(student / t)
    kl = (p * (np.log(p) - np.log(q))).sum(1).mean()
    expected = lam * ce + (1 - lam) * t * t * kl

    soft = distill.soften(teacher, t)
    assert torch.allclose(soft.double(), torch.from_numpy(p), atol=1e-7)
    args = (torch.tensor(student, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32), soft)
    got = distill.distill_loss(*args, weight=lam, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # T^2 scales the soft term alone; lambda = 1 is the label loss, bit for bit
    soft_only = distill.distill_loss(*args, weight=0.0, temperature=t)
    assert float(soft_only) == pytest.approx(t * t * kl, rel=1e-6)
    from asc.train.engine import soft_cross_entropy

    assert torch.equal(distill.distill_loss(*args, weight=1.0, temperature=t), soft_cross_entropy(*args[:2]))
    # a one-hot teacher (0 log 0) gives a finite loss
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.isfinite(distill.distill_loss(args[0], args[1], onehot, weight=0.5, temperature=t))


def test_mixup_mixes_teacher_distributions_with_the_labels_lambda_and_crop_keeps_them():
    gb, k = 8, 10
    task = TaskData(train=list(range(40)), eval=None, num_classes=k, in_channels=3, class_names=[],
                    kind="spectrogram")
    aug = {"transforms": [{"name": "crop", "frames": 30}, {"name": "mixup", "alpha": 0.4}]}
    recipe = {"seed": 1, "train": {"batch_size": gb, "label_smoothing": 0.0}, "augment": aug}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * gb, 3, 20, 50, generator=g)
    y = torch.arange(2 * gb) % k  # partner i + 8 has another label than row i
    p = distill.soften(torch.randn(2 * gb, k, generator=g), 2.0)
    args = dict(task=task, recipe=recipe, epoch=0, step=3, rank=0, world=1)
    xo, targets, teacher = prepare_batch_teacher(x, y, p, **args)
    lam = targets[torch.arange(gb), y[:gb]]  # one-hot labels, distinct partners: the λ of each row
    assert torch.allclose(teacher, lam[:, None] * p[:gb] + (1 - lam[:, None]) * p[gb:], atol=1e-6)
    assert torch.allclose(teacher.sum(1), torch.ones(gb), atol=1e-6)
    # the inputs and labels are those of the run without a teacher: no extra draws
    x2, t2 = prepare_batch(x, y, **args)
    assert torch.equal(xo, x2) and torch.equal(targets, t2)
    # two processes, each with its rows (and its partners') of the global batch: the same teacher targets
    halves = [prepare_batch_teacher(x[rows], y[rows], p[rows], **{**args, "rank": r, "world": 2})
              for r, rows in enumerate((torch.tensor([0, 1, 2, 3, 8, 9, 10, 11]),
                                        torch.tensor([4, 5, 6, 7, 12, 13, 14, 15])))]
    assert torch.allclose(torch.cat([h[2] for h in halves]), teacher, atol=1e-7)
    assert torch.equal(torch.cat([h[1] for h in halves]), targets)
    # a crop alone leaves the teacher rows as they were (the teacher saw the whole clip)
    recipe["augment"] = {"transforms": [{"name": "crop", "frames": 30}]}
    _, _, kept = prepare_batch_teacher(x[:gb], y[:gb], p[:gb], **args)
    assert torch.equal(kept, p[:gb])


def test_distill_section_is_checked_and_resolved(tmp_path):
    recipe = {"name": "r", "features": str(tmp_path / "f.yaml"), "model": str(ROOT / "models/fcnn.yaml"),
              "train": {"epochs": 1, "distill": {"teacher": "teachers/t", "lambda": 1.5}}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(FEATURES))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"train\.distill\.lambda.*<= 1"):
        load_recipe(path)
    resolved = load_recipe(path, overrides=["train.distill.lambda=0.5"])
    assert resolved["train"]["distill"] == {"teacher": str(tmp_path / "teachers/t"), "lambda": 0.5,
                                            "temperature": 2.0}
    assert load_recipe(path, overrides=["train.distill=null"])["train"]["distill"] is None


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    paths = make_feature_cache(base)
    recipe = {
        "name": "tiny", "task": "dcase", "features": str(paths["features"]),
        "model": str(ROOT / "models/fcnn.yaml"), "model_params": {"width_mult": 0.06, "dropout": 0.0},
        "norm": "l2bn", "seed": 4,
        "data": {"cache": str(paths["cache"]), "num_workers": 0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "eval_batch_size": 32, "max_steps_per_epoch": 2,
                  "val_clips": 10},
        "augment": {"transforms": [{"name": "crop", "frames": 48}, {"name": "mixup", "alpha": 0.4}]},
    }
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    from asc.train.engine import train

    runs = []
    for seed in (0, 1):
        runs.append(base / f"teacher{seed}")
        train(load_recipe(path, seed=seed), runs[-1], device="cpu")
    return {**paths, "recipe": path, "base": base, "teachers": runs}


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_teacher_file_round_trip(tiny, capsys):
    out = tiny["base"] / "teach"
    assert main(["teacher", *map(str, tiny["teachers"]), "--out", str(out), "--device", "cpu"]) == 0
    assert "mean logits of 2 runs" in capsys.readouterr().out
    logits, meta = distill.read_teacher(out)
    from asc.features.cache import read_manifest
    from asc.features.dataset import FeatureDataset

    ds = FeatureDataset(tiny["cache_dir"], "train")
    assert logits.dtype == np.float32 and logits.shape == (len(ds), 10) == tuple(meta["shape"])
    assert meta["ids"] == ds.ids and meta["classes"] == ds.scenes and meta["split"] == "train"
    assert meta["config_hash"] == read_manifest(tiny["cache_dir"])["config_hash"]
    assert meta["train_accuracy"] == pytest.approx(float((logits.argmax(1) == ds.labels).mean()))
    assert [r["run"] for r in meta["runs"]] == [str(r.resolve()) for r in tiny["teachers"]]
    # the mean of the runs' logits from the one inference function, whole clips, eval mode
    from asc.eval.inference import infer
    from asc.runs import load_run
    from asc.train.data import eval_loader

    each = [infer(load_run(r).model, eval_loader(ds, 32, 0), device="cpu")[0] for r in tiny["teachers"]]
    np.testing.assert_allclose(logits, ((each[0].double() + each[1].double()) / 2).numpy(), atol=1e-6)
    # rows come back in the cache's order whatever the file's order
    meta_path = out / distill.META_FILE
    shuffled = tiny["base"] / "teach_shuffled"
    order = np.random.default_rng(0).permutation(len(ds))
    shutil.copytree(out, shuffled)
    _rewrite(shuffled, logits[order], {**meta, "ids": [meta["ids"][i] for i in order]})
    np.testing.assert_array_equal(distill.teacher_for(shuffled, ds), logits)
    assert json.loads(meta_path.read_text())["sha256"] == meta["sha256"]


def _rewrite(folder: Path, logits: np.ndarray, meta: dict) -> None:
    """A teacher folder with these logits and sidecar, its checksum made to fit."""
    import io

    buf = io.BytesIO()
    np.save(buf, logits.astype(np.float32))
    (folder / distill.LOGITS_FILE).write_bytes(buf.getvalue())
    import hashlib

    (folder / distill.META_FILE).write_text(json.dumps({**meta, "sha256": hashlib.sha256(buf.getvalue())
                                                        .hexdigest()}))


def test_mismatched_teacher_files_are_refused_in_one_line(tiny, capsys):
    from asc.features.dataset import FeatureDataset

    out = tiny["base"] / "teach_bad"
    assert main(["teacher", str(tiny["teachers"][0]), "--out", str(out), "--device", "cpu"]) == 0
    logits, meta = distill.read_teacher(out)
    ds = FeatureDataset(tiny["cache_dir"], "train")
    cases = {
        "missing": (logits[1:], {**meta, "ids": meta["ids"][1:]}, r"29 clips do not match the 30 .*1 miss"),
        "classes": (logits, {**meta, "classes": meta["classes"][::-1]}, r"classes .* are not the cache's"),
        "hash": (logits, {**meta, "config_hash": "0123456789ab"}, r"config hash 0123456789ab"),
        "shape": (logits[:, :5], meta, r"do not fit its 30 ids and 10 classes"),
    }
    for name, (values, sidecar, pattern) in cases.items():
        folder = tiny["base"] / f"bad_{name}"
        shutil.copytree(out, folder)
        _rewrite(folder, values, sidecar)
        with pytest.raises(DataError, match=pattern) as err:
            distill.teacher_for(folder, ds)
        assert str(folder / distill.META_FILE) in str(err.value) and "\n" not in str(err.value)
    # a .npy that is not the one the sidecar vouches for; a folder with no teacher logits
    (out / distill.LOGITS_FILE).write_bytes((out / distill.LOGITS_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="checksum"):
        distill.read_teacher(out)
    with pytest.raises(DataError, match="no teacher logits"):
        distill.read_teacher(tiny["base"])
    # runs of different feature caches do not make one ensemble
    other = tiny["base"] / "teacher_other_cache"
    shutil.copytree(tiny["teachers"][0], other)
    shutil.copytree(tiny["cache_dir"], tiny["base"] / "cache_copy")
    saved = yaml.safe_load((other / "recipe.yaml").read_text())
    saved["data"]["cache_dir"] = str(tiny["base"] / "cache_copy")
    (other / "recipe.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert main(["teacher", str(tiny["teachers"][0]), str(other), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "feature cache" in err and str(other) in err and len(err.strip().splitlines()) == 1
    with pytest.raises(AscError, match="must share"):
        distill.write_teacher([tiny["teachers"][0], other], out, device="cpu")


def test_student_distills_and_lambda_one_is_plain_training(tiny):
    from asc.train.engine import train

    teach = tiny["base"] / "teach_student"
    assert main(["teacher", *map(str, tiny["teachers"]), "--out", str(teach), "--device", "cpu"]) == 0
    runs = {}
    for name, sets in (("kd", [f"train.distill.teacher={teach}"]),
                       ("kd_lambda1", [f"train.distill={{teacher: {teach}, lambda: 1.0}}"]),
                       ("plain", [])):
        runs[name] = tiny["base"] / f"student_{name}"
        train(load_recipe(tiny["recipe"], overrides=sets), runs[name], device="cpu")
    saved = yaml.safe_load((runs["kd"] / "recipe.yaml").read_text())
    assert saved["train"]["distill"] == {"teacher": str(teach), "lambda": 0.02, "temperature": 2.0}
    assert yaml.safe_load((runs["plain"] / "recipe.yaml").read_text())["train"]["distill"] is None
    rows = [json.loads(line) for line in (runs["kd"] / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    kd, one, plain = (_weights(runs[n]) for n in ("kd", "kd_lambda1", "plain"))
    assert all(torch.equal(one[k], plain[k]) for k in plain)  # lambda = 1: exactly the label loss
    assert not all(torch.equal(kd[k], plain[k]) for k in plain)
