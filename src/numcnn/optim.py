"""Optimisers and learning-rate schedules.

Plain gradient descent is the deck's update  w <- w - lr * dL/dw.  Momentum, Nesterov, weight
decay, Adam and AdamW follow PyTorch's ``torch.optim`` formulas exactly, so a numcnn model and a
PyTorch model with the same weights take the same steps.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers

from .backend import get_array_module
from .errors import ConfigError, StateError
from .layers.base import Layer, Parameter
from .validate import check_bool


def _is_real(value):
    """Any finite real number type (int, float, numpy scalars), not bool."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _number(owner, name, value, accepted, ok=lambda v: True, usual=None):
    """``value`` as a float if it is a finite real number passing ``ok``; else a ConfigError
    saying the ``accepted`` range.  A NaN or inf setting would turn every weight into NaN on
    the first step."""
    if not _is_real(value) or not ok(float(value)):
        raise ConfigError(f"{owner}: {name} must be {accepted}, got {value!r}"
                          + (f" ({usual} is usual)" if usual is not None else ""))
    return float(value)


def _count(owner, name, value, least):
    """``value`` as an int >= ``least`` (any integer type, not bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ConfigError(f"{owner}: {name} must be an int >= {least}, got {value!r}")
    return int(value)


def _pair(values):
    """``values`` as a 2-tuple, or None when it is not a sequence of two items."""
    try:
        values = tuple(values)
    except TypeError:
        return None
    return values if len(values) == 2 else None


def _parameter_list(owner, params):
    """``params`` as a list of Parameters; a model or a list of arrays gets a message saying
    what to pass instead (else the first step fails with an AttributeError)."""
    if isinstance(params, Layer) or callable(getattr(params, "parameters", None)):   # a model
        raise ConfigError(f"{owner}: got a {type(params).__name__}, not its parameters; pass "
                          "model.parameters()")
    if isinstance(params, Parameter):
        raise ConfigError(f"{owner}: got one Parameter; pass a list of them (model.parameters())")
    try:
        params = list(params)
    except TypeError:
        raise ConfigError(f"{owner}: params must be a list of numcnn Parameters "
                          f"(model.parameters()), got {type(params).__name__}") from None
    if not params:
        raise ConfigError(f"{owner}: got an empty parameter list; pass "
                          "model.parameters() of a model that has weights")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise ConfigError(f"{owner}: item {i} of the parameter list is {type(p).__name__}, "
                              "not a numcnn Parameter; the list must hold numcnn Parameters: "
                              "pass model.parameters()")
    return params


@functools.lru_cache(maxsize=None)
def _takes_step_count(cls):
    """Whether ``cls._update`` takes the parameter's step count ``t`` (optimizers written before
    it existed define ``_update(self, p, state)``)."""
    params = inspect.signature(cls._update).parameters
    return len(params) >= 4 or any(p.kind == p.VAR_POSITIONAL for p in params.values())


class Optimizer:
    """Base: holds the parameter list, the learning rate and per-parameter state."""

    def __init__(self, params, lr):
        self.params = _parameter_list(type(self).__name__, params)
        self.lr = _number(type(self).__name__, "lr", lr, "a positive finite number",
                          lambda v: v > 0)
        self.state: list[dict] = [{} for _ in self.params]
        self.steps = 0                                   # optimizer steps taken
        self.param_steps = [0] * len(self.params)       # updates each parameter has had

    def zero_grad(self):
        """Forget the gradients of the last backward pass (they accumulate otherwise)."""
        for p in self.params:
            p.grad = None

    def step(self):
        if all(p.grad is None for p in self.params):
            raise StateError(f"{type(self).__name__}.step(): no parameter has a gradient; call "
                             "loss.backward() and model.backward(grad) before step()")
        self.steps += 1
        with_t = _takes_step_count(type(self))
        for i, (p, st) in enumerate(zip(self.params, self.state)):
            if p.grad is not None:            # a parameter without a gradient is skipped, and
                self.param_steps[i] += 1      # its step count (Adam's t) stays, as in PyTorch
                if with_t:
                    self._update(p, st, self.param_steps[i])
                else:                         # a user's optimizer written as _update(p, state)
                    self._update(p, st)

    def _update(self, p, state, t):
        """Update parameter ``p`` in place from ``p.grad``; ``t`` counts its updates, this one included."""
        raise NotImplementedError

    def state_keys(self):
        """The per-parameter state every updated parameter has (checked on loading)."""
        return ()

    def _check_state(self, i, state):
        """Refuse loaded state that this optimizer could never have produced."""

    def config(self) -> dict:
        return {"lr": self.lr}

    # -- checkpoints ------------------------------------------------------------------------------
    def state_arrays(self) -> dict:
        """Flat ``{"i.name": array}`` of per-parameter state (for safetensors checkpoints)."""
        return {f"{i}.{k}": v for i, st in enumerate(self.state) for k, v in st.items()}

    def load_state_arrays(self, arrays: dict, steps: int, lr: float | None = None,
                          param_steps=None):
        """Restore what :meth:`state_arrays` gave; refuses state for a different model.

        ``param_steps``: each parameter's update count (default: ``steps`` for every parameter,
        which is what it is when every parameter had a gradient at every step).
        """
        if param_steps is None:
            param_steps = [int(steps)] * len(self.params)
        elif len(param_steps) != len(self.params):
            raise StateError(f"optimizer state has step counts for {len(param_steps)} parameters "
                             f"but the model has {len(self.params)}: the checkpoint is from "
                             "another model")
        new = [{} for _ in self.params]
        for key, v in arrays.items():
            i, _, name = key.partition(".")
            if not i.isdigit() or int(i) >= len(self.params):
                raise StateError(f"optimizer state has entry {key!r} but the model has only "
                                 f"{len(self.params)} parameters: the checkpoint is from another model")
            if v.shape != self.params[int(i)].shape:
                raise StateError(f"optimizer state {key!r} has shape {tuple(v.shape)} but parameter "
                                 f"{int(i)} has shape {tuple(self.params[int(i)].shape)}: the "
                                 "checkpoint is from another model")
            if not bool(get_array_module(v).isfinite(v).all()):
                raise StateError(f"optimizer state {key!r} holds NaN or inf: the checkpoint is "
                                 "damaged; use an earlier checkpoint or start fresh")
            xp = get_array_module(self.params[int(i)].value)
            new[int(i)][name] = xp.asarray(v, dtype=self.params[int(i)].dtype)
        for i, (st, t) in enumerate(zip(new, param_steps)):
            missing = [k for k in self.state_keys() if k not in st] if t > 0 else []
            if missing:               # a parameter that was updated must have its running state
                raise StateError(f"optimizer state for parameter {i} lacks {', '.join(missing)} "
                                 f"after {t} update(s): the checkpoint is incomplete; use an "
                                 "earlier checkpoint or start fresh")
            self._check_state(i, st)
        self.state = new
        self.steps = int(steps)
        self.param_steps = [int(t) for t in param_steps]
        if lr is not None:
            self.lr = float(lr)


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's formulas (dampening 0):

        g = dL/dw + weight_decay * w
        b = momentum * b + g                (b = g on the first step)
        g = g + momentum * b if nesterov else b
        w = w - lr * g

    With ``momentum=0`` and ``weight_decay=0`` this is exactly the deck's w <- w - lr * dL/dw.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        # at momentum 1 the velocity never forgets; above, it explodes
        momentum = _number("SGD", "momentum", momentum, "in [0, 1)",
                           lambda v: 0 <= v < 1, usual=0.9)
        weight_decay = _number("SGD", "weight_decay", weight_decay, "a finite number >= 0",
                               lambda v: v >= 0)
        nesterov = check_bool(nesterov, "nesterov", "SGD")
        if nesterov and momentum <= 0:
            raise ConfigError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def state_keys(self):
        return ("momentum",) if self.momentum else ()

    def _update(self, p, state, t):
        g = p.grad
        dt = p.value.dtype.type
        if self.weight_decay:
            g = g + dt(self.weight_decay) * p.value
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = g.copy()
            else:
                buf *= dt(self.momentum)
                buf += g
            g = g + dt(self.momentum) * buf if self.nesterov else buf
        p.value -= dt(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's formulas; ``weight_decay`` is L2 added to the gradient.

        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        w = w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        pair = None if isinstance(betas, (str, bytes)) else _pair(betas)
        if pair is None or not all(_is_real(b) and 0 <= b < 1 for b in pair):
            raise ConfigError(f"{name}: betas must be a pair (beta1, beta2) of numbers in [0, 1), "
                              f"e.g. (0.9, 0.999), got {betas!r}")
        b1, b2 = (float(b) for b in pair)
        eps = _number(name, "eps", eps, "a positive finite number", lambda v: v > 0, usual=1e-8)
        weight_decay = _number(name, "weight_decay", weight_decay, "a finite number >= 0",
                               lambda v: v >= 0)
        self.betas, self.eps, self.weight_decay = (b1, b2), eps, weight_decay

    def config(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def state_keys(self):
        return ("m", "v")

    def _check_state(self, i, state):
        v = state.get("v")
        if v is not None and bool((v < 0).any()):
            raise StateError(f"optimizer state '{i}.v' (Adam's average of squared gradients) has "
                             "negative entries: the checkpoint is damaged; use an earlier "
                             "checkpoint or start fresh")

    def _update(self, p, state, t):
        xp = get_array_module(p.value)
        dt = p.value.dtype.type
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay:
            if self.decoupled:
                p.value *= dt(1 - self.lr * self.weight_decay)
            else:
                g = g + dt(self.weight_decay) * p.value
        if "m" not in state:
            state["m"] = xp.zeros_like(p.value)
            state["v"] = xp.zeros_like(p.value)
        m, v = state["m"], state["v"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        v += dt(1 - b2) * g * g
        bc1 = 1 - b1 ** t                  # t: this parameter's own step count, as in PyTorch
        bc2 = 1 - b2 ** t
        denom = xp.sqrt(v) / dt(math.sqrt(bc2))
        denom += dt(self.eps)
        p.value -= dt(self.lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w <- w (1 - lr wd) before Adam."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


# -- learning-rate schedules --------------------------------------------------------------------
class _Schedule:
    """A per-epoch learning rate ``lr_at(epoch)``, computed from the optimizer's starting lr."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"{type(self).__name__}: optimizer must be a numcnn optimizer "
                              f"(SGD, Adam, AdamW), got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Call once per epoch, after the epoch's optimizer steps."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def set_epoch(self, epoch):
        self.epoch = _count(type(self).__name__, "epoch", epoch, 0)
        self.optimizer.lr = self.lr_at(self.epoch)


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (epoch // step_size), as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _count("StepLR", "step_size", step_size, 1)
        self.gamma = _number("StepLR", "gamma", gamma, "a positive finite number",
                             lambda v: v > 0, usual=0.1)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2 (closed form of
    ``torch.optim.lr_scheduler.CosineAnnealingLR``): it reaches eta_min at epoch T_max and, like
    PyTorch's, rises again after it (``make_schedule`` sets T_max to the run's epochs)."""

    def __init__(self, optimizer, t_max, eta_min=0.0):
        super().__init__(optimizer)
        self.t_max = _count("CosineLR", "t_max", t_max, 1)
        self.eta_min = _number("CosineLR", "eta_min", eta_min, "a finite number >= 0",
                               lambda v: v >= 0)

    def lr_at(self, epoch):
        # no clamp at t_max: past it the cosine climbs back up, as PyTorch's does
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.t_max)) / 2


class ConstantLR(_Schedule):
    """No schedule: the learning rate stays where it is."""

    def lr_at(self, epoch):
        return self.base_lr


def make_schedule(name, optimizer, epochs):
    """``"constant"``, ``"step"`` (x0.1 after each third of the run: every ``ceil(epochs / 3)``
    epochs, so at most two drops) or ``"cosine"`` over ``epochs``."""
    epochs = _count("make_schedule", "epochs", epochs, 1)
    if name in (None, "constant", "none"):
        return ConstantLR(optimizer)
    if name == "step":
        return StepLR(optimizer, math.ceil(epochs / 3), 0.1)
    if name == "cosine":
        return CosineLR(optimizer, epochs)
    raise ConfigError(f"unknown schedule {name!r}; choose constant, step or cosine")
