"""numcnn.metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest

from numcnn.errors import ConfigError, NumcnnError, ShapeError
from numcnn.metrics import (classification_report, confusion_matrix, format_report, per_class,
                            top_k_accuracy)

# 7 samples, 3 classes; worked out by hand below
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 2])
#   true 0: predicted 0, 1         -> row [1, 1, 0]
#   true 1: predicted 1, 1         -> row [0, 2, 0]
#   true 2: predicted 2, 0, 2      -> row [1, 0, 2]
CM = np.array([[1, 1, 0],
               [0, 2, 0],
               [1, 0, 2]])
# precision = diag / column sums [2, 3, 2]; recall = diag / row sums [2, 2, 3]
PRECISION = np.array([1 / 2, 2 / 3, 2 / 2])
RECALL = np.array([1 / 2, 2 / 2, 2 / 3])
F1 = np.array([0.5, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * (2 / 3) / (1 + 2 / 3)])   # 0.5, 0.8, 0.8


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, CM)
    assert cm.sum() == len(Y_TRUE)
    # a class that never occurs still gets its (zero) row and column
    np.testing.assert_array_equal(confusion_matrix([0, 1], [1, 1], 4),
                                  [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_per_class_by_hand():
    p, r, f1, support = per_class(CM)
    np.testing.assert_allclose(p, PRECISION, rtol=0, atol=1e-15)
    np.testing.assert_allclose(r, RECALL, rtol=0, atol=1e-15)
    np.testing.assert_allclose(f1, [0.5, 0.8, 0.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(f1, F1, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(support, [2, 2, 3])


def test_per_class_undefined_is_zero_not_nan():
    # class 2 is never predicted and never true; class 1 is predicted but never true
    cm = confusion_matrix([0, 0, 0], [0, 1, 1], 3)
    p, r, f1, support = per_class(cm)
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(r, [1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(f1, [2 * (1 / 3) / (1 + 1 / 3), 0.0, 0.0])
    np.testing.assert_array_equal(support, [3, 0, 0])
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(r)) and np.all(np.isfinite(f1))


def test_top_k_by_hand():
    probs = np.array([[0.1, 0.6, 0.3],     # true 2: rank 2
                      [0.7, 0.2, 0.1],     # true 0: rank 1
                      [0.2, 0.3, 0.5],     # true 0: rank 3
                      [0.25, 0.45, 0.3]])  # true 1: rank 1
    y = np.array([2, 0, 0, 1])
    assert top_k_accuracy(probs, y, k=1) == 0.5
    assert top_k_accuracy(probs, y, k=2) == 0.75
    assert top_k_accuracy(probs, y, k=3) == 1.0
    assert top_k_accuracy(probs, y, k=10) == 1.0      # k larger than the classes: everything
    # top-1 is plain accuracy
    assert top_k_accuracy(probs, y, k=1) == np.mean(probs.argmax(1) == y)


def test_classification_report_by_hand():
    # probabilities whose argmax is Y_PRED, with the true class second where it is wrong
    probs = np.full((7, 3), 0.1)
    probs[np.arange(7), Y_PRED] = 0.8
    wrong = Y_PRED != Y_TRUE
    probs[np.flatnonzero(wrong), Y_TRUE[wrong]] = 0.15
    rep = classification_report(probs, Y_TRUE, ["cat", "dog", "emu"], k=2, loss=0.25)
    assert rep["samples"] == 7
    assert rep["accuracy"] == 5 / 7
    assert rep["top2_accuracy"] == 1.0
    assert rep["confusion_matrix"] == CM.tolist()
    assert rep["classes"] == ["cat", "dog", "emu"]
    np.testing.assert_allclose(rep["precision"], PRECISION)
    np.testing.assert_allclose(rep["recall"], RECALL)
    np.testing.assert_allclose(rep["f1"], F1)
    assert rep["support"] == [2, 2, 3]
    assert rep["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.8) / 3, abs=1e-15)
    assert rep["loss"] == 0.25
    # plain Python numbers (JSON-ready)
    import json
    assert json.loads(json.dumps(rep)) == rep
    # default names and k clipped to the number of classes
    rep5 = classification_report(probs, Y_TRUE)
    assert rep5["classes"] == ["0", "1", "2"]
    assert rep5["top3_accuracy"] == 1.0
    assert "loss" not in rep5


def test_format_report_shows_the_numbers():
    probs = np.eye(3)[Y_PRED]
    text = format_report(classification_report(probs, Y_TRUE, ["cat", "dog", "emu"], loss=0.5))
    lines = text.splitlines()
    assert "samples: 7" in lines
    assert f"accuracy: {5 / 7 * 100:.2f}%" in lines          # 71.43%
    assert "loss: 0.5000" in lines
    dog = next(l for l in lines if l.startswith("dog ")).split()
    assert dog == ["dog", "0.667", "1.000", "0.800", "2"]
    assert next(l for l in lines if l.startswith("macro")).split() == ["macro", f"{(0.5 + 1.6) / 3:.3f}"]
    emu_row = [l for l in lines if l.startswith("emu")][-1].split()
    assert emu_row == ["emu", "1", "0", "2"]                 # confusion-matrix row


def test_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    n, k = 500, 7
    y = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, k)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y, pred, labels=range(k)))
    p, r, f1, support = per_class(cm)
    sp, sr, sf, ss = sk.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    np.testing.assert_allclose(p, sp, rtol=1e-12)
    np.testing.assert_allclose(r, sr, rtol=1e-12)
    np.testing.assert_allclose(f1, sf, rtol=1e-12)
    np.testing.assert_array_equal(support, ss)
    for kk in (1, 2, 3, 5):
        assert top_k_accuracy(probs, y, kk) == pytest.approx(
            sk.top_k_accuracy_score(y, probs, k=kk, labels=range(k)), abs=1e-12)
    rep = classification_report(probs, y)
    assert rep["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-15)
    assert rep["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ShapeError, match="true labels"):
        confusion_matrix([0, 1, 2], [0, 1], 3)
    # labels outside 0..K-1 would otherwise be counted in the wrong cell silently
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        confusion_matrix([0, 1], [0, 3], 2)
    with pytest.raises(ConfigError, match="true labels"):
        confusion_matrix([-1, 1], [0, 1], 2)
    with pytest.raises(NumcnnError, match="k must be"):
        top_k_accuracy(np.eye(3), [0, 1, 2], k=0)
