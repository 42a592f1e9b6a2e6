"""Finite-difference gradient check: is a backward pass right?

For a scalar f(theta), the central difference (f(theta + eps) - f(theta - eps)) / (2 eps) agrees
with df/dtheta to O(eps^2).  For a layer without a loss we contract its output with a fixed random
upstream gradient G, f = sum(layer(x) * G), so backward(G) must give df/dx (CS231n's trick).
Everything runs in float64 on a copy of the model.

Each checked entry's error is |a - n| less ``atol``, over max(|a|, |n|, floor), where ``atol``
bounds the central difference's own round-off: f is computed with a relative error of a few
float64 ulps (u = 2.2e-16) of its scale S, so n can be off by about u S / eps even where the true
gradient is exactly 0 (a conv bias before batch norm: n ~ 1e-10 of pure noise, a = 0).  Without
``atol`` such entries report relative errors of 1e-2..1; with it, differences inside the noise
count as 0 while a real mistake (|a - n| of 1e-3 |n| or more on gradients well above the noise)
still shows.  The worst error over the checked entries is reported.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .backend import get_array_module, to_numpy
from .errors import ConfigError, ShapeError, StateError
from .init import as_generator
from .layers.base import Layer
from .model import Sequential

#: tensors with at most this many entries are checked entry by entry (the default max_entries):
#: one wrong entry of a small conv kernel is always found, not only when a sample hits it
MAX_ENTRIES = 256
#: ``atol`` is this many times u * S / eps: |a - n| of correct layers, LeNet-5 and the cifar-vgg
#: preset measured at most ~1 u S / eps on entries with a ~0 gradient and 10 on the others, so
#: 100 leaves room for deeper models while 0.1% errors on gradients above ~1e-4 still show
NOISE_ULPS = 100.0


@dataclass
class GradcheckReport:
    """Worst relative error overall and per checked tensor (``"input"``, ``"0.weight"``, ...).

    ``atol``: the round-off bound subtracted from every |a - n| (see the module docstring).
    """
    max_rel_error: float
    errors: dict = field(default_factory=dict)
    checked: int = 0
    atol: float = 0.0

    def ok(self, tol=1e-6) -> bool:
        return self.max_rel_error <= tol

    def __str__(self):
        rows = "\n".join(f"  {k:<16} {v:.3e}" for k, v in self.errors.items())
        return (f"gradcheck: worst relative error {self.max_rel_error:.3e} over {self.checked} "
                f"entries (round-off allowance {self.atol:.1e})\n{rows}")


def _rel(a, n, atol, floor):
    """Worst (|a - n| - atol)+ / max(|a|, |n|, floor): 0 for differences inside the noise."""
    if not n.size:
        return 0.0
    excess = np.maximum(np.abs(a - n) - atol, 0.0)
    return float(np.max(excess / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)))


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not math.isfinite(value):
        raise ConfigError(f"gradcheck: {name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_arguments(model, labels, loss, eps, max_entries, floor):
    if not isinstance(model, (Layer, Sequential)):
        raise ConfigError(f"gradcheck: model must be a numcnn layer (e.g. Dense(5, 3)) or a "
                          f"numcnn.Sequential, got {type(model).__name__}")
    if (labels is None) != (loss is None):
        raise ConfigError("gradcheck: pass both labels and loss (f = loss(model(x), labels)) or "
                          f"neither (f = sum(model(x) * G)); got only "
                          f"{'labels' if loss is None else 'loss'}")
    if loss is not None and not (hasattr(loss, "forward") and hasattr(loss, "backward")):
        raise ConfigError(f"gradcheck: loss must be a numcnn loss such as "
                          f"numcnn.losses.CrossEntropy(), got {type(loss).__name__}")
    if isinstance(max_entries, bool) or not isinstance(max_entries, numbers.Integral) \
            or max_entries < 1:
        raise ConfigError(f"gradcheck: max_entries must be an int >= 1 (entries checked per "
                          f"tensor), got {max_entries!r}")
    return _positive(eps, "eps"), int(max_entries), _positive(floor, "floor")


def gradcheck(model, x, labels=None, loss=None, eps=1e-6, max_entries=MAX_ENTRIES, rng=0,
              training=True, check_input=True, floor=1e-8):
    """Compare ``model``'s analytic gradients with central differences; returns a report.

    Args:
        model: a layer or a :class:`numcnn.Sequential`. It is copied and cast to float64;
            the original is not touched.
        x: an input batch.
        labels, loss: with both, f = loss(model(x), labels); with neither, f = sum(model(x) * G).
        eps: the finite-difference step.
        max_entries: tensors (the input and every parameter) with at most this many entries are
            checked in full; larger ones at this many randomly chosen entries.
        training: forward mode (dropout masks are replayed identically for every evaluation).
        floor: the smallest gradient magnitude a difference is measured relative to.

    A difference |a - n| counts only beyond ``atol = NOISE_ULPS * u * S / eps`` (u: float64's
    machine epsilon; S: the scale of f, max(|f|, max|model(x)|) with a loss, else
    sum|model(x) * G|), the central difference's round-off; ``report.atol`` holds it.
    """
    eps, max_entries, floor = _check_arguments(model, labels, loss, eps, max_entries, floor)
    rng = as_generator(rng)
    m = copy.deepcopy(model)
    m.astype(np.float64)
    layers = getattr(m, "layers", [m])
    for layer in layers:
        if hasattr(layer, "needs_input_grad"):
            layer.needs_input_grad = True
    xp = get_array_module(*(p.value for p in m.parameters()), x)
    try:
        x = xp.array(to_numpy(x) if xp is np else x, dtype=xp.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"gradcheck: x must be an input batch of numbers, got "
                          f"{type(x).__name__}") from None
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
        upstream = g = xp.asarray(rng.standard_normal(y.shape))
        scale = float(xp.abs(y * upstream).sum())
    else:
        scale = max(abs(float(loss.forward(y, labels))), float(xp.abs(y).max()) if y.size else 0.0)
        g = loss.backward()
    for p in m.parameters():
        p.grad = None
    dx = m.backward(g)
    atol = NOISE_ULPS * float(np.finfo(np.float64).eps) * scale / eps

    def f():
        restore()
        y = m.forward(x, training=training)
        if loss is None:
            return float((y * upstream).sum())
        return float(loss.forward(y, labels))

    targets = []
    if check_input:
        targets.append(("input", x, dx))
    for name, p in m.named_parameters().items():
        targets.append((name, p.value, p.grad))
    if not targets:
        raise ConfigError(f"gradcheck: nothing to check: {model!r} has no parameters and "
                          "check_input=False; leave check_input=True")
    for name, arr, analytic in targets:
        what = "dL/dx (backward's return value)" if name == "input" else f"parameter {name!r}'s .grad"
        if analytic is None:
            raise StateError(f"gradcheck: {what} is None after backward(): the backward pass must "
                             f"return dL/dx and fill every parameter's .grad (accumulate() it)")
        if tuple(analytic.shape) != tuple(arr.shape):
            raise ShapeError(f"gradcheck: {what} has shape {tuple(analytic.shape)} but the "
                             f"{'input' if name == 'input' else 'parameter'} has shape "
                             f"{tuple(arr.shape)}; backward must give one gradient per entry")

    report = GradcheckReport(0.0, atol=atol)
    for name, arr, analytic in targets:
        flat = arr.reshape(-1)
        idx = np.arange(flat.size) if flat.size <= max_entries else \
            np.sort(rng.choice(flat.size, max_entries, replace=False))
        num = np.empty(len(idx))
        for k, i in enumerate(idx):
            old = flat[i].item()          # a Python float: CuPy's flat[i] is a view that changes
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num[k] = (fp - fm) / (2 * eps)
        err = _rel(to_numpy(analytic).reshape(-1)[idx], num, atol, floor)
        report.errors[name] = err
        report.checked += len(idx)
        report.max_rel_error = max(report.max_rel_error, err)
    return report
