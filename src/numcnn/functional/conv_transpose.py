"""Transposed 2-D convolution ("deconvolution"), forward and backward: the deck's dL/dI as a layer.

Shapes (PyTorch's ``conv_transpose2d``):
    x:      (N, C_in, H, W)
    weight: (C_in, C_out/G, kh, kw)
    bias:   (C_out,) or None
    out:    (N, C_out, H', W'),  H' = (H - 1)*sh - 2*ph + dh*(kh - 1) + oph + 1   (and W')

Take the convolution A_W that maps a (N, C_out, H', W') tensor to a (N, C_in, H, W) one with
the same ``weight`` read as a convolution weight (O = C_in kernels over C_out/G channels), the
same stride, padding, dilation and groups.  Its backward pass maps dL/d(its output) to
dL/d(its input) = A_W^T (dL/dO).  The transposed convolution is exactly that map:
    forward:  out = A_W^T x + b               (conv2d_input_grad with x in the role of dL/dO)
so every pixel of x spreads a weighted copy of the kernels over the output (the deck's
dL/dI_i = sum_j dL/dO_j * K), with stride s placing the copies s pixels apart.  Its gradients
follow from <A_W^T x, g> = <x, A_W g>:
    dL/dx = A_W g                             (a plain conv2d forward of the upstream gradient)
    dL/dW = the conv weight gradient of A_W with the roles swapped: input g, upstream gradient x
    dL/db = sum of g over N, H', W'
``output_padding`` (< stride or < dilation, as PyTorch requires) adds rows and columns at the
bottom and right that only windows starting in the last ``op`` rows reach; it disambiguates the
output size, since several H' give the same H under a strided convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from .conv import conv2d_backward, conv2d_forward, conv2d_input_grad
from .im2col import pad2d


@dataclass
class ConvTransposeCache:
    x: object
    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int
    layout: str


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation=1):
    """``H' = (H - 1) s - 2p + d(k - 1) + op + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0),
                             output_padding=(0, 0), dilation=(1, 1), groups=1, layout="NCHW"):
    """``out = A_W^T x + b``; returns ``(out, cache)``.  All geometry arguments are pairs."""
    c_in, og, kh, kw = weight.shape
    c_out = og * groups
    n, h, w = (x.shape[0] if layout == "NCHW" else x.shape[1]), x.shape[2], x.shape[3]
    ho = conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0], dilation[0])
    wo = conv_transpose_output_size(w, kw, stride[1], padding[1], output_padding[1], dilation[1])
    shape = (n, c_out, ho, wo) if layout == "NCHW" else (c_out, n, ho, wo)
    out = conv2d_input_grad(x, weight, shape, stride, padding, dilation, layout, groups)
    if bias is not None:
        out += bias.reshape((1, c_out, 1, 1) if layout == "NCHW" else (c_out, 1, 1, 1))
    return out, ConvTransposeCache(x, stride, padding, output_padding, dilation, groups, layout)


def conv_transpose2d_backward(grad_out, weight, cache: ConvTransposeCache, need_bias=True,
                              need_input=True):
    """``(dx, dw, db)``: dx = A_W g (a conv2d forward), dw = A_W's weight gradient with input g
    and upstream gradient x; ``dx`` is None unless ``need_input``, ``db`` unless ``need_bias``."""
    xp = get_array_module(grad_out)
    x, layout = cache.x, cache.layout
    h, w = x.shape[2:]
    # A_W g has H rows, or more when output_padding >= stride (allowed when the dilation is
    # larger): those extra rows pair with zeros of x in dL/dW and are cut from dL/dx
    full, conv_cache = conv2d_forward(grad_out, weight, None, cache.stride, cache.padding,
                                      cache.dilation, layout, training=True, groups=cache.groups)
    fh, fw = full.shape[2:]
    x_ext = x if (fh, fw) == (h, w) else pad2d(x, ((0, fh - h), (0, fw - w)))
    _, dw, _ = conv2d_backward(x_ext, weight, conv_cache, need_bias=False, need_input=False)
    dx = None
    if need_input:
        dx = full if (fh, fw) == (h, w) else xp.ascontiguousarray(full[:, :, :h, :w])
    db = grad_out.sum(axis=(0, 2, 3) if layout == "NCHW" else (1, 2, 3)) if need_bias else None
    return dx, dw, db
