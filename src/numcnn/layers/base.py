"""Parameter and Layer: the contract every layer follows.

A layer owns its parameters, checks its input once at the boundary, keeps a small named cache
from ``forward`` and uses it in ``backward``:

* ``forward(x, training=True) -> y``
* ``backward(grad_out) -> grad_in``, and each parameter's ``.grad`` gets ``+= dL/dparam``
  (micrograd's "local derivative times upstream gradient, accumulated"); the optimizer's
  ``zero_grad()`` clears them.
* ``parameters()``, ``config()`` (its constructor arguments: enough, with the parameter values, to
  save and rebuild it), ``output_shape(input_shape)`` and ``flops(input_shape)`` for ``summary``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import current, device_name, get_array_module, to_module
from ..errors import ConfigError, DeviceError, DTypeError, NumcnnError, ShapeError, StateError
# the argument checks live in numcnn.validate; layers import them from here as they always have
from ..validate import (check_array, check_bool, check_dtype, check_finite,  # noqa: F401
                        check_finite_number, check_positive_int)

REGISTRY: dict[str, type] = {}


class Parameter:
    """A trainable array ``value`` and its gradient ``grad`` (None until a backward pass)."""

    __slots__ = ("value", "grad", "name")

    def __init__(self, value, name: str = ""):
        self.value = value
        self.grad = None
        self.name = name

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def accumulate(self, g):
        """``grad += g`` (``grad = g`` when there is none yet)."""
        if self.grad is None:
            self.grad = g
        else:
            self.grad += g

    def zero_grad(self):
        self.grad = None

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"


class Layer:
    """Base class of all layers.  Subclasses register themselves by class name for loading."""

    #: names of the parameters, in the order ``parameters()`` returns them
    param_names: tuple = ()
    #: names of non-trainable state arrays that must be saved (batch-norm running statistics)
    buffer_names: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls
        # every layer's backward checks that the gradient it gets has the shape its forward
        # output had, so a wrong gradient is a clear ShapeError, never a raw NumPy error
        if "forward" in cls.__dict__:
            cls.forward = _remember_output_shape(cls.__dict__["forward"])
        if "__init__" in cls.__dict__:
            cls.__init__ = _on_current_backend(cls.__dict__["__init__"])
        if "backward" in cls.__dict__:
            cls.backward = _check_grad_shape(cls.__dict__["backward"])

    # -- the contract -------------------------------------------------------------------------
    def forward(self, x, training=True, layout="NCHW"):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def __call__(self, x, training=True):
        return self.forward(x, training=training)

    # ``layout``: 4-D tensors are (N, C, H, W) for every caller; Sequential passes "CNHW"
    # between its layers (the GEMM's natural layout, see functional/conv.py), and the layers
    # whose maths depends on the channel axis (Conv2D, BatchNorm2D, Flatten) follow it.

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly) that rebuild this layer."""
        return {}

    def output_shape(self, input_shape):
        """Shape of one sample's output for one sample's input shape (no batch axis)."""
        return tuple(input_shape)

    def flops(self, input_shape) -> int:
        """Floating-point operations (multiply and add counted separately) of one sample."""
        return 0

    # -- parameters -----------------------------------------------------------------------------
    def named_parameters(self) -> dict:
        return {n: getattr(self, n) for n in self.param_names if getattr(self, n) is not None}

    def parameters(self) -> list:
        return list(self.named_parameters().values())

    def buffers(self) -> dict:
        return {n: getattr(self, n) for n in self.buffer_names}

    def set_buffer(self, name, value):
        setattr(self, name, value)

    def astype(self, dtype):
        """Cast parameters and buffers to ``dtype`` in place (``float64`` for gradient checks)."""
        for p in self.parameters():
            p.value = p.value.astype(dtype)
            p.grad = None
        for n, b in self.buffers().items():
            self.set_buffer(n, b.astype(dtype))
        return self

    def to(self, xp):
        """Move parameters and buffers to array module ``xp`` (numpy or cupy); gradients are
        dropped when something moves (they would be on the other device)."""
        for p in self.parameters():
            if get_array_module(p.value) is not xp:
                p.value = to_module(p.value, xp)
                p.grad = None
        for n, b in self.buffers().items():
            self.set_buffer(n, to_module(b, xp))
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses -----------------------------------------------------------------
    def _need_cache(self):
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise StateError(f"{self!r}: backward() was called before forward(); run forward(x) "
                             "on a batch first (and don't call backward twice for one forward)")
        self._cache = None
        return cache

    def _check_input(self, x, ndim, what, channels=None, layout="NCHW"):
        """Validate ``x`` at the boundary: array type, rank, channel count, dtype, finiteness.

        Messages always show the (N, C, H, W) shape the user knows, whatever ``layout``.  (Run
        on every layer call: the shape shown and the parameters' details are only worked out
        for a message.)
        """
        check_array(x, self, what)    # the layer itself: its repr is built only on error
        nd = x.ndim
        channel_axis = 0 if layout == "CNHW" and nd == 4 else 1
        if nd not in ((ndim,) if isinstance(ndim, int) else ndim):
            raise ShapeError(f"{self!r}: expected input of shape {what}, got shape "
                             f"{_user_shape(x, channel_axis)} ({nd} dimensions)")
        if channels is not None and x.shape[channel_axis] != channels:
            raise ShapeError(f"{self!r}: expected input of shape {what} with {channels} "
                             f"{'channels' if nd == 4 else 'features'}, got shape "
                             f"{_user_shape(x, channel_axis)} ({x.shape[channel_axis]}); check "
                             "the previous layer's output size or the data's channel count")
        if x.shape[1 - channel_axis if nd == 4 else 0] == 0:
            raise ShapeError(f"{self!r}: got an empty batch (shape {_user_shape(x, channel_axis)})")
        if x.dtype.kind != "f" or x.dtype.itemsize < 4:
            raise DTypeError(f"{self!r}: expected float32 or float64 input, got {x.dtype} "
                             f"(input shape {_user_shape(x, channel_axis)}); "
                             "for raw uint8 images use model.prepare_input(x) (scales and "
                             "normalises them as predict does), else x.astype(numpy.float32)")
        first = self._first_parameter()
        if first is not None:
            if type(first) is not type(x) and get_array_module(first) is not get_array_module(x):
                here, there = (device_name(get_array_module(a)) for a in (first, x))
                move_x = "cupy.asarray(x)" if here == "gpu" else "cupy.asnumpy(x)"
                raise DeviceError(f"{self!r}: the input is on the {there} but the layer's "
                                  f"parameters are on the {here}; move the input ({move_x}) or "
                                  f"the model (model.to({there!r}))")
            if first.dtype != x.dtype:
                raise DTypeError(f"{self!r}: input of shape {_user_shape(x, channel_axis)} is "
                                 f"{x.dtype} but the layer's parameters are "
                                 f"{first.dtype}; numcnn never mixes them silently: cast "
                                 f"the input, or the model with model.astype(numpy.{x.dtype})")
        if getattr(self, "check_finite", True):
            check_finite(x, self, _user_shape(x, channel_axis))

    def _first_parameter(self):
        """The value of the first parameter this layer has (None for a layer without any)."""
        for name in self.param_names:
            p = getattr(self, name)
            if p is not None:
                return p.value
        return None

    def _rng_state(self):
        return None

    def _set_rng_state(self, state):
        pass


def _user_shape(x, channel_axis):
    """``x``'s shape as the user knows it, (N, C, H, W), whatever the internal layout."""
    shape = tuple(x.shape)
    return (shape[1], shape[0]) + shape[2:] if channel_axis == 0 else shape


def _on_current_backend(init):
    """A new layer's parameters live where :func:`numcnn.use` says (NumPy unless "cupy")."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        init(self, *args, **kwargs)
        xp = current()
        if xp is not np and type(self).__init__ is wrapper:      # once, after the whole __init__
            self.to(xp)
    return wrapper


def _remember_output_shape(forward):
    @functools.wraps(forward)
    def wrapper(self, x, training=True, layout="NCHW"):
        check_bool(training, "training", self)
        if layout not in ("NCHW", "CNHW"):
            raise ConfigError(f"{self!r}: layout must be 'NCHW' (or 'CNHW' inside Sequential), got "
                              f"{layout!r}; numcnn's tensors are (N, C, H, W)")
        out = forward(self, x, training, layout)
        self._out_shape, self._out_dtype = tuple(out.shape), out.dtype
        return out
    return wrapper


def _check_grad_shape(backward):
    @functools.wraps(backward)
    def wrapper(self, grad_out):
        expected = getattr(self, "_out_shape", None)
        got = getattr(grad_out, "shape", None)
        if expected is not None and got is not None and tuple(got) != expected:
            raise ShapeError(f"{self!r}: backward() got a gradient of shape {tuple(got)} but the "
                             f"forward output had shape {expected}; pass dL/d(output) of the "
                             "same shape as the output")
        dtype = getattr(self, "_out_dtype", None)
        if dtype is not None and getattr(grad_out, "dtype", dtype) != dtype:
            raise DTypeError(f"{self!r}: backward() got a {grad_out.dtype} gradient for a {dtype} "
                             f"output; numcnn never mixes them silently: pass dL/d(output) as "
                             f"{dtype} (grad.astype(numpy.{dtype}))")
        return backward(self, grad_out)
    return wrapper


def layer_from_config(spec: dict) -> Layer:
    """Rebuild a layer from ``{"type": "Conv2D", ...constructor arguments}``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"a layer description must be a dict with a 'type' key, got {spec!r}")
    kind = spec["type"]
    if not isinstance(kind, str):
        raise ConfigError(f"a layer's 'type' must be a string, got {kind!r}")
    cls = REGISTRY.get(kind)
    if cls is None or kind == "Layer" or kind.startswith("_"):
        raise ConfigError(f"unknown layer type {kind!r}; known types: {', '.join(sorted(k for k in REGISTRY if not k.startswith('_')))}")
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        return cls(**args)
    except NumcnnError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"bad arguments for {kind}: {exc}") from None


def layer_to_config(layer: Layer) -> dict:
    return {"type": type(layer).__name__, **layer.config()}
