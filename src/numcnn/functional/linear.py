"""Fully connected (dense) layer and flatten, forward and backward.

Shapes: x (N, in), weight (out, in) as in PyTorch, bias (out,), y (N, out).

Forward:  y = x W^T + b           (every output neuron sees every input: "fully connected")
Backward: dL/dx = dL/dy W         (N, in)
          dL/dW = dL/dy^T x       (out, in): sum over the batch of outer products
          dL/db = sum_n dL/dy     (out,)
"""
from __future__ import annotations


def linear_forward(x, weight, bias=None):
    """``y = x @ weight.T + bias``."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_out, x, weight, need_bias=True, need_input=True):
    """Returns ``(dx, dw, db)``; ``dx`` is None when ``need_input`` is False."""
    dw = grad_out.T @ x
    db = grad_out.sum(axis=0) if need_bias else None
    dx = grad_out @ weight if need_input else None
    return dx, dw, db


def flatten(x):
    """(N, C, H, W) -> (N, C*H*W), C-order, as ``torch.flatten(x, 1)``."""
    return x.reshape(x.shape[0], -1)


def flatten_backward(grad_out, x_shape):
    """Flatten only moves numbers around, so its gradient is the same numbers reshaped back."""
    return grad_out.reshape(x_shape)
