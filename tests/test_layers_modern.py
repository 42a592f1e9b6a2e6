"""The layers of modern CNNs (issue 12) give PyTorch's outputs and gradients.

Grouped/depthwise and "same"/asymmetric-padded Conv2D, ConvTranspose2D, the pools' dilation,
ceil_mode and count_include_pad, global pools, Upsample, ELU/GELU/SiLU, Flatten(start_dim) and
CrossEntropy's weight/ignore_index/reduction: each on randomised shapes, in float64 and float32
at the tolerances of conftest.py, in both layouts a layer sees ("NCHW" from a user, "CNHW" inside
Sequential), with input, weight and bias gradients.  PyTorch has no asymmetric padding, so there
the oracle pads explicitly first (torch.nn.functional.pad) and runs with padding 0.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF

import numcnn
import numcnn.functional as F
from numcnn.errors import ConfigError, ShapeError
from numcnn.layers import (ELU, GELU, AvgPool2D, BatchNorm2D, Conv2D, ConvTranspose2D, Dense,
                           Flatten, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D, ReLU, SiLU,
                           Upsample, layer_from_config, layer_to_config)
from numcnn.losses import CrossEntropy
from conftest import DTYPE_IDS, DTYPES, assert_close, to_numpy, tt

LAYOUTS = ("NCHW", "CNHW")
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _cast(layer, dtype):
    if np.dtype(dtype) == np.float64:
        layer.astype(np.float64)
    return layer


def run_in_layout(layer, x, layout, g_of=None, rng=None, training=True):
    """numcnn forward + backward of an (N, C, H, W) batch, handed over in ``layout``; returns
    ``(y, g, dx)`` in the user's layouts ((N, C, H, W) for 4-D), g random unless given."""
    to = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2, 3))) if layout == "CNHW" \
        else (lambda a: a)
    y = layer.forward(to(x), training=training, layout=layout)
    y_user = to(y) if y.ndim == 4 else y
    g = g_of if g_of is not None else rng.standard_normal(y_user.shape).astype(x.dtype)
    dx = layer.backward(to(g) if y.ndim == 4 else g)
    dx_user = None if dx is None else to(dx)
    return y_user, g, dx_user


def torch_grads(module_fn, x, g, *params):
    """Run ``module_fn(xt)`` in torch and backpropagate ``g``; returns ``(y, dx, [dparams])``."""
    xt = tt(x, True)
    y = module_fn(xt)
    y.backward(tt(g))
    return to_numpy(y), to_numpy(xt.grad), [None if p is None or p.grad is None
                                            else to_numpy(p.grad) for p in params]


def param(a, dtype):
    return torch.nn.Parameter(tt(np.asarray(a, dtype=dtype)))


def assert_layer_matches(layer, x, layout, rng, torch_fn, dtype):
    """Output, dL/dx and every parameter's gradient equal torch's (torch_fn(xt, w, b))."""
    w = param(layer.weight.value, dtype)
    b = param(layer.bias.value, dtype) if layer.bias is not None else None
    y, g, dx = run_in_layout(layer, x, layout, rng=rng)
    ty, tdx, (tdw, tdb) = torch_grads(lambda xt: torch_fn(xt, w, b), x, g, w, b)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, ty, dtype, what="y")
    assert_close(dx, tdx, dtype, what="dx")
    assert_close(layer.weight.grad, tdw, dtype, what="dweight")
    if b is not None:
        assert_close(layer.bias.grad, tdb, dtype, what="dbias")


def torch_pad(xt, pads, value=0.0):
    (t, b), (l, r) = pads
    return TF.pad(xt, (l, r, t, b), value=value)


# -- Conv2D: groups, depthwise, asymmetric and "same" padding --------------------------------------
def random_grouped_conv(seed):
    """groups 1-4 (1 in a fifth of cases, depthwise in another), channels per group 1-3,
    kernel 1-5, stride 1-3, dilation 1-2, padding an int, a pair, ((t, b), (l, r)), "valid" or
    "same" (stride 1), images just big enough and up to 6 larger."""
    r = np.random.default_rng(120_000 + seed)
    groups = int(r.integers(1, 5))
    cg, og = (int(v) for v in r.integers(1, 4, size=2))
    if seed % 5 == 0:
        groups = 1
    if seed % 5 == 1:                                    # depthwise, channel multiplier og
        cg = 1
    k = tuple(int(v) for v in r.integers(1, 6, size=2))
    d = tuple(int(v) for v in r.integers(1, 3, size=2))
    s = tuple(int(v) for v in r.integers(1, 4, size=2))
    form = ["int", "pair", "asym", "valid", "same"][seed % 5 if seed % 3 else (seed // 3) % 5]
    if form == "same":
        s = (1, 1)
    padding = {"int": int(r.integers(0, 3)), "pair": tuple(int(v) for v in r.integers(0, 3, 2)),
               "asym": tuple(tuple(int(v) for v in r.integers(0, 4, 2)) for _ in range(2)),
               "valid": "valid", "same": "same"}[form]
    pads = F.pads4((padding,) * 2 if isinstance(padding, int) else padding) \
        if form in ("int", "pair", "asym") else None
    if form == "same":
        pads = tuple((dd * (kk - 1) // 2, dd * (kk - 1) - dd * (kk - 1) // 2) for kk, dd in zip(k, d))
    if form == "valid":
        pads = ((0, 0), (0, 0))
    hw = tuple(max(1, d[i] * (k[i] - 1) + 1 - sum(pads[i])) + int(r.integers(0, 7)) for i in range(2))
    return dict(n=int(r.integers(1, 4)), c=groups * cg, o=groups * og, groups=groups, k=k, s=s,
                d=d, padding=padding, pads=pads, hw=hw, bias=bool(r.random() < 0.8), rng=r,
                layout=LAYOUTS[seed % 2])


N_CONV = 48


def test_random_grouped_conv_cases_cover_every_option():
    cases = [random_grouped_conv(s) for s in range(N_CONV)]
    assert {c["groups"] for c in cases} == {1, 2, 3, 4}
    assert any(c["groups"] == c["c"] > 1 for c in cases)                    # depthwise
    assert {type(c["padding"]).__name__ for c in cases} >= {"int", "tuple", "str"}
    assert {c["padding"] for c in cases if isinstance(c["padding"], str)} == {"same", "valid"}
    assert any(c["pads"][0][0] != c["pads"][0][1] for c in cases)           # asymmetric
    assert any(c["padding"] == "same" and any((dd * (kk - 1)) % 2 for kk, dd in zip(c["k"], c["d"]))
               for c in cases)                                              # odd "same" total
    assert {c["layout"] for c in cases} == set(LAYOUTS)
    assert {v for c in cases for v in c["s"]} == {1, 2, 3}
    assert {v for c in cases for v in c["d"]} == {1, 2}


@pytest.mark.filterwarnings("ignore:Using padding='same'")   # torch's note on its own copy
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_CONV))
def test_conv2d_groups_dilation_stride_and_padding_forms_match_torch(seed, dtype):
    cs = random_grouped_conv(seed)
    layer = _cast(Conv2D(cs["c"], cs["o"], cs["k"], stride=cs["s"], padding=cs["padding"],
                         dilation=cs["d"], groups=cs["groups"], bias=cs["bias"], rng=seed,
                         init="torch_default"), dtype)
    assert layer.weight.shape == (cs["o"], cs["c"] // cs["groups"]) + cs["k"]
    x = cs["rng"].standard_normal((cs["n"], cs["c"]) + cs["hw"]).astype(dtype)

    def oracle(xt, w, b):
        if cs["padding"] == "same":        # PyTorch's own "same", not our arithmetic
            return TF.conv2d(xt, w, b, 1, "same", cs["d"], cs["groups"])
        return TF.conv2d(torch_pad(xt, cs["pads"]), w, b, cs["s"], 0, cs["d"], cs["groups"])
    assert_layer_matches(layer, x, cs["layout"], cs["rng"], oracle, dtype)
    assert layer.output_shape(x.shape[1:])[1:] == layer._out_shape[2:]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_separable_block_matches_torch(layout, rng):
    """MobileNet's block: a 3x3 depthwise conv (groups = channels) then a 1x1 pointwise one."""
    dw = Conv2D(8, 8, 3, stride=2, padding=1, groups=8, bias=False, rng=1).astype(np.float64)
    pw = Conv2D(8, 16, 1, rng=2).astype(np.float64)
    x = rng.standard_normal((3, 8, 9, 10))
    w1, w2, b2 = (param(a, np.float64) for a in (dw.weight.value, pw.weight.value, pw.bias.value))
    to = (lambda a: a.transpose(1, 0, 2, 3).copy()) if layout == "CNHW" else (lambda a: a)
    y = to(pw.forward(dw.forward(to(x), layout=layout), layout=layout))
    g = rng.standard_normal(y.shape)
    dx = to(dw.backward(pw.backward(to(g))))
    ty, tdx, (g1, g2, gb) = torch_grads(
        lambda xt: TF.conv2d(TF.conv2d(xt, w1, None, 2, 1, 1, 8), w2, b2), x, g, w1, w2, b2)
    assert y.shape == (3, 16, 5, 5)
    for a, e, what in ((y, ty, "y"), (dx, tdx, "dx"), (dw.weight.grad, g1, "depthwise dW"),
                       (pw.weight.grad, g2, "pointwise dW"), (pw.bias.grad, gb, "db")):
        assert_close(a, e, np.float64, what=what)


def test_same_padding_keeps_the_size_and_puts_the_odd_row_at_the_bottom_right():
    layer = Conv2D(1, 1, (2, 4), padding="same", bias=False, dtype="float64")
    assert layer.pads == ((0, 1), (1, 2))                 # totals 1 and 3: extra at the end
    assert layer.padding == ((0, 1), (1, 2))
    assert Conv2D(1, 1, 3, padding="same", dilation=2).padding == (2, 2)
    layer.weight.value[...] = 0
    layer.weight.value[0, 0, 0, 0] = 1.0                  # picks the window's top-left tap
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    y = layer.forward(x)
    assert y.shape == x.shape
    # out[y, x] = x_pad[y + 0, x + 0] = x[y - 0, x - 1] (one column of padding on the left)
    assert np.array_equal(y[0, 0, :, 1:], x[0, 0, :, :-1]) and not y[0, 0, :, 0].any()


def test_grouped_conv_keeps_the_fast_path_and_backward_routes_for_groups_1(monkeypatch):
    """groups=1 still runs one plain GEMM per block (no batched matmul) with the bias folded
    in, and the conv-route dL/dI where it applied before."""
    calls = []
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = Conv2D(4, 4, 3, padding=1, rng=0)
    y = layer.forward(np.ones((2, 4, 6, 6), np.float32))
    layer.backward(np.ones_like(y))
    assert calls == []
    grouped = Conv2D(4, 4, 3, padding=1, groups=2, rng=0)
    grouped.backward(np.ones_like(grouped.forward(np.ones((2, 4, 6, 6), np.float32))))
    assert calls                                   # the batched GEMM is what groups use


# -- ConvTranspose2D -----------------------------------------------------------------------------
def random_conv_transpose(seed):
    r = np.random.default_rng(130_000 + seed)
    groups = int(r.integers(1, 4)) if seed % 3 else 1
    cg, og = (int(v) for v in r.integers(1, 4, size=2))
    k = tuple(int(v) for v in r.integers(1, 5, size=2))
    s = tuple(int(v) for v in r.integers(1, 4, size=2))
    d = tuple(int(v) for v in r.integers(1, 3, size=2))
    p = tuple(int(r.integers(0, (d[i] * (k[i] - 1)) // 2 + 1)) for i in range(2))
    op = tuple(int(r.integers(0, max(s[i], d[i]))) for i in range(2))
    hw = tuple(int(v) for v in r.integers(1, 7, size=2))
    return dict(n=int(r.integers(1, 4)), cin=groups * cg, cout=groups * og, groups=groups, k=k,
                s=s, d=d, p=p, op=op, hw=hw, bias=bool(r.random() < 0.8), rng=r,
                layout=LAYOUTS[seed % 2])


N_CONVT = 40


def test_random_conv_transpose_cases_cover_every_option():
    cases = [random_conv_transpose(s) for s in range(N_CONVT)]
    assert {c["groups"] for c in cases} == {1, 2, 3}
    assert {v for c in cases for v in c["s"]} == {1, 2, 3}
    assert {v for c in cases for v in c["d"]} == {1, 2}
    assert any(max(c["op"]) > 0 for c in cases) and any(max(c["p"]) > 0 for c in cases)
    assert any(o >= s for c in cases for o, s in zip(c["op"], c["s"]))   # op >= stride (< dilation)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_CONVT))
def test_conv_transpose2d_matches_torch_random_shapes(seed, dtype):
    cs = random_conv_transpose(seed)
    layer = _cast(ConvTranspose2D(cs["cin"], cs["cout"], cs["k"], stride=cs["s"], padding=cs["p"],
                                  output_padding=cs["op"], groups=cs["groups"], bias=cs["bias"],
                                  dilation=cs["d"], rng=seed, init="torch_default"), dtype)
    assert layer.weight.shape == (cs["cin"], cs["cout"] // cs["groups"]) + cs["k"]
    x = cs["rng"].standard_normal((cs["n"], cs["cin"]) + cs["hw"]).astype(dtype)
    assert_layer_matches(layer, x, cs["layout"], cs["rng"], lambda xt, w, b: TF.conv_transpose2d(
        xt, w, b, cs["s"], cs["p"], cs["op"], cs["groups"], cs["d"]), dtype)
    out = layer.output_shape(x.shape[1:])
    assert out == (layer._out_shape[1:] if cs["layout"] == "NCHW"
                   else (layer._out_shape[0],) + layer._out_shape[2:])


def test_conv_transpose2d_default_init_matches_torch_statistics():
    """PyTorch's fan_in for a transposed conv weight (in, out/g, kh, kw) is out/g * kh * kw."""
    layer = ConvTranspose2D(64, 8, 4, init="torch_default", rng=0)
    bound = 1 / math.sqrt(8 * 16)
    assert np.abs(layer.weight.value).max() <= bound and np.abs(layer.weight.value).max() > 0.9 * bound


def test_conv_transpose_forward_is_the_conv_input_gradient(rng):
    """The deck's dL/dI of a strided conv, taken as a layer: the same numbers."""
    conv = Conv2D(3, 5, 3, stride=2, padding=1, bias=False, dtype="float64", rng=1)
    x = rng.standard_normal((2, 3, 9, 9))
    g = rng.standard_normal(conv.forward(x).shape)
    dx = conv.backward(g)
    up = ConvTranspose2D(5, 3, 3, stride=2, padding=1, bias=False, dtype="float64")
    up.weight.value[...] = conv.weight.value
    assert np.allclose(up.forward(g), dx, rtol=1e-13, atol=1e-13)


# -- pooling options -------------------------------------------------------------------------------
def random_pool(seed):
    r = np.random.default_rng(140_000 + seed)
    kind = "max" if seed % 2 else "avg"
    k = tuple(int(v) for v in r.integers(1, 5, size=2))
    s = tuple(int(v) for v in r.integers(1, 4, size=2))
    d = tuple(int(v) for v in r.integers(1, 3, size=2)) if kind == "max" else (1, 1)
    symmetric = seed % 4 != 3
    if symmetric:
        padding = tuple(int(r.integers(0, kk // 2 + 1)) for kk in k)
        pads = tuple((p, p) for p in padding)
    else:
        pads = tuple(tuple(int(v) for v in r.integers(0, kk // 2 + 1, size=2)) for kk in k)
        padding = pads
    ceil = bool(r.random() < 0.6) if symmetric else False
    cip = bool(r.random() < 0.5)
    hw = tuple(max(1, d[i] * (k[i] - 1) + 1 - sum(pads[i])) + int(r.integers(0, 6)) for i in range(2))
    if kind == "max" and d != (1, 1):
        hw = tuple(max(h, d[i] * (k[i] - 1) + 1) for i, h in enumerate(hw))   # no all-pad window
    return dict(kind=kind, k=k, s=s, d=d, padding=padding, pads=pads, ceil=ceil, cip=cip,
                hw=hw, n=int(r.integers(1, 3)), c=int(r.integers(1, 4)), rng=r,
                layout=LAYOUTS[(seed // 2) % 2])


N_POOL = 64


def test_random_pool_cases_cover_every_option():
    cases = [random_pool(s) for s in range(N_POOL)]
    overhang = 0
    for c in cases:
        _, full = F.pool._geometry((1, 1) + c["hw"], c["k"], c["s"], c["pads"], c["d"], c["ceil"])
        overhang += full != c["pads"]
    assert overhang >= 5                                   # ceil_mode windows over the edge
    assert {c["ceil"] for c in cases} == {True, False} and {c["cip"] for c in cases} == {True, False}
    assert any(c["pads"][0][0] != c["pads"][0][1] or c["pads"][1][0] != c["pads"][1][1]
               for c in cases)
    assert any(c["kind"] == "max" and max(c["d"]) == 2 for c in cases)
    assert {c["layout"] for c in cases} == set(LAYOUTS)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_POOL))
def test_pools_with_ceil_mode_dilation_count_include_pad_and_padding_forms_match_torch(seed, dtype):
    cs = random_pool(seed)
    x = cs["rng"].standard_normal((cs["n"], cs["c"]) + cs["hw"]).astype(dtype)
    symmetric = all(a == b for a, b in cs["pads"])
    sym = tuple(a for a, _ in cs["pads"])
    if cs["kind"] == "max":
        layer = MaxPool2D(cs["k"], cs["s"], cs["padding"], cs["d"], cs["ceil"])

        def oracle(xt):
            if symmetric:
                return TF.max_pool2d(xt, cs["k"], cs["s"], sym, cs["d"], ceil_mode=cs["ceil"])
            return TF.max_pool2d(torch_pad(xt, cs["pads"], -math.inf), cs["k"], cs["s"], 0, cs["d"])
    else:
        layer = AvgPool2D(cs["k"], cs["s"], cs["padding"], cs["ceil"], cs["cip"])

        def oracle(xt):
            if symmetric:
                return TF.avg_pool2d(xt, cs["k"], cs["s"], sym, ceil_mode=cs["ceil"],
                                     count_include_pad=cs["cip"])
            total = TF.avg_pool2d(torch_pad(xt, cs["pads"]), cs["k"], cs["s"], 0)
            if cs["cip"]:
                return total
            # the mean over the real pixels only: divide by the share of them in each window
            ones = torch_pad(torch.ones_like(xt), cs["pads"])
            return total / TF.avg_pool2d(ones, cs["k"], cs["s"], 0)
    y, g, dx = run_in_layout(layer, x, cs["layout"], rng=cs["rng"])
    ty, tdx, _ = torch_grads(oracle, x, g)
    assert_close(y, ty, dtype, what="y")
    assert_close(dx, tdx, dtype, what="dx")
    assert layer.output_shape(x.shape[1:]) == y.shape[1:]


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_ceil_mode_drops_a_last_window_that_would_start_in_the_right_padding(kind):
    """PyTorch's rule: H=5, k=2, s=2, p=1 gives ceil((5+2-2)/2)+1 = 4 windows, but the 4th
    would start at padded row 6 >= 5+1, inside the right padding: so 3."""
    layer = (MaxPool2D if kind == "max" else AvgPool2D)(2, 2, 1, ceil_mode=True)
    assert layer.output_shape((1, 5, 5)) == (1, 3, 3)
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    f = TF.max_pool2d if kind == "max" else TF.avg_pool2d
    assert tuple(f(tt(x), 2, 2, 1, ceil_mode=True).shape[2:]) == (3, 3)
    assert MaxPool2D(2, 2, 0, ceil_mode=True).output_shape((1, 5, 5)) == (1, 3, 3)


def test_avg_pool_hand_computed_count_include_pad_false_and_ceil_overhang():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    # 2x2 windows, stride 2, ceil_mode: the windows over the last row/column are 1-wide
    y = AvgPool2D(2, ceil_mode=True).forward(x)
    assert np.array_equal(y[0, 0], [[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9]])
    # padding 1, count_include_pad=False: the corner window holds one real pixel
    y = AvgPool2D(2, 2, 1, count_include_pad=False).forward(x)
    assert y[0, 0, 0, 0] == 1 and y[0, 0, 1, 1] == (5 + 6 + 8 + 9) / 4
    assert AvgPool2D(2, 2, 1).forward(x)[0, 0, 0, 0] == 1 / 4


@pytest.mark.parametrize("training", [True, False])
def test_max_pool_ties_with_padding_and_ceil_mode_route_like_torch(training):
    r = np.random.default_rng(4)
    x = r.integers(-1, 2, size=(2, 3, 7, 6)).astype(np.float64)
    layer = MaxPool2D(3, 2, 1, ceil_mode=True)
    y = layer.forward(x, training=training)
    g = r.integers(-3, 4, size=y.shape).astype(np.float64)
    dx = layer.backward(g)
    ty, tdx, _ = torch_grads(lambda xt: TF.max_pool2d(xt, 3, 2, 1, ceil_mode=True), x, g)
    assert np.array_equal(y, ty) and np.array_equal(dx, tdx)


# -- global pools, Upsample --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hw", [(1, 1), (3, 7), (8, 8)])
def test_global_pools_match_torch_for_any_size(hw, layout, dtype, rng):
    x = rng.integers(-2, 3, size=(3, 4) + hw).astype(dtype)         # ties for the max
    x += (rng.standard_normal(x.shape) * 0.1).astype(dtype) * (rng.random(x.shape) < 0.5)
    for layer, fn in ((GlobalAvgPool2D(), lambda xt: TF.adaptive_avg_pool2d(xt, 1).flatten(1)),
                      (GlobalMaxPool2D(), lambda xt: TF.adaptive_max_pool2d(xt, 1).flatten(1))):
        y, g, dx = run_in_layout(layer, x, layout, rng=rng)
        ty, tdx, _ = torch_grads(fn, x, g)
        assert y.shape == (3, 4) and layer.output_shape((4,) + hw) == (4,)
        assert_close(y, ty, dtype, what=f"{layer!r} y")
        assert_close(dx, tdx, dtype, what=f"{layer!r} dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3), (4, 1)])
@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("bilinear", None),
                                                ("bilinear", True)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_upsample_matches_torch(scale, mode, align_corners, layout, dtype, rng):
    shape = (2, 3, 4, 5) if scale != 3 else (1, 2, 1, 3)        # a 1-pixel-high map too
    x = rng.standard_normal(shape).astype(dtype)
    layer = Upsample(scale, mode, align_corners)
    y, g, dx = run_in_layout(layer, x, layout, rng=rng)
    sf = scale if isinstance(scale, int) else tuple(float(v) for v in scale)
    ty, tdx, _ = torch_grads(lambda xt: nn.Upsample(scale_factor=sf, mode=mode,
                                                    align_corners=align_corners)(xt), x, g)
    if mode == "nearest":
        assert np.array_equal(y, ty)
    assert_close(y, ty, dtype, what="y")
    assert_close(dx, tdx, dtype, what="dx")
    assert layer.output_shape(shape[1:]) == y.shape[1:]


# -- activations, erf, Flatten --------------------------------------------------------------------
ACTIVATIONS = [
    ("ELU", ELU, nn.ELU), ("ELU0.5", lambda: ELU(0.5), lambda: nn.ELU(0.5)),
    ("GELU", GELU, nn.GELU), ("GELU-tanh", lambda: GELU("tanh"), lambda: nn.GELU("tanh")),
    ("SiLU", SiLU, nn.SiLU),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,make,make_torch", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("shape", [(4, 9), (2, 3, 6, 5)])
def test_modern_activations_match_torch(name, make, make_torch, dtype, shape, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.flat[:6] = [0.0, -40.0, 40.0, 1e-8, -6.5, 0.8]       # zero, tails, tiny, erf's ranges
    y, g, dx = run_in_layout(make(), x, "CNHW" if len(shape) == 4 else "NCHW", rng=rng)
    ty, tdx, _ = torch_grads(make_torch(), x, g)
    assert_close(y, ty, dtype, what="y")
    assert_close(dx, tdx, dtype, what="dx")


def test_leaky_relu_name_and_default_slope_are_pytorchs():
    assert numcnn.layers.LeakyReLU().negative_slope == nn.LeakyReLU().negative_slope == 0.01


def test_erf_is_accurate_to_float64_round_off():
    r = np.random.default_rng(0)
    x = np.concatenate([r.standard_normal(20000) * 2, r.uniform(-7, 7, 20000),
                        [0.0, -0.0, 1e-300, 0.84375, 1.25, 1 / 0.35, 6.0, -6.0, 27.0, np.inf,
                         -np.inf, np.nextafter(0.84375, 0), np.nextafter(1.25, 0)]])
    ref = np.array([math.erf(v) for v in x])
    got = F.erf(x)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(float).tiny)
    assert rel.max() <= 2.3e-16, rel.max()                  # within one ulp
    assert np.isnan(F.erf(np.array([np.nan]))).all()
    assert F.erf(x.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("start_dim", [1, 2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_flatten_start_dim_matches_torch(start_dim, layout, rng):
    x = rng.standard_normal((3, 4, 2, 5))
    layer = Flatten(start_dim)
    y, g, dx = run_in_layout(layer, x, layout, rng=rng)
    ty, tdx, _ = torch_grads(nn.Flatten(start_dim), x, g)
    assert np.array_equal(y, ty) and np.array_equal(dx, tdx)
    assert layer.output_shape((4, 2, 5)) == y.shape[1:]


# -- CrossEntropy ------------------------------------------------------------------------------
CE_OPTIONS = [dict(label_smoothing=ls, weight=w, ignore_index=ii, reduction=red)
              for ls in (0.0, 0.15) for w in (None, "w") for ii in (None, 2)
              for red in ("mean", "sum", "none")]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_cross_entropy_options_match_torch(opts, dtype, rng):
    n, k = 9, 5
    logits = (3 * rng.standard_normal((n, k))).astype(dtype)
    labels = rng.integers(0, k, n)
    labels[:3] = [2, 2, 0]                                   # some ignored when ignore_index=2
    weight = rng.uniform(0.2, 3.0, k) if opts["weight"] == "w" else None
    loss = CrossEntropy(opts["label_smoothing"], weight, opts["ignore_index"], opts["reduction"])
    got = loss.forward(logits, labels)
    zt = tt(logits, True)
    ref = TF.cross_entropy(zt, torch.from_numpy(labels),
                           weight=None if weight is None else tt(weight.astype(dtype)),
                           ignore_index=-100 if opts["ignore_index"] is None else opts["ignore_index"],
                           reduction=opts["reduction"], label_smoothing=opts["label_smoothing"])
    if opts["reduction"] == "none":
        g = rng.standard_normal(n).astype(dtype)
        assert isinstance(got, np.ndarray) and got.dtype == dtype
        assert_close(got, ref, dtype, what="losses")
        dz = loss.backward(g)
        ref.backward(tt(g))
    else:
        assert isinstance(got, float)
        assert_close(np.asarray(got, dtype=dtype), ref, dtype, what="loss")
        dz = loss.backward(2.5)
        (2.5 * ref).backward()
    assert dz.dtype == dtype
    assert_close(dz, zt.grad, dtype, what="dL/dz")


def test_cross_entropy_all_ignored_batch_is_zero_loss_and_zero_gradient():
    loss = CrossEntropy(ignore_index=-100)
    assert loss.forward(np.ones((3, 4)), np.full(3, -100)) == 0.0
    assert not loss.backward().any()


def test_cross_entropy_default_keeps_the_fused_path_and_its_config():
    loss = CrossEntropy()
    assert loss._plain and loss.config() == {"label_smoothing": 0.0} and repr(loss) == "CrossEntropy()"
    full = CrossEntropy(0.1, [1, 2], 255, "sum")
    assert full.config() == {"label_smoothing": 0.1, "weight": [1.0, 2.0], "ignore_index": 255,
                             "reduction": "sum"}
    assert CrossEntropy(**full.config()).config() == full.config()


# -- configs, model files, summaries -------------------------------------------------------------
NEW_LAYERS = [
    Conv2D(4, 6, 3, padding="same", groups=2, dilation=2),
    Conv2D(4, 4, (2, 3), padding=((0, 1), (1, 1)), groups=4, bias=False),
    Conv2D(4, 8, 3, stride=2, padding="valid"),
    ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1),
    MaxPool2D(3, 2, ((1, 0), (0, 1)), dilation=1, ceil_mode=True),
    MaxPool2D(2, 1, 1, dilation=2),
    AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
    GlobalAvgPool2D(), GlobalMaxPool2D(), Upsample((2, 3)), Upsample(2, "bilinear", True),
    ELU(0.5), GELU("tanh"), SiLU(),
    Flatten(2),
]


@pytest.mark.parametrize("layer", NEW_LAYERS, ids=repr)
def test_new_layers_config_round_trips_through_json(layer):
    spec = json.loads(json.dumps(layer_to_config(layer)))
    again = layer_from_config(spec)
    assert type(again) is type(layer) and again.config() == layer.config() and repr(again) == repr(layer)
    for name, p in layer.named_parameters().items():
        assert again.named_parameters()[name].shape == p.shape


@pytest.mark.parametrize("layer", NEW_LAYERS, ids=repr)
def test_new_layers_output_shape_matches_forward(layer):
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 8)).astype(np.float32)
    assert layer.forward(x).shape[1:] == layer.output_shape((4, 9, 8))


def test_configs_written_before_this_change_still_load():
    """Old model files name only the old arguments: the new ones take PyTorch's defaults."""
    old = {"layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": [3, 3],
         "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "bias": True},
        {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]},
        {"type": "AvgPool2D", "kernel_size": [2, 2], "stride": [1, 1], "padding": [1, 1]},
        {"type": "Flatten"}, {"type": "Dense", "in_features": 100, "out_features": 3}],
        "input_shape": [1, 8, 8]}
    model = numcnn.Sequential.from_config(old)
    conv, mp, ap, fl = model.layers[:4]
    assert conv.groups == 1 and conv.pads == ((1, 1), (1, 1)) and conv.weight.shape == (4, 1, 3, 3)
    assert mp.ceil_mode is False and mp.dilation == (1, 1)
    assert ap.count_include_pad is True and fl.start_dim == 1
    assert model.forward(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 3)


def test_model_file_with_new_layers_round_trips_and_old_metadata_still_loads(tmp_path):
    from numcnn import io as nio
    model = numcnn.Sequential([
        Conv2D(3, 8, 3, padding="same", rng=1), BatchNorm2D(8), ReLU(),
        Conv2D(8, 8, 3, stride=2, padding=((0, 1), (0, 1)), groups=8, rng=2), ELU(),
        ConvTranspose2D(8, 4, 2, stride=2, rng=3), GELU(), MaxPool2D(3, 2, 1, ceil_mode=True),
        AvgPool2D(2, 1, 1, count_include_pad=False), Upsample(2), SiLU(), GlobalAvgPool2D(),
        Dense(4, 3, rng=4)], input_shape=(3, 9, 9))
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    model.save(tmp_path / "m.safetensors")
    loaded = numcnn.load(tmp_path / "m.safetensors")
    assert np.array_equal(loaded.predict(x), model.predict(x))
    # a model of the old layers, in a file as an older numcnn wrote it: none of the new keys
    old = numcnn.Sequential([Conv2D(3, 4, 3, padding=1, rng=1), ReLU(), MaxPool2D(2),
                             AvgPool2D(3, 1, 1), Flatten(), Dense(4 * 4 * 4, 3, rng=2)],
                            input_shape=(3, 9, 9))
    meta = nio.model_metadata(old)
    arch = json.loads(meta["architecture"])
    new_keys = {"groups", "ceil_mode", "count_include_pad", "start_dim"}
    assert {k for spec in arch["layers"] for k in spec} & new_keys == new_keys
    for spec in arch["layers"]:
        for k in new_keys | ({"dilation"} if spec["type"] == "MaxPool2D" else set()):
            spec.pop(k, None)
    meta["architecture"] = json.dumps(arch)
    (tmp_path / "old.safetensors").write_bytes(nio.encode_safetensors(nio.model_tensors(old), meta))
    again = numcnn.load(tmp_path / "old.safetensors")
    assert [layer_to_config(a) for a in again.layers] == [layer_to_config(b) for b in old.layers]
    assert np.array_equal(again.predict(x), old.predict(x))


def test_summary_counts_grouped_parameters_and_flops():
    model = numcnn.Sequential([Conv2D(8, 16, 3, padding=1, groups=4), ConvTranspose2D(16, 8, 2, 2),
                               GlobalAvgPool2D(), Dense(8, 2)], input_shape=(8, 6, 6))
    text = model.summary()
    conv_p = 16 * (8 // 4) * 9 + 16
    convt_p = 16 * 8 * 4 + 8
    assert f"{conv_p + convt_p + 8 * 2 + 2:,} parameters" in text
    assert model.layers[0].flops((8, 6, 6)) == 2 * (2 * 9) * 16 * 36 + 16 * 36
    assert model.layers[1].flops((16, 6, 6)) == 2 * 16 * 36 * (8 * 4) + 8 * 144
    assert [s for _, s in model.shapes()] == [(16, 6, 6), (8, 12, 12), (8,), (2,)]


# -- a whole model: torch parity inside Sequential (CNHW between layers) and gradcheck ----------
def _small_modern_net(rng_seed=0):
    return numcnn.Sequential([
        Conv2D(2, 4, 3, padding="same", rng=rng_seed), GELU(),
        Conv2D(4, 4, 3, stride=2, padding=1, groups=4, rng=rng_seed + 1), SiLU(),
        ConvTranspose2D(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2, rng=rng_seed + 2),
        ELU(), MaxPool2D(3, 2, 1, ceil_mode=True), AvgPool2D(2, 1, 1, count_include_pad=False),
        Upsample(2, "bilinear"), Conv2D(4, 3, 2, padding=((0, 1), (1, 0)), rng=rng_seed + 3),
        GlobalAvgPool2D(), Dense(3, 3, rng=rng_seed + 4)], input_shape=(2, 6, 6))


def test_a_sequential_of_new_layers_matches_the_same_torch_model(rng):
    model = _small_modern_net().astype(np.float64)
    L = model.layers
    p = {i: [param(v.value, np.float64) for v in L[i].parameters()] for i in (0, 2, 4, 9, 11)}

    def torch_model(xt):
        h = TF.gelu(TF.conv2d(xt, *p[0], padding="same"))
        h = TF.silu(TF.conv2d(h, *p[2], stride=2, padding=1, groups=4))
        h = TF.elu(TF.conv_transpose2d(h, *p[4], stride=2, padding=1, output_padding=1, groups=2))
        h = TF.max_pool2d(h, 3, 2, 1, ceil_mode=True)
        h = TF.avg_pool2d(h, 2, 1, 1, count_include_pad=False)
        h = TF.interpolate(h, scale_factor=2, mode="bilinear")
        h = TF.conv2d(TF.pad(h, (1, 0, 0, 1)), *p[9])
        return TF.linear(h.mean(dim=(2, 3)), *p[11])
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 2, 1])
    loss = CrossEntropy(label_smoothing=0.1)
    value = loss.forward(model.forward(x), labels)
    dx = model.backward(loss.backward(), input_grad=True)
    xt = tt(x, True)
    ref = TF.cross_entropy(torch_model(xt), torch.from_numpy(labels), label_smoothing=0.1)
    ref.backward()
    assert_close(np.asarray(value), ref, np.float64, what="loss")
    assert_close(dx, xt.grad, np.float64, what="dx")
    for i, ps in p.items():
        for ours, theirs in zip(L[i].parameters(), ps):
            assert_close(ours.grad, theirs.grad, np.float64, what=f"layer {i} {ours.name}")


def test_gradcheck_passes_for_a_model_of_the_new_layers():
    model = _small_modern_net(5)
    r = np.random.default_rng(3)
    x = r.standard_normal((2, 2, 6, 6)).astype(np.float32)
    report = numcnn.gradcheck(model, x, r.integers(0, 3, 2),
                              CrossEntropy(weight=[1.0, 2.0, 0.5], label_smoothing=0.1),
                              max_entries=24, eps=1e-5)
    assert report.max_rel_error < 1e-6, str(report)
    assert set(model.named_parameters()) <= set(report.errors)


GRADCHECK_CASES = {
    "Conv2D grouped asym": (lambda: Conv2D(4, 6, (3, 2), stride=(2, 1), padding=((0, 1), (2, 0)),
                                           dilation=(1, 2), groups=2), (2, 4, 6, 5)),
    "Conv2D depthwise same": (lambda: Conv2D(3, 3, 3, padding="same", groups=3), (2, 3, 5, 4)),
    "ConvTranspose2D": (lambda: ConvTranspose2D(4, 2, 3, stride=2, padding=1, output_padding=1,
                                                groups=2), (2, 4, 3, 4)),
    "ConvTranspose2D op >= stride": (lambda: ConvTranspose2D(2, 2, 2, stride=1, output_padding=1,
                                                             dilation=2), (2, 2, 3, 3)),
    "MaxPool2D ceil dilation": (lambda: MaxPool2D(2, 2, 1, dilation=2, ceil_mode=True), (2, 2, 6, 5)),
    "AvgPool2D exclude pad ceil": (lambda: AvgPool2D(3, 2, 1, ceil_mode=True,
                                                     count_include_pad=False), (2, 2, 6, 5)),
    "GlobalAvgPool2D": (GlobalAvgPool2D, (2, 3, 3, 4)),
    "GlobalMaxPool2D": (GlobalMaxPool2D, (2, 3, 3, 4)),
    "Upsample bilinear": (lambda: Upsample((2, 3), "bilinear"), (2, 2, 3, 3)),
    "ELU": (ELU, (3, 7)), "GELU": (GELU, (3, 7)), "GELU tanh": (lambda: GELU("tanh"), (3, 7)),
    "SiLU": (SiLU, (3, 7)),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck_passes_for_each_new_layer(name):
    make, shape = GRADCHECK_CASES[name]
    layer = make()
    report = numcnn.gradcheck(layer, np.random.default_rng(1).standard_normal(shape))
    assert report.max_rel_error < 1e-6, str(report)
    assert "input" in report.errors and set(layer.named_parameters()) <= set(report.errors)


def test_conv_transpose_first_in_a_model_skips_the_input_gradient_but_not_its_weights(rng):
    model = numcnn.Sequential([ConvTranspose2D(2, 3, 2, stride=2, rng=0), GlobalAvgPool2D()])
    model.astype(np.float64)
    x = rng.standard_normal((2, 2, 3, 3))
    g = rng.standard_normal((2, 3))
    model.forward(x)
    assert model.backward(g) is None
    w, b = (param(p.value, np.float64) for p in model.parameters())
    torch_grads(lambda xt: TF.conv_transpose2d(xt, w, b, 2).mean(dim=(2, 3)), x, g, w, b)
    assert_close(model.layers[0].weight.grad, w.grad, np.float64, what="dW")
    assert Upsample(2.0).scale_factor == (2, 2)


# -- bad configurations --------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: Conv2D(6, 4, 3, groups=4), r"Conv2D\(6, 4.*groups=4 must divide both in_channels "
                                        r"\(6\) and out_channels \(4\)"),
    (lambda: Conv2D(4, 4, 3, groups=0), r"groups must be an int >= 1"),
    (lambda: Conv2D(4, 4, 3, stride=2, padding="same"), r"padding='same' needs stride 1.*padding=k//2"),
    (lambda: Conv2D(4, 4, 3, padding="full"), r"Conv2D.*padding must be an int, an \(h, w\) pair, "
                                              r"\(\(top, bottom\), \(left, right\)\), 'valid' or 'same'"),
    (lambda: Conv2D(4, 4, 3, padding=((1, -1), (0, 0))), r"padding must be >= 0"),
    (lambda: Conv2D(4, 4, 3, padding=(1, 2, 3)), r"padding must be"),
    (lambda: MaxPool2D(2, padding="same"), r"MaxPool2D: padding must be .*'valid', got 'same'"),
    (lambda: AvgPool2D(2, padding=((0, 2), (0, 0))), r"AvgPool2D: padding .* at most half the kernel"),
    (lambda: MaxPool2D(2, ceil_mode="yes"), r"ceil_mode must be True or False"),
    (lambda: AvgPool2D(2, count_include_pad=1), r"count_include_pad must be True or False"),
    (lambda: ConvTranspose2D(4, 4, 3, stride=2, output_padding=2),
     r"ConvTranspose2D\(4, 4.*output_padding \(2, 2\) must be smaller than the stride \(2, 2\) or "
     r"the dilation \(1, 1\)"),
    (lambda: ConvTranspose2D(4, 6, 3, groups=4), r"ConvTranspose2D.*groups=4 must divide"),
    (lambda: Upsample(0), r"Upsample: scale_factor must be a positive int"),
    (lambda: Upsample(2, mode="bicubic"), r"Upsample: mode must be 'nearest' or 'bilinear'.*ConvTranspose2D"),
    (lambda: Upsample(2, align_corners=True), r"align_corners applies to mode='bilinear' only"),
    (lambda: GELU("fast"), r"GELU: approximate must be 'none' .* or 'tanh'"),
    (lambda: ELU(float("nan")), r"ELU: alpha must be a finite number"),
    (lambda: Flatten(0), r"Flatten: start_dim must be an int >= 1"),
    (lambda: CrossEntropy(reduction="avg"), r"reduction must be 'mean', 'sum' or 'none'"),
    (lambda: CrossEntropy(weight=[1, -1]), r"weight must be a 1-D sequence of K finite, non-negative"),
    (lambda: CrossEntropy(ignore_index=1.5), r"ignore_index must be an int"),
])
def test_bad_configurations_name_the_layer_and_the_fix(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("layer,shape,match", [
    (Conv2D(2, 2, 5, padding=((0, 1), (0, 0))), (1, 2, 3, 9),
     r"kernel \(5x5 with dilation\) is larger than the padded input \(4x9"),
    (MaxPool2D(2, stride=1, padding=1, dilation=2), (1, 1, 1, 6), r"some window covers only padding"),
    (MaxPool2D(4), (1, 1, 3, 8), r"window \(4, 4\) is larger than the padded input"),
    (ConvTranspose2D(2, 2, 1, padding=1), (1, 2, 1, 1), r"empty output.*less padding"),
    (Flatten(4), (2, 3, 4, 4), r"start_dim 4 is past the last axis"),
])
def test_inputs_too_small_for_a_layer_are_shape_errors(layer, shape, match):
    with pytest.raises(ShapeError, match=match):
        layer.forward(np.zeros(shape, np.float32))


def test_cross_entropy_bad_inputs_are_clear(rng):
    with pytest.raises(ShapeError, match=r"weight has 2 class weights but the logits have 3"):
        CrossEntropy(weight=[1, 2]).forward(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ConfigError, match=r"labels must be in \[0, 2\].*\(or the ignore_index 9\)"):
        CrossEntropy(ignore_index=9).forward(np.zeros((2, 3)), [9, 3])
    loss = CrossEntropy(reduction="none")
    loss.forward(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ShapeError, match=r"dL/d\(losses\) of shape \(2,\)"):
        loss.backward(np.ones(3))
