"""Builders that shape the chain rather than add a computing layer to it: where two chains meet
(``Add`` -> ``Residual``, ``Concat`` -> ``Concat``, their common prefix being the fork), a
constant added as the bias of the layer before, Flatten and Reshape (flattening, or nothing),
and the subsampling shortcut of ResNets (``Slice`` x[:, :, ::s, ::s] and ``Pad`` of zero
channels).
"""
from __future__ import annotations

import math

import numpy as np

from ...layers import (REGISTRY, ChannelPadShortcut, Conv2D, Dense, Flatten, GlobalAvgPool2D,
                       GlobalMaxPool2D, Identity, MaxPool2D)
from .folding import _fold_axes, _shape_concat
from .nodes import _attrs, _Data, _Shape, builds
from .reader import _Unsupported
from .weighted import _bias_vector, _set_param


@builds("Add")
def _add(ctx, node):
    _attrs(node, {})
    vals = [ctx.values.get(n) for n in node.input]
    if len(vals) != 2:
        raise _Unsupported("needs two inputs")
    datas = [v for v in vals if isinstance(v, _Data)]
    if len(datas) == 2:
        return _residual(ctx, node, *datas)
    if len(datas) == 1 and any(isinstance(v, np.ndarray) for v in vals):
        i = 0 if isinstance(vals[0], _Data) else 1
        return _bias_add(ctx, node, node.input[i], datas[0], vals[1 - i])
    raise _Unsupported("adds values numcnn cannot compute (shape arithmetic on data?)")


def _bias_add(ctx, node, name, x, c):
    """MatMul/Conv followed by Add(constant): the layer's bias (when it has none yet)."""
    layer = x.layers[-1] if x.layers else None
    if ctx.producer.get(name) not in ("MatMul", "Conv") or ctx.uses.get(name) != 1 \
            or layer is None or layer.bias is not None:
        raise _Unsupported("adding a constant is supported only as the bias of the MatMul or Conv "
                           "right before it")
    if isinstance(layer, Dense):
        bias = _bias_vector(np.asarray(c, np.float64), layer.out_features, "the added constant")
        new = Dense(layer.in_features, layer.out_features, bias=True, rng=0)
    else:
        n = layer.out_channels
        if c.size != 1 and c.shape not in ((n, 1, 1), (1, n, 1, 1)):
            raise _Unsupported(f"the added constant {c.shape} is not a per-channel bias")
        bias = _bias_vector(np.asarray(c, np.float64).reshape(-1), n, "the added constant")
        new = Conv2D(layer.in_channels, n, layer.kernel_size, stride=layer.stride,
                     padding=layer.pads, dilation=layer.dilation, groups=layer.groups, bias=True,
                     rng=0)
    new.weight.value = layer.weight.value
    _set_param(new, "bias", bias)
    ctx.set(node, _Data(x.layers[:-1] + (new,), x.shape, x.last_input))


def _split_branches(datas):
    """The longest common chain of layers (by identity), then each branch's own layers."""
    n = 0
    while all(len(d.layers) > n for d in datas) and all(
            d.layers[n] is datas[0].layers[n] for d in datas):
        n += 1
    return datas[0].layers[:n], [d.layers[n:] for d in datas]


def _residual(ctx, node, a, b):
    # a fork joined again: out = body(x) + shortcut(x), both from the value where they split
    residual = REGISTRY.get("Residual")
    if residual is None:
        raise _Unsupported("adding two computed values (a residual connection) needs "
                           "numcnn.layers.Residual, which this numcnn does not have")
    if a.shape != b.shape:
        raise _Unsupported(f"adds shapes {a.shape} and {b.shape} (broadcasting is not supported)")
    common, (body, shortcut) = _split_branches([a, b])
    if not body:
        body, shortcut = shortcut, body
    if not body:
        raise _Unsupported("adds a value to itself (x + x)")
    layer = residual(list(body), list(shortcut) if shortcut else None)
    ctx.set(node, _Data(common + (layer,), a.shape))


@builds("Concat")
def _concat(ctx, node):
    a = _attrs(node, {"axis": None})
    vals = [ctx.values.get(n) for n in node.input]
    if vals and all(isinstance(v, (_Shape, np.ndarray)) for v in vals):
        return _shape_concat(ctx, node, vals, a["axis"])
    if not all(isinstance(v, _Data) for v in vals) or len(vals) < 2:
        raise _Unsupported("concatenates values that are not all computed from the input")
    concat = REGISTRY.get("Concat")
    if concat is None:
        raise _Unsupported("concatenating computed values (branches) needs numcnn.layers.Concat, "
                           "which this numcnn does not have")
    rank = len(vals[0].shape) + 1
    if a["axis"] not in (1, 1 - rank) or any(len(v.shape) != rank - 1 or v.shape[1:] != vals[0].shape[1:]
                                             for v in vals):
        raise _Unsupported(f"only concatenation along channels (axis 1) of equal-sized maps, got "
                           f"axis {a['axis']} of {[v.shape for v in vals]}")
    common, branches = _split_branches(vals)
    layer = concat([list(br) or [Identity()] for br in branches])
    shape = (sum(v.shape[0] for v in vals),) + vals[0].shape[1:]
    ctx.set(node, _Data(common + (layer,), shape))


def _flat(ctx, node, x, start_dim):
    """Flatten(start_dim); right after a global pool (its (N, C, 1, 1) output used only here),
    the two are numcnn's GlobalAvgPool2D / GlobalMaxPool2D, which give (N, C) directly."""
    op = ctx.producer.get(node.input[0])
    if start_dim == 1 and op in ("GlobalAveragePool", "GlobalMaxPool") \
            and ctx.uses.get(node.input[0]) == 1 and x.last_input is not None:
        pool = GlobalAvgPool2D() if op == "GlobalAveragePool" else GlobalMaxPool2D()
        return ctx.set(node, _Data(x.layers[:-1] + (pool,), (x.shape[0],), x.last_input))
    ctx.append(node, x, Flatten(start_dim))


@builds("Flatten")
def _flatten(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"axis": 1})
    if a["axis"] != 1 and not (a["axis"] == -1 and len(x.shape) == 1):
        raise _Unsupported(f"only axis=1 (keep the batch) is supported, got {a['axis']}")
    _flat(ctx, node, x, 1)


@builds("Reshape")
def _reshape(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"allowzero": 0})
    target = ctx.values.get(node.input[1]) if len(node.input) > 1 else None
    if isinstance(target, np.ndarray) and target.dtype.kind in "iu" and target.ndim == 1:
        target = _Shape([int(v) for v in target])
    if not isinstance(target, _Shape) or target.scalar:
        raise _Unsupported("the target shape must be a constant or computed from Shape()")
    dims = ["N", *x.shape]
    want = []
    for i, v in enumerate(target.vals):
        if v == 0 and not a["allowzero"]:
            if i >= len(dims):
                raise _Unsupported(f"target {target.vals}: 0 copies a dimension the input lacks")
            v = dims[i]
        want.append(v)
    if want and ctx.static_batch is not None and want[0] == ctx.static_batch:
        want[0] = "N"                    # a graph exported for one fixed batch size
    if want.count(-1) == 1 and all(isinstance(v, int) for v in want[1:]):
        known = math.prod(v for v in want[1:] if v != -1)
        if want[0] == -1:                # (-1, rest): the batch is what is left
            if known == math.prod(x.shape):
                want[0] = "N"
        elif known and math.prod(x.shape) % known == 0:
            want[want.index(-1)] = math.prod(x.shape) // known
    # Flatten(start_dim=k): keep the batch and k - 1 axes, merge the rest
    for k in range(1, len(dims)):
        if want == dims[:k] + [math.prod(dims[k:])]:
            return _flat(ctx, node, x, k)
    if want == dims:
        ctx.values[node.output[0]] = x            # a reshape to the same shape
        return
    raise _Unsupported(f"reshape of (N, {', '.join(map(str, x.shape))}) to {want}: numcnn "
                       "only flattens trailing axes (N, C, H, W) -> (N, C*H*W) or (N, C, H*W)")


@builds("Pad")
def _pad(ctx, node):
    """Zero channels appended (He et al.'s shortcut A), after an x[:, :, ::s, ::s] Slice or not:
    numcnn's ChannelPadShortcut."""
    x = ctx.data(node)
    a = _attrs(node, {"mode": "constant", "pads": None, "value": 0.0})
    pads = a["pads"] if a["pads"] is not None else ctx.const(node, 1, "pads").reshape(-1).tolist()
    value = ctx.const(node, 2, "constant_value", optional=True)
    value = a["value"] if value is None else (float(value.reshape(-1)[0]) if value.size == 1 else None)
    axes = ctx.const(node, 3, "axes", optional=True)
    if a["mode"] != "constant" or value != 0.0 or axes is not None or len(x.shape) != 3 \
            or len(pads) != 8 or any(p != 0 for i, p in enumerate(pads) if i != 5) or pads[5] < 0:
        raise _Unsupported(f"only zero channels appended (pads [0, 0, 0, 0, 0, k, 0, 0], mode "
                           f"constant, value 0) are supported, got pads {pads}, mode "
                           f"{a['mode']!r}, value {value}")
    prev = x.layers[-1] if x.layers else None
    stride = (1, 1)
    if isinstance(prev, MaxPool2D) and prev.kernel_size == (1, 1) and prev.pads == ((0, 0), (0, 0)) \
            and ctx.producer.get(node.input[0]) == "Slice" and ctx.uses.get(node.input[0]) == 1 \
            and x.last_input is not None:
        stride, x = prev.stride, _Data(x.layers[:-1], x.last_input)
    c = x.shape[0]
    ctx.append(node, x, ChannelPadShortcut(c, c + int(pads[5]), stride))


@builds("Slice")
def _slice(ctx, node):
    """x[:, :, ::sh, ::sw] (a subsampling shortcut) as MaxPool2D(1, stride=(sh, sw)): a 1x1 window
    is its one pixel, and the window count ceil(H / s) is the slice's."""
    x = ctx.data(node)
    _attrs(node, {})
    rank = len(x.shape) + 1
    starts, ends = (ctx.const(node, i, w).reshape(-1).tolist() for i, w in ((1, "starts"), (2, "ends")))
    axes = _fold_axes(ctx, node, {}, rank, 3) or list(range(len(starts)))
    steps = ctx.const(node, 4, "steps", optional=True)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    stride = [1, 1]
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if rank != 4 or ax < 2 or st != 0 or en < x.shape[ax - 1] or sp < 1:
            raise _Unsupported(f"only x[:, :, ::s, ::s] slicing is supported (starts {starts}, "
                               f"ends {ends}, axes {axes}, steps {steps})")
        stride[ax - 2] *= int(sp)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise _Unsupported("starts/ends/axes/steps disagree")
    prev = x.layers[-1] if x.layers else None
    if isinstance(prev, MaxPool2D) and prev.kernel_size == (1, 1) and prev.padding == (0, 0) \
            and ctx.producer.get(node.input[0]) == "Slice" and ctx.uses.get(node.input[0]) == 1 \
            and x.last_input is not None:
        # x[::a][::b] == x[::a*b]: one subsampling layer for consecutive slices
        stride = [stride[0] * prev.stride[0], stride[1] * prev.stride[1]]
        x = _Data(x.layers[:-1], x.last_input)
    ctx.append(node, x, MaxPool2D(1, stride=tuple(stride)))
