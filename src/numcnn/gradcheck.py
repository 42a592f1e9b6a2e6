"""Finite-difference gradient check: is a backward pass right?

For a scalar f(theta), the central difference (f(theta + eps) - f(theta - eps)) / (2 eps) agrees
with df/dtheta to O(eps^2).  For a layer without a loss we contract its output with a fixed random
upstream gradient G, f = sum(layer(x) * G), so backward(G) must give df/dx (CS231n's trick).
Everything runs in float64 on a copy of the model; the worst relative error
|a - n| / max(|a|, |n|, floor, 1e-3 * max|n| of the tensor) over the checked entries is reported.
The last term keeps entries whose true gradient is ~0 (where the central difference is pure
rounding noise, ~1e-10) from reporting a huge "relative" error: they count against 1/1000 of
the tensor's largest gradient instead.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .init import as_generator


@dataclass
class GradcheckReport:
    """Worst relative error overall and per checked tensor (``"input"``, ``"0.weight"``, ...)."""
    max_rel_error: float
    errors: dict = field(default_factory=dict)
    checked: int = 0

    def ok(self, tol=1e-6) -> bool:
        return self.max_rel_error <= tol

    def __str__(self):
        rows = "\n".join(f"  {k:<16} {v:.3e}" for k, v in self.errors.items())
        return f"gradcheck: worst relative error {self.max_rel_error:.3e} over {self.checked} entries\n{rows}"


def _rel(a, n, floor):
    scale = max(floor, 1e-3 * float(np.max(np.abs(n))) if n.size else 0.0)
    return float(np.max(np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), scale)))


def gradcheck(model, x, labels=None, loss=None, eps=1e-6, max_entries=20, rng=0,
              training=True, check_input=True, floor=1e-8):
    """Compare ``model``'s analytic gradients with central differences; returns a report.

    Args:
        model: a layer or a :class:`numcnn.Sequential`. It is copied and cast to float64;
            the original is not touched.
        x: an input batch.
        labels, loss: with both, f = loss(model(x), labels); otherwise f = sum(model(x) * G).
        eps: the finite-difference step.
        max_entries: at most this many randomly chosen entries per tensor are perturbed
            (all of them when the tensor is smaller).
        training: forward mode (dropout masks are replayed identically for every evaluation).
        floor: entries whose gradients are both below it are compared absolutely.
    """
    rng = as_generator(rng)
    m = copy.deepcopy(model)
    m.astype(np.float64)
    layers = getattr(m, "layers", [m])
    for layer in layers:
        if hasattr(layer, "needs_input_grad"):
            layer.needs_input_grad = True
    x = np.array(x, dtype=np.float64)
    rng_states = [layer._rng_state() for layer in layers]
    running = [{k: v.copy() for k, v in layer.buffers().items()} for layer in layers]

    def restore():
        for layer, st, bufs in zip(layers, rng_states, running):
            if st is not None:
                layer._set_rng_state(st)
            for k, v in bufs.items():
                layer.set_buffer(k, v.copy())

    # analytic
    restore()
    y = m.forward(x, training=training)
    if loss is None:
        upstream = g = rng.standard_normal(y.shape)
    else:
        loss.forward(y, labels)
        g = loss.backward()
    for p in m.parameters():
        p.grad = None
    dx = m.backward(g)

    def f():
        restore()
        y = m.forward(x, training=training)
        if loss is None:
            return float((y * upstream).sum())
        return float(loss.forward(y, labels))

    targets = []
    if check_input:
        targets.append(("input", x, dx))
    named = m.named_parameters()
    for name, p in named.items():
        targets.append((name, p.value, p.grad))

    report = GradcheckReport(0.0)
    for name, arr, analytic in targets:
        flat = arr.reshape(-1)
        idx = np.arange(flat.size) if flat.size <= max_entries else rng.choice(flat.size, max_entries, replace=False)
        num = np.empty(len(idx))
        for k, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num[k] = (fp - fm) / (2 * eps)
        err = _rel(np.asarray(analytic).reshape(-1)[idx], num, floor)
        report.errors[name] = err
        report.checked += len(idx)
        report.max_rel_error = max(report.max_rel_error, err)
    return report
