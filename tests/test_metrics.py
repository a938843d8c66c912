"""Metrics against hand-computed answers and float64 brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asc.eval import metrics as M


def test_accuracy_and_macro_accuracy_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2])
    assert M.accuracy(labels, preds) == pytest.approx(5 / 7)
    # recalls: class 0 3/4, class 1 1/2, class 2 1/1; class 3 absent from the labels is skipped
    assert M.macro_accuracy(labels, preds, num_classes=4) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    recalls = M.class_recalls(labels, preds, num_classes=4)
    assert recalls[:3] == pytest.approx([0.75, 0.5, 1.0]) and np.isnan(recalls[3])


def test_confusion_matrix_rows_are_true_classes():
    cm = M.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 0, 2, 2], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.dtype == np.int64


def test_log_loss_by_hand_with_clipping_and_renormalisation():
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]])
    labels = np.array([0, 2, 1])
    eps = 1e-15
    # the third row is clipped to (1 - eps, eps, eps) and renormalised by its sum 1 + eps
    third = -math.log(eps / (1.0 + eps))
    expected = (-math.log(0.7) - math.log(0.8) + third) / 3
    assert M.log_loss(labels, prob) == pytest.approx(expected, rel=1e-12)
    assert third == pytest.approx(34.5387763949, rel=1e-9)
    # rows that do not sum to one are renormalised
    assert M.log_loss([0], np.array([[2.0, 2.0]])) == pytest.approx(math.log(2.0))


def test_softmax_is_stable_and_matches_formula():
    logits = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]])
    p = M.softmax(logits)
    e = np.exp([-1.0, 0.0, -2.0])
    assert p[0] == pytest.approx(e / e.sum())
    assert p[1] == pytest.approx([1 / 3] * 3)


def test_scores_per_device_and_group_by_hand():
    # 6 clips: device a (3 clips, 2 right), b (1 clip, wrong), s4 (2 clips, 1 right)
    labels = np.array([0, 1, 1, 0, 1, 0])
    devices = ["a", "a", "a", "b", "s4", "s4"]
    prob = np.array([
        [0.9, 0.1], [0.2, 0.8], [0.6, 0.4],  # a: right, right, wrong
        [0.3, 0.7],  # b: wrong
        [0.4, 0.6], [0.45, 0.55],  # s4: right, wrong
    ])
    per = M.scores_by(labels, prob, devices, order=["a", "b", "c", "s4"])
    assert list(per) == ["a", "b", "c", "s4"]
    assert per["a"]["accuracy"] == pytest.approx(2 / 3) and per["a"]["n"] == 3
    assert per["a"]["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert per["b"]["accuracy"] == 0.0 and per["b"]["log_loss"] == pytest.approx(-math.log(0.3))
    assert per["c"] == {"accuracy": None, "macro_accuracy": None, "log_loss": None, "n": 0}
    assert per["s4"]["accuracy"] == pytest.approx(0.5)
    groups = M.group_scores(labels, prob, devices, {"real": ["a", "b", "c"], "unseen": ["s4", "s5", "s6"]})
    assert groups["real"]["accuracy"] == pytest.approx(2 / 4) and groups["real"]["n"] == 4
    # real: class 0 clips (a, b) -> 1 of 2 right; class 1 clips (a, a) -> 1 of 2 right
    assert groups["real"]["macro_accuracy"] == pytest.approx(0.5)
    assert groups["unseen"]["n"] == 2


def test_unknown_labels_are_rejected():
    with pytest.raises(ValueError, match="unknown"):
        M.accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        M.log_loss([3], np.full((1, 3), 1 / 3))


def _at(deg: float, r: float = 1.0) -> list[float]:
    return [r * math.cos(math.radians(deg)), r * math.sin(math.radians(deg))]


def test_angle_metrics_on_a_2d_example_known_exactly():
    # class 0 at +-10 deg, class 1 at 90 +- 20 deg, class 2 at 135 +- 30 deg; lengths differ on purpose
    # (angles ignore length); each centre then points at 0, 90 and 135 deg.
    train = np.array([_at(10, 1), _at(-10, 5), _at(70, 2), _at(110, 2), _at(105, 0.5), _at(165, 0.5)])
    labels = np.array([0, 0, 1, 1, 2, 2])
    test = np.array([_at(45, 3), _at(100, 1), _at(135, 7)])
    test_labels = np.array([0, 1, 2])
    out = M.angle_metrics(train, labels, test, test_labels)
    assert set(out) == {"intra_train", "intra_test", "inter", "iir_train", "iir_test"}
    assert out["intra_train"] == pytest.approx((10 + 10 + 20 + 20 + 30 + 30) / 6)
    # minimum centre-to-centre angles: 0 -> 90 (90), 90 -> 135 (45), 135 -> 90 (45)
    assert out["inter"] == pytest.approx((90 + 45 + 45) / 3)
    assert out["intra_test"] == pytest.approx((45 + 10 + 0) / 3, abs=1e-6)
    assert out["iir_train"] == pytest.approx(20 / 60)
    assert out["iir_test"] == pytest.approx(out["intra_test"] / 60)


def test_angle_metrics_match_float64_brute_force():
    rng = np.random.default_rng(0)
    k, d = 5, 16
    means = rng.normal(size=(k, d)) * 2
    y = rng.integers(0, k, size=300)
    y[:k] = np.arange(k)
    x = (means[y] + rng.normal(size=(300, d))).astype(np.float32)
    yt = rng.integers(0, k, size=80)
    xt = (means[yt] + 1.5 * rng.normal(size=(80, d))).astype(np.float32)

    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / math.sqrt(float(v @ v))

    centres = [np.mean([unit(x[i]) for i in range(len(y)) if y[i] == c], axis=0) for c in range(k)]

    def angle(u, v):
        return math.degrees(math.acos(max(-1.0, min(1.0, float(unit(u) @ unit(v))))))

    intra_train = sum(angle(x[i], centres[y[i]]) for i in range(len(y))) / len(y)
    intra_test = sum(angle(xt[i], centres[yt[i]]) for i in range(len(yt))) / len(yt)
    inter = sum(min(angle(centres[i], centres[j]) for j in range(k) if j != i) for i in range(k)) / k

    out = M.angle_metrics(x, y, xt, yt)
    assert out["intra_train"] == pytest.approx(intra_train, rel=1e-10)
    assert out["intra_test"] == pytest.approx(intra_test, rel=1e-10)
    assert out["inter"] == pytest.approx(inter, rel=1e-10)
    assert out["iir_train"] == pytest.approx(intra_train / inter, rel=1e-10)
    assert out["iir_test"] == pytest.approx(intra_test / inter, rel=1e-10)


def test_angle_metrics_chunking_and_scale_invariance():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=M._CHUNK + 37)
    x = rng.normal(size=(y.size, 4)) + 3 * np.eye(4)[y]
    scaled = x * rng.uniform(0.1, 10, size=(y.size, 1))
    a, b = M.angle_metrics(x, y), M.angle_metrics(scaled, y)
    for key in ("intra_train", "inter", "iir_train"):
        assert a[key] == pytest.approx(b[key], rel=1e-12)
    assert a["intra_test"] is None and a["iir_test"] is None


def test_angle_metrics_identical_features_give_zero_not_nan():
    x = np.array([[1.0, 2.0, 3.0]] * 4 + [[-3.0, 1.0, 0.5]] * 3)
    y = np.array([0] * 4 + [1] * 3)
    out = M.angle_metrics(x, y, x, y)
    assert out["intra_train"] == 0.0 and out["intra_test"] == 0.0
    cos = float(x[0] @ x[4] / np.linalg.norm(x[0]) / np.linalg.norm(x[4]))
    assert out["inter"] == pytest.approx(math.degrees(math.acos(cos)))


def test_angle_metrics_errors():
    x = np.eye(3)
    with pytest.raises(ValueError, match="no training samples"):
        M.angle_metrics(x, [0, 1, 1], x, [0, 1, 2])
    with pytest.raises(ValueError, match="at least two classes"):
        M.angle_metrics(x, [0, 0, 0])
    with pytest.raises(ValueError, match="feature rows"):
        M.angle_metrics(x, [0, 1])
    with pytest.raises(ValueError, match="both"):
        M.angle_metrics(x, [0, 1, 1], test_feats=x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused_not_scored_as_class_0(bad):
    """argmax of a NaN row is 0: a broken clip would count as the first class without this check."""
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
    logits[1, 2] = bad
    with pytest.raises(M.NonFiniteError, match=r"^row 1: logits hold NaN/Inf \(1 of 3 rows\)"):
        M.softmax(logits)
    with pytest.raises(M.NonFiniteError, match=r"^b.wav: logits"):
        M.softmax(logits, names=["a.wav", "b.wav", "c.wav"])
    prob = M.softmax(np.nan_to_num(logits, posinf=0.0, neginf=0.0))
    prob[1] = bad
    y = np.array([0, 1, 2])
    for score in (lambda: M.log_loss(y, prob), lambda: M.subset_scores(y, prob),
                  lambda: M.scores_by(y, prob, ["a", "b", "a"])):
        with pytest.raises(M.NonFiniteError, match=r"row 1: probabilities hold NaN/Inf"):
            score()
    assert isinstance(M.NonFiniteError("x"), ValueError)  # callers that catch ValueError still do


def test_finite_scores_pass_the_check_unchanged():
    logits = np.array([[1e300, 0.0], [-1e300, 0.0]])  # huge but finite: the shifted softmax copes
    assert np.allclose(M.softmax(logits), [[1.0, 0.0], [0.0, 1.0]])
    M.require_finite(np.zeros((0, 3)), "logits")  # nothing to score is not an error here
