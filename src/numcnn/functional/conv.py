"""2-D convolution (cross-correlation, as in PyTorch and the deck), forward and backward.

Shapes:
    x:      (N, C, H, W)            input tensor, one image per row of the batch
    weight: (O, C, kh, kw)          O kernels, each spanning all C input channels
    bias:   (O,) or None
    out:    (N, O, H', W')          depth O: one feature map per kernel
    H' = 1 + (H + 2*ph - dh*(kh - 1) - 1) // sh     (and likewise W')

Forward (the deck's "O = sum I * K" plus bias):
    out[n, o, y, x] = b[o] + sum_{c,i,j} K[o, c, i, j] * I_pad[n, c, y*sh + i*dh, x*sw + j*dw]
computed as one GEMM over im2col columns: out = W.reshape(O, -1) @ cols.  The bias rides along
in the same GEMM as one extra weight column times a row of ones under the columns, and the same
row gives dL/db = dL/dO @ 1 for free in the backward GEMM.

Backward (the deck's chain rule, dL/dK_i = sum_j dL/dO_j * dO_j/dK_i with dO_j/dK_i = I_i):
    dL/dK = dL/dO @ cols^T         every output position j contributes dL/dO_j times its window
    dL/db = sum of dL/dO over N, H', W'
    dL/dI = col2im(W^T @ dL/dO)    each input pixel collects dL/dO_j * K from every window using it
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from ._util import conv_output_size
from .im2col import col2im, col2im_wide, im2col, im2col_wide, pad2d, unpad2d


@dataclass
class ConvCache:
    """What the backward pass needs from the forward pass."""
    cols: object           # (C*kh*kw [+1 ones row for the bias], N*H'*W') columns (W' = Wp if wide)
    x_shape: tuple         # (N, C, H, W) of the unpadded input
    stride: tuple
    padding: tuple
    dilation: tuple
    wide: bool = False     # stride-1 fast path: output rows run the full padded width
    layout: str = "NCHW"   # or "CNHW": channels first, the layout Sequential uses inside


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                   layout="NCHW"):
    """Convolve ``x`` with ``weight`` and add ``bias``; returns ``(out, cache)``.

    ``stride``, ``padding`` and ``dilation`` are ``(h, w)`` pairs.  The caller validates shapes.
    With ``layout="CNHW"`` input and output are ``(C, N, H, W)``: the GEMM's natural output
    layout, so a network that stays in it needs no transposed copies between layers.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape if layout == "NCHW" else (x.shape[1], x.shape[0]) + x.shape[2:]
    o, _, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    wide = stride == (1, 1)
    k = c * kh * kw
    width = w + 2 * padding[1] if wide else wo
    rows = k + (bias is not None)
    buf = xp.empty((rows, n * ho * width), dtype=x.dtype)                 # columns (+ ones row)
    cols = buf[:k].reshape(c, kh, kw, n, ho, width)
    if wide:
        im2col_wide(x, padding, (kh, kw), dilation, ho, layout, out=cols)
    else:
        im2col(pad2d(x, padding), (kh, kw), stride, dilation, (ho, wo), out=cols, layout=layout)
    if bias is not None:
        buf[k] = 1
        wmat = xp.empty((o, rows), dtype=weight.dtype)
        wmat[:, :k] = weight.reshape(o, k)
        wmat[:, k] = bias
    else:
        wmat = weight.reshape(o, k)
    out = wmat @ buf                                                        # (O, N*H'*W'): one GEMM
    out = out.reshape(o, n, ho, width)[..., :wo]
    # NCHW needs a transposed copy; in CNHW the (strided) view is handed on as it is: the next
    # layer reads it once anyway, so copying it here would be one more pass over the output
    out = xp.ascontiguousarray(out.transpose(1, 0, 2, 3)) if layout == "NCHW" else out
    return out, ConvCache(buf, x.shape, stride, padding, dilation, wide, layout)


def conv2d_backward(grad_out, weight, cache: ConvCache, need_bias=True, need_input=True):
    """Gradients of the loss with respect to input, weight and bias: ``(dx, dw, db)``.

    ``grad_out`` is dL/dO with the shape of the forward output.  ``dx`` is None when
    ``need_input`` is False (the first layer of a network never needs it).
    """
    xp = get_array_module(grad_out)
    o, c, kh, kw = weight.shape
    cnhw = cache.layout == "CNHW"
    n, _, h, w = (cache.x_shape[1], cache.x_shape[0]) + cache.x_shape[2:] if cnhw else cache.x_shape
    g_on = grad_out if cnhw else grad_out.transpose(1, 0, 2, 3)           # (O, N, H', W') view
    ho, wo = grad_out.shape[2:]
    k = c * kh * kw
    width = cache.cols.shape[1] // (n * ho)
    if cache.wide:   # zero gradient for the garbage columns of the wide layout
        g = xp.zeros((o, n, ho, width), dtype=grad_out.dtype)
        g[..., :wo] = g_on
        g = g.reshape(o, -1)
    else:
        g = xp.ascontiguousarray(g_on).reshape(o, -1)                           # (O, N*H'*W')
    dwb = g @ cache.cols.T               # (O, K [+1]): dL/dK = sum_j dL/dO_j * I_j (and dL/db)
    dw = xp.ascontiguousarray(dwb[:, :k]).reshape(weight.shape)
    db = None
    if need_bias:
        db = dwb[:, k].copy() if cache.cols.shape[0] > k else g.sum(axis=1)
    dx = None
    if need_input:
        dcols = (weight.reshape(o, k).T @ g).reshape(c, kh, kw, n, ho, width)
        if cache.wide:
            return col2im_wide(dcols, cache.x_shape, cache.padding, cache.dilation, cache.layout), dw, db
        padded = (n, c, h + 2 * cache.padding[0], w + 2 * cache.padding[1])
        dx = col2im(dcols, padded, (kh, kw), cache.stride, cache.dilation, cache.layout)
        dx = xp.ascontiguousarray(unpad2d(dx, cache.padding))
    return dx, dw, db


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convenience: just the forward output of :func:`conv2d_forward` (ints or pairs accepted)."""
    from ._util import pair
    out, _ = conv2d_forward(x, weight, bias, pair(stride, "stride"), pair(padding, "padding"),
                            pair(dilation, "dilation"))
    return out


def conv2d_naive(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Reference convolution written as the deck's sum over each window (slow; for tests/demo).

    Loops over output positions only; each output is ``sum(window * kernel) + bias``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    xpad = pad2d(x, padding)
    out = xp.zeros((n, o, ho, wo), dtype=x.dtype)
    for y in range(ho):
        for x_ in range(wo):
            r0, c0 = y * stride[0], x_ * stride[1]
            window = xpad[:, :, r0:r0 + dilation[0] * (kh - 1) + 1:dilation[0],
                          c0:c0 + dilation[1] * (kw - 1) + 1:dilation[1]]
            out[:, :, y, x_] = (window[:, None] * weight[None]).sum(axis=(2, 3, 4))
    if bias is not None:
        out += bias[None, :, None, None]
    return out
