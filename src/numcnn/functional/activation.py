"""Element-wise activations and softmax, forward and backward side by side.

Each backward takes ``grad_out`` (dL/dy) and what the forward produced, and returns dL/dx by the
chain rule: dL/dx = dL/dy * dy/dx (element-wise).
"""
from __future__ import annotations

from ..backend import get_array_module


def relu(x):
    """ReLU(x) = max(0, x), the deck's activation: it introduces non-linearity."""
    xp = get_array_module(x)
    return xp.maximum(x, x.dtype.type(0))


def relu_backward(grad_out, out):
    """d max(0, x)/dx = 1 where x > 0 else 0 (we test ``out > 0``, which is the same set)."""
    return grad_out * (out > 0)


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x."""
    xp = get_array_module(x)
    return xp.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    """dy/dx = 1 where x > 0 else negative_slope."""
    xp = get_array_module(x)
    return xp.where(x > 0, grad_out, grad_out * grad_out.dtype.type(negative_slope))


def sigmoid(x):
    """1 / (1 + e^-x), computed without overflow for large |x|."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    one = x.dtype.type(1)
    return xp.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(grad_out, out):
    """d sigma/dx = sigma (1 - sigma)."""
    return grad_out * out * (out.dtype.type(1) - out)


def tanh(x):
    """Hyperbolic tangent."""
    return get_array_module(x).tanh(x)


def tanh_backward(grad_out, out):
    """d tanh/dx = 1 - tanh^2."""
    return grad_out * (out.dtype.type(1) - out * out)


def softmax(z, axis=-1):
    """The deck's sigma(z_j) = e^{z_j} / sum_i e^{z_i}, made stable by subtracting max(z).

    Subtracting the max changes nothing mathematically (it cancels in the ratio) but keeps every
    exponent <= 0, so logits of +/-1e4 neither overflow nor give 0/0.
    """
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_backward(grad_out, out, axis=-1):
    """dL/dz_j = y_j (dL/dy_j - sum_i dL/dy_i y_i) (the softmax Jacobian applied to grad_out)."""
    return out * (grad_out - (grad_out * out).sum(axis=axis, keepdims=True))


def log_softmax(z, axis=-1):
    """log sigma(z) = z - max - log sum e^{z - max}: stable for logits of +/-1e4."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad_out, out, axis=-1):
    """dL/dz = dL/dy - softmax(z) * sum dL/dy, with softmax(z) = exp(log_softmax(z))."""
    xp = get_array_module(out)
    return grad_out - xp.exp(out) * grad_out.sum(axis=axis, keepdims=True)
