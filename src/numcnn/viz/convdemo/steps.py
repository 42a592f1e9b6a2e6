"""The arithmetic of one convolution, step by step: the deck's example and its checks.

Each output number is ``sum(window * w_o) + b_o``; :func:`conv_steps` computes them one at a
time, with the window, the products and the sum, and checks the result against
:func:`numcnn.functional.conv2d`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backend import to_numpy
from ...errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from ...functional import conv_output_size, pad2d, pair


#: the largest padded image (height and width) :func:`user_demo` will animate
MAX_DEMO_SIZE = 16
#: Largest magnitude of a pixel, kernel value or bias in a user's demo (every product is printed).
DEMO_MAX_VALUE = 1e6

# The deck's filter W1, written as the deck writes it: one 3x3 slice per input channel c.
_DECK_W1_SLICES = (
    [[0, -1, 0], [1, 1, 0], [1, -1, 1]],      # w1[:,:,0]
    [[0, 1, -1], [-1, 1, 1], [1, 1, 1]],      # w1[:,:,1]
    [[1, -1, -1], [1, -1, 1], [1, 0, 0]],     # w1[:,:,2]
)
# Our second filter (the deck shows only one): small integers, chosen by hand.
_SECOND_FILTER_SLICES = (
    [[1, 0, -1], [1, 0, -1], [1, 0, -1]],
    [[-1, 0, 1], [0, 1, 0], [1, 0, -1]],
    [[0, 1, 0], [1, -1, 1], [0, 1, 0]],
)


@dataclass(eq=False)
class ConvStep:
    """One output number of a convolution and everything that went into it.

    Attributes:
        o: output channel, i.e. which filter (``w_o``) produced this value.
        y, x: the output position (row, column).
        origin: ``(row, col)`` of the window's top-left corner in the *padded* input.
        window: ``(C, kh, kw)`` block of the padded input under the filter.
        kernel: ``(C, kh, kw)`` the filter ``weight[o]``.
        products: ``window * kernel``, number by number.
        channel_sums: ``(C,)`` the products of each input channel added up.
        total: all products added up, ``sum(window * kernel)``.
        bias: the filter's bias ``b_o``.
        value: ``total + bias``, the output value ``o[o][y, x]``.
    """

    o: int
    y: int
    x: int
    origin: tuple
    window: np.ndarray
    kernel: np.ndarray
    products: np.ndarray
    channel_sums: np.ndarray
    total: float
    bias: float
    value: float


#: the seed of :func:`deck_example`'s input, picked so its output has negative numbers and few
#: zeros, like the deck's picture
DECK_SEED = 10


def deck_example(seed=DECK_SEED):
    """The deck's convolution: a 5x5x3 input, padding 1, two 3x3x3 filters, stride 2.

    Returns ``(x, weight, bias, stride, padding)``:

    * ``x``: (1, 3, 5, 5) small integers 0..2 drawn from a seeded random generator (the deck's
      picture shows random inputs too, and doesn't print them; a fixed seed makes ours
      repeatable),
    * ``weight``: (2, 3, 3, 3).  Filter 0 is the deck's W1 (``weight[0, c, i, j] = w1[i, j, c]``);
      filter 1 is a second small-integer filter of our own,
    * ``bias``: ``[0, 1]`` (filter 0 has the deck's ``b1 = 0``),
    * ``stride = 2``, ``padding = 1``.

    Output size: ``H' = 1 + (5 + 2*1 - 3) // 2 = 3``, so the output volume is 3x3x2 and the demo
    has 2*3*3 = 18 steps.  All values are stored as float64 so they can go straight into
    :func:`numcnn.functional.conv2d`; they are whole numbers, so every step can be checked by hand.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(1, 3, 5, 5)).astype(np.float64)
    weight = np.stack([np.array(_DECK_W1_SLICES, dtype=np.float64),
                       np.array(_SECOND_FILTER_SLICES, dtype=np.float64)])   # (O, C, kh, kw)
    bias = np.array([0.0, 1.0])
    return x, weight, bias, 2, 1


def conv_steps(x, weight, bias=None, stride=1, padding=0):
    """Compute a convolution one output value at a time, the way the deck describes it.

    Args:
        x: one image, ``(1, C, H, W)`` (a ``(C, H, W)`` array is taken as a batch of one).
        weight: ``(O, C, kh, kw)``, one ``(C, kh, kw)`` filter per output channel.
        bias: ``(O,)``, a single number for every filter, or None for no bias.
        stride, padding: ints or ``(h, w)`` pairs; the padding is zeros.

    Returns:
        ``(steps, out)``: ``steps`` is a list of :class:`ConvStep` in the order the animation
        shows them (filter 0 at every position row by row, then filter 1, ...), and ``out`` is the
        ``(1, O, H', W')`` output built from those steps, with
        ``H' = 1 + (H + 2*padding - kh) // stride`` (and likewise ``W'``).  ``out`` equals
        ``numcnn.functional.conv2d(x, weight, bias, stride, padding)``; the tests check that.
    """
    x, weight, bias, stride, padding = _check_conv_args(x, weight, bias, stride, padding)
    _, c, h, w = x.shape
    o_count, _, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0])
    wo = conv_output_size(w, kw, stride[1], padding[1])
    xpad = pad2d(x, padding)[0]                         # (C, Hp, Wp)
    out = np.zeros((1, o_count, ho, wo))
    steps = []
    for o in range(o_count):
        kernel = weight[o]
        for y in range(ho):
            for x_ in range(wo):
                r0, c0 = y * stride[0], x_ * stride[1]
                window = xpad[:, r0:r0 + kh, c0:c0 + kw].copy()
                products = window * kernel
                total = float(products.sum())
                value = total + float(bias[o])
                out[0, o, y, x_] = value
                steps.append(ConvStep(o, y, x_, (r0, c0), window, kernel.copy(), products,
                                      products.sum(axis=(1, 2)), total, float(bias[o]), value))
    return steps, out


def _as_float(a, what):
    a = to_numpy(a) if hasattr(a, "dtype") else np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"{what}: expected numbers, got an array of dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{what}: contains NaN or infinity")
    return a


def _check_stride_padding(stride, padding, where):
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if min(stride) < 1:
        raise ConfigError(f"{where}: stride must be >= 1, got {stride}")
    if min(padding) < 0:
        raise ConfigError(f"{where}: padding must be >= 0, got {padding}")
    return stride, padding


def _check_conv_args(x, weight, bias, stride, padding):
    x = _as_float(x, "convolution demo: x")
    weight = _as_float(weight, "convolution demo: weight")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ShapeError(f"convolution demo: x must be one image, (1, C, H, W) or (C, H, W); got shape {x.shape}")
    if weight.ndim != 4:
        raise ShapeError(f"convolution demo: weight must be (O, C, kh, kw); got shape {weight.shape}")
    if weight.shape[1] != x.shape[1]:
        raise ShapeError(f"convolution demo: the filters have {weight.shape[1]} channels (weight "
                         f"{weight.shape}) but the image has {x.shape[1]} (x {x.shape})")
    o = weight.shape[0]
    if bias is None:
        bias = np.zeros(o)
    else:
        bias = _as_float(bias, "convolution demo: bias")
        if bias.ndim == 0:
            bias = np.full(o, float(bias))
        if bias.shape != (o,):
            raise ShapeError(f"convolution demo: bias must be one number or ({o},), got shape {bias.shape}")
    stride, padding = _check_stride_padding(stride, padding, "convolution demo")
    hp, wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if weight.shape[2] > hp or weight.shape[3] > wp:
        raise ShapeError(f"convolution demo: the kernel ({weight.shape[2]}x{weight.shape[3]}) is larger "
                         f"than the padded image ({hp}x{wp}); use more padding or a smaller kernel")
    return x, weight, bias, stride, padding
