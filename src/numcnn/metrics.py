"""Classification metrics: accuracy, top-k, confusion matrix, per-class precision/recall/F1."""
from __future__ import annotations

import numpy as np

from .errors import ConfigError, ShapeError


def confusion_matrix(y_true, y_pred, num_classes):
    """``M[t, p]`` = number of samples of true class t predicted as p."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"confusion_matrix: {y_true.shape} true labels vs {y_pred.shape} predictions")
    for what, v in (("true labels", y_true), ("predictions", y_pred)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ConfigError(f"confusion_matrix: {what} must be class ids in [0, {num_classes - 1}], "
                              f"got values from {int(v.min())} to {int(v.max())}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def top_k_accuracy(probs, y_true, k=5):
    """Fraction of samples whose true class is among the k highest scores."""
    probs = np.asarray(probs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"top_k_accuracy: k must be an integer >= 1, got {k!r}")
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def per_class(matrix):
    """``(precision, recall, f1, support)`` arrays from a confusion matrix (0 where undefined)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    pred = m.sum(axis=0)
    true = m.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, true.astype(np.int64)


def classification_report(probs, y_true, class_names=None, k=5, loss=None) -> dict:
    """Everything ``evaluate`` reports, as plain Python numbers and lists."""
    probs = np.asarray(probs)
    y_true = np.asarray(y_true, dtype=np.int64)
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, n_classes)
    p, r, f1, support = per_class(cm)
    names = list(class_names) if class_names else [str(i) for i in range(n_classes)]
    report = {
        "samples": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()),
        f"top{min(k, n_classes)}_accuracy": top_k_accuracy(probs, y_true, k),
        "confusion_matrix": cm.tolist(),
        "classes": names,
        "precision": p.tolist(), "recall": r.tolist(), "f1": f1.tolist(), "support": support.tolist(),
        "macro_f1": float(f1.mean()),
    }
    if loss is not None:
        report["loss"] = float(loss)
    return report


def format_report(report: dict) -> str:
    """A readable table of a :func:`classification_report`."""
    names = report["classes"]
    w = max(5, max(len(n) for n in names))
    lines = [f"samples: {report['samples']}", f"accuracy: {report['accuracy'] * 100:.2f}%"]
    for key, v in report.items():
        if key.startswith("top") and key.endswith("_accuracy"):
            lines.append(f"{key.replace('_', ' ')}: {v * 100:.2f}%")
    if "loss" in report:
        lines.append(f"loss: {report['loss']:.4f}")
    lines.append("")
    lines.append(f"{'class':<{w}}  precision  recall     f1  support")
    for i, n in enumerate(names):
        lines.append(f"{n:<{w}}  {report['precision'][i]:9.3f}  {report['recall'][i]:6.3f}  "
                     f"{report['f1'][i]:5.3f}  {report['support'][i]:7d}")
    lines.append(f"{'macro':<{w}}  {'':9}  {'':6}  {report['macro_f1']:5.3f}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cm = report["confusion_matrix"]
    cw = max(len(str(v)) for row in cm for v in row)
    cw = max(cw, max(len(n) for n in names))
    lines.append(" " * (w + 2) + " ".join(n.rjust(cw) for n in names))
    for n, row in zip(names, cm):
        lines.append(f"{n:<{w}}  " + " ".join(str(v).rjust(cw) for v in row))
    return "\n".join(lines)
