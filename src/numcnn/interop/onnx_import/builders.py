"""Builders of the layers that hold no weights: pools, activations, Resize, Softmax, Dropout and
Identity.

(The weighted layers are in :mod:`.weighted`; joins, reshapes and shortcuts in :mod:`.structure`;
shape arithmetic and constant folding in :mod:`.folding`.)
"""
from __future__ import annotations

from ...layers import (ELU, GELU, AvgPool2D, Dropout, Identity, LeakyReLU, MaxPool2D, ReLU,
                       Sigmoid, Softmax, Tanh, Upsample)
from .nodes import _attrs, _Data, _f32_value, _ints, _spatial_pads, builds
from .reader import _Unsupported


def _pool_args(ctx, node, x, allowed):
    a = _attrs(node, {"auto_pad": "NOTSET", "ceil_mode": 0, "kernel_shape": None, "pads": None,
                      "strides": None, "dilations": None, **allowed})
    if len(x.shape) != 3:
        raise _Unsupported(f"pools (N, C, H, W) maps, got (N, {', '.join(map(str, x.shape))})")
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("the Indices output is not supported")
    kernel = _ints(a["kernel_shape"], 2, "kernel_shape")
    stride = _ints(a["strides"] if a["strides"] is not None else [1, 1], 2, "strides")
    dilation = _ints(a["dilations"] if a["dilations"] is not None else [1, 1], 2, "dilations")
    if min(kernel + stride + dilation) < 1:
        raise _Unsupported("kernel_shape, strides and dilations must be >= 1")
    pad = _spatial_pads(a["pads"], a["auto_pad"], x.shape[1:], kernel, stride, dilation)
    if a["ceil_mode"]:
        # ONNX's first opsets and PyTorch disagree about a last window that starts in the
        # padding; accepted where they agree: that window starts inside the input
        sides = pad if isinstance(pad[0], tuple) else tuple((p, p) for p in pad)
        for n, (lo, hi), k, s_, d in zip(x.shape[1:], sides, kernel, stride, dilation):
            out = -(-(n + lo + hi - d * (k - 1) - 1) // s_) + 1
            if (out - 1) * s_ >= n + lo:
                raise _Unsupported("ceil_mode=1 with a last window starting in the padding is "
                                   "not supported")
    return a, tuple(kernel), tuple(stride), pad, tuple(dilation)


@builds("MaxPool")
def _max_pool(ctx, node):
    x = ctx.data(node)
    a, kernel, stride, pad, dilation = _pool_args(ctx, node, x, {"storage_order": 0})
    if a["storage_order"] != 0:
        raise _Unsupported("storage_order=1 is not supported")
    ctx.append(node, x, MaxPool2D(kernel, stride=stride, padding=pad, dilation=dilation,
                                  ceil_mode=bool(a["ceil_mode"])))


@builds("AveragePool")
def _avg_pool(ctx, node):
    x = ctx.data(node)
    a, kernel, stride, pad, dilation = _pool_args(ctx, node, x, {"count_include_pad": 0})
    if dilation != (1, 1):
        raise _Unsupported(f"dilations {list(dilation)} in average pooling are not supported")
    ctx.append(node, x, AvgPool2D(kernel, stride=stride, padding=pad,
                                  ceil_mode=bool(a["ceil_mode"]),
                                  count_include_pad=bool(a["count_include_pad"])))


@builds("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node):
    x = ctx.data(node)
    _attrs(node, {})
    if len(x.shape) != 3:
        raise _Unsupported(f"pools (N, C, H, W) maps, got (N, {', '.join(map(str, x.shape))})")
    kind = AvgPool2D if node.op_type == "GlobalAveragePool" else MaxPool2D
    # the input's size is fixed, so one window of exactly that size is the global pool (a
    # Flatten right after makes it numcnn's GlobalAvgPool2D / GlobalMaxPool2D: see _flat)
    ctx.append(node, x, kind(tuple(x.shape[1:])))


def _elementwise(layer_cls, allowed=None, make=None):
    def build(ctx, node):
        x = ctx.data(node)
        a = _attrs(node, allowed or {})
        ctx.append(node, x, make(a) if make else layer_cls())
    return build


builds("Relu")(_elementwise(ReLU))
builds("Sigmoid")(_elementwise(Sigmoid))
builds("Tanh")(_elementwise(Tanh))
builds("LeakyRelu")(_elementwise(LeakyReLU, {"alpha": 0.01}, lambda a: LeakyReLU(a["alpha"])))
builds("Elu")(_elementwise(ELU, {"alpha": 1.0}, lambda a: ELU(a["alpha"])))


def _gelu_layer(a):
    if a["approximate"] not in ("none", "tanh"):
        raise _Unsupported(f"approximate={a['approximate']!r} is not supported")
    return GELU(a["approximate"])


_gelu = builds("Gelu")(_elementwise(GELU, {"approximate": "none"}, _gelu_layer))     # opset 20


@builds("Resize")
def _resize(ctx, node):
    """Nearest or bilinear upsampling by integer factors, as torch.onnx.export writes
    nn.Upsample(scale_factor=s, mode=...): numcnn's Upsample."""
    x = ctx.data(node)
    a = _attrs(node, {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                      "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75,
                      "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0,
                      "keep_aspect_ratio_policy": "stretch", "axes": None})
    scales = ctx.const(node, 2, "scales", optional=True)
    sizes = ctx.const(node, 3, "sizes", optional=True)
    if len(x.shape) != 3 or a["axes"] is not None or a["exclude_outside"] or a["antialias"]:
        raise _Unsupported("only resizing (N, C, H, W) over all axes is supported")
    if scales is not None and scales.size:
        f = [float(v) for v in scales.reshape(-1)]
    elif sizes is not None and sizes.size == 4:
        want = [int(v) for v in sizes.reshape(-1)]
        f = [1.0, want[1] / x.shape[0], want[2] / x.shape[1], want[3] / x.shape[2]]
    else:
        raise _Unsupported("needs constant scales or sizes")
    if len(f) != 4 or f[:2] != [1.0, 1.0] or any(v < 1 or v != int(v) for v in f[2:]):
        raise _Unsupported(f"only integer upsampling of H and W is supported, got scales {f}")
    # integer factors: "asymmetric" reads input floor(i / s); half_pixel with round_prefer_floor
    # (ONNX's defaults) reads round((i + 0.5) / s - 0.5) = floor(i / s) too for whole s
    ctm = a["coordinate_transformation_mode"]
    factor = (int(f[2]), int(f[3]))
    if a["mode"] == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        # PyTorch's bilinear: half_pixel (pytorch_half_pixel differs only for 1-pixel outputs,
        # which upsampling by whole factors of a non-empty map never makes), or align_corners
        return ctx.append(node, x, Upsample(factor, mode="bilinear",
                                            align_corners=True if ctm == "align_corners" else None))
    ok = a["mode"] == "nearest" and (
        (ctm == "asymmetric" and a["nearest_mode"] == "floor")
        or (ctm == "half_pixel" and a["nearest_mode"] == "round_prefer_floor"))
    if not ok:
        raise _Unsupported(f"mode {a['mode']!r} with {ctm!r} / {a['nearest_mode']!r} is neither "
                           "numcnn's nearest nor its bilinear upsampling")
    ctx.append(node, x, Upsample(factor))


@builds("Softmax")
def _softmax(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"axis": -1 if ctx.opset >= 13 else 1})
    if len(x.shape) != 1 or a["axis"] not in (1, -1):
        raise _Unsupported(f"only softmax over the classes of (N, classes) is supported, got "
                           f"axis {a['axis']} of (N, {', '.join(map(str, x.shape))})")
    ctx.append(node, x, Softmax())


@builds("Dropout")
def _dropout(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"ratio": 0.5, "seed": 0, "is_test": 0})
    ratio = ctx.const(node, 1, "ratio", optional=True)
    training = ctx.const(node, 2, "training_mode", optional=True)
    if training is not None and (training.size != 1 or bool(training.reshape(-1)[0])):
        raise _Unsupported("training_mode=True (dropout at inference) is not supported")
    if len(node.output) > 1 and node.output[1] and ctx.uses.get(node.output[1]):
        raise _Unsupported("the mask output is not supported")
    p = _f32_value(ratio.reshape(-1)[0]) if ratio is not None and ratio.size == 1 else a["ratio"]
    if not 0.0 <= p <= 1.0:
        raise _Unsupported(f"ratio {p} is not a probability")
    ctx.append(node, x, Dropout(p))          # identity in evaluation mode; keeps p for training


@builds("Identity")
def _identity(ctx, node):
    _attrs(node, {})
    value = ctx.values.get(node.input[0]) if len(node.input) == 1 else None
    if value is None:
        raise _Unsupported("needs one input numcnn computed")
    if isinstance(value, _Data):
        ctx.append(node, value, Identity())       # numcnn's Identity layer, exported as this
    else:
        ctx.values[node.output[0]] = value
