"""Values that are not data: constants and shape vectors.

Exporters write shape arithmetic around Reshape (``torch.onnx.export`` writes
``x.view(x.size(0), -1)`` as ``Shape`` -> ``Gather`` -> ``Unsqueeze`` -> ``Concat``): its builders
here follow the batch size ``"N"`` through it.  A node whose inputs are all constants is folded
with numpy (:func:`_fold`, for the ops in :data:`FOLDERS`), every result a small index or shape
vector (at most :data:`MAX_FOLDED` elements, checked before numpy computes anything).
"""
from __future__ import annotations

import math

import numpy as np

from .nodes import _attrs, _Data, _Shape, builds
from .reader import _short, _Unsupported


# -- shape arithmetic (what exporters write around Reshape) ----------------------------------------
@builds("Constant")
def _constant(ctx, node):
    a = _attrs(node, {"value": None, "value_float": None, "value_int": None,
                      "value_floats": None, "value_ints": None})
    given = [k for k, v in a.items() if v is not None]
    if len(given) != 1:
        raise _Unsupported(f"needs exactly one value attribute, got {given}")
    v = a[given[0]]
    if given[0] == "value":
        if not hasattr(v, "dims"):
            raise _Unsupported("attribute 'value' is not a tensor")
        v = ctx.tensors.array(v, f"Constant {_short(node.name)!r}")
    elif given[0] in ("value_float", "value_floats"):
        v = np.asarray(v, np.float32)
    else:
        v = np.asarray(v, np.int64)
    ctx.values[node.output[0]] = v


@builds("Shape")
def _shape(ctx, node):
    a = _attrs(node, {"start": 0, "end": None})
    v = ctx.values.get(node.input[0])
    dims = ["N", *v.shape] if isinstance(v, _Data) else list(getattr(v, "shape", ()))
    if not isinstance(v, (_Data, np.ndarray)):
        raise _Unsupported("the shape of a shape vector is not supported")
    ctx.values[node.output[0]] = _Shape(dims[a["start"]:a["end"]])


def _as_shape(v):
    if isinstance(v, _Shape):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim <= 1:
        return _Shape([int(x) for x in v.reshape(-1)], scalar=v.ndim == 0)
    raise _Unsupported("only integer shape vectors are supported here")


@builds("Gather")
def _gather(ctx, node):
    a = _attrs(node, {"axis": 0})
    data = _as_shape(ctx.values.get(node.input[0]))
    idx = ctx.const(node, 1, "indices")
    if a["axis"] != 0 or data.scalar or idx.ndim > 1 or idx.dtype.kind not in "iu":
        raise _Unsupported("only gathering entries of a shape vector is supported")
    n = len(data.vals)
    picked = []
    for i in idx.reshape(-1).tolist():
        if not -n <= i < n:
            raise _Unsupported(f"index {i} is out of range for a shape of {n} entries")
        picked.append(data.vals[i])
    ctx.values[node.output[0]] = _Shape(picked, scalar=idx.ndim == 0)


@builds("Unsqueeze")
def _unsqueeze(ctx, node):
    a = _attrs(node, {"axes": None})
    axes = a["axes"] if a["axes"] is not None else ctx.const(node, 1, "axes").reshape(-1).tolist()
    v = _as_shape(ctx.values.get(node.input[0]))
    if not v.scalar or list(axes) != [0]:
        raise _Unsupported("only turning a shape entry into a 1-entry vector is supported")
    ctx.values[node.output[0]] = _Shape(v.vals)


@builds("Cast")
def _cast(ctx, node):
    a = _attrs(node, {"to": None, "saturate": 1})
    v = ctx.values.get(node.input[0])
    if isinstance(v, _Shape) and a["to"] in (6, 7):
        ctx.values[node.output[0]] = v
    else:
        raise _Unsupported("only casts of shape vectors to int32/int64 are supported")


def _shape_concat(ctx, node, vals, axis):
    if axis not in (0, -1):
        raise _Unsupported(f"shape vectors concatenate along axis 0, got {axis}")
    parts = [_as_shape(v) for v in vals]
    if any(p.scalar for p in parts):
        raise _Unsupported("cannot concatenate scalars")
    ctx.values[node.output[0]] = _Shape([x for p in parts for x in p.vals])


# -- constant folding: nodes whose inputs are all constants (exporters' shape and pad arithmetic)
#: the most elements one folded constant may have (they are index and shape vectors)
MAX_FOLDED = 1 << 16
_CAST = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def _fold_axes(ctx, node, a, rank, index=1):
    axes = a.get("axes")
    if axes is None and len(node.input) > index and node.input[index]:
        axes = ctx.const(node, index, "axes").reshape(-1).tolist()
    if axes is None:
        return None
    axes = [int(x) + rank if x < 0 else int(x) for x in axes]
    if any(not 0 <= x < rank for x in axes) or len(set(axes)) != len(axes):
        raise _Unsupported(f"axes {axes} out of range for rank {rank}")
    return axes


def _fold_slice(ctx, node, x):
    rank = x.ndim
    starts, ends = (ctx.const(node, i, w).reshape(-1).tolist() for i, w in ((1, "starts"), (2, "ends")))
    axes = _fold_axes(ctx, node, {}, rank, 3) or list(range(len(starts)))
    steps = ctx.const(node, 4, "steps", optional=True)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise _Unsupported("starts/ends/axes/steps disagree")
    index = [slice(None)] * rank
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        index[ax] = slice(int(st), int(en), int(sp))     # numpy clamps like ONNX
    return x[tuple(index)]


def _fold(ctx, node):
    """Evaluate ``node`` with numpy; every result is a small array (shape or index vectors)."""
    op, x = node.op_type, ctx.values[node.input[0]]
    # sizes are checked before numpy computes anything (a broadcast or a gather can multiply them)
    if any(ctx.values[n].size > MAX_FOLDED for n in node.input if n):
        raise _Unsupported(f"folds only constants of at most {MAX_FOLDED:,} elements")
    if op == "ConstantOfShape":
        a = _attrs(node, {"value": None})
        shape = [int(d) for d in x.reshape(-1)]
        if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED:
            raise _Unsupported(f"shape {shape} is negative or too large")
        value = np.zeros(1, np.float32) if a["value"] is None else \
            ctx.tensors.array(a["value"], f"ConstantOfShape {_short(node.name)!r} value")
        if value.size != 1:
            raise _Unsupported("value must hold one element")
        out = np.full(shape, value.reshape(()), dtype=value.dtype)
    elif op == "Concat":
        a = _attrs(node, {"axis": None})
        parts = [ctx.values[n] for n in node.input]
        if a["axis"] is None or any(p.ndim != parts[0].ndim for p in parts) or not parts[0].ndim:
            raise _Unsupported("concatenates arrays of different ranks, or without an axis")
        if sum(p.size for p in parts) > MAX_FOLDED:
            raise _Unsupported("the concatenation is too large to fold")
        out = np.concatenate(parts, axis=a["axis"])
    elif op == "Reshape":
        a = _attrs(node, {"allowzero": 0})
        shape = [int(d) for d in ctx.const(node, 1, "shape").reshape(-1)]
        if not a["allowzero"]:
            shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
        out = x.reshape(shape)
    elif op == "Slice":
        _attrs(node, {})
        out = _fold_slice(ctx, node, x)
    elif op == "Transpose":
        a = _attrs(node, {"perm": None})
        out = np.transpose(x, a["perm"])
    elif op == "Cast":
        a = _attrs(node, {"to": None, "saturate": 1})
        if a["to"] not in _CAST:
            raise _Unsupported(f"cast to data type {a['to']} is not supported")
        out = x.astype(_CAST[a["to"]])
    elif op in ("Unsqueeze", "Squeeze"):
        a = _attrs(node, {"axes": None})
        rank = x.ndim + (len(_fold_axes(ctx, node, a, 99) or []) if op == "Unsqueeze" else 0)
        axes = _fold_axes(ctx, node, a, rank)
        if op == "Unsqueeze":
            out = np.expand_dims(x, tuple(axes or ()))
        else:
            out = np.squeeze(x, axis=None if axes is None else tuple(axes))
    elif op == "Gather":
        a = _attrs(node, {"axis": 0})
        idx = ctx.const(node, 1, "indices")
        axis = a["axis"] + x.ndim if a["axis"] < 0 else a["axis"]
        if idx.dtype.kind not in "iu" or not 0 <= axis < x.ndim or (idx.size and (
                idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis])):
            raise _Unsupported("indices out of range")
        if x.shape[axis] and idx.size * (x.size // x.shape[axis]) > MAX_FOLDED:
            raise _Unsupported("the gathered array is too large to fold")
        out = np.take(x, idx, axis=axis)
    elif op == "Shape":
        a = _attrs(node, {"start": 0, "end": None})
        out = np.asarray(x.shape[a["start"]:a["end"]], np.int64)
    else:                                  # Add, Sub, Mul, Div of equal dtypes
        _attrs(node, {})
        y = ctx.values[node.input[1]] if len(node.input) == 2 else None
        if y is None or x.dtype != y.dtype or (op == "Div" and x.dtype.kind != "f"):
            raise _Unsupported("needs two constants of one float dtype (or ints for Add/Sub/Mul)")
        if math.prod(np.broadcast_shapes(x.shape, y.shape)) > MAX_FOLDED:
            raise _Unsupported("the broadcast result is too large to fold")
        with np.errstate(all="ignore"):
            out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, y)
    if out.size > MAX_FOLDED:
        raise _Unsupported(f"folding gives {out.size:,} elements; numcnn folds at most {MAX_FOLDED:,}")
    ctx.values[node.output[0]] = np.ascontiguousarray(out)


FOLDERS = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
           "Squeeze", "Gather", "Shape", "Add", "Sub", "Mul", "Div"}
