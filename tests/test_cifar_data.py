"""CIFAR-100 reader, restricted unpickler, synthetic writer, Dataset and batched augmentation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from asc.data.cifar import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CifarDataset,
    is_synthetic,
    load_cifar100,
    load_pickle,
    normalize_images,
    random_crop_flip,
    write_synthetic_cifar100,
)
from asc.errors import DataError


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 `str` opcodes, as the real CIFAR files (cPickle, protocol 2) do."""

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # files from the numpy 1.x era name the array module numpy.core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_py2_cifar(root, n=6, seed=0):
    """A CIFAR-100 folder written the way the real one is: Python-2 pickles, bytes keys."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    fine = [int(v) for v in rng.integers(0, 100, n)]
    for split in ("train", "test"):
        (folder / split).write_bytes(py2_pickle({
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": b"training batch 1 of 1", b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine], b"data": data}))
    (folder / "meta").write_bytes(py2_pickle({
        b"fine_label_names": [f"name{k}".encode() for k in range(100)],
        b"coarse_label_names": [f"super{k}".encode() for k in range(20)]}))
    return folder, data, fine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), preset="tiny", seed=3)


# ------------------------------------------------------------------ reader

def test_reads_python2_pickles_with_bytes_keys(tmp_path):
    folder, data, fine = make_py2_cifar(tmp_path)
    assert b"cnumpy.core.multiarray\n_reconstruct" in (folder / "train").read_bytes()
    for root in (tmp_path, folder):  # the folder itself or its parent
        ds = load_cifar100(root)
        assert ds.train.images.shape == (6, 32, 32, 3) and ds.train.images.dtype == np.uint8
        assert ds.train.labels.dtype == np.int64 and ds.train.labels.tolist() == fine
        assert ds.classes[:2] == ["name0", "name1"] and len(ds.classes) == 100
        assert ds.coarse_classes[0] == "super0" and ds.train.filenames[1] == "img_1.png"
        assert not ds.synthetic
    # a row is 1024 red, 1024 green then 1024 blue values, each 32x32 row-major
    img = ds.test.images[2]
    assert np.array_equal(img[:, :, 0], data[2, :1024].reshape(32, 32))
    assert np.array_equal(img[:, :, 2], data[2, 2048:].reshape(32, 32))
    assert img[5, 7, 1] == data[2, 1024 + 5 * 32 + 7]


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "numpy scalar"])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    target = tmp_path / "pwned"
    path = tmp_path / "train"
    if payload == "os.system":
        blob = pickle.dumps({b"data": _Evil(target)}, protocol=2)
    elif payload == "builtins.eval":
        blob = b"cbuiltins\neval\n(V__import__('os').system('touch " + str(target).encode() + b"')\ntR."
    else:
        blob = pickle.dumps(np.float32(1.0), protocol=2)
    path.write_bytes(blob)
    with pytest.raises(DataError) as err:
        load_pickle(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not target.exists()


def test_restricted_unpickler_refuses_poisoned_dataset(tmp_path):
    folder, _, _ = make_py2_cifar(tmp_path)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": _Evil(tmp_path / "x")}, protocol=2))
    with pytest.raises(DataError, match="meta"):
        load_cifar100(tmp_path)
    assert not (tmp_path / "x").exists()


def test_not_cifar100_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_cifar100(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing train, test, meta"):
        load_cifar100(tmp_path / "empty")
    c10 = tmp_path / "c10" / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    for f in ("data_batch_1", "test_batch", "batches.meta"):
        (c10 / f).write_bytes(b"")
    for root in (c10.parent, c10):
        with pytest.raises(DataError, match="CIFAR-10"):
            load_cifar100(root)


def test_cifar10_files_under_cifar100_names_are_recognised(tmp_path):
    folder, data, _ = make_py2_cifar(tmp_path)
    (folder / "train").write_bytes(py2_pickle({b"labels": [1] * 6, b"data": data}))
    with pytest.raises(DataError, match="CIFAR-10"):
        load_cifar100(folder)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.update({b"data": d[b"data"][:, :1024]}), "shape"),
    (lambda d: d.update({b"data": d[b"data"].astype(np.float32)}), "uint8"),
    (lambda d: d.update({b"fine_labels": d[b"fine_labels"][:-1]}), "entries"),
    (lambda d: d.update({b"fine_labels": [100] * len(d[b"fine_labels"])}), "outside"),
    (lambda d: d.pop(b"data"), "no 'data'"),
])
def test_malformed_split_is_reported_with_file(tmp_path, breakage, message):
    folder, data, fine = make_py2_cifar(tmp_path)
    d = {b"fine_labels": list(fine), b"coarse_labels": [v // 5 for v in fine], b"data": data}
    breakage(d)
    (folder / "test").write_bytes(py2_pickle(d))
    with pytest.raises(DataError, match=message) as err:
        load_cifar100(tmp_path)
    assert str(folder / "test") in str(err.value)


def test_truncated_file_is_a_data_error(tmp_path):
    folder, _, _ = make_py2_cifar(tmp_path)
    blob = (folder / "train").read_bytes()
    (folder / "train").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="train"):
        load_cifar100(tmp_path)


# ------------------------------------------------------------------ synthetic set

def test_synthetic_set_has_the_real_format(tiny):
    assert tiny.name == "cifar-100-python" and is_synthetic(tiny)
    raw = load_pickle(tiny / "train")
    assert set(raw) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (400, 3072)
    assert set(load_pickle(tiny / "meta")) == {b"fine_label_names", b"coarse_label_names"}
    ds = load_cifar100(tiny.parent)
    assert ds.synthetic and len(ds.train) == 400 and len(ds.test) == 200
    assert np.bincount(ds.train.labels, minlength=100).tolist() == [4] * 100
    assert np.bincount(ds.test.labels, minlength=100).tolist() == [2] * 100
    assert ds.train.coarse_labels.max() == 19 and len(ds.classes) == 100


def test_synthetic_is_deterministic_and_seeded(tmp_path):
    a = write_synthetic_cifar100(tmp_path / "a", seed=1)
    b = write_synthetic_cifar100(tmp_path / "b", seed=1)
    c = write_synthetic_cifar100(tmp_path / "c", seed=2)
    assert (a / "train").read_bytes() == (b / "train").read_bytes()
    assert (a / "train").read_bytes() != (c / "train").read_bytes()
    write_synthetic_cifar100(tmp_path / "a", seed=2)  # rewriting a synthetic set is allowed
    assert (a / "train").read_bytes() == (c / "train").read_bytes()


def test_synthetic_never_overwrites_a_real_dataset(tmp_path):
    folder, _, _ = make_py2_cifar(tmp_path)
    before = {f: (folder / f).read_bytes() for f in ("train", "test", "meta")}
    with pytest.raises(DataError, match="not synthetic"):
        write_synthetic_cifar100(tmp_path)
    assert before == {f: (folder / f).read_bytes() for f in ("train", "test", "meta")}
    with pytest.raises(DataError, match="preset"):
        write_synthetic_cifar100(tmp_path / "new", preset="huge")


def test_synthetic_small_is_learnable_but_not_trivial(tmp_path):
    ds = load_cifar100(write_synthetic_cifar100(tmp_path, preset="small"))
    assert len(ds.train) == 5000 and len(ds.test) == 1000

    def pooled(x):  # 8x8 average-pooled colour images as features
        return (x.astype(np.float64) / 255).reshape(len(x), 8, 4, 8, 4, 3).mean((2, 4)).reshape(len(x), -1)

    xtr, xte = pooled(ds.train.images), pooled(ds.test.images)
    mu = xtr.mean(0)
    xtr, xte = xtr - mu, xte - mu
    w = np.linalg.solve(xtr.T @ xtr + 10 * np.eye(xtr.shape[1]), xtr.T @ np.eye(100)[ds.train.labels])
    acc = float((np.argmax(xte @ w, 1) == ds.test.labels).mean())
    assert 0.08 < acc < 0.8  # a linear model on pixels: far above chance (1 %), far from solved


# ------------------------------------------------------------------ torch side

def test_dataset_items_are_normalized_images(tiny):
    ds = CifarDataset(tiny, "test", train_augment=False)
    raw = load_cifar100(tiny).test
    assert len(ds) == 200 and ds.labels.dtype == np.int64 and len(ds.classes) == 100 and ds.synthetic
    x, y = ds[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert y == raw.labels[5]
    expected = (raw.images[5].astype(np.float64) / 255 - np.array(CIFAR100_MEAN)) / np.array(CIFAR100_STD)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def _is_crop_flip(out: torch.Tensor, img: torch.Tensor, pad: int = 4) -> bool:
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = padded[:, oy:oy + 32, ox:ox + 32]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(-1)):
                return True
    return False


def test_dataset_augmentation_is_a_padded_crop_and_flip(tiny):
    torch.manual_seed(0)
    ds = CifarDataset(tiny, "train", train_augment=True)
    plain = CifarDataset(tiny, "train", train_augment=False)
    mean = torch.tensor(CIFAR100_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(3, 1, 1)
    outs = []
    for _ in range(12):
        x, y = ds[3]
        assert x.shape == (3, 32, 32) and y == plain[3][1]
        back = torch.round((x * std + mean) * 255).to(torch.uint8)  # padding comes back as black
        assert _is_crop_flip(back, ds.images[3])
        outs.append(x)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # it is random


def test_batched_crop_flip_matches_definition():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, generator=g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(16):
        assert _is_crop_flip(out[i], images[i])
    assert not torch.equal(out, images)
    flipped = sum(not torch.equal(out[i], images[i]) for i in range(16))
    assert flipped > 8
    again = random_crop_flip(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_normalize_images_matches_dataset(tiny):
    ds = CifarDataset(tiny, "test")
    batch = normalize_images(ds.images[:4])
    assert torch.allclose(batch, torch.stack([ds[i][0] for i in range(4)]), atol=1e-6)


def test_dataset_bad_split(tiny):
    with pytest.raises(ValueError, match="split"):
        CifarDataset(tiny, "validation")
