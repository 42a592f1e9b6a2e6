"""2-D convolution (cross-correlation, as in PyTorch and the deck), forward and backward.

Shapes:
    x:      (N, C, H, W)            input tensor, one image per row of the batch
    weight: (O, C, kh, kw)          O kernels, each spanning all C input channels
    bias:   (O,) or None
    out:    (N, O, H', W')          depth O: one feature map per kernel
    H' = 1 + (H + 2*ph - dh*(kh - 1) - 1) // sh     (and likewise W')

Forward (the deck's "O = sum I * K" plus bias):
    out[n, o, y, x] = b[o] + sum_{c,i,j} K[o, c, i, j] * I_pad[n, c, y*sh + i*dh, x*sw + j*dw]
computed as GEMMs over im2col columns, out = W.reshape(O, -1) @ cols, one per block of images
(see BLOCK_BYTES).  The bias rides along in the same GEMM as one extra weight column times a row
of ones under the columns, and the same row gives dL/db = dL/dO @ 1 for free in the backward
GEMM.

Backward (the deck's chain rule, dL/dK_i = sum_j dL/dO_j * dO_j/dK_i with dO_j/dK_i = I_i):
    dL/dK = (cols @ dL/dO^T)^T     every output position j contributes dL/dO_j times its window
    dL/db = sum of dL/dO over N, H', W'
    dL/dI = col2im(W^T @ dL/dO)    each input pixel collects dL/dO_j * K from every window using it
With stride 1 the same dL/dI is a "full" convolution of dL/dO (see :func:`input_grad_by_conv`),
one im2col copy instead of col2im's adds: the backward pass takes that route when it is cheaper.

Groups (``groups = G``, PyTorch's): the C input channels and the O kernels are split into G
equal groups and kernel group g sees only input group g, so ``weight`` is (O, C/G, kh, kw) and
    out[n, o, y, x] = b[o] + sum_{c in group(o), i, j} K[o, c - C/G*g(o), i, j] * I_pad[n, c, ...]
The im2col rows ``(c, i, j)`` of one group are consecutive, so the columns of the whole input
split into G stacked blocks and the one GEMM becomes a batched GEMM over the group axis,
(G, O/G, C/G*kh*kw) @ (G, C/G*kh*kw, M); every backward GEMM likewise.  ``groups == C`` is
the depthwise convolution.

Asymmetric padding ``((top, bottom), (left, right))`` ("same" padding with an even kernel):
the symmetric part goes to the kernels above, the rest is padded explicitly first (one copy of
the input) and cropped off dL/dI at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from ._util import conv_output_size, pair, split_pads
from .im2col import col2im, col2im_wide, im2col, im2col_wide, pad2d, unpad2d


#: Columns are built for a block of images at a time, about this many bytes of them: a block
#: stays in the processor's cache between im2col writing it and the GEMM reading it, and memory
#: stays bounded (a CIFAR-size layer's columns for a whole batch are ~100 MB).  Measured on a
#: 32->32 3x3 conv at 32x32, batch 64: the whole batch at once took 2.2x longer than 4 MB blocks;
#: for LeNet's small layers one block of the whole batch (~6 MB) was fastest.
BLOCK_BYTES = 6 * 1024 * 1024

#: The block size on a GPU (CuPy): there no cache is to be kept warm, and every block costs a
#: dozen kernel launches, so blocks are as big as memory comfortably allows.  Measured on an H100
#: (benchmarks/gpu.py): see docs/performance.md.
GPU_BLOCK_BYTES = 512 * 1024 * 1024


def _block_bytes(xp):
    return BLOCK_BYTES if xp.__name__ == "numpy" else GPU_BLOCK_BYTES

#: When a layer's columns fit in one block they are kept for the backward pass (no rebuilding);
#: bigger ones are rebuilt block by block in backward, which keeps a training step's memory
#: close to its activations'.


@dataclass
class ConvCache:
    """What the backward pass needs from the forward pass: the input, and the columns when the
    whole batch was one block (otherwise backward rebuilds them block by block)."""
    x: object              # the input, in ``layout``
    stride: tuple
    padding: tuple
    dilation: tuple
    layout: str = "NCHW"   # or "CNHW": channels first, the layout Sequential uses inside
    has_bias: bool = True  # the forward pass had a bias: kept columns carry its row of ones
    cols: object = None    # the columns, when the whole batch was one block (else rebuilt)
    groups: int = 1
    extra: tuple = None    # asymmetric padding applied to ``x`` beforehand, cropped off dL/dI


@dataclass
class _Geometry:
    n: int
    c: int
    h: int
    w: int
    ho: int
    wo: int
    width: int             # columns per output row: Wp for the stride-1 "wide" path, else W'
    wide: bool
    k: int                 # C * kh * kw
    block: int             # images per block


def _geometry(x_shape, weight_shape, stride, padding, dilation, layout, itemsize,
              block_bytes=BLOCK_BYTES):
    n, c, h, w = x_shape if layout == "NCHW" else (x_shape[1], x_shape[0]) + tuple(x_shape[2:])
    _, _, kh, kw = weight_shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    wide = tuple(stride) == (1, 1)
    width = w + 2 * padding[1] if wide else wo
    k = c * kh * kw
    per_image = (k + 1) * ho * width * itemsize
    block = max(1, min(n, block_bytes // max(per_image, 1)))
    return _Geometry(n, c, h, w, ho, wo, width, wide, k, block)


def _images(a, n0, n1, layout):
    """Images n0..n1 of a 4-D array in ``layout`` (a view)."""
    return a[n0:n1] if layout == "NCHW" else a[:, n0:n1]


def _columns(x_block, g: _Geometry, kernel, stride, padding, dilation, layout, ones, store=None):
    """The GEMM operand for a block of images: (C*kh*kw [+ a row of ones], m*H'*width).

    ``store``: a flat buffer to build it in (reused from block to block).
    """
    xp = get_array_module(x_block)
    m = x_block.shape[0] if layout == "NCHW" else x_block.shape[1]
    size = (g.k + ones) * m * g.ho * g.width
    if store is None:
        store = xp.empty(size, dtype=x_block.dtype)
    buf = store[:size].reshape(g.k + ones, m * g.ho * g.width)
    cols = buf[:g.k].reshape(g.c, kernel[0], kernel[1], m, g.ho, g.width)
    if g.wide:
        im2col_wide(x_block, padding, kernel, dilation, g.ho, layout, out=cols)
    else:
        im2col(pad2d(x_block, padding), kernel, stride, dilation, (g.ho, g.wo), out=cols, layout=layout)
    if ones:
        buf[g.k] = 1
    return buf


def _store(g, ones, dtype, xp):
    return xp.empty((g.k + ones) * g.block * g.ho * g.width, dtype=dtype)


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                   layout="NCHW", training=True, groups=1):
    """Convolve ``x`` with ``weight`` and add ``bias``; returns ``(out, cache)``.

    ``stride`` and ``dilation`` are ``(h, w)`` pairs, ``padding`` ``(ph, pw)`` or ``((top,
    bottom), (left, right))``; ``weight`` is (O, C/groups, kh, kw).  The caller validates shapes.
    With ``layout="CNHW"`` input and output are ``(C, N, H, W)``: the GEMM's natural output
    layout, so a network that stays in it needs no transposed copies between layers.
    """
    xp = get_array_module(x)
    padding, extra = split_pads(padding)
    if extra is not None:
        x = pad2d(x, extra)
    o, _, kh, kw = weight.shape
    g = _geometry(x.shape, weight.shape, stride, padding, dilation, layout, x.dtype.itemsize,
                  _block_bytes(xp))
    if groups > 1:            # (G, O/G, C/G*kh*kw): one GEMM per group, batched
        wmat = weight.reshape(groups, o // groups, g.k // groups)
        ones = False          # no ones row: the bias is added after the batched GEMM
    elif bias is not None:                                 # [W | b] against [cols ; 1]
        wmat = xp.empty((o, g.k + 1), dtype=weight.dtype)
        wmat[:, :g.k] = weight.reshape(o, g.k)
        wmat[:, g.k] = bias
        ones = True
    else:
        wmat = weight.reshape(o, g.k)
        ones = False
    out = xp.empty((g.n, o, g.ho, g.wo) if layout == "NCHW" else (o, g.n, g.ho, g.wo), dtype=x.dtype)
    store = _store(g, ones, x.dtype, xp)
    for n0 in range(0, g.n, g.block):                       # blocks of images, not single images
        n1 = min(g.n, n0 + g.block)
        cols = _columns(_images(x, n0, n1, layout), g, (kh, kw), stride, padding, dilation,
                        layout, ones, store)
        if groups > 1:
            res = xp.matmul(wmat, cols.reshape(groups, g.k // groups, -1))
        else:
            res = wmat @ cols                                # one GEMM per block
        res = res.reshape(o, n1 - n0, g.ho, g.width)[..., :g.wo]
        if layout == "NCHW":
            out[n0:n1] = res.transpose(1, 0, 2, 3)
        else:
            out[:, n0:n1] = res
    if bias is not None and not ones:
        out += bias.reshape((1, o, 1, 1) if layout == "NCHW" else (o, 1, 1, 1))
    keep = cols if training and g.block == g.n else None
    return out, ConvCache(x, stride, padding, dilation, layout, ones, keep, groups, extra)


def full_conv_weight(weight, groups=1):
    """The kernels of the convolution that maps dL/dO back to dL/dI (stride 1): each kernel
    flipped in both spatial axes, input and output channels swapped: ``(C, O, kh, kw)``.

    With groups, the swap happens within each group: ``(O, C/G, kh, kw)`` becomes
    ``(C, O/G, kh, kw)``, again a grouped convolution with G groups."""
    xp = get_array_module(weight)
    if groups == 1:
        return xp.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    o, cg, kh, kw = weight.shape
    w = weight.reshape(groups, o // groups, cg, kh, kw)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    return xp.ascontiguousarray(w).reshape(groups * cg, o // groups, kh, kw)


def _full_conv_padding(weight_shape, padding, dilation):
    """The zero padding of dL/dO for :func:`input_grad_by_conv`, or None if it would be negative."""
    pads = tuple(d * (k - 1) - p for k, p, d in zip(weight_shape[2:], padding, dilation))
    return pads if min(pads) >= 0 else None


def input_grad_by_conv(grad_out, weight, padding, dilation, layout="NCHW", groups=1):
    """dL/dI of a stride-1 convolution, computed as a convolution of dL/dO.

    The deck's dL/dI_i = sum_j dL/dO_j * dO_j/dI_i, written out for stride 1:
        dL/dI[c, y, x] = sum_{o,i,j} K[o, c, i, j] * dL/dO[o, y + ph - i*dh, x + pw - j*dw]
    (terms outside dL/dO are zero).  Substituting i -> kh-1-i, j -> kw-1-j turns this into the
    forward formula: a cross-correlation of dL/dO, zero-padded by ``d*(k-1) - p``, with the
    kernels flipped and their channel axes swapped (:func:`full_conv_weight`), same dilation.
    The output has the input's size exactly.  Requires ``p <= d*(k-1)`` on both axes.
    """
    pads = _full_conv_padding(weight.shape, padding, dilation)
    dx, _ = conv2d_forward(grad_out, full_conv_weight(weight, groups), None, (1, 1), pads,
                           dilation, layout, training=False, groups=groups)
    return dx


def _input_grad_route(g, weight_shape, padding, dilation, gpu=False):
    """"conv" when :func:`input_grad_by_conv` applies and is cheaper than GEMM + col2im.

    Per input pixel, the conv route copies O*kh*kw values into columns; col2im adds C*kh*kw
    (an add reads two values and writes one, ~2-3x a copy).  Measured on this project's VM
    (docs/performance.md): 32->32 and 64->64 3x3 layers' dL/dI 1.6-1.9x faster by conv, 32->64
    1.1x, LeNet-5's 6->16 5x5 2.4-3x slower.  So: by conv when O <= 2C.  On a GPU (``gpu``)
    by conv wherever it applies: col2im's kh*kw adds are kh*kw kernel launches, the conv route
    a few, and launches, not arithmetic, are what a GPU step waits for.
    """
    o, c = weight_shape[:2]
    if (g.wide and (gpu or o <= 2 * c)                            # wide: stride 1
            and _full_conv_padding(weight_shape, padding, dilation) is not None):
        return "conv"
    return "col2im"


def _grad_matrix(grad_out, n0, n1, g: _Geometry, layout):
    """dL/dO of images n0..n1 as the GEMM operand (O, m*H'*width): zero in the garbage columns
    of the wide layout."""
    xp = get_array_module(grad_out)
    go = _images(grad_out, n0, n1, layout)
    go = go.transpose(1, 0, 2, 3) if layout == "NCHW" else go          # (O, m, H', W')
    if g.wide:
        gm = xp.zeros(go.shape[:3] + (g.width,), dtype=grad_out.dtype)
        gm[..., :g.wo] = go
    else:
        gm = xp.ascontiguousarray(go)
    return gm.reshape(go.shape[0], -1)


def _input_grad_block(gm, weight, g: _Geometry, m, stride, padding, dilation, layout, groups):
    """dL/dI of one block of m images by GEMM + col2im: W^T @ dL/dO gives dL/d(columns), and
    col2im adds every column entry back onto the pixel it was copied from."""
    xp = get_array_module(gm)
    o, _, kh, kw = weight.shape
    if groups > 1:
        wg = weight.reshape(groups, o // groups, g.k // groups)
        dcols = xp.matmul(wg.transpose(0, 2, 1), gm.reshape(groups, o // groups, -1))
    else:
        dcols = weight.reshape(o, g.k).T @ gm                         # W^T @ dL/dO
    dcols = dcols.reshape(g.c, kh, kw, m, g.ho, g.width)
    if g.wide:
        shape = (m, g.c, g.h, g.w) if layout == "NCHW" else (g.c, m, g.h, g.w)
        return col2im_wide(dcols, shape, padding, dilation, layout)
    padded = (m, g.c, g.h + 2 * padding[0], g.w + 2 * padding[1])
    return unpad2d(col2im(dcols, padded, (kh, kw), stride, dilation, layout), padding)


def conv2d_backward(grad_out, weight, cache: ConvCache, need_bias=True, need_input=True):
    """Gradients of the loss with respect to input, weight and bias: ``(dx, dw, db)``.

    ``grad_out`` is dL/dO with the shape of the forward output.  ``dx`` is None when
    ``need_input`` is False (the first layer of a network never needs it).  The columns are
    the forward pass's when it kept them (one block held the whole batch); otherwise each
    block's are rebuilt from the cached input, which keeps memory bounded (see
    :data:`BLOCK_BYTES`).  With groups every GEMM below is batched over the group axis.
    """
    xp = get_array_module(grad_out)
    o, c, kh, kw = weight.shape
    layout, x, groups = cache.layout, cache.x, cache.groups
    g = _geometry(x.shape, weight.shape, cache.stride, cache.padding, cache.dilation, layout,
                  x.dtype.itemsize, _block_bytes(xp))
    # a row of ones under the columns makes the dW GEMM give dL/db too; kept columns have
    # one exactly when the forward pass had a bias (never with groups)
    ones = cache.has_bias if cache.cols is not None else bool(need_bias) and groups == 1
    kg, og = g.k // groups, o // groups
    if groups > 1:
        dw_g = xp.zeros((groups, kg, og), dtype=grad_out.dtype)     # dL/dK per group, transposed
    else:
        dwb_t = xp.zeros((g.k + ones, o), dtype=grad_out.dtype)   # (dL/dK | dL/db) transposed
    store = _store(g, ones, x.dtype, xp) if cache.cols is None else None
    by_conv = need_input and _input_grad_route(g, weight.shape, cache.padding, cache.dilation,
                                                gpu=xp.__name__ != "numpy") == "conv"
    col2im_dx = need_input and not by_conv                    # dL/dI block by block below
    dx = xp.empty(x.shape, dtype=x.dtype) if col2im_dx else None
    for n0 in range(0, g.n, g.block):
        n1 = min(g.n, n0 + g.block)
        gm = _grad_matrix(grad_out, n0, n1, g, layout)
        cols = cache.cols if cache.cols is not None else _columns(
            _images(x, n0, n1, layout), g, (kh, kw), cache.stride, cache.padding, cache.dilation,
            layout, ones, store)
        # dL/dK = sum_j dL/dO_j * I_j (and dL/db from the ones row), as cols @ gm^T: OpenBLAS
        # runs these long, thin products 1.1-1.8x faster that way round than as gm @ cols^T
        # (never slower on the Zen 4 host, either kernel set: see docs/performance.md)
        if groups > 1:
            dw_g += xp.matmul(cols[:g.k].reshape(groups, kg, -1),
                              gm.reshape(groups, og, -1).transpose(0, 2, 1))
        else:
            dwb_t += cols @ gm.T
        if col2im_dx:
            dxb = _input_grad_block(gm, weight, g, n1 - n0, cache.stride, cache.padding,
                                    cache.dilation, layout, groups)
            if layout == "NCHW":
                dx[n0:n1] = dxb
            else:
                dx[:, n0:n1] = dxb
    if by_conv:
        dx = input_grad_by_conv(grad_out, weight, cache.padding, cache.dilation, layout, groups)
    if dx is not None and cache.extra is not None:           # the explicitly padded part
        dx = xp.ascontiguousarray(unpad2d(dx, cache.extra))
    if groups > 1:
        dw = xp.ascontiguousarray(dw_g.transpose(0, 2, 1)).reshape(weight.shape)
    else:
        dw = xp.ascontiguousarray(dwb_t[:g.k].T).reshape(weight.shape)
    if not need_bias:
        db = None
    elif ones:
        db = dwb_t[g.k].copy()
    else:                     # no ones row (kept columns without one, groups): sum of dL/dO
        db = grad_out.sum(axis=(0, 2, 3) if layout == "NCHW" else (1, 2, 3))
    return dx, dw, db


def conv2d_input_grad(grad_out, weight, x_shape, stride, padding, dilation, layout="NCHW",
                      groups=1):
    """dL/dI alone, for an input of shape ``x_shape`` (in ``layout``), without the forward pass.

    The deck's dL/dI_i = sum_j dL/dO_j * dO_j/dI_i: W^T @ dL/dO then col2im, or for stride 1
    the "full" convolution of :func:`input_grad_by_conv`.  This is the transposed convolution's
    forward pass (:mod:`.conv_transpose`), where ``x_shape`` may have up to ``s - 1`` more rows
    and columns than a forward pass would need (``output_padding``): no window reaches them, so
    their gradient is 0.  ``padding`` is ``(ph, pw)``.
    """
    xp = get_array_module(grad_out)
    g = _geometry(x_shape, weight.shape, stride, padding, dilation, layout,
                  grad_out.dtype.itemsize, _block_bytes(xp))
    natural = (g.ho, g.wo)
    g.ho, g.wo = grad_out.shape[2:]           # the windows that exist; extra rows get 0
    if not g.wide:
        g.width = g.wo
    if natural == (g.ho, g.wo) and _input_grad_route(
            g, weight.shape, padding, dilation, gpu=xp.__name__ != "numpy") == "conv":
        return input_grad_by_conv(grad_out, weight, padding, dilation, layout, groups)
    dx = xp.empty(x_shape, dtype=grad_out.dtype)
    for n0 in range(0, g.n, g.block):
        n1 = min(g.n, n0 + g.block)
        dxb = _input_grad_block(_grad_matrix(grad_out, n0, n1, g, layout), weight, g, n1 - n0,
                                stride, padding, dilation, layout, groups)
        if layout == "NCHW":
            dx[n0:n1] = dxb
        else:
            dx[:, n0:n1] = dxb
    return dx


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Convenience: just the forward output of :func:`conv2d_forward` (ints or pairs accepted)."""
    out, _ = conv2d_forward(x, weight, bias, pair(stride, "stride"), pair(padding, "padding"),
                            pair(dilation, "dilation"), groups=groups)
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
