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


def cross_entropy_general_forward(logits, labels, label_smoothing=0.0, weight=None, keep=None,
                                  reduction="mean"):
    """Cross-entropy with PyTorch's class weights, ignored samples and reductions.

    Args:
        logits: (N, K); labels: (N,) int class ids (any value where ``keep`` is False).
        weight: (K,) class weights w, or None (all 1).
        keep: (N,) bool, False for the samples to ignore (``ignore_index``), or None.
        reduction: "mean", "sum" or "none".

    With p_i = log_softmax(z_i), eps the smoothing and K classes, PyTorch's per-sample loss is
        l_i = (1 - eps) w[y_i] (-p_i[y_i]) + eps/K sum_c w[c] (-p_i[c])     (0 if ignored)
            = -sum_c t_ic p_i[c],   t_ic = (1 - eps) w[y_i] [c = y_i] + eps/K w[c]
    "sum" is sum_i l_i, "none" the vector l, and "mean" divides the sum by
    D = sum_{i kept} w[y_i] (the number of kept samples without weights): the weighted mean,
    where the smoothing term too is divided by the weights of the true classes, as PyTorch does.
    Returns ``(loss, cache)``; the loss is a 0-d array, or (N,) for "none".
    """
    xp = get_array_module(logits)
    n, k = logits.shape
    logp = log_softmax(logits, axis=1)
    dt = logits.dtype.type
    safe = labels if keep is None else xp.where(keep, labels, 0)
    w_true = xp.ones(n, dtype=logits.dtype) if weight is None else weight[safe]
    if keep is not None:
        w_true = w_true * keep
    target = xp.zeros_like(logits)
    target[xp.arange(n), safe] = w_true * dt(1 - label_smoothing)
    if label_smoothing:
        smooth = xp.full(k, dt(label_smoothing / k), dtype=logits.dtype) if weight is None \
            else weight * dt(label_smoothing / k)
        target += smooth[None, :] * (xp.ones(n, dtype=logits.dtype) if keep is None
                                     else keep.astype(logits.dtype))[:, None]
    per_sample = -(target * logp).sum(axis=1)
    if reduction == "none":
        return per_sample, (logp, target, None)
    total = per_sample.sum()
    if reduction == "sum":
        return total, (logp, target, None)
    denom = w_true.sum()
    # a batch whose samples are all ignored (or weigh 0) has nothing to learn: loss 0, gradient 0
    # (PyTorch gives 0/0 = nan there)
    denom = xp.where(denom == 0, dt(1), denom)
    return total / denom, (logp, target, denom)


def cross_entropy_general_backward(cache, grad_out=None):
    """dL/dz for :func:`cross_entropy_general_forward`: for one sample, with T_i = sum_c t_ic,
        dl_i/dz_ij = sum_c t_ic (softmax_ij - [c = j]) = T_i softmax(z_i)_j - t_ij
    divided by D for "mean"; ``grad_out`` is dL/d(loss): a scalar (default 1) or, for
    "none", an (N,) vector (default ones)."""
    xp = get_array_module(cache[0])
    logp, target, denom = cache
    d = xp.exp(logp) * target.sum(axis=1, keepdims=True) - target
    if denom is not None:
        d /= denom
    if grad_out is not None:
        g = xp.asarray(grad_out, dtype=d.dtype)
        d *= g[:, None] if g.ndim == 1 else g
    return d
