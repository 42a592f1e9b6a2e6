"""Builders of the layers that hold weights: Conv, ConvTranspose, Gemm and MatMul (Dense), and
BatchNormalization (folded into the Conv before it when ``fuse_bn``).

Weights are checked against the layer's parameter shapes and stored as float32, NaN and inf
refused (:func:`_set_param`).
"""
from __future__ import annotations

import numpy as np

from ...layers import BatchNorm1D, BatchNorm2D, Conv2D, ConvTranspose2D, Dense
from .nodes import _attrs, _Data, _ints, _spatial_pads, builds
from .reader import _Unsupported


def _float32(a):
    with np.errstate(over="ignore"):
        a = np.asarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise _Unsupported("weights hold NaN or inf")
    return a


def _set_param(layer, name, value):
    p = getattr(layer, name)
    if tuple(p.value.shape) != tuple(value.shape):
        raise _Unsupported(f"{name} has shape {tuple(value.shape)}, expected {tuple(p.value.shape)}")
    p.value = _float32(value)


@builds("Conv")
def _conv(ctx, node):
    x = ctx.data(node)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias", optional=True)
    a = _attrs(node, {"auto_pad": "NOTSET", "dilations": [1, 1], "group": 1,
                      "kernel_shape": None, "pads": None, "strides": [1, 1]})
    if w.ndim != 4 or len(x.shape) != 3:
        raise _Unsupported(f"only 2-D convolutions of (N, C, H, W) input: weight {w.shape}, "
                           f"input (N, {', '.join(map(str, x.shape))})")
    groups = a["group"]
    if groups < 1 or x.shape[0] % groups or w.shape[0] % groups:
        raise _Unsupported(f"group={groups} does not divide the channels")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise _Unsupported(f"kernel_shape {a['kernel_shape']} disagrees with the weight {w.shape}")
    if w.shape[1] * groups != x.shape[0]:
        raise _Unsupported(f"weight {w.shape} with group={groups} expects {w.shape[1] * groups} "
                           f"input channels, got {x.shape[0]}")
    stride = _ints(a["strides"], 2, "strides")
    dilation = _ints(a["dilations"], 2, "dilations")
    if min(stride + dilation) < 1:
        raise _Unsupported("strides and dilations must be >= 1")
    pad = _spatial_pads(a["pads"], a["auto_pad"], x.shape[1:], w.shape[2:], stride, dilation)
    if b is not None and b.shape != (w.shape[0],):
        raise _Unsupported(f"bias {b.shape} does not fit weight {w.shape}")
    layer = Conv2D(int(x.shape[0]), int(w.shape[0]), tuple(int(k) for k in w.shape[2:]),
                   stride=tuple(stride), padding=pad, dilation=tuple(dilation), groups=groups,
                   bias=b is not None, rng=0)
    _set_param(layer, "weight", w)
    if b is not None:
        _set_param(layer, "bias", b)
    ctx.append(node, x, layer)


@builds("ConvTranspose")
def _conv_transpose(ctx, node):
    x = ctx.data(node)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias", optional=True)
    a = _attrs(node, {"auto_pad": "NOTSET", "dilations": [1, 1], "group": 1, "kernel_shape": None,
                      "output_padding": [0, 0], "pads": None, "strides": [1, 1]})
    if w.ndim != 4 or len(x.shape) != 3:
        raise _Unsupported(f"only 2-D transposed convolutions of (N, C, H, W) input: weight "
                           f"{w.shape}, input (N, {', '.join(map(str, x.shape))})")
    groups = a["group"]
    if a["auto_pad"] not in ("NOTSET", ""):
        raise _Unsupported(f"auto_pad {a['auto_pad']!r} is not supported (give pads)")
    if groups < 1 or w.shape[0] != x.shape[0] or x.shape[0] % groups:
        raise _Unsupported(f"weight {w.shape} with group={groups} does not take {x.shape[0]} "
                           "channels")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise _Unsupported(f"kernel_shape {a['kernel_shape']} disagrees with the weight {w.shape}")
    pads = _ints(a["pads"] if a["pads"] is not None else [0, 0, 0, 0], 4, "pads")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Unsupported(f"asymmetric pads {pads} are not supported in ConvTranspose")
    stride = _ints(a["strides"], 2, "strides")
    dilation = _ints(a["dilations"], 2, "dilations")
    if b is not None and b.shape != (w.shape[1] * groups,):
        raise _Unsupported(f"bias {b.shape} does not fit weight {w.shape}")
    layer = ConvTranspose2D(int(x.shape[0]), int(w.shape[1]) * groups,
                            tuple(int(k) for k in w.shape[2:]), stride=tuple(stride),
                            padding=(pads[0], pads[1]),
                            output_padding=tuple(_ints(a["output_padding"], 2, "output_padding")),
                            groups=groups, bias=b is not None, dilation=tuple(dilation), rng=0)
    _set_param(layer, "weight", w)
    if b is not None:
        _set_param(layer, "bias", b)
    ctx.append(node, x, layer)


def _dense(ctx, node, x, weight, bias):
    """A Dense layer with ``weight`` (out, in) and optional ``bias`` (out,)."""
    if len(x.shape) != 1:
        raise _Unsupported(f"a fully connected layer needs (N, features) input, got "
                           f"(N, {', '.join(map(str, x.shape))}); flatten first")
    if weight.ndim != 2 or weight.shape[1] != x.shape[0]:
        raise _Unsupported(f"weight {weight.shape} does not take {x.shape[0]} features")
    layer = Dense(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None, rng=0)
    _set_param(layer, "weight", weight)
    if bias is not None:
        _set_param(layer, "bias", bias)
    ctx.append(node, x, layer)


def _bias_vector(c, n, what):
    """A bias broadcast to (n,) from shapes (), (1,), (n,), (1, n)."""
    if c.size == 1:
        return np.full(n, c.reshape(()), dtype=np.float32)
    if c.shape in ((n,), (1, n)):
        return c.reshape(n)
    raise _Unsupported(f"{what} of shape {c.shape} does not broadcast to ({n},) as a bias")


@builds("Gemm")
def _gemm(ctx, node):
    x = ctx.data(node)
    b = ctx.const(node, 1, "B (weight)")
    c = ctx.const(node, 2, "C (bias)", optional=True)
    a = _attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if a["transA"] != 0:
        raise _Unsupported("attribute transA=1 is not supported")
    if b.ndim != 2:
        raise _Unsupported(f"B must be 2-D, got {b.shape}")
    weight = np.asarray(b if a["transB"] else b.T, dtype=np.float64)   # (out, in)
    bias = None if c is None else _bias_vector(np.asarray(c, np.float64), weight.shape[0], "C")
    # alpha and beta scale the weights (rounded once, to float32, like every weight)
    if a["alpha"] != 1.0:
        weight = weight * a["alpha"]
    if bias is not None and a["beta"] != 1.0:
        bias = bias * a["beta"]
    _dense(ctx, node, x, weight, bias)


@builds("MatMul")
def _matmul(ctx, node):
    x = ctx.data(node)
    b = ctx.const(node, 1, "B (weight)")
    _attrs(node, {})
    if b.ndim != 2:
        raise _Unsupported(f"only (N, in) x (in, out) with a constant (in, out), got B {b.shape}")
    _dense(ctx, node, x, b.T, None)


@builds("BatchNormalization")
def _batch_norm(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1,
                      "is_test": 1, "consumed_inputs": None})
    if a["training_mode"] or not a["spatial"] or not a["is_test"]:
        raise _Unsupported("only inference-mode, per-channel batch norm (training_mode=0, "
                           "spatial=1) is supported")
    if any(node.output[1:]):
        raise _Unsupported("the running-statistics outputs (training mode) are not supported")
    c = x.shape[0]
    params = [ctx.const(node, i, what) for i, what in
              enumerate(("scale", "B", "mean", "var"), start=1)]
    if any(p.shape != (c,) for p in params):
        raise _Unsupported(f"scale/B/mean/var must be ({c},), got {[p.shape for p in params]}")
    if len(x.shape) not in (1, 3) or not a["epsilon"] > 0:
        raise _Unsupported(f"batch norm of (N, {', '.join(map(str, x.shape))}) with epsilon "
                           f"{a['epsilon']}")
    momentum = min(max(round(1.0 - a["momentum"], 7), 0.0), 1.0)
    prev = x.layers[-1] if x.layers else None
    if ctx.fuse_bn and isinstance(prev, Conv2D) and ctx.producer.get(node.input[0]) == "Conv" \
            and ctx.uses.get(node.input[0]) == 1:
        return _fused(ctx, node, x, prev, params, a["epsilon"])
    layer = (BatchNorm2D if len(x.shape) == 3 else BatchNorm1D)(c, eps=a["epsilon"],
                                                                     momentum=momentum)
    _set_param(layer, "weight", params[0])
    _set_param(layer, "bias", params[1])
    layer.running_mean = _float32(params[2])
    layer.running_var = _float32(params[3])
    if np.any(layer.running_var < 0):
        raise _Unsupported("the running variance has negative values")
    ctx.append(node, x, layer)


def _fused(ctx, node, x, conv, params, eps):
    """Conv then BN as one Conv: w' = w * g/sqrt(var + eps), b' = (b - mean) * g/sqrt(var + eps) + beta
    (computed in float64, rounded once)."""
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
    scale = gamma / np.sqrt(var + eps)
    w = np.asarray(conv.weight.value, np.float64) * scale[:, None, None, None]
    b = np.zeros_like(mean) if conv.bias is None else np.asarray(conv.bias.value, np.float64)
    fused = Conv2D(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                   padding=conv.pads, dilation=conv.dilation, groups=conv.groups, bias=True, rng=0)
    _set_param(fused, "weight", w)
    _set_param(fused, "bias", (b - mean) * scale + beta)
    ctx.set(node, _Data(x.layers[:-1] + (fused,), x.shape, x.last_input))
