"""The deck's worked convolution example, number by number.

A 5x5x3 input, zero padding 1, two 3x3x3 filters, stride 2 -> a 3x3x2 output
(H' = 1 + (5 + 2*1 - 3) / 2 = 3).  The deck writes arrays channel-last: ``w1[:, :, c]`` is the
3x3 slice of filter W1 for input channel c.  numcnn (like PyTorch) stores
``weight[o, c, i, j] = w[i, j, c]`` and images as ``x[n, c, i, j] = x_deck[i, j, c]``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import numcnn
import numcnn.functional as F
from numcnn.layers import Conv2D
from conftest import assert_close, torch_conv

# -- the deck's filter W1 (bias b1 = 0) ---------------------------------------------------------
W1_SLICES = [
    [[0, -1, 0], [1, 1, 0], [1, -1, 1]],      # w1[:, :, 0]
    [[0, 1, -1], [-1, 1, 1], [1, 1, 1]],      # w1[:, :, 1]
    [[1, -1, -1], [1, -1, 1], [1, 0, 0]],     # w1[:, :, 2]
]
B1 = 0.0

# -- our second filter W0 (bias b0 = 1), chosen to be asymmetric so layout mistakes show -----------
W0_SLICES = [
    [[1, 0, -1], [0, 1, 0], [-1, 0, 1]],      # w0[:, :, 0]
    [[-1, -1, 0], [0, 0, 1], [1, 0, -1]],     # w0[:, :, 1]
    [[0, 1, 1], [-1, 0, 0], [0, -1, 1]],      # w0[:, :, 2]
]
B0 = 1.0

# -- the input: integers in 0..2 as in CS231n's demo (numpy.random.default_rng(231)) -------------
X_SLICES = [
    [[0, 2, 0, 1, 2], [0, 2, 1, 0, 0], [0, 0, 2, 2, 1], [0, 2, 1, 0, 1], [1, 1, 1, 1, 1]],  # x[:, :, 0]
    [[1, 1, 1, 2, 1], [1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [2, 1, 1, 2, 2], [1, 2, 2, 2, 0]],  # x[:, :, 1]
    [[0, 0, 0, 1, 2], [2, 2, 2, 0, 2], [0, 2, 2, 2, 2], [0, 0, 2, 0, 1], [2, 2, 1, 1, 1]],  # x[:, :, 2]
]

STRIDE, PAD = 2, 1


def deck_to_numcnn_weight(*filters):
    """Deck filters given as channel slices w[:, :, c] -> numcnn weight[o, c, i, j] = w[i, j, c]."""
    out = np.zeros((len(filters), 3, 3, 3))
    for o, slices in enumerate(filters):
        w = np.stack([np.array(s, dtype=float) for s in slices], axis=-1)   # deck layout (i, j, c)
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    out[o, c, i, j] = w[i, j, c]
    return out


def deck_input():
    x_deck = np.stack([np.array(s, dtype=float) for s in X_SLICES], axis=-1)      # (5, 5, 3)
    return x_deck.transpose(2, 0, 1)[None].copy()                                # (1, 3, 5, 5)


def hand_conv(x, weight, bias, stride, pad):
    """The deck's definition, with nothing but Python loops: each output is the sum over the
    3x3x3 window of input times filter, plus the bias; positions outside the image are zero."""
    _, c_in, h, w = x.shape
    n_out, _, kh, kw = weight.shape
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (w + 2 * pad - kw) // stride + 1
    out = np.zeros((1, n_out, ho, wo))
    for o in range(n_out):
        for y in range(ho):
            for x_ in range(wo):
                total = 0.0
                for c in range(c_in):
                    for i in range(kh):
                        for j in range(kw):
                            r = y * stride + i - pad
                            s = x_ * stride + j - pad
                            if 0 <= r < h and 0 <= s < w:
                                total += float(x[0, c, r, s]) * float(weight[o, c, i, j])
                out[0, o, y, x_] = total + bias[o]
    return out


@pytest.fixture
def deck_layer():
    layer = Conv2D(3, 2, 3, stride=STRIDE, padding=PAD, dtype="float64")
    layer.weight.value[...] = deck_to_numcnn_weight(W0_SLICES, W1_SLICES)
    layer.bias.value[...] = [B0, B1]
    return layer


def test_deck_input_is_seeded_ints_in_0_to_2():
    x_deck = np.random.default_rng(231).integers(0, 3, size=(5, 5, 3))
    assert np.array_equal(deck_input()[0], x_deck.transpose(2, 0, 1))


def test_deck_filter_layout_conversion_puts_channel_index_second():
    w = deck_to_numcnn_weight(W0_SLICES, W1_SLICES)
    assert w.shape == (2, 3, 3, 3)
    # W1 is output 1; its channel-c slice is exactly the deck's w1[:, :, c]
    for c in range(3):
        assert np.array_equal(w[1, c], np.array(W1_SLICES[c]))
    assert w[1, 0, 0, 1] == -1 and w[1, 1, 0, 2] == -1 and w[1, 2, 2, 0] == 1


def test_deck_example_output_shape_is_3x3x2(deck_layer):
    out = deck_layer.forward(deck_input())
    assert out.shape == (1, 2, 3, 3)
    assert deck_layer.output_shape((3, 5, 5)) == (2, 3, 3)
    assert F.conv_output_size(5, 3, STRIDE, PAD) == 3


def test_deck_example_each_of_18_outputs_equals_the_window_sum(deck_layer):
    x = deck_input()
    out = deck_layer.forward(x)
    expected = hand_conv(x, deck_layer.weight.value, deck_layer.bias.value, STRIDE, PAD)
    assert expected.shape == (1, 2, 3, 3)
    checked = 0
    for o in range(2):
        for y in range(3):
            for x_ in range(3):
                assert out[0, o, y, x_] == expected[0, o, y, x_], (o, y, x_)
                checked += 1
    assert checked == 18
    # all sums are of small integers, so every output is an exact integer
    assert np.array_equal(out, np.round(out))


def test_deck_example_known_values_for_filter_w1(deck_layer):
    """Filter W1's 3x3 output map written out (integers, b1 = 0), e.g. its top-left value is
    the window over rows -1..1, cols -1..1 (the first row and column are padding)."""
    out = deck_layer.forward(deck_input())
    assert np.array_equal(out[0, 1], [[5, 9, 1], [6, 10, 4], [5, 2, 0]])     # W1, b1 = 0
    assert np.array_equal(out[0, 0], [[4, -1, 0], [4, 0, 3], [0, 4, -2]])    # W0, b0 = 1
    x = deck_input()[0]
    w1 = deck_to_numcnn_weight(W1_SLICES)[0]
    # worked by hand: channel 0 gives 0*1 + 2*0 + 0*(-1) + 2*1 = 2, channel 1 gives
    # 1 + 1 + 1 + 0 = 3, channel 2 gives 0*(-1) + 0*1 + 2*0 + 2*0 = 0: 2 + 3 + 0 + b1 = 5
    assert out[0, 1, 0, 0] == 5
    # top-left output: the window covers padded rows/cols -1..1, so only w1[:, 1:, 1:] sees data
    top_left = sum(x[c, i, j] * w1[c, i + 1, j + 1] for c in range(3) for i in range(2) for j in range(2))
    assert out[0, 1, 0, 0] == top_left
    # centre output: window rows 1..3, cols 1..3, all inside the image
    centre = sum(x[c, 1 + i, 1 + j] * w1[c, i, j] for c in range(3) for i in range(3) for j in range(3))
    assert out[0, 1, 1, 1] == centre


def test_deck_example_agrees_with_torch_and_the_naive_kernel(deck_layer):
    x = deck_input()
    out = deck_layer.forward(x)
    w, b = deck_layer.weight.value, deck_layer.bias.value
    assert_close(out, torch_conv(x, w, b, STRIDE, PAD), np.float64)
    assert np.array_equal(out, F.conv2d_naive(x, w, b, (2, 2), (1, 1)))
    # float32 gives the same integers
    out32 = Conv2D(3, 2, 3, stride=2, padding=1)
    out32.weight.value[...] = w
    out32.bias.value[...] = b
    assert np.array_equal(out32.forward(x.astype(np.float32)), out.astype(np.float32))


def _central_differences(f, arr, eps=1e-5):
    """d f / d arr by (f(a + eps) - f(a - eps)) / (2 eps), one entry at a time."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def test_deck_example_gradients_match_central_differences(deck_layer):
    """dx, dw and db of f = sum(out * G) against central differences over every entry."""
    x = deck_input()
    G = np.random.default_rng(5).integers(-3, 4, size=(1, 2, 3, 3)).astype(np.float64)
    deck_layer.forward(x)
    deck_layer.zero_grad()
    dx = deck_layer.backward(G)
    dw, db = deck_layer.weight.grad, deck_layer.bias.grad
    assert dx.shape == x.shape and dw.shape == (2, 3, 3, 3) and db.shape == (2,)

    def f():
        return float(np.sum(deck_layer.forward(x) * G))

    num_dx = _central_differences(f, x)
    num_dw = _central_differences(f, deck_layer.weight.value)
    num_db = _central_differences(f, deck_layer.bias.value)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(dw, num_dw, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(db, num_db, rtol=1e-8, atol=1e-8)
    # db is simply the sum of G over each output map
    assert np.array_equal(db, G.sum(axis=(0, 2, 3)))
    # and torch agrees with all three
    _, t_dx, t_dw, t_db = torch_conv(x, deck_layer.weight.value, deck_layer.bias.value,
                                     STRIDE, PAD, grad_out=G)
    assert_close(dx, t_dx, np.float64)
    assert_close(dw, t_dw, np.float64)
    assert_close(db, t_db, np.float64)


def test_deck_example_passes_numcnn_gradcheck(deck_layer):
    report = numcnn.gradcheck(deck_layer, deck_input(), max_entries=100)
    assert report.max_rel_error < 1e-7, str(report)
    assert set(report.errors) == {"input", "weight", "bias"}
    assert report.checked == 75 + 54 + 2


def test_deck_example_dw_is_sum_of_windows_times_upstream_gradient(deck_layer):
    """The deck's dL/dK = sum_j dL/dO_j * I_j: each weight's gradient adds up the input value it
    met in every window, weighted by that window's upstream gradient."""
    x = deck_input()
    G = np.random.default_rng(9).integers(-2, 3, size=(1, 2, 3, 3)).astype(np.float64)
    deck_layer.forward(x)
    deck_layer.zero_grad()
    deck_layer.backward(G)
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dw = np.zeros((2, 3, 3, 3))
    for o in range(2):
        for y in range(3):
            for x_ in range(3):
                dw[o] += G[0, o, y, x_] * xpad[0, :, 2 * y:2 * y + 3, 2 * x_:2 * x_ + 3]
    assert np.array_equal(deck_layer.weight.grad, dw)


def test_torch_is_not_needed_by_numcnn_itself():
    import sys
    assert "torch" in sys.modules          # the tests imported it ...
    import numcnn.functional.conv as conv_mod
    assert "torch" not in vars(conv_mod)   # ... but numcnn's kernels never reference it
    assert torch.__version__.startswith("2.13.0")
