"""Every layer (and the CrossEntropy loss) gives PyTorch's outputs and gradients.

Weights are copied from numcnn into the torch module (conv weight (out, in, kh, kw), dense weight
(out, in): the same layouts), then outputs, input gradients and parameter gradients are compared,
in float32 and in float64 (``layer.astype(np.float64)``).  Layers must compute in the dtype they
are given: float64 in, float64 out and float64 grads; float32 stays float32.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF

import numcnn
from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                           LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh, layer_from_config,
                           layer_to_config)
from numcnn.losses import CrossEntropy
from conftest import (DTYPE_IDS, DTYPES, assert_close, copy_params_to_torch, to_numpy,
                      torch_conv, torch_pool, tt)

N_LAYER_CONV_CASES = 60


def _cast(layer, dtype):
    """float32 is numcnn's default; float64 comes from ``layer.astype``."""
    if np.dtype(dtype) == np.float64:
        layer.astype(np.float64)
    return layer


def run_layer(layer, x, g, training=True):
    """numcnn forward + backward; returns (y, dx)."""
    y = layer.forward(x, training=training)
    dx = layer.backward(g)
    return y, dx


def run_torch(module, x, g):
    xt = tt(x, True)
    yt = module(xt)
    yt.backward(tt(g))
    return yt, xt.grad


def assert_param_grads_match(layer, module, dtype):
    for name, p in layer.named_parameters().items():
        assert p.grad is not None, f"{name} has no grad"
        assert p.value.dtype == dtype and p.grad.dtype == dtype, name
        assert_close(p.grad, getattr(module, name).grad, dtype, what=f"d{name}")


# -- Conv2D ---------------------------------------------------------------------------------------
def random_layer_conv_case(seed):
    r = np.random.default_rng(50_000 + seed)
    n, c, o = (int(v) for v in r.integers(1, 9, size=3))
    k = tuple(int(v) for v in r.integers(1, 8, size=2))
    s = tuple(int(v) for v in r.integers(1, 4, size=2))
    p = tuple(int(v) for v in r.integers(0, 4, size=2))
    d = tuple(int(v) for v in r.integers(1, 3, size=2))
    hw = tuple(max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]) + int(r.integers(0, 7)) for i in range(2))
    return n, c, o, k, s, p, d, hw, bool(r.random() < 0.8), r


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(N_LAYER_CONV_CASES))
def test_conv2d_layer_output_and_grads_match_torch_random_shapes(seed, dtype):
    n, c, o, k, s, p, d, hw, bias, r = random_layer_conv_case(seed)
    layer = _cast(Conv2D(c, o, k, stride=s, padding=p, dilation=d, bias=bias, rng=seed,
                         init="torch_default"), dtype)
    x = r.standard_normal((n, c) + hw).astype(dtype)
    mod = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, bias=bias).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    copy_params_to_torch([layer], [mod])
    y = layer.forward(x)
    g = r.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(g)
    yt, dxt = run_torch(mod, x, g)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, dxt, dtype, what="dx")
    assert_param_grads_match(layer, mod, dtype)


def test_conv2d_layer_float64_via_constructor_dtype(rng):
    layer = Conv2D(2, 3, 3, padding=1, dtype="float64")
    assert layer.weight.value.dtype == np.float64 and layer.bias.value.dtype == np.float64
    x = rng.standard_normal((2, 2, 5, 5))
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    _, t_dx, t_dw, t_db = torch_conv(x, layer.weight.value, layer.bias.value, 1, 1, 1, grad_out=g)
    assert_close(dx, t_dx, np.float64)
    assert_close(layer.weight.grad, t_dw, np.float64)
    assert_close(layer.bias.grad, t_db, np.float64)


def test_conv2d_layer_gradients_accumulate_over_two_backward_passes(rng):
    layer = Conv2D(3, 4, 3, stride=2, padding=1).astype(np.float64)
    x = rng.standard_normal((2, 3, 7, 7))
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    layer.backward(g)
    layer.forward(x)
    layer.backward(g)
    _, _, t_dw, t_db = torch_conv(x, layer.weight.value, layer.bias.value, 2, 1, 1, grad_out=g)
    assert_close(layer.weight.grad, 2 * t_dw, np.float64)
    assert_close(layer.bias.grad, 2 * t_db, np.float64)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_conv2d_layer_without_input_grad_returns_none_but_fills_weight_grad(rng):
    layer = Conv2D(1, 2, 3).astype(np.float64)
    layer.needs_input_grad = False
    x = rng.standard_normal((2, 1, 6, 6))
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    assert layer.backward(g) is None
    assert_close(layer.weight.grad, torch_conv(x, layer.weight.value, layer.bias.value,
                                               grad_out=g)[2], np.float64)


def test_conv2d_output_shape_and_config_round_trip():
    layer = Conv2D(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False)
    assert layer.output_shape((3, 11, 13)) == (8, 6, 9)     # W: 1 + (13 + 4 - 2*4 - 1) // 1
    x = np.zeros((1, 3, 11, 13), dtype=np.float32)
    assert layer.forward(x).shape == (1, 8, 6, 9)
    assert torch_conv(x, layer.weight.value, None, (2, 1), (1, 2), (1, 2)).shape == (1, 8, 6, 9)
    again = layer_from_config(layer_to_config(layer))
    assert isinstance(again, Conv2D) and again.config() == layer.config()
    assert again.bias is None


# -- pooling --------------------------------------------------------------------------------------
def random_pool_layer_case(seed):
    r = np.random.default_rng(70_000 + seed)
    k = tuple(int(v) for v in r.integers(1, 5, size=2))
    s = tuple(int(v) for v in r.integers(1, 4, size=2))
    p = tuple(int(r.integers(0, ki // 2 + 1)) for ki in k)
    hw = tuple(max(1, k[i] - 2 * p[i]) + int(r.integers(0, 6)) for i in range(2))
    n, c = (int(v) for v in r.integers(1, 4, size=2))
    return (n, c) + hw, k, s, p, r


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("seed", range(25))
def test_pool_layers_match_torch_random_windows(seed, dtype, kind):
    shape, k, s, p, r = random_pool_layer_case(seed)
    layer = (MaxPool2D if kind == "max" else AvgPool2D)(k, stride=s, padding=p)
    x = r.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    g = r.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(g)
    t_y, t_dx = torch_pool(kind, x, k, s, p, grad_out=g)
    assert layer.output_shape(shape[1:]) == y.shape[1:]
    assert_close(y, t_y, dtype, what="y")
    assert_close(dx, t_dx, dtype, what="dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_maxpool2d_layer_ties_match_torch_exactly(dtype):
    r = np.random.default_rng(1)
    x = r.integers(0, 2, size=(2, 2, 9, 8)).astype(dtype)
    layer = MaxPool2D(3, stride=1, padding=1)
    y = layer.forward(x)
    g = r.integers(-4, 5, size=y.shape).astype(dtype)
    dx = layer.backward(g)
    t_y, t_dx = torch_pool("max", x, 3, 1, 1, grad_out=g)
    assert np.array_equal(y, t_y) and np.array_equal(dx, t_dx)


@pytest.mark.parametrize("kernel,shape", [((1, 129), (2, 3, 1, 129)), ((1, 200), (1, 2, 2, 401)),
                                          ((12, 12), (1, 2, 24, 24)), ((130, 1), (1, 1, 260, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_maxpool2d_windows_wider_than_128_match_torch(kernel, shape, training):
    """Windows of more than 127 offsets (a global max over a long 1-D signal) need winner
    indices wider than int8, on the tiling path (stride == kernel) too; ties included."""
    r = np.random.default_rng(3)
    x = r.integers(-3, 4, size=shape).astype(np.float64)    # small integers: many ties
    layer = MaxPool2D(kernel)
    y = layer.forward(x, training=training)
    g = r.standard_normal(y.shape)
    dx = layer.backward(g)
    t_y, t_dx = torch_pool("max", x, kernel, kernel, 0, grad_out=g)
    assert np.array_equal(y, to_numpy(t_y)) and np.array_equal(dx, to_numpy(t_dx))


@pytest.mark.parametrize("kernel", [(2, 2), (2, 3), (3, 1), (1, 2), (1, 1), (3, 3)])
@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
def test_maxpool2d_inference_on_tiling_windows_matches_torch(kernel, layout):
    """Inference with stride == kernel takes the rows-first path (no winners recorded): the
    maxima equal PyTorch's, also for rows/columns no window covers (7x9 input), and a backward
    pass after it still routes like PyTorch."""
    r = np.random.default_rng(5)
    x = r.integers(-3, 4, size=(2, 3, 7, 9)).astype(np.float32)    # small integers: ties
    layer = MaxPool2D(kernel)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    y = layer.forward(xin, training=False, layout=layout)
    y = y if layout == "NCHW" else y.transpose(1, 0, 2, 3)
    g = r.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g if layout == "NCHW" else np.ascontiguousarray(g.transpose(1, 0, 2, 3)))
    dx = dx if layout == "NCHW" else dx.transpose(1, 0, 2, 3)
    t_y, t_dx = torch_pool("max", x, kernel, kernel, 0, grad_out=g)
    assert np.array_equal(y, to_numpy(t_y)) and np.array_equal(dx, to_numpy(t_dx))


def test_maxpool2d_stride_defaults_to_kernel_size():
    assert MaxPool2D(2).stride == (2, 2)
    assert AvgPool2D((2, 3)).stride == (2, 3)


# -- activations ----------------------------------------------------------------------------------
ACTIVATION_LAYERS = [
    ("ReLU", ReLU, nn.ReLU),
    ("LeakyReLU", LeakyReLU, nn.LeakyReLU),
    ("LeakyReLU0.3", lambda: LeakyReLU(0.3), lambda: nn.LeakyReLU(0.3)),
    ("Sigmoid", Sigmoid, nn.Sigmoid),
    ("Tanh", Tanh, nn.Tanh),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,make,make_torch", ACTIVATION_LAYERS, ids=[a[0] for a in ACTIVATION_LAYERS])
@pytest.mark.parametrize("shape", [(4, 9), (2, 3, 6, 5)])
def test_activation_layer_output_and_grad_match_torch(name, make, make_torch, dtype, shape, rng):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    x.flat[0] = 0.0
    g = rng.standard_normal(shape).astype(dtype)
    y, dx = run_layer(make(), x, g)
    yt, dxt = run_torch(make_torch(), x, g)
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, dxt, dtype, what="dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_layer_output_and_grad_match_torch(scale, dtype, rng):
    x = (scale * rng.standard_normal((5, 7))).astype(dtype)
    x[0] = [scale, -scale, 0, scale, -scale, 0, 0]
    g = rng.standard_normal(x.shape).astype(dtype)
    y, dx = run_layer(Softmax(), x, g)
    yt, dxt = run_torch(nn.Softmax(dim=1), x, g)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, dxt, dtype, what="dx")


# -- Flatten and Dense ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_flatten_layer_matches_torch(dtype, rng):
    x = rng.standard_normal((3, 4, 2, 5)).astype(dtype)
    g = rng.standard_normal((3, 40)).astype(dtype)
    layer = Flatten()
    y, dx = run_layer(layer, x, g)
    yt, dxt = run_torch(nn.Flatten(), x, g)
    assert np.array_equal(y, to_numpy(yt)) and np.array_equal(dx, to_numpy(dxt))
    assert y.dtype == dtype and dx.dtype == dtype
    assert layer.output_shape((4, 2, 5)) == (40,)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (5, 13, 7), (8, 256, 10)])
def test_dense_layer_output_and_grads_match_torch(n, fin, fout, bias, dtype, rng):
    layer = _cast(Dense(fin, fout, bias=bias, rng=3), dtype)
    mod = nn.Linear(fin, fout, bias=bias).to(torch.float64 if dtype == np.float64 else torch.float32)
    copy_params_to_torch([layer], [mod])
    x = rng.standard_normal((n, fin)).astype(dtype)
    g = rng.standard_normal((n, fout)).astype(dtype)
    y, dx = run_layer(layer, x, g)
    yt, dxt = run_torch(mod, x, g)
    assert_close(y, yt, dtype, what="y")
    assert_close(dx, dxt, dtype, what="dx")
    assert_param_grads_match(layer, mod, dtype)


# -- Dropout --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dropout_p0_is_identity_forward_and_backward(dtype, rng):
    x = rng.standard_normal((4, 6)).astype(dtype)
    g = rng.standard_normal((4, 6)).astype(dtype)
    layer = Dropout(0.0, rng=1)
    y, dx = run_layer(layer, x, g, training=True)
    assert np.array_equal(y, x) and np.array_equal(dx, g)
    assert y.dtype == dtype and dx.dtype == dtype


@pytest.mark.parametrize("p", [0.3, 0.5, 1.0])
def test_dropout_eval_mode_is_identity(p, rng):
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y, dx = run_layer(Dropout(p, rng=1), x, g, training=False)
    assert np.array_equal(y, x) and np.array_equal(dx, g)
    # and it matches torch's dropout in eval mode
    assert np.array_equal(y, to_numpy(nn.Dropout(p).eval()(tt(x))))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_training_output_is_x_times_mask_and_backward_is_grad_times_mask(p, dtype, rng):
    shape = (6, 3, 5, 5)
    # the mask itself: dropout of ones with the same seed
    mask = Dropout(p, rng=42).forward(np.ones(shape, dtype=dtype))
    scale = dtype(1.0 / (1.0 - p))
    assert mask.dtype == dtype
    assert set(np.unique(mask)) == {dtype(0), scale}
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    layer = Dropout(p, rng=42)
    y, dx = run_layer(layer, x, g, training=True)
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.array_equal(y, x * mask)
    assert np.array_equal(dx, g * mask)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
def test_dropout_keep_rate_over_a_large_array_is_one_minus_p(p):
    n = 1_000_000
    y = Dropout(p, rng=7).forward(np.ones((1000, 1000), dtype=np.float32))
    kept = np.count_nonzero(y) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * sigma
    # inverted dropout: the mean is preserved
    assert abs(float(y.mean(dtype=np.float64)) - 1.0) < 5 * sigma / (1 - p)


def test_dropout_same_seed_same_mask_different_seed_different_mask():
    x = np.ones((64, 64), dtype=np.float32)
    a = Dropout(0.5, rng=123).forward(x)
    b = Dropout(0.5, rng=123).forward(x)
    c = Dropout(0.5, rng=124).forward(x)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # successive batches draw fresh masks
    layer = Dropout(0.5, rng=123)
    first, second = layer.forward(x), layer.forward(x)
    assert np.array_equal(first, a) and not np.array_equal(first, second)


# -- BatchNorm ------------------------------------------------------------------------------------
BN_CASES = [("1d", BatchNorm1D, nn.BatchNorm1d, (8, 5)),
            ("2d", BatchNorm2D, nn.BatchNorm2d, (4, 3, 5, 6))]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,make,make_torch,shape", BN_CASES, ids=[c[0] for c in BN_CASES])
def test_batchnorm_training_steps_running_stats_and_eval_match_torch(name, make, make_torch,
                                                                      shape, dtype, rng):
    c = shape[1]
    layer = _cast(make(c, momentum=0.1, eps=1e-5), dtype)
    layer.weight.value[...] = rng.uniform(0.5, 2.0, c)       # non-trivial gamma and beta
    layer.bias.value[...] = rng.standard_normal(c)
    mod = make_torch(c, eps=1e-5, momentum=0.1).to(torch.float64 if dtype == np.float64 else torch.float32)
    copy_params_to_torch([layer], [mod])
    mod.train()
    for step in range(3):                                     # training: batch statistics
        x = (1.5 + 2 * rng.standard_normal(shape)).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        layer.zero_grad()
        mod.zero_grad()
        y, dx = run_layer(layer, x, g, training=True)
        yt, dxt = run_torch(mod, x, g)
        assert y.dtype == dtype and dx.dtype == dtype
        assert_close(y, yt, dtype, what=f"step {step} y")
        assert_close(dx, dxt, dtype, what=f"step {step} dx")
        assert_param_grads_match(layer, mod, dtype)          # dgamma, dbeta
        assert layer.running_mean.dtype == dtype and layer.running_var.dtype == dtype
        assert_close(layer.running_mean, mod.running_mean, dtype, what=f"step {step} running_mean")
        assert_close(layer.running_var, mod.running_var, dtype, what=f"step {step} running_var")
    mod.eval()                                                # evaluation: running statistics
    layer.zero_grad()
    mod.zero_grad()
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    y, dx = run_layer(layer, x, g, training=False)
    yt, dxt = run_torch(mod, x, g)
    assert_close(y, yt, dtype, what="eval y")
    assert_close(dx, dxt, dtype, what="eval dx")
    assert_param_grads_match(layer, mod, dtype)
    assert np.array_equal(layer.running_mean, rm) and np.array_equal(layer.running_var, rv)


def test_batchnorm_default_gamma_one_beta_zero_normalises_each_channel(rng):
    x = (5 + 3 * rng.standard_normal((16, 4, 3, 3)))
    y = BatchNorm2D(4).astype(np.float64).forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)


# -- CrossEntropy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_cross_entropy_loss_and_grad_match_torch(scale, smoothing, dtype, rng):
    logits = (scale * rng.standard_normal((9, 6))).astype(dtype)
    logits[0] = [scale, -scale, scale, -scale, 0, 0]
    labels = rng.integers(0, 6, size=9)
    loss_fn = CrossEntropy(label_smoothing=smoothing)
    loss = loss_fn.forward(logits, labels)
    dz = loss_fn.backward()
    zt = tt(logits, True)
    lt = nn.CrossEntropyLoss(label_smoothing=smoothing)(zt, torch.from_numpy(labels))
    lt.backward()
    assert isinstance(loss, float) and np.isfinite(loss)
    assert dz.dtype == dtype and np.all(np.isfinite(dz))
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(float(lt.detach()), rel=rtol, abs=rtol * 1e-1)
    assert_close(dz, zt.grad, dtype, what="dlogits")


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n(rng):
    """The deck's dL/dz = y_hat - y (divided by the batch size for a mean loss)."""
    z = rng.standard_normal((4, 3))
    y = np.array([0, 2, 1, 2])
    ce = CrossEntropy()
    ce.forward(z, y)
    dz = ce.backward()
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(dz, (p - onehot) / 4, rtol=1e-12)


def test_cross_entropy_accepts_integer_valued_float_labels(rng):
    z = rng.standard_normal((3, 4))
    a = CrossEntropy().forward(z, np.array([1, 0, 3]))
    b = CrossEntropy().forward(z, np.array([1.0, 0.0, 3.0]))
    assert a == b
    assert float(TF.cross_entropy(tt(z), torch.tensor([1, 0, 3]))) == pytest.approx(a, rel=1e-12)


# -- dtype discipline across all layers -----------------------------------------------------------
def _all_layers():
    return [
        (Conv2D(2, 3, 3, padding=1), (2, 2, 5, 5)),
        (MaxPool2D(2), (2, 2, 4, 4)),
        (AvgPool2D(2), (2, 2, 4, 4)),
        (ReLU(), (2, 3)), (LeakyReLU(), (2, 3)), (Sigmoid(), (2, 3)), (Tanh(), (2, 3)),
        (Softmax(), (2, 3)), (Flatten(), (2, 2, 3, 3)), (Dense(4, 3), (2, 4)),
        (Dropout(0.5), (2, 4)), (BatchNorm1D(4), (3, 4)), (BatchNorm2D(2), (2, 2, 3, 3)),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("index", range(13))
def test_every_layer_computes_in_the_dtype_it_is_given(index, dtype, rng):
    layer, shape = _all_layers()[index]
    _cast(layer, dtype)
    for p in layer.parameters():
        assert p.value.dtype == dtype
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x, training=True)
    assert y.dtype == dtype, type(layer).__name__
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == dtype
    for p in layer.parameters():
        assert p.grad.dtype == dtype
    for b in layer.buffers().values():
        assert b.dtype == dtype


def test_numcnn_layers_are_all_covered_here():
    covered = {"Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
               "Softmax", "Flatten", "Dense", "Dropout", "BatchNorm1D", "BatchNorm2D"}
    covered |= {"ConvTranspose2D", "GlobalAvgPool2D", "GlobalMaxPool2D", "Upsample", "ELU",
                "GELU", "SiLU"}      # against PyTorch in test_layers_modern.py
    covered |= {"Residual", "Concat", "Identity", "ChannelPadShortcut"}    # tests/test_graph.py
    public = {n for n in numcnn.layers.REGISTRY if not n.startswith("_") and n != "Layer"}
    assert public <= covered, f"new layers without PyTorch tests: {public - covered}"


def test_maxpool_backward_after_an_inference_forward_matches_training_mode():
    """An eval-mode forward skips recording the winners; backward finds them from the input."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 3, 7, 6)).astype(np.float64)       # ties included
    g = rng.standard_normal((2, 3, 3, 3))
    layer = MaxPool2D(2)
    layer.forward(x, training=False)
    eval_grad = layer.backward(g)
    layer.forward(x, training=True)
    assert np.array_equal(eval_grad, layer.backward(g))
