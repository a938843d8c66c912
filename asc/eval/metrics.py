"""Classification metrics of DCASE 2020 Task 1a and the angle measures of the L2BN paper.

Everything is plain numpy in float64 so the numbers do not depend on the device or dtype the
model ran in. Labels are class indices (0..K-1); a label of -1 means "unknown" and is rejected here:
callers drop unlabelled clips before scoring. NaN/Inf logits or probabilities are refused
(NonFiniteError), since argmax would quietly score them as class 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from asc.errors import AscError

LOG_LOSS_EPS = 1e-15  # clipping of probabilities, as the DCASE 2020 scoring (scikit-learn) did
_NORM_FLOOR = 1e-12  # a feature vector shorter than this counts as the zero vector (direction 0)
_CHUNK = 4096  # rows per block when normalising features, to bound float64 memory


class NonFiniteError(AscError, ValueError):
    """Scores with NaN/Inf values: the message names the first such row (its file when known)."""


def require_finite(values: np.ndarray, what: str, names: Sequence[str] | None = None) -> None:
    """NonFiniteError naming the first row of `values` (N, ...) that holds NaN/Inf: `names[row]` when
    given (e.g. the clip's file), else the row index."""
    v = np.asarray(values)
    if v.ndim == 0 or not v.size:
        return
    finite = np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
    if finite.all():
        return
    first = int(np.flatnonzero(~finite)[0])
    who = names[first] if names is not None and first < len(names) else f"row {first}"
    raise NonFiniteError(f"{who}: {what} hold NaN/Inf ({int((~finite).sum())} of {v.shape[0]} rows); the "
                         "model or its input features are broken, so these cannot be scored")


def _labels(labels: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError("labels contain negative (unknown) entries; drop unlabelled samples first")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"label {int(y.max())} is out of range for {num_classes} classes")
    return y


def softmax(logits: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so large logits do not overflow;
    NonFiniteError (naming `names[row]` when given) for NaN/Inf logits."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, K), got shape {z.shape}")
    require_finite(z, "logits", names)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def accuracy(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray) -> float:
    """Fraction of samples whose prediction equals the label (NaN for no samples)."""
    y, p = _labels(labels), np.asarray(predictions)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    return float(np.mean(y == p)) if y.size else float("nan")


def class_recalls(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                  num_classes: int) -> np.ndarray:
    """Recall of each class (NaN where the class has no samples)."""
    cm = confusion_matrix(labels, predictions, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def macro_accuracy(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                   num_classes: int) -> float:
    """Class-wise accuracy averaged over the classes present (the DCASE 2020 Task 1a ranking metric)."""
    recalls = class_recalls(labels, predictions, num_classes)
    present = ~np.isnan(recalls)
    return float(recalls[present].mean()) if present.any() else float("nan")


def log_loss(labels: Sequence[int] | np.ndarray, probabilities: np.ndarray,
             eps: float = LOG_LOSS_EPS) -> float:
    """Mean multiclass cross-entropy of `probabilities` (N, K).

    Probabilities are clipped to [eps, 1 - eps] and each row renormalised before the log, as the
    DCASE 2020 scoring did, so a confident mistake costs about -log(eps) instead of infinity.
    """
    prob = np.asarray(probabilities, dtype=np.float64)
    if prob.ndim != 2:
        raise ValueError(f"probabilities must be 2-D (N, K), got shape {prob.shape}")
    y = _labels(labels, prob.shape[1])
    if y.shape[0] != prob.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {prob.shape[0]} rows of probabilities")
    if not y.size:
        return float("nan")
    require_finite(prob, "probabilities")
    prob = np.clip(prob, eps, 1.0 - eps)
    prob = prob / prob.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(prob[np.arange(y.size), y])))


def confusion_matrix(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; rows are true classes, columns predicted classes."""
    y = _labels(labels, num_classes)
    p = _labels(predictions, num_classes)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def _nan_to_none(value: float) -> float | None:
    return None if value != value else float(value)


def subset_scores(labels: np.ndarray, probabilities: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """accuracy, macro_accuracy, log_loss and n of the rows selected by `mask` (None when empty)."""
    y = _labels(labels, probabilities.shape[1])
    prob = np.asarray(probabilities, dtype=np.float64)
    require_finite(prob, "probabilities")
    if mask is not None:
        y, prob = y[mask], prob[mask]
    if not y.size:
        return {"accuracy": None, "macro_accuracy": None, "log_loss": None, "n": 0}
    pred = prob.argmax(axis=1)
    return {
        "accuracy": float(np.mean(pred == y)),
        "macro_accuracy": _nan_to_none(macro_accuracy(y, pred, prob.shape[1])),
        "log_loss": log_loss(y, prob),
        "n": int(y.size),
    }


def scores_by(labels: np.ndarray, probabilities: np.ndarray, keys: Sequence[str],
              order: Iterable[str] = ()) -> dict[str, dict]:
    """`subset_scores` for every distinct value of `keys` (e.g. the recording device of each clip).

    Values listed in `order` come first and are present even without samples (n = 0), so a report
    always has the same rows; other values follow sorted.
    """
    keys = np.asarray(list(keys), dtype=object)
    if keys.shape[0] != np.asarray(labels).shape[0]:
        raise ValueError(f"{keys.shape[0]} keys for {np.asarray(labels).shape[0]} labels")
    order = list(order)
    extra = sorted({str(k) for k in keys} - set(order))
    return {name: subset_scores(labels, probabilities, keys == name) for name in order + extra}


def group_scores(labels: np.ndarray, probabilities: np.ndarray, keys: Sequence[str],
                 groups: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """`subset_scores` for unions of key values, e.g. {"real": ["a", "b", "c"], ...}."""
    keys = np.asarray(list(keys), dtype=object)
    return {name: subset_scores(labels, probabilities, np.isin(keys, list(members)))
            for name, members in groups.items()}


# ----------------------------------------------------------------------------- angles (paper eq. 1-4)

def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _NORM_FLOOR)


def _check_features(feats: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats)
    if f.ndim != 2:
        raise ValueError(f"{what} features must be 2-D (N, D), got shape {f.shape}")
    y = _labels(labels)
    if y.shape[0] != f.shape[0]:
        raise ValueError(f"{what}: {f.shape[0]} feature rows but {y.shape[0]} labels")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{what} features contain NaN or infinite values")
    return f, y


def class_centres(train_feats: np.ndarray, train_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the l2-normalised training features of each class (paper supplementary eq. 1).

    Returns (classes, centres): the sorted class indices present and their (C, D) float64 centres.
    """
    f, y = _check_features(train_feats, train_labels, "train")
    if not y.size:
        raise ValueError("angle metrics need at least one training sample")
    classes = np.unique(y)
    index = np.searchsorted(classes, y)
    sums = np.zeros((classes.size, f.shape[1]), dtype=np.float64)
    for start in range(0, f.shape[0], _CHUNK):
        unit = _unit_rows(f[start:start + _CHUNK])
        idx = index[start:start + _CHUNK]
        for k in np.unique(idx):
            sums[k] += unit[idx == k].sum(axis=0)
    counts = np.bincount(index, minlength=classes.size).astype(np.float64)
    return classes, sums / counts[:, None]


def _angles_deg(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def intra_angle(feats: np.ndarray, labels: np.ndarray, classes: np.ndarray, centres: np.ndarray,
                what: str = "test") -> float:
    """Mean angle (degrees) between each feature and its class centre (paper supplementary eq. 2)."""
    f, y = _check_features(feats, labels, what)
    if not y.size:
        raise ValueError(f"{what}: no samples to measure")
    missing = np.setdiff1d(np.unique(y), classes)
    if missing.size:
        raise ValueError(f"{what} labels {missing.tolist()} have no training samples, so no class centre")
    unit_centres = _unit_rows(centres)
    index = np.searchsorted(classes, y)
    total = 0.0
    for start in range(0, f.shape[0], _CHUNK):
        unit = _unit_rows(f[start:start + _CHUNK])
        cos = np.einsum("nd,nd->n", unit, unit_centres[index[start:start + _CHUNK]])
        total += _angles_deg(cos).sum()
    return float(total / y.size)


def inter_angle(centres: np.ndarray) -> float:
    """Mean over classes of the smallest angle (degrees) to another class centre (eq. 3)."""
    if centres.shape[0] < 2:
        raise ValueError("the inter-angle needs at least two classes with training samples")
    unit = _unit_rows(centres)
    angles = _angles_deg(unit @ unit.T)
    np.fill_diagonal(angles, np.inf)
    return float(angles.min(axis=1).mean())


def angle_metrics(train_feats: np.ndarray, train_labels: np.ndarray,
                  test_feats: np.ndarray | None = None, test_labels: np.ndarray | None = None) -> dict:
    """Intra-angle, inter-angle and their ratio IIR, in degrees (paper supplementary eq. 1-3, eq. 4).

    Class centres come from the training features only, as in the paper, and the test intra-angle
    is measured against those same centres; the inter-angle is a property of the training centres.
    Returns intra_train, intra_test, inter, iir_train, iir_test (test values None without test data).
    A zero feature vector has no direction and counts as 90 degrees from every centre.
    """
    classes, centres = class_centres(train_feats, train_labels)
    inter = inter_angle(centres)
    intra_train = intra_angle(train_feats, train_labels, classes, centres, what="train")
    intra_test = None
    if test_feats is not None or test_labels is not None:
        if test_feats is None or test_labels is None:
            raise ValueError("give both test_feats and test_labels, or neither")
        intra_test = intra_angle(test_feats, test_labels, classes, centres, what="test")

    def ratio(intra: float | None) -> float | None:
        if intra is None:
            return None
        return intra / inter if inter > 0 else float("inf")

    return {
        "intra_train": intra_train,
        "intra_test": intra_test,
        "inter": inter,
        "iir_train": ratio(intra_train),
        "iir_test": ratio(intra_test),
    }
