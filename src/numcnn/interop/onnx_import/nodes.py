"""What a builder reads from a node, and how builders are registered.

A node's inputs are values of three kinds: *data* (:class:`_Data`, what a chain of numcnn layers
makes of the graph's input), *constants* (numpy arrays) and *shape vectors* (:class:`_Shape`,
which may hold the dynamic batch size ``"N"``).  Its attributes are read with :func:`_attrs`, which
takes the attributes a builder knows with their defaults: any other attribute is unsupported,
never ignored.  :func:`builds` registers a builder for one or more ``op_type`` in
:data:`BUILDERS`; the registered function also records which op wrote each output
(``ctx.producer``), which the builders use to merge a layer into the one before it.
"""
from __future__ import annotations

import math

import numpy as np

from .reader import _short, _Unsupported


# -- the values a node reads ------------------------------------------------------------------------
class _Data:
    """A value computed from the graph input: ``layers`` applied to it; one sample's ``shape``."""

    __slots__ = ("layers", "shape", "last_input")

    def __init__(self, layers, shape, last_input=None):
        self.layers, self.shape = tuple(layers), tuple(shape)
        self.last_input = last_input          # the shape the last layer took, when known


class _Shape:
    """A vector (or scalar) of ints some of which are the batch size ``"N"``."""

    __slots__ = ("vals", "scalar")

    def __init__(self, vals, scalar=False):
        self.vals, self.scalar = list(vals), scalar


# -- attributes -------------------------------------------------------------------------------------
def _f32_value(v):
    """A float32 attribute as the shortest decimal that names it (0.9f -> 0.9, 1e-5f -> 1e-05),
    so eps, momentum and slopes read back as the numbers that were written."""
    return float(str(np.float32(v)))


def _attr_value(a):
    t = a.type
    if t == 1:
        return _f32_value(a.f)
    if t == 2:
        return int(a.i)
    if t == 3:
        return a.s.decode("utf-8", "replace")
    if t == 4:
        return a.t
    if t == 6:
        return [_f32_value(v) for v in a.floats]
    if t == 7:
        return [int(v) for v in a.ints]
    raise _Unsupported(f"attribute {_short(a.name)!r} has a type ({t}) numcnn does not read")


def _attrs(node, allowed):
    """``{name: value}`` with defaults from ``allowed``; unknown attributes are unsupported."""
    out = dict(allowed)
    for a in node.attribute:
        if a.name not in allowed:
            raise _Unsupported(f"attribute {_short(a.name)!r} is not supported")
        out[a.name] = _attr_value(a)
    return out


def _ints(value, n, what):
    if not isinstance(value, list) or len(value) != n or any(v < 0 for v in value):
        raise _Unsupported(f"{what} must be {n} non-negative ints here, got {_short(value)}")
    return value


def _spatial_pads(pads, auto_pad, size, kernel, stride, dilation):
    """numcnn's padding from ONNX ``pads`` ([top, left, bottom, right]) or ``auto_pad``:
    (ph, pw) when symmetric, else ((top, bottom), (left, right))."""
    if auto_pad == "VALID":
        return (0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sides = []
        for n, k, s_, d in zip(size, kernel, stride, dilation):
            total = max((math.ceil(n / s_) - 1) * s_ + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2       # UPPER: the extra one at the end
            sides.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        pads = [sides[0][0], sides[1][0], sides[0][1], sides[1][1]]
    elif auto_pad not in ("NOTSET", ""):
        raise _Unsupported(f"auto_pad {auto_pad!r} is not supported")
    else:
        pads = _ints(pads, 4, "pads") if pads is not None else [0, 0, 0, 0]
    if pads[0] == pads[2] and pads[1] == pads[3]:
        return (pads[0], pads[1])
    return ((pads[0], pads[2]), (pads[1], pads[3]))


# -- the registry: one builder per op_type ---------------------------------------------------------
BUILDERS: dict = {}


def _record_producers(run):
    def wrapped(ctx, node):
        run(ctx, node)
        for name in node.output:
            ctx.producer[name] = node.op_type
    return wrapped


def builds(*op_types):
    """Register the decorated ``builder(ctx, node)`` for ``op_types`` (it is returned unchanged;
    :data:`BUILDERS` holds it wrapped to record the producer of each output it writes)."""
    def register(fn):
        for op in op_types:
            BUILDERS[op] = _record_producers(fn)
        return fn
    return register
