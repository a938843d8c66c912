"""CIFAR-100 ("python version"): a safe reader, a synthetic set in the same format, a torch Dataset.

The reader takes the `cifar-100-python` folder (files `train`, `test`, `meta`) or its parent. Those
files are pickles written by Python 2, so they are read with ``encoding="bytes"`` (keys such as
``b"data"``, ``b"fine_labels"``) and only through `_RestrictedUnpickler`, which admits plain
containers and numpy arrays and refuses anything else: nothing in a dataset file is executed.

Images are returned as uint8 arrays of shape (N, 32, 32, 3), height-width-channel (RGB), the layout
of image files and of torchvision; `CifarDataset` turns them into normalized (3, 32, 32) tensors.
Labels are the 100 fine labels as int64.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from asc.errors import DataError
from asc.fileio import atomic_write_bytes, atomic_write_text

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
NUM_CLASSES = 100
NUM_COARSE = 20
IMAGE_SHAPE = (32, 32, 3)
ROW_SIZE = 32 * 32 * 3

#: per-channel mean and std of the CIFAR-100 training images (RGB, pixel values in [0, 1])
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: written beside the pickles by `write_synthetic_cifar100`, so reports can say the data is synthetic
SYNTHETIC_MARKER = "SYNTHETIC.json"

_HINT = ("give the 'cifar-100-python' folder (or its parent) extracted from cifar-100-python.tar.gz "
         "of https://www.cs.toronto.edu/~kriz/cifar.html, or build a synthetic one with "
         "`asc data synth-cifar --out DIR`")


# --------------------------------------------------------------------------- safe unpickling

def _numpy_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.empty(0).__reduce__()[0]  # numpy's own array rebuild function, whatever its module
    allowed: dict[tuple[str, str], object] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Plain containers come from pickle opcodes; the only globals admitted rebuild numpy arrays."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_pickle(path: str | Path):
    """Unpickle a CIFAR file safely (Python-2 strings become bytes); DataError names the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a safe CIFAR pickle ({e}); only plain containers and numpy arrays "
                        "are accepted") from None
    except Exception as e:  # truncated or garbage files raise a zoo of errors
        raise DataError(f"{path}: unreadable pickle ({type(e).__name__}: {e}); {_HINT}") from None


# --------------------------------------------------------------------------- reader

@dataclass
class CifarSplit:
    """One split: images (N, 32, 32, 3) uint8 RGB, fine labels and coarse labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray
    coarse_labels: np.ndarray
    filenames: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Cifar100:
    root: Path
    train: CifarSplit
    test: CifarSplit
    classes: list[str]
    coarse_classes: list[str]
    synthetic: bool = False


def resolve_root(root: str | Path) -> Path:
    """The `cifar-100-python` folder given itself or its parent; DataError if it is not CIFAR-100."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder; {_HINT}")
    if root.is_file():
        raise DataError(f"{root}: is a file, not a folder; {_HINT}")
    for cand in (root / FOLDER, root):
        if all((cand / f).is_file() for f in FILES):
            return cand
    if (root / "cifar-10-batches-py").is_dir() or (root / "batches.meta").is_file():
        raise DataError(f"{root}: this is CIFAR-10 (cifar-10-batches-py), not CIFAR-100; {_HINT}")
    base = root / FOLDER if (root / FOLDER).is_dir() else root
    missing = [f for f in FILES if not (base / f).is_file()]
    raise DataError(f"{base}: not a CIFAR-100 folder, missing {', '.join(missing)}; {_HINT}")


def _field(d: dict, key: str, path: Path):
    if key.encode() in d:
        return d[key.encode()]
    if key in d:  # a file written by Python 3 with str keys
        return d[key]
    raise DataError(f"{path}: no '{key}' entry (has {sorted(_text(k) for k in d)}); {_HINT}")


def _text(x) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _labels(values, n: int, high: int, key: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: '{key}' is not a list of integers") from None
    if len(arr) != n:
        raise DataError(f"{path}: '{key}' has {len(arr)} entries for {n} images")
    if n and (arr.min() < 0 or arr.max() >= high):
        raise DataError(f"{path}: '{key}' outside 0..{high - 1} (found {arr.min()}..{arr.max()})")
    return arr


def _read_split(path: Path) -> CifarSplit:
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, found {type(d).__name__}; {_HINT}")
    if b"labels" in d and b"fine_labels" not in d:
        raise DataError(f"{path}: has 'labels' but no 'fine_labels': this looks like CIFAR-10; {_HINT}")
    data = _field(d, "data", path)
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    if not ok or data.shape[1] != ROW_SIZE:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, {ROW_SIZE}), found {desc}")
    n = data.shape[0]
    fine = _labels(_field(d, "fine_labels", path), n, NUM_CLASSES, "fine_labels", path)
    coarse_raw = d.get(b"coarse_labels", d.get("coarse_labels"))
    coarse = (np.full(n, -1, np.int64) if coarse_raw is None
              else _labels(coarse_raw, n, NUM_COARSE, "coarse_labels", path))
    names = [_text(f) for f in d.get(b"filenames", d.get("filenames", []))]
    # rows are 1024 red, 1024 green, 1024 blue values, each plane row-major
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return CifarSplit(images=images, labels=fine, coarse_labels=coarse, filenames=names)


def _read_meta(path: Path) -> tuple[list[str], list[str]]:
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, found {type(d).__name__}; {_HINT}")
    if b"label_names" in d and b"fine_label_names" not in d:
        raise DataError(f"{path}: has 'label_names' only: this looks like CIFAR-10 metadata; {_HINT}")
    fine = [_text(x) for x in _field(d, "fine_label_names", path)]
    coarse = [_text(x) for x in d.get(b"coarse_label_names", d.get("coarse_label_names", []))]
    if len(fine) != NUM_CLASSES:
        raise DataError(f"{path}: {len(fine)} fine label names, CIFAR-100 has {NUM_CLASSES}")
    return fine, coarse


def load_cifar100_split(root: str | Path, split: str) -> CifarSplit:
    """Read one split ('train' or 'test') of the dataset at `root`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _read_split(resolve_root(root) / split)


def load_cifar100(root: str | Path) -> Cifar100:
    """Read and validate the whole dataset: both splits and the class names."""
    folder = resolve_root(root)
    classes, coarse = _read_meta(folder / "meta")
    return Cifar100(root=folder, train=_read_split(folder / "train"), test=_read_split(folder / "test"),
                    classes=classes, coarse_classes=coarse, synthetic=(folder / SYNTHETIC_MARKER).is_file())


def read_class_names(root: str | Path) -> list[str]:
    return _read_meta(resolve_root(root) / "meta")[0]


def is_synthetic(root: str | Path) -> bool:
    return (resolve_root(root) / SYNTHETIC_MARKER).is_file()


# --------------------------------------------------------------------------- synthetic set

#: images per class (train, test)
SYNTH_PRESETS = {"tiny": (4, 2), "small": (50, 10)}

_N_HUES = 10
_N_PATTERNS = NUM_CLASSES // _N_HUES


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV -> RGB, all inputs in [0, 1]; returns (..., 3)."""
    k = (np.stack([5.0, 3.0, 1.0], -1) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _pattern_masks(pattern: int, yy: np.ndarray, xx: np.ndarray, size: np.ndarray, phase: np.ndarray):
    """Soft masks in [0, 1] of one shape/texture family; yy, xx centred per image, (n, 32, 32)."""
    s = size[:, None, None]
    ph = phase[:, None, None]
    r = np.sqrt(yy**2 + xx**2)
    soft = lambda d: np.clip(0.5 - d, 0.0, 1.0)  # noqa: E731 - signed distance -> 1-pixel soft edge
    if pattern == 0:  # disk
        return soft(r - s)
    if pattern == 1:  # square
        return soft(np.maximum(abs(yy), abs(xx)) - 0.8 * s)
    if pattern == 2:  # ring
        return soft(abs(r - s) - 1.5)
    if pattern == 3:  # horizontal stripes inside a box
        return soft(np.maximum(abs(yy), abs(xx)) - 1.2 * s) * (np.sin(yy * 1.2 + ph) > 0)
    if pattern == 4:  # vertical stripes inside a box
        return soft(np.maximum(abs(yy), abs(xx)) - 1.2 * s) * (np.sin(xx * 1.2 + ph) > 0)
    if pattern == 5:  # diagonal stripes over the whole image
        return (np.sin((xx + yy) * 0.9 + ph) > 0.2).astype(np.float64)
    if pattern == 6:  # checkerboard inside a disk
        return soft(r - 1.3 * s) * ((np.sin(xx * 0.8 + ph) * np.sin(yy * 0.8 + ph)) > 0)
    if pattern == 7:  # cross
        return soft(np.minimum(abs(yy), abs(xx)) - 0.35 * s) * soft(np.maximum(abs(yy), abs(xx)) - 1.3 * s)
    if pattern == 8:  # upward triangle
        return soft(np.maximum(yy - 0.8 * s, np.maximum(-yy - s + 2 * abs(xx), -s)))
    # two blobs side by side
    return np.maximum(soft(np.sqrt(yy**2 + (xx - 0.8 * s) ** 2) - 0.55 * s),
                      soft(np.sqrt(yy**2 + (xx + 0.8 * s) ** 2) - 0.55 * s))


def _synth_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class = (hue, pattern): a coloured shape/texture on a grey-ish background, shifted and noisy.

    Neither the hue alone nor the pattern alone tells the class; jittered colour, contrast, size,
    position, brightness, background, a distractor blob and pixel noise keep it from being trivial.
    """
    n = len(labels)
    hue_id, pattern_id = labels % _N_HUES, labels // _N_HUES
    g = np.arange(32, dtype=np.float64) - 15.5
    cy = rng.uniform(-5, 5, n)[:, None, None]
    cx = rng.uniform(-5, 5, n)[:, None, None]
    yy = np.broadcast_to(g[None, :, None], (n, 32, 32)) - cy
    xx = np.broadcast_to(g[None, None, :], (n, 32, 32)) - cx
    size = rng.uniform(6.0, 10.0, n)
    phase = rng.uniform(0, 2 * math.pi, n)
    mask = np.empty((n, 32, 32))
    for p in range(_N_PATTERNS):
        sel = pattern_id == p
        if sel.any():
            mask[sel] = _pattern_masks(p, yy[sel], xx[sel], size[sel], phase[sel])
    fg = _hsv_to_rgb((hue_id / _N_HUES + rng.normal(0, 0.02, n)) % 1.0,
                     rng.uniform(0.55, 1.0, n), rng.uniform(0.6, 1.0, n))
    bg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.0, 0.3, n), rng.uniform(0.15, 0.6, n))
    mask = mask * rng.uniform(0.45, 1.0, n)[:, None, None]  # contrast of the shape
    img = bg[:, None, None, :] + (fg - bg)[:, None, None, :] * mask[..., None]
    # a distractor blob of a random colour in half of the images
    dy, dx = rng.uniform(-14, 14, (2, n, 1, 1))
    blob = (np.sqrt((yy + cy - dy) ** 2 + (xx + cx - dx) ** 2) < rng.uniform(2, 4, n)[:, None, None])
    blob &= (rng.uniform(0, 1, n) < 0.5)[:, None, None]
    other = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.3, 1.0, n), rng.uniform(0.3, 1.0, n))
    img = np.where(blob[..., None], other[:, None, None, :], img)
    img = img + rng.normal(0, 0.08, (n, 32, 32, 3)) + rng.normal(0, 0.05, (n, 1, 1, 1))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _split_pickle(labels: np.ndarray, images: np.ndarray, split: str) -> bytes:
    rows = images.transpose(0, 3, 1, 2).reshape(len(labels), ROW_SIZE)  # back to R, G, B planes
    d = {
        b"filenames": [f"synthetic_{split}_{i:06d}_c{lab:02d}.png".encode() for i, lab in enumerate(labels)],
        b"batch_label": f"synthetic {split} batch 1 of 1".encode(),
        b"fine_labels": [int(v) for v in labels],
        b"coarse_labels": [int(v) // (NUM_CLASSES // NUM_COARSE) for v in labels],
        b"data": np.ascontiguousarray(rows, dtype=np.uint8),
    }
    # protocol 4: arrays pickle through numpy's _reconstruct, as in the real files (5 would not)
    return pickle.dumps(d, protocol=4)


def write_synthetic_cifar100(out: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a synthetic CIFAR-100 in the real on-disk format to `out`/cifar-100-python; returns that folder.

    Presets (images per class, train/test): tiny 4/2 (tests), small 50/10 (a quick recipe run).
    Refuses to write over a folder that holds a CIFAR-100 not written by this function.
    """
    if preset not in SYNTH_PRESETS:
        raise DataError(f"unknown synthetic preset {preset!r}; choose one of {', '.join(SYNTH_PRESETS)}")
    folder = Path(out).expanduser() / FOLDER
    existing = [f for f in FILES if (folder / f).exists()]
    if existing and not (folder / SYNTHETIC_MARKER).is_file():
        raise DataError(f"{folder}: already holds {', '.join(existing)} of a dataset that is not synthetic; "
                        "choose another --out (nothing was written)")
    n_train, n_test = SYNTH_PRESETS[preset]
    rng = np.random.default_rng(seed)
    blobs = {}
    for split, per_class in (("train", n_train), ("test", n_test)):
        labels = np.tile(np.arange(NUM_CLASSES), per_class)
        labels = labels[rng.permutation(len(labels))]
        blobs[split] = _split_pickle(labels, _synth_images(labels, rng), split)
    blobs["meta"] = pickle.dumps({
        b"fine_label_names": [f"class_{k:02d}".encode() for k in range(NUM_CLASSES)],
        b"coarse_label_names": [f"group_{k:02d}".encode() for k in range(NUM_COARSE)],
    }, protocol=4)
    folder.mkdir(parents=True, exist_ok=True)
    # the marker goes first: an interrupted run leaves a folder that a rerun may overwrite
    atomic_write_text(folder / SYNTHETIC_MARKER, json.dumps(
        {"preset": preset, "seed": seed, "train": n_train * NUM_CLASSES, "test": n_test * NUM_CLASSES,
         "note": "synthetic images: class = hue x shape/texture; not real CIFAR-100"}, indent=2) + "\n")
    for name in ("meta", "test", "train"):
        atomic_write_bytes(folder / name, blobs[name])
    return folder


# --------------------------------------------------------------------------- torch side

def normalize_images(images, mean=CIFAR100_MEAN, std=CIFAR100_STD):
    """uint8 (..., 3, H, W) tensor -> float32 normalized per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.float().div_(255.0) - m) / s


def random_crop_flip(images, pad: int = 4, generator=None):
    """Batched augmentation on any device: zero-pad by `pad`, random crop back, random horizontal flip.

    `images` (B, C, H, W) of any dtype (apply it before normalization, so the padding is black, as in
    the usual per-image transform). One gather, no Python loop over the batch.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    flip = torch.rand((b, 1, 1), device=dev, generator=generator) < 0.5
    rows = (torch.arange(h, device=dev).view(1, h, 1) + oy).expand(b, h, w)
    cols = torch.arange(w, device=dev).view(1, 1, w).expand(b, h, w)
    cols = torch.where(flip, w - 1 - cols, cols) + ox
    flat = (rows * (w + 2 * pad) + cols).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, flat).view(b, c, h, w)


class CifarDataset(Dataset):
    """CIFAR-100 split as a torch Dataset: item = (FloatTensor (3, 32, 32) normalized, int fine label).

    `train_augment` adds the standard augmentation: a 4-pixel zero-padded random crop and a random
    horizontal flip (drawn from torch's RNG, so DataLoader workers get distinct streams).
    Attributes: `labels` (np.int64 (N,)), `classes` (list[str]), `synthetic` (bool), `root`.
    """

    def __init__(self, root: str | Path, split: str = "train", train_augment: bool = False) -> None:
        folder = resolve_root(root)
        data = load_cifar100_split(folder, split)
        self.root = folder
        self.split = split
        self.train_augment = train_augment
        self.classes = read_class_names(folder)
        self.synthetic = (folder / SYNTHETIC_MARKER).is_file()
        self.labels = data.labels
        self.coarse_labels = data.coarse_labels
        self.images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
        self._mean = torch.tensor(CIFAR100_MEAN).view(3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(CIFAR100_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.train_augment:
            oy, ox = (int(v) for v in torch.randint(0, 9, (2,)))
            flip = bool(torch.randint(0, 2, ()))
            canvas = torch.zeros((3, 40, 40), dtype=torch.uint8)
            canvas[:, 4:36, 4:36] = img
            img = canvas[:, oy:oy + 32, ox:ox + 32]
            if flip:
                img = img.flip(-1)
        x = (img.float().div_(255.0) - self._mean).mul_(self._inv_std)
        return x, int(self.labels[index])
