"""Kernels of graph models: branches concatenated along channels, and the parameter-free
"option A" shortcut of He et al. 2016.

A residual block's add needs no kernel: ``y = body(x) + shortcut(x)`` passes dL/dy unchanged to
both paths (d(a + b)/da = d(a + b)/db = 1), and the fork at x adds the two paths' gradients
(see :class:`numcnn.layers.Residual`).
"""
from __future__ import annotations

from ..backend import get_array_module


def channel_axis(ndim, layout="NCHW"):
    """Axis of the channels (or features): 0 for a 4-D tensor in the "CNHW" layout, else 1."""
    return 0 if layout == "CNHW" and ndim == 4 else 1


def concat_forward(outputs, axis):
    """Branch outputs (N, C_i, H, W) -> (N, sum C_i, H, W), joined along ``axis`` (the channels).

    Every output must have the same shape except along ``axis`` (the layer checks that).
    """
    return get_array_module(outputs[0]).concatenate(outputs, axis=axis)


def concat_backward(grad_out, sizes, axis):
    """dL/dy (N, sum C_i, H, W) -> [dL/dy_i (N, C_i, H, W)]: branch i gets its own channels' slice.

    Concatenation copies each input to its own place, so its Jacobian is a selection: the
    gradient of y_i is the slice of dL/dy where y_i was put.  The slices are made contiguous
    (they are views with gaps when the channel axis is not the first).
    """
    xp = get_array_module(grad_out)
    out, start = [], 0
    index = [slice(None)] * grad_out.ndim
    for size in sizes:
        index[axis] = slice(start, start + size)
        out.append(xp.ascontiguousarray(grad_out[tuple(index)]))
        start += size
    return out


def channel_pad_forward(x, out_channels, stride, layout="NCHW"):
    """He et al.'s shortcut option A: subsample by ``stride``, then append zero channels.

    ``x`` (N, C, H, W) -> y (N, out_channels, ceil(H / s), ceil(W / s)) with
    ``y[:, :C] = x[:, :, ::s, ::s]`` and ``y[:, C:] = 0``: the identity where the block keeps its
    size, "identity with extra zero entries padded for increasing dimensions" where it halves
    the image and doubles the channels.  No parameters.  (The zeros are appended after the input
    channels, as fb.resnet.torch's shortcut type A does.)
    """
    xp = get_array_module(x)
    ax = channel_axis(x.ndim, layout)
    sub = x[:, :, ::stride[0], ::stride[1]]
    shape = list(sub.shape)
    shape[ax] = out_channels
    y = xp.zeros(tuple(shape), dtype=x.dtype)
    if ax == 0:
        y[:x.shape[0]] = sub
    else:
        y[:, :x.shape[1]] = sub
    return y


def channel_pad_backward(grad_out, x_shape, stride, layout="NCHW"):
    """dL/dy (N, C_out, H', W') -> dL/dx (N, C, H, W) of :func:`channel_pad_forward`.

    Each kept input pixel was copied once, so it receives its copy's gradient; the pixels that
    the stride skipped and the padded zero channels (constants) get nothing.
    """
    xp = get_array_module(grad_out)
    ax = channel_axis(len(x_shape), layout)
    c = x_shape[ax]
    dx = xp.zeros(x_shape, dtype=grad_out.dtype)
    dx[:, :, ::stride[0], ::stride[1]] = grad_out[:c] if ax == 0 else grad_out[:, :c]
    return dx
