"""Pooling: shrink each feature map by taking the max (or mean) of every window.

Shapes: x (N, C, H, W) -> out (N, C, H', W') with H' = 1 + (H + 2p - k) // s.

Both kernels loop over the ``kh * kw`` offsets of the window, never over pixels: for offset
``(i, j)`` the values under it at every window position form one strided slice of the input.

Max pooling: out = max over the window.  Backward: the gradient of a max flows only to the
element that was the max (``d max(a, b)/da = 1 if a won``).  On ties the first element in
row-major window order wins, as in PyTorch, so each output routes its gradient to exactly one input.
Padding is with -inf, so a padded position never wins.

Average pooling: out = mean over the window (PyTorch's ``count_include_pad=True``: the divisor is
always ``kh * kw``).  Backward: each input in the window receives ``grad / (kh * kw)``.

Options (PyTorch's): ``padding`` ``(ph, pw)`` or ``((top, bottom), (left, right))``; max pooling's
``dilation`` (window offsets ``i*d``); ``ceil_mode`` rounds the output size up, so a last window
may hang over the bottom/right edge (it must start inside the input or the leading padding):
that overhang is padded too (-inf / 0) but, like the padding, is never the max, and the
average's divisor leaves it out.  With ``count_include_pad=False`` the divisor counts only the
window's real pixels.  Divisors are per output row times per output column (a window's extent is
one range of rows times one of columns), so they are an outer product of two short vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ._util import pads4, pool_output_size
from .im2col import pad2d, unpad2d, window_slice


@dataclass
class PoolCache:
    argmax: object          # (N, C, H', W') index of the winning offset (max pooling only), or
                            # for tiling windows the pair (column winners, row winners): see
                            # _max_pool_tiling
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple          # ((top, bottom), (left, right)), with a ceil_mode overhang included
    x: object = None        # the input, kept instead of argmax by an inference-mode forward
    dilation: tuple = (1, 1)
    divisor: object = None  # average pooling: kh*kw, or an (H', W') map of window sizes


def _geometry(x_shape, kernel, stride, padding, dilation=(1, 1), ceil_mode=False):
    """``(out_hw, pads)``: the output size and the padding ``((top, bottom), (left, right))``
    to apply, the bottom/right grown by any ceil_mode overhang."""
    pads = pads4(padding)
    out_hw, full = [], []
    for size, k, s, (p0, p1), d in zip(x_shape[2:], kernel, stride, pads, dilation):
        o = pool_output_size(size, k, s, p0, p1, d, ceil_mode)
        over = max(0, (o - 1) * s + d * (k - 1) + 1 - (size + p0 + p1))
        out_hw.append(o)
        full.append((p0, p1 + over))
    return tuple(out_hw), tuple(full)


def _padded_zeros(grad_out, cache: PoolCache):
    """A zero dL/d(padded input): backward adds each window's share in, then crops the padding."""
    n, c, h, w = cache.x_shape
    (t, b), (l, r) = cache.padding
    xp = get_array_module(grad_out)
    return xp.zeros((n, c, h + t + b, w + l + r), dtype=grad_out.dtype)


def _offsets(kernel, stride, out_hw, dilation=(1, 1)):
    """Yield ``(k, rows, cols)`` for each window offset: the strided slices it covers."""
    k = 0
    for i in range(kernel[0]):
        rows = window_slice(i, stride[0], dilation[0], out_hw[0])
        for j in range(kernel[1]):
            yield k, rows, window_slice(j, stride[1], dilation[1], out_hw[1])
            k += 1


def max_pool2d_forward(x, kernel, stride, padding=(0, 0), need_argmax=True, dilation=(1, 1),
                       ceil_mode=False):
    """Max over each ``kernel`` window; returns ``(out, cache)``.

    ``need_argmax=False`` (inference) skips recording the winners, which backward needs.
    """
    xp = get_array_module(x)
    dilation = tuple(dilation)
    out_hw, pads = _geometry(x.shape, kernel, stride, padding, dilation, ceil_mode)
    tiling = tuple(stride) == tuple(kernel) and pads == ((0, 0), (0, 0)) and dilation == (1, 1)
    if tiling and need_argmax:
        out, argmax = _max_pool_tiling(x, kernel, out_hw)
        return out, PoolCache(argmax, x.shape, kernel, stride, pads)
    if tiling:
        return _max_pool_tiling_values(x, kernel, out_hw), PoolCache(None, x.shape, kernel, stride,
                                                                     pads, x, dilation)
    xpad = pad2d(x, pads, value=-xp.inf)
    out = None
    kdt = xp.int8 if kernel[0] * kernel[1] <= 128 else xp.int32
    argmax = xp.zeros(x.shape[:2] + out_hw, dtype=kdt) if need_argmax else None
    for k, rows, cols in _offsets(kernel, stride, out_hw, dilation):
        s = xpad[:, :, rows, cols]
        if out is None:
            out = s.copy()
            continue
        if need_argmax:
            better = s > out                 # strict: on ties the earlier offset keeps the win
            argmax = xp.where(better, kdt(k), argmax)
        xp.maximum(out, s, out=out)
    return out, PoolCache(argmax, x.shape, kernel, stride, pads, None if need_argmax else x,
                          dilation)


def _running_max(slices, xp):
    """Max over ``slices`` and, per element, the index of the first slice holding it (int8, or
    int32 for windows wider than 127)."""
    out = slices[0].copy()
    if len(slices) == 2:                                   # the common 2-wide window: a bool
        win = slices[1] > out
        xp.maximum(out, slices[1], out=out)
        return out, win
    kdt = xp.int8 if len(slices) <= 128 else xp.int32
    win = xp.zeros(out.shape, dtype=kdt)
    for k, s in enumerate(slices[1:], start=1):
        better = s > out                                   # strict: ties keep the earlier one
        xp.copyto(win, kdt(k), where=better)
        xp.maximum(out, s, out=out)
    return out, win


def _max_pool_tiling(x, kernel, out_hw):
    """Max pooling when the windows tile the input (stride == kernel, no padding), in two passes.

    First the max across each window's ``kw`` columns, row by row (the winner of a row is its
    first maximum), then across the ``kh`` row maxima (the first row holding the maximum wins):
    together the first maximum in row-major window order, PyTorch's tie rule.  Each pass is
    ``kw`` (then ``kh``) strided slices, and keeping two small winner maps instead of one index
    per offset is about 3x faster than the general loop.  Returns ``(out, (col_win, row_win))``.
    """
    xp = get_array_module(x)
    (kh, kw), (ho, wo) = kernel, out_hw
    x = x[:, :, :ho * kh, :wo * kw]                        # rows/columns no window covers
    rowmax, col_win = _running_max([x[..., j::kw] for j in range(kw)], xp)       # (N, C, H, W')
    out, row_win = _running_max([rowmax[..., i::kh, :] for i in range(kh)], xp)   # (N, C, H', W')
    return out, (col_win, row_win)


def _max_pool_tiling_values(x, kernel, out_hw):
    """The maxima alone of tiling windows (inference: no winners to keep): the max over each
    window's ``kh`` rows first (whole rows, contiguous in memory: ~25% faster than columns
    first for 2x2), then over the ``kw`` columns of those row maxima."""
    xp = get_array_module(x)
    (kh, kw), (ho, wo) = kernel, out_hw
    x = x[:, :, :ho * kh, :wo * kw]
    rows = x[..., 0::kh, :]
    if kh > 1:
        rows = xp.maximum(rows, x[..., 1::kh, :])
        for i in range(2, kh):
            xp.maximum(rows, x[..., i::kh, :], out=rows)
    out = rows[..., 0::kw]
    if kw > 1:
        out = xp.maximum(out, rows[..., 1::kw])
        for j in range(2, kw):
            xp.maximum(out, rows[..., j::kw], out=out)
    return out if kh > 1 or kw > 1 else out.copy()


def _max_pool_tiling_backward(grad_out, cache: PoolCache):
    """Adjoint of :func:`_max_pool_tiling`: dL/dO to the winning row, then the winning column."""
    xp = get_array_module(grad_out)
    col_win, row_win = cache.argmax
    (kh, kw) = cache.kernel
    n, c, h, w = cache.x_shape
    ho, wo = grad_out.shape[2:]
    drow = xp.empty(col_win.shape, dtype=grad_out.dtype)            # (N, C, H'*kh, W')
    for i in range(kh):
        xp.multiply(grad_out, _is(row_win, i, xp), out=drow[..., i::kh, :])
    if (h, w) == (ho * kh, wo * kw):
        dx = xp.empty(cache.x_shape, dtype=grad_out.dtype)
    else:                                                  # rows/columns no window covered
        dx = xp.zeros(cache.x_shape, dtype=grad_out.dtype)
    inner = dx[:, :, :ho * kh, :wo * kw]
    for j in range(kw):
        xp.multiply(drow, _is(col_win, j, xp), out=inner[..., j::kw])
    return dx


def _is(win, k, xp):
    """Mask of the elements whose winner is offset ``k`` (a bool map holds offsets 0 and 1)."""
    if win.dtype == bool:
        return win if k else xp.logical_not(win)
    return win == k


def max_pool2d_backward(grad_out, cache: PoolCache):
    """Route each output's gradient to the input element that won its window."""
    xp = get_array_module(grad_out)
    if isinstance(cache.argmax, tuple):
        return _max_pool_tiling_backward(grad_out, cache)
    dx = _padded_zeros(grad_out, cache)
    out_hw = grad_out.shape[2:]
    # windows that don't overlap write disjoint slices: assign instead of accumulating
    disjoint = all(s >= d * (k - 1) + 1 for s, k, d in zip(cache.stride, cache.kernel,
                                                           cache.dilation))
    for k, rows, cols in _offsets(cache.kernel, cache.stride, out_hw, cache.dilation):
        if disjoint:
            xp.multiply(grad_out, cache.argmax == k, out=dx[:, :, rows, cols])
        else:
            dx[:, :, rows, cols] += grad_out * (cache.argmax == k)
    return xp.ascontiguousarray(unpad2d(dx, cache.padding))


def _window_sizes(size, kernel, stride, pads, out, count_include_pad):
    """Per output row (or column): how many rows its window averages over, as PyTorch counts
    them: the window clipped to the padded input (never the ceil_mode overhang), and with
    ``count_include_pad=False`` to the input itself."""
    start = np.arange(out) * stride - pads[0]
    end = np.minimum(start + kernel, size + pads[1])
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def avg_pool2d_forward(x, kernel, stride, padding=(0, 0), ceil_mode=False,
                       count_include_pad=True):
    """Mean over each window; returns ``(out, cache)``.

    The divisor is ``kh * kw`` (zero padding counted, PyTorch's default) unless a window hangs
    over the edge (``ceil_mode``) or ``count_include_pad`` is False: then it is each window's
    own size (see :func:`_window_sizes`).
    """
    xp = get_array_module(x)
    out_hw, pads = _geometry(x.shape, kernel, stride, padding, (1, 1), ceil_mode)
    user = pads4(padding)
    xpad = pad2d(x, pads)
    out = None
    for _, rows, cols in _offsets(kernel, stride, out_hw):
        s = xpad[:, :, rows, cols]
        if out is None:
            out = s.copy()
        else:
            out += s
    if pads == user and (count_include_pad or user == ((0, 0), (0, 0))):
        divisor = kernel[0] * kernel[1]                       # every window is whole
        out *= x.dtype.type(1.0 / divisor)
    else:
        rows, cols = (_window_sizes(x.shape[2 + a], kernel[a], stride[a], user[a], out_hw[a],
                                    count_include_pad) for a in range(2))
        divisor = xp.asarray(np.outer(rows, cols).astype(x.dtype))
        out /= divisor
    return out, PoolCache(None, x.shape, kernel, stride, pads, divisor=divisor)


def avg_pool2d_backward(grad_out, cache: PoolCache):
    """Every input under a window receives ``grad / divisor`` from that window."""
    xp = get_array_module(grad_out)
    dx = _padded_zeros(grad_out, cache)
    divisor = cache.divisor if cache.divisor is not None else cache.kernel[0] * cache.kernel[1]
    if isinstance(divisor, int):
        share = grad_out * grad_out.dtype.type(1.0 / divisor)
    else:
        share = grad_out / divisor
    for _, rows, cols in _offsets(cache.kernel, cache.stride, grad_out.shape[2:]):
        dx[:, :, rows, cols] += share
    return xp.ascontiguousarray(unpad2d(dx, cache.padding))


def global_avg_pool2d(x, layout="NCHW"):
    """Mean over each whole feature map: (N, C, H, W) -> (N, C) (from (C, N, H, W) in "CNHW")."""
    out = x.mean(axis=(2, 3))
    return out if layout == "NCHW" else out.T.copy()


def global_avg_pool2d_backward(grad_out, x_shape, layout="NCHW"):
    """Each of the H*W inputs of a map receives dL/dO / (H*W)."""
    xp = get_array_module(grad_out)
    h, w = x_shape[2:]
    g = grad_out if layout == "NCHW" else grad_out.T
    g = g * grad_out.dtype.type(1.0 / (h * w))
    return xp.ascontiguousarray(xp.broadcast_to(g[:, :, None, None], x_shape))


def global_max_pool2d(x, layout="NCHW"):
    """Max over each whole feature map: (N, C, H, W) -> (N, C); returns ``(out, argmax)``, the
    flat index of the first maximum of each map (PyTorch's tie rule, as in max pooling)."""
    a, b, h, w = x.shape
    flat = x.reshape(a, b, h * w)
    argmax = flat.argmax(axis=2)
    out = flat.max(axis=2)
    return (out if layout == "NCHW" else out.T.copy()), argmax


def global_max_pool2d_backward(grad_out, argmax, x_shape, layout="NCHW"):
    """The whole dL/dO of a map goes to its (first) maximum."""
    xp = get_array_module(grad_out)
    a, b, h, w = x_shape
    g = grad_out if layout == "NCHW" else grad_out.T
    winner = xp.arange(h * w)[None, None, :] == argmax[:, :, None]
    return (winner * g[:, :, None]).reshape(x_shape)
