"""im2col and col2im: turning a convolution into one matrix multiply.

A convolution slides a ``kh x kw`` window over every channel of the (zero-padded) input.  If we
copy the values under each window position into one column, the whole convolution becomes a
single GEMM: ``out = W (out_ch, C*kh*kw)  @  cols (C*kh*kw, N*H'*W')``.  (:mod:`.conv` builds the
columns for a block of images at a time, N being the block's size, so their memory stays
bounded: one GEMM per block.)

Our columns are laid out as ``(C, kh, kw, N, H', W')`` so that

* the row index ``(c, i, j)`` matches ``weight.reshape(out_ch, -1)`` (PyTorch's layout), and
* the columns are one strided view of the padded input, copied in one go: for a fixed kernel
  offset ``(i, j)`` the values under it at every window position are just a strided slice of
  the input, and the view stacks those slices along the ``kh`` and ``kw`` axes without copying.
  There is no Python loop over pixels or samples.

``col2im`` is the adjoint (transpose) of ``im2col``: it adds each column entry back onto the
pixel it was copied from.  Overlapping windows add up, which is exactly the sum over ``j`` in the
deck's ``dL/dI_i = sum_j dL/dO_j * dO_j/dI_i``.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ._util import pads4


def pad2d(x, padding, value=0.0):
    """Zero-pad (or ``value``-pad) the last two axes of a 4-D array by ``(ph, pw)`` on both sides,
    or by ``((top, bottom), (left, right))``."""
    (t, b), (l, r) = pads4(padding)
    if t == b == l == r == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + t + b, w + l + r), value, dtype=x.dtype)
    out[:, :, t:t + h, l:l + w] = x
    return out


def unpad2d(x, padding):
    """Inverse of :func:`pad2d`: crop the padding off each side (works when a pad is 0)."""
    (t, b), (l, r) = pads4(padding)
    h, w = x.shape[-2:]
    return x[..., t:h - b, l:w - r]


def window_slice(offset, stride, dilation, out_size):
    """The slice that picks, for kernel offset ``i``, the input rows under every window position."""
    start = offset * dilation
    return slice(start, start + stride * (out_size - 1) + 1, stride)


def im2col(x_padded, kernel, stride, dilation, out_hw, out=None, layout="NCHW"):
    """Copy every receptive field of a padded input into columns.

    Args:
        x_padded: ``(N, C, Hp, Wp)`` input, already zero-padded.
        kernel, stride, dilation: ``(kh, kw)``, ``(sh, sw)``, ``(dh, dw)``.
        out_hw: ``(H', W')``, from :func:`conv_output_size`.
        out: optional reusable buffer of shape ``(C, kh, kw, N, H', W')``.
        layout: ``"NCHW"``, or ``"CNHW"`` when ``x_padded`` is ``(C, N, Hp, Wp)``.

    Returns:
        ``cols`` of shape ``(C, kh, kw, N, H', W')``; ``cols.reshape(C*kh*kw, -1)`` is the GEMM
        operand, with ``cols[c, i, j, n, y, x] = x_padded[n, c, y*sh + i*dh, x*sw + j*dw]``.
    """
    xp = get_array_module(x_padded)
    xt = x_padded.transpose(1, 0, 2, 3) if layout == "NCHW" else x_padded  # (C, N, Hp, Wp) view
    c, n = xt.shape[:2]
    kh, kw = kernel
    ho, wo = out_hw
    if out is None:
        out = xp.empty((c, kh, kw, n, ho, wo), dtype=x_padded.dtype)
    # every window at once: a (C, kh, kw, N, H', W') strided view of the input, copied in one go
    # (one pass, one kernel launch on a GPU; kh*kw strided slices were 1.2-1.6x slower in NumPy)
    sc, sn, sy, sx = xt.strides
    windows = xp.lib.stride_tricks.as_strided(
        xt, shape=(c, kh, kw, n, ho, wo),
        strides=(sc, sy * dilation[0], sx * dilation[1], sn, sy * stride[0], sx * stride[1]))
    out[...] = windows
    return out


def col2im(cols, padded_shape, kernel, stride, dilation, layout="NCHW"):
    """Adjoint of :func:`im2col`: sum each column entry back onto the pixel it came from.

    Args:
        cols: ``(C, kh, kw, N, H', W')`` gradients with respect to the columns.
        padded_shape: ``(N, C, Hp, Wp)`` of the padded input.

    Returns:
        ``(N, C, Hp, Wp)`` gradient with respect to the padded input (a view of a
        ``(C, N, Hp, Wp)`` array, which is returned as is when ``layout`` is ``"CNHW"``).
    """
    xp = get_array_module(cols)
    c, kh, kw, n, ho, wo = cols.shape
    dx = xp.zeros((padded_shape[1], padded_shape[0]) + tuple(padded_shape[2:]), dtype=cols.dtype)
    for i in range(kh):
        rows = window_slice(i, stride[0], dilation[0], ho)
        for j in range(kw):
            dx[:, :, rows, window_slice(j, stride[1], dilation[1], wo)] += cols[:, i, j]
    return dx.transpose(1, 0, 2, 3) if layout == "NCHW" else dx


# -- the "wide" fast path for stride 1 -----------------------------------------------------------
# With stride 1, the rows of the window at offset (i, j) are consecutive in memory if we let each
# output row run the full padded width Wp instead of W' (the extra Wp - W' "garbage" columns are
# cut from the output afterwards and are zero in every gradient).  Then one kernel offset is ONE
# contiguous run of H' * Wp values per (channel, image) plane, and numpy copies and adds long
# contiguous runs instead of W'-sized pieces: im2col and col2im get several times faster, for a
# GEMM that is Wp / W' larger.

def padded_flat(x, padding, slack):
    """``x`` (any 4-D layout) zero-padded into a flat buffer with ``slack`` spare zeros at the end.

    Returns ``(buf, view)``: ``view`` is the padded ``(A, B, Hp, Wp)`` array living in ``buf``.
    """
    xp = get_array_module(x)
    a, b, h, w = x.shape
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    buf = xp.zeros(a * b * hp * wp + slack, dtype=x.dtype)
    view = buf[:a * b * hp * wp].reshape(a, b, hp, wp)
    view[:, :, ph:ph + h, pw:pw + w] = x
    return buf, view


def _window_runs(buf, n, c, hp, wp, kernel, dilation, out_h, layout):
    """The ``(C, kh, kw, N, H'*Wp)`` strided view into the padded flat ``buf`` whose
    ``[c, i, j, n]`` is the run of H'*Wp values under kernel offset ``(i, j)`` in plane
    ``(n, c)``: what im2col copies out and col2im adds back."""
    xp = get_array_module(buf)
    item, plane = buf.itemsize, hp * wp
    sc, sn = (plane, c * plane) if layout == "NCHW" else (n * plane, plane)
    shape = (c, kernel[0], kernel[1], n, out_h * wp)
    strides = (sc * item, dilation[0] * wp * item, dilation[1] * item, sn * item, item)
    if xp is np:           # the view made directly: as_strided's checks cost ~10 us a call
        return np.ndarray(shape, buf.dtype, buffer=buf, strides=strides)
    return xp.lib.stride_tricks.as_strided(buf, shape=shape, strides=strides)


def _split(shape, layout):
    a, b, h, w = shape
    return (a, b, h, w) if layout == "NCHW" else (b, a, h, w)


def im2col_wide(x, padding, kernel, dilation, out_h, layout="NCHW", out=None):
    """Columns ``(C, kh, kw, N, H', Wp)`` for a stride-1 convolution (see above).

    ``x`` is ``(N, C, H, W)``, or ``(C, N, H, W)`` when ``layout`` is ``"CNHW"``; ``out`` an
    optional buffer of that shape to fill.
    """
    xp = get_array_module(x)
    n, c, h, w = _split(x.shape, layout)
    kh, kw = kernel
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    slack = (kw - 1) * dilation[1] + 1
    buf, _ = padded_flat(x, padding, slack)
    if out is None:
        out = xp.empty((c, kh, kw, n, out_h, wp), dtype=x.dtype)
    # every kernel offset's runs in one view, copied in one go
    out.reshape(c, kh, kw, n, out_h * wp)[...] = _window_runs(buf, n, c, hp, wp, kernel,
                                                             dilation, out_h, layout)
    return out


def col2im_wide(dcols, x_shape, padding, dilation, layout="NCHW"):
    """Adjoint of :func:`im2col_wide`: returns dL/dx of shape ``x_shape`` (in ``layout``).

    The result is a view into the padded buffer (the padding cropped off, not copied): the
    caller copies it into place anyway.
    """
    xp = get_array_module(dcols)
    c, kh, kw, n, out_h, wp = dcols.shape
    h, w = x_shape[2:]
    hp = h + 2 * padding[0]
    slack = (kw - 1) * dilation[1] + 1
    buf = xp.zeros(n * c * hp * wp + slack, dtype=dcols.dtype)
    flat = dcols.reshape(c, kh, kw, n, out_h * wp)
    runs = _window_runs(buf, n, c, hp, wp, (kh, kw), dilation, out_h, layout)
    for i in range(kh):                 # offsets overlap in buf: one add per offset
        for j in range(kw):
            runs[:, i, j] += flat[:, i, j]
    dx = buf[:n * c * hp * wp].reshape(x_shape[0], x_shape[1], hp, wp)
    return dx[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w]
