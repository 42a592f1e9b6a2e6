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
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from ._util import conv_output_size
from .im2col import pad2d, unpad2d, window_slice


@dataclass
class PoolCache:
    argmax: object          # (N, C, H', W') index of the winning offset (max pooling only), or
                            # for tiling windows the pair (column winners, row winners): see
                            # _max_pool_tiling
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    x: object = None        # the input, kept instead of argmax by an inference-mode forward


def _geometry(x_shape, kernel, stride, padding):
    h, w = x_shape[2:]
    return (conv_output_size(h, kernel[0], stride[0], padding[0]),
            conv_output_size(w, kernel[1], stride[1], padding[1]))


def _padded_zeros(grad_out, cache: PoolCache):
    """A zero dL/d(padded input): backward adds each window's share in, then crops the padding."""
    n, c, h, w = cache.x_shape
    ph, pw = cache.padding
    xp = get_array_module(grad_out)
    return xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)


def _offsets(kernel, stride, out_hw):
    """Yield ``(k, rows, cols)`` for each window offset: the strided slices it covers."""
    k = 0
    for i in range(kernel[0]):
        rows = window_slice(i, stride[0], 1, out_hw[0])
        for j in range(kernel[1]):
            yield k, rows, window_slice(j, stride[1], 1, out_hw[1])
            k += 1


def max_pool2d_forward(x, kernel, stride, padding=(0, 0), need_argmax=True):
    """Max over each ``kernel`` window; returns ``(out, cache)``.

    ``need_argmax=False`` (inference) skips recording the winners, which backward needs.
    """
    xp = get_array_module(x)
    out_hw = _geometry(x.shape, kernel, stride, padding)
    if tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0) and need_argmax:
        out, argmax = _max_pool_tiling(x, kernel, out_hw)
        return out, PoolCache(argmax, x.shape, kernel, stride, padding)
    xpad = pad2d(x, padding, value=-xp.inf)
    out = None
    kdt = xp.int8 if kernel[0] * kernel[1] <= 128 else xp.int32
    argmax = xp.zeros(x.shape[:2] + out_hw, dtype=kdt) if need_argmax else None
    for k, rows, cols in _offsets(kernel, stride, out_hw):
        s = xpad[:, :, rows, cols]
        if out is None:
            out = s.copy()
            continue
        if need_argmax:
            better = s > out                 # strict: on ties the earlier offset keeps the win
            argmax = xp.where(better, kdt(k), argmax)
        xp.maximum(out, s, out=out)
    return out, PoolCache(argmax, x.shape, kernel, stride, padding, None if need_argmax else x)


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
    disjoint = cache.stride[0] >= cache.kernel[0] and cache.stride[1] >= cache.kernel[1]
    for k, rows, cols in _offsets(cache.kernel, cache.stride, out_hw):
        if disjoint:
            xp.multiply(grad_out, cache.argmax == k, out=dx[:, :, rows, cols])
        else:
            dx[:, :, rows, cols] += grad_out * (cache.argmax == k)
    return xp.ascontiguousarray(unpad2d(dx, cache.padding))


def avg_pool2d_forward(x, kernel, stride, padding=(0, 0)):
    """Mean over each window (zero padding counted in the divisor); returns ``(out, cache)``."""
    out_hw = _geometry(x.shape, kernel, stride, padding)
    xpad = pad2d(x, padding)
    out = None
    for _, rows, cols in _offsets(kernel, stride, out_hw):
        s = xpad[:, :, rows, cols]
        if out is None:
            out = s.copy()
        else:
            out += s
    out *= x.dtype.type(1.0 / (kernel[0] * kernel[1]))
    return out, PoolCache(None, x.shape, kernel, stride, padding)


def avg_pool2d_backward(grad_out, cache: PoolCache):
    """Every input under a window receives ``grad / (kh * kw)`` from that window."""
    xp = get_array_module(grad_out)
    dx = _padded_zeros(grad_out, cache)
    share = grad_out * grad_out.dtype.type(1.0 / (cache.kernel[0] * cache.kernel[1]))
    for _, rows, cols in _offsets(cache.kernel, cache.stride, grad_out.shape[2:]):
        dx[:, :, rows, cols] += share
    return xp.ascontiguousarray(unpad2d(dx, cache.padding))
