"""The pure kernels in numcnn.functional give PyTorch's numbers, forward and backward.

Every comparison is made in float32 and float64; outputs must keep the input's dtype.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import numcnn.functional as F
from conftest import DTYPE_IDS, DTYPES, assert_close, to_numpy, torch_conv, torch_pool, tt

N_CONV_CASES = 320
N_POOL_CASES = 60


# -- convolution ----------------------------------------------------------------------------------
def random_conv_case(seed):
    """A valid random convolution: batch 1-8, channels 1-8, kernel 1-7 (maybe non-square),
    stride 1-3, padding 0-3, dilation 1-2, odd/non-square images at least as big as the dilated
    kernel after padding."""
    r = np.random.default_rng(seed)
    n, c, o = (int(v) for v in r.integers(1, 9, size=3))
    kh, kw = (int(v) for v in r.integers(1, 8, size=2))
    if r.random() < 0.3:
        kw = kh                                   # square kernels too
    sh, sw = (int(v) for v in r.integers(1, 4, size=2))
    ph, pw = (int(v) for v in r.integers(0, 4, size=2))
    dh, dw = (int(v) for v in r.integers(1, 3, size=2))
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = max(1, eff_h - 2 * ph) + int(r.integers(0, 8))
    w = max(1, eff_w - 2 * pw) + int(r.integers(0, 8))
    bias = bool(r.random() < 0.85)
    return dict(n=n, c=c, o=o, k=(kh, kw), s=(sh, sw), p=(ph, pw), d=(dh, dw), hw=(h, w),
                bias=bias, rng=r)


def make_conv_arrays(case, dtype):
    r = case["rng"]
    n, c, o = case["n"], case["c"], case["o"]
    x = r.standard_normal((n, c) + case["hw"]).astype(dtype)
    w = r.standard_normal((o, c) + case["k"]).astype(dtype)
    b = r.standard_normal(o).astype(dtype) if case["bias"] else None
    return x, w, b


def test_random_conv_cases_cover_the_requested_ranges():
    cases = [random_conv_case(s) for s in range(N_CONV_CASES)]
    assert len(cases) >= 300
    for key, lo, hi in (("n", 1, 8), ("c", 1, 8), ("o", 1, 8)):
        vals = {cs[key] for cs in cases}
        assert min(vals) == lo and max(vals) == hi
    assert {k for cs in cases for k in cs["k"]} == set(range(1, 8))
    assert {s for cs in cases for s in cs["s"]} == {1, 2, 3}
    assert {p for cs in cases for p in cs["p"]} == {0, 1, 2, 3}
    assert {d for cs in cases for d in cs["d"]} == {1, 2}
    assert any(cs["k"][0] != cs["k"][1] for cs in cases)
    assert any(cs["hw"][0] != cs["hw"][1] for cs in cases)
    assert any(cs["hw"][0] % 2 == 1 and cs["hw"][1] % 2 == 1 for cs in cases)
    assert any(not cs["bias"] for cs in cases)


def check_conv_case_against_torch(case, dtype):
    """conv2d_forward/backward of a random case give torch's out, dx, dw and db."""
    x, w, b = make_conv_arrays(case, dtype)
    out, cache = F.conv2d_forward(x, w, b, case["s"], case["p"], case["d"])
    g = case["rng"].standard_normal(out.shape).astype(dtype)
    dx, dw, db = F.conv2d_backward(g, w, cache, need_bias=b is not None)
    t_out, t_dx, t_dw, t_db = torch_conv(x, w, b, case["s"], case["p"], case["d"], grad_out=g)
    assert_close(out, t_out, dtype, what="out")
    assert_close(dx, t_dx, dtype, what="dx")
    assert_close(dw, t_dw, dtype, what="dw")
    if b is None:
        assert db is None
    else:
        assert_close(db, t_db, dtype, what="db")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_CONV_CASES))
def test_conv2d_forward_and_grads_match_torch_random_shapes(seed, dtype):
    check_conv_case_against_torch(random_conv_case(seed), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(1000, 1060))
def test_conv2d_stride1_fast_path_matches_torch_random_shapes(seed, dtype):
    """Stride (1, 1) takes the "wide" im2col path (rows run the full padded width): check it
    separately with random kernels, padding and dilation."""
    case = random_conv_case(seed)
    case["s"] = (1, 1)
    check_conv_case_against_torch(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(2000, 2040))
def test_input_grad_as_full_convolution_matches_torch(seed, dtype):
    """Stride 1: dL/dI is a convolution of dL/dO (padded by d*(k-1)-p) with the kernels flipped
    and their channel axes swapped, in both layouts, wherever that padding is not negative."""
    case = random_conv_case(seed)
    kh, kw = case["k"]
    dh, dw = case["d"]
    case["p"] = ph, pw = tuple(int(v) for v in case["rng"].integers(0, [dh * (kh - 1) + 1,
                                                                     dw * (kw - 1) + 1]))
    h, w = case["hw"]           # still at least as big as the dilated kernel after padding
    case["hw"] = max(h, dh * (kh - 1) + 1 - 2 * ph), max(w, dw * (kw - 1) + 1 - 2 * pw)
    x, w, b = make_conv_arrays(case, dtype)
    out = F.conv2d(x, w, b, 1, case["p"], case["d"])
    g = case["rng"].standard_normal(out.shape).astype(dtype)
    t_dx = torch_conv(x, w, b, 1, case["p"], case["d"], grad_out=g)[1]
    assert_close(F.input_grad_by_conv(g, w, case["p"], case["d"]), t_dx, dtype, what="NCHW")
    cnhw = F.input_grad_by_conv(np.ascontiguousarray(g.transpose(1, 0, 2, 3)), w, case["p"],
                                case["d"], layout="CNHW")
    assert_close(np.ascontiguousarray(cnhw.transpose(1, 0, 2, 3)), t_dx, dtype, what="CNHW")


@pytest.mark.parametrize("o, c, k, s, p, d, gpu_route", [
    (16, 6, 5, 1, 0, 1, "conv"),        # on a GPU, launches count: by conv wherever it applies
    (32, 32, 3, 1, 1, 1, "conv"),
    (8, 8, 3, 2, 1, 1, "col2im"),       # stride 2: not a plain convolution of dL/dO
    (8, 8, 3, 1, 3, 1, "col2im"),       # padding beyond the kernel
])
def test_on_a_gpu_the_input_gradient_goes_by_convolution_wherever_it_can(o, c, k, s, p, d, gpu_route):
    from numcnn.functional.conv import _input_grad_route
    geo = F.conv._geometry((c, 3, 12, 11), (o, c, k, k), (s, s), (p, p), (d, d), "CNHW", 4)
    assert _input_grad_route(geo, (o, c, k, k), (p, p), (d, d), gpu=True) == gpu_route


@pytest.mark.parametrize("o, c, k, s, p, d, route", [
    (32, 32, 3, 1, 1, 1, "conv"),       # CIFAR-style layers: one im2col copy beats col2im's adds
    (64, 32, 3, 1, 1, 1, "conv"),
    (16, 6, 5, 1, 0, 1, "col2im"),      # LeNet-5's second layer: many more kernels than channels
    (8, 8, 3, 2, 1, 1, "col2im"),       # stride 2: not a plain convolution of dL/dO
    (8, 8, 3, 1, 3, 1, "col2im"),       # padding beyond the kernel: negative full-conv padding
    (8, 8, 3, 1, 3, 2, "conv"),         # ... unless the dilated kernel reaches it
])
def test_conv_backward_takes_the_cheaper_input_gradient_route_and_both_match_torch(
        o, c, k, s, p, d, route, rng):
    from numcnn.functional.conv import _input_grad_route
    x = rng.standard_normal((3, c, 12, 11)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    xc = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    out, cache = F.conv2d_forward(xc, w, b, (s, s), (p, p), (d, d), layout="CNHW")
    g = rng.standard_normal(out.shape).astype(np.float32)
    g_src = torch_conv(x, w, b, s, p, d, grad_out=np.ascontiguousarray(g.transpose(1, 0, 2, 3)))
    geo = F.conv._geometry(xc.shape, w.shape, (s, s), (p, p), (d, d), "CNHW", 4)
    assert _input_grad_route(geo, w.shape, (p, p), (d, d)) == route
    dx, dw, db = F.conv2d_backward(g, w, cache)
    assert_close(np.ascontiguousarray(dx.transpose(1, 0, 2, 3)), g_src[1], np.float32, what="dx")
    assert_close(dw, g_src[2], np.float32, what="dw")
    assert_close(db, g_src[3], np.float32, what="db")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(0, N_CONV_CASES, 16))
def test_conv2d_naive_reference_matches_torch(seed, dtype):
    case = random_conv_case(seed)
    x, w, b = make_conv_arrays(case, dtype)
    out = F.conv2d_naive(x, w, b, case["s"], case["p"], case["d"])
    assert_close(out, torch_conv(x, w, b, case["s"], case["p"], case["d"]), dtype)


def test_conv2d_convenience_accepts_ints_and_pairs(rng):
    x = rng.standard_normal((2, 3, 9, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    assert_close(F.conv2d(x, w, b, stride=2, padding=1, dilation=2),
                 torch_conv(x, w, b, 2, 1, 2), np.float64)
    assert_close(F.conv2d(x, w, None, stride=(1, 2), padding=(2, 0), dilation=(1, 2)),
                 torch_conv(x, w, None, (1, 2), (2, 0), (1, 2)), np.float64)


def test_conv2d_need_input_false_skips_dx_but_keeps_dw(rng):
    x = rng.standard_normal((2, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    out, cache = F.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1))
    g = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(g, w, cache, need_bias=False, need_input=False)
    assert dx is None and db is None
    assert_close(dw, torch_conv(x, w, None, 1, 1, 1, grad_out=g)[2], np.float64)


@pytest.mark.parametrize("seed", range(10))
def test_col2im_is_the_adjoint_of_im2col(seed):
    """<im2col(x), c> == <x, col2im(c)> for random geometry: col2im is im2col transposed."""
    case = random_conv_case(seed)
    r = case["rng"]
    x = r.standard_normal((case["n"], case["c"]) + case["hw"])
    xp = F.pad2d(x, case["p"])
    ho = F.conv_output_size(case["hw"][0], case["k"][0], case["s"][0], case["p"][0], case["d"][0])
    wo = F.conv_output_size(case["hw"][1], case["k"][1], case["s"][1], case["p"][1], case["d"][1])
    cols = F.im2col(xp, case["k"], case["s"], case["d"], (ho, wo))
    c = r.standard_normal(cols.shape)
    back = F.col2im(c, xp.shape, case["k"], case["s"], case["d"])
    assert back.shape == xp.shape
    np.testing.assert_allclose(np.sum(cols * c), np.sum(xp * back), rtol=1e-12)


def test_pad2d_and_unpad2d_round_trip(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    p = F.pad2d(x, (2, 1))
    assert p.shape == (2, 3, 8, 7)
    assert np.array_equal(p, TF.pad(tt(x), (1, 1, 2, 2)).numpy())
    assert np.array_equal(F.unpad2d(p, (2, 1)), x)
    assert np.array_equal(F.unpad2d(F.pad2d(x, (0, 3)), (0, 3)), x)


@pytest.mark.parametrize("size,k,s,p,d,expected", [
    (5, 3, 2, 1, 1, 3),       # the deck's 5x5, 3x3, stride 2, pad 1 -> 3x3
    (28, 5, 1, 2, 1, 28),
    (7, 3, 1, 0, 2, 3),
    (32, 2, 2, 0, 1, 16),
])
def test_conv_output_size_formula(size, k, s, p, d, expected):
    assert F.conv_output_size(size, k, s, p, d) == expected


# -- pooling --------------------------------------------------------------------------------------
def random_pool_case(seed):
    """Random kernel 1-4 (maybe non-square), stride 1-3 (overlapping windows when < kernel),
    padding <= kernel/2, and an input at least as big as the padded window."""
    r = np.random.default_rng(10_000 + seed)
    kh, kw = (int(v) for v in r.integers(1, 5, size=2))
    sh, sw = (int(v) for v in r.integers(1, 4, size=2))
    ph, pw = int(r.integers(0, kh // 2 + 1)), int(r.integers(0, kw // 2 + 1))
    n, c = (int(v) for v in r.integers(1, 5, size=2))
    h = max(1, kh - 2 * ph) + int(r.integers(0, 7))
    w = max(1, kw - 2 * pw) + int(r.integers(0, 7))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), r


def test_random_pool_cases_include_overlapping_and_padded_windows():
    cases = [random_pool_case(s) for s in range(N_POOL_CASES)]
    assert any(s[0] < k[0] or s[1] < k[1] for _, k, s, _, _ in cases)     # overlapping
    assert any(max(p) > 0 for _, _, _, p, _ in cases)
    assert any(k[0] != k[1] for _, k, _, _, _ in cases)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_POOL_CASES))
def test_pool2d_forward_and_grad_match_torch_random_windows(seed, dtype, kind):
    shape, k, s, p, r = random_pool_case(seed)
    x = r.standard_normal(shape).astype(dtype)
    fwd = F.max_pool2d_forward if kind == "max" else F.avg_pool2d_forward
    bwd = F.max_pool2d_backward if kind == "max" else F.avg_pool2d_backward
    out, cache = fwd(x, k, s, p)
    g = r.standard_normal(out.shape).astype(dtype)
    dx = bwd(g, cache)
    t_out, t_dx = torch_pool(kind, x, k, s, p, grad_out=g)
    assert_close(out, t_out, dtype, what="out")
    assert_close(dx, t_dx, dtype, what="dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1)),
                                   (4, 1, 2), (3, 3, 0), (2, 1, 0), ((2, 3), (2, 3), 0)])
@pytest.mark.parametrize("fill", ["zeros", "ints01", "ints012"])
def test_max_pool2d_ties_route_each_gradient_to_torchs_element_exactly(fill, k, s, p, dtype):
    """With equal values in windows each output sends its whole gradient to one element, the same
    one PyTorch picks (the first in row-major window order); integer-valued upstream gradients make
    the sums exact, so the comparison is exact too."""
    r = np.random.default_rng(7)
    shape = (2, 3, 7, 6)
    if fill == "zeros":
        x = np.zeros(shape, dtype=dtype)
    else:
        x = r.integers(0, 2 if fill == "ints01" else 3, size=shape).astype(dtype)
    k2, s2, p2 = F.pair(k, "k"), F.pair(s, "s"), F.pair(p, "p")
    out, cache = F.max_pool2d_forward(x, k2, s2, p2)
    g = r.integers(1, 9, size=out.shape).astype(dtype)          # exact in any order of summation
    dx = F.max_pool2d_backward(g, cache)
    t_out, t_dx = torch_pool("max", x, k2, s2, p2, grad_out=g)
    assert dx.dtype == dtype
    assert np.array_equal(out, t_out)
    assert np.array_equal(dx, t_dx)
    # every output routed its gradient to exactly one input element: the totals agree
    assert dx.sum() == g.sum()


def test_max_pool2d_all_zero_window_sends_gradient_to_first_element():
    x = np.zeros((1, 1, 4, 4))
    out, cache = F.max_pool2d_forward(x, (2, 2), (2, 2))
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1.0
    assert np.array_equal(dx[0, 0], expected)


def test_max_pool2d_padding_never_wins_even_for_negative_inputs():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3) - 100.0
    out, cache = F.max_pool2d_forward(x, (3, 3), (1, 1), (1, 1))
    assert np.all(out < -100)           # -inf padding is never the max; 0-padding would be
    assert_close(out, torch_pool("max", x, 3, 1, 1), np.float64)


# -- activations ----------------------------------------------------------------------------------
ACTIVATIONS = {
    "relu": (F.relu, lambda g, x, y: F.relu_backward(g, y), torch.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda g, x, y: F.leaky_relu_backward(g, x, 0.2),
                   lambda t: TF.leaky_relu(t, 0.2)),
    "leaky_relu_default": (F.leaky_relu, lambda g, x, y: F.leaky_relu_backward(g, x),
                           TF.leaky_relu),
    "sigmoid": (F.sigmoid, lambda g, x, y: F.sigmoid_backward(g, y), torch.sigmoid),
    "tanh": (F.tanh, lambda g, x, y: F.tanh_backward(g, y), torch.tanh),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 5), (2, 3, 4, 5)])
def test_elementwise_activation_and_grad_match_torch(name, dtype, shape, rng):
    f, df, tf = ACTIVATIONS[name]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.flat[:3] = 0.0                         # the kink at 0 must match torch's convention too
    g = rng.standard_normal(shape).astype(dtype)
    y = f(x)
    dx = df(g, x, y)
    xt = tt(x, True)
    yt = tf(xt)
    yt.backward(tt(g))
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, xt.grad, dtype, what="dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_is_stable_for_huge_inputs(dtype):
    x = np.array([[-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = F.sigmoid(x)
    assert np.all(np.isfinite(y))
    assert_close(y, torch.sigmoid(tt(x)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_and_log_softmax_match_torch_and_stay_finite(scale, dtype, rng):
    z = (scale * rng.standard_normal((6, 10))).astype(dtype)
    z[0, :] = scale                           # a row of equal large logits
    z[1, 3] = scale * 1e0
    z[1, 4] = -scale
    g = rng.standard_normal(z.shape).astype(dtype)
    for fwd, bwd, tf in ((F.softmax, F.softmax_backward, torch.softmax),
                         (F.log_softmax, F.log_softmax_backward, torch.log_softmax)):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = fwd(z, axis=1)
            dz = bwd(g, y, axis=1)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dz))
        zt = tt(z, True)
        yt = tf(zt, dim=1)
        yt.backward(tt(g))
        assert_close(y, yt, dtype, what=fwd.__name__)
        assert_close(dz, zt.grad, dtype, what=bwd.__name__)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_of_plus_minus_1e4_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    p = F.softmax(z, axis=1)
    lp = F.log_softmax(z, axis=1)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    assert_close(p, torch.softmax(tt(z), 1), dtype)
    assert_close(lp, torch.log_softmax(tt(z), 1), dtype)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_over_axis_zero_matches_torch(rng):
    z = rng.standard_normal((4, 3))
    assert_close(F.softmax(z, axis=0), torch.softmax(tt(z), 0), np.float64)
    assert_close(F.log_softmax(z, axis=0), torch.log_softmax(tt(z), 0), np.float64)


# -- cross-entropy --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_kernel_matches_torch(scale, smoothing, dtype, rng):
    z = (scale * rng.standard_normal((7, 5))).astype(dtype)
    labels = rng.integers(0, 5, size=7)
    loss, probs, target = F.cross_entropy_forward(z, labels, smoothing)
    dz = F.cross_entropy_backward(probs, target)
    zt = tt(z, True)
    lt = TF.cross_entropy(zt, torch.from_numpy(labels), label_smoothing=smoothing)
    lt.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dz))
    assert_close(np.asarray(loss), lt, dtype, what="loss")
    assert_close(dz, zt.grad, dtype, what="dlogits")
    assert np.asarray(loss).dtype == dtype


# -- dense and flatten ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_backward_match_torch(bias, dtype, rng):
    x = rng.standard_normal((6, 11)).astype(dtype)
    w = rng.standard_normal((4, 11)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if bias else None
    y = F.linear_forward(x, w, b)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = F.linear_backward(g, x, w, need_bias=bias)
    xt, wt = tt(x, True), tt(w, True)
    bt = tt(b, True) if bias else None
    yt = TF.linear(xt, wt, bt)
    yt.backward(tt(g))
    assert_close(y, yt, dtype)
    assert_close(dx, xt.grad, dtype)
    assert_close(dw, wt.grad, dtype)
    if bias:
        assert_close(db, bt.grad, dtype)
    else:
        assert db is None


def test_flatten_matches_torch_flatten_and_backward_reshapes(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    y = F.flatten(x)
    assert np.array_equal(y, torch.flatten(tt(x), 1).numpy())
    g = rng.standard_normal(y.shape)
    assert np.array_equal(F.flatten_backward(g, x.shape), g.reshape(x.shape))


# -- batch norm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,layout", [((8, 5), "NCHW"), ((4, 3, 5, 6), "NCHW"),
                                          ((4, 3, 5, 6), "CNHW")])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_kernel_matches_torch(training, shape, layout, dtype, rng):
    """Both layouts: in CNHW (Sequential's) the per-channel sums are BLAS products over each
    channel's contiguous row, and evaluation mode is x * scale + shift."""
    c = shape[1]
    x = (2 + 3 * rng.standard_normal(shape)).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    g = rng.standard_normal(shape).astype(dtype)

    def cnhw(a):
        return np.ascontiguousarray(a.transpose(1, 0, 2, 3)) if layout == "CNHW" else a
    y, cache = F.batch_norm_forward(cnhw(x), gamma, beta, rm, rv, training, 0.1, 1e-5, layout)
    dx, dgamma, dbeta = F.batch_norm_backward(cnhw(g), cache)
    y, dx = cnhw(y), cnhw(dx)                       # (the transpose is its own inverse)
    xt, gt, bt = tt(x, True), tt(gamma, True), tt(beta, True)
    yt = TF.batch_norm(xt, rm_t, rv_t, gt, bt, training=training, momentum=0.1, eps=1e-5)
    yt.backward(tt(g))
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, xt.grad, dtype, what="dx")
    assert_close(dgamma, gt.grad, dtype, what="dgamma")
    assert_close(dbeta, bt.grad, dtype, what="dbeta")
    assert_close(rm, rm_t, dtype, what="running_mean")
    assert_close(rv, rv_t, dtype, what="running_var")


# -- dropout --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9])
def test_dropout_kernel_mask_is_zero_or_inverse_keep_rate(p, dtype, rng):
    x = rng.standard_normal((50, 40)).astype(dtype)
    out, mask = F.dropout_forward(x, p, np.random.default_rng(3))
    assert mask.dtype == dtype and out.dtype == dtype
    scale = dtype(1.0 / (1.0 - p))
    assert set(np.unique(mask)) <= {dtype(0), scale}
    assert np.array_equal(out, x * mask)
    g = rng.standard_normal(x.shape).astype(dtype)
    assert np.array_equal(F.dropout_backward(g, mask), g * mask)
    if p == 0.0:
        assert np.array_equal(out, x)


def test_dropout_mask_p_one_drops_everything():
    m = F.dropout_mask((10, 10), 1.0, np.random.default_rng(0), np.float32)
    assert not m.any()


def test_pair_normalises_ints_and_pairs():
    assert F.pair(3, "k") == (3, 3)
    assert F.pair((3, 5), "k") == (3, 5)
    assert F.pair(np.int64(2), "k") == (2, 2)
    from numcnn.errors import ConfigError
    for bad in (True, (1, 2, 3), "ab", None):
        with pytest.raises(ConfigError):
            F.pair(bad, "k")


def test_to_numpy_helper_sanity():
    # guard the oracle helper itself: a torch tensor becomes the same numbers
    a = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(to_numpy(torch.from_numpy(a)), a)
