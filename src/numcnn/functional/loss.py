"""Softmax cross-entropy from logits, fused, with optional label smoothing.

The deck's loss H(p, q) = -sum_x p(x) log q(x), with q = softmax(z) and p the one-hot target y
(or, with label smoothing eps over K classes, p = (1 - eps) y + eps / K).  Mean over the batch.

Gradient (the deck's "dL/dz = y_hat - y"): for one sample,
    dL/dz_j = sum_i dL/dy_hat_i * dy_hat_i/dz_j = y_hat_j - p_j
and averaging over the N samples of the batch divides it by N.
"""
from __future__ import annotations

from ..backend import get_array_module
from .activation import log_softmax


def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """Returns ``(loss, probs, target)``; ``labels`` are int class ids of shape (N,)."""
    xp = get_array_module(logits)
    n, k = logits.shape
    logp = log_softmax(logits, axis=1)
    target = xp.zeros_like(logits)
    target[xp.arange(n), labels] = 1
    if label_smoothing:
        target *= logits.dtype.type(1 - label_smoothing)
        target += logits.dtype.type(label_smoothing / k)
    loss = -(target * logp).sum() / n
    return loss, xp.exp(logp), target


def cross_entropy_backward(probs, target):
    """dL/dz = (y_hat - p) / N."""
    return (probs - target) / probs.dtype.type(probs.shape[0])
