"""Element-wise activations and softmax, forward and backward side by side.

Each backward takes ``grad_out`` (dL/dy) and what the forward produced, and returns dL/dx by the
chain rule: dL/dx = dL/dy * dy/dx (element-wise).
"""
from __future__ import annotations

from ..backend import get_array_module
from .special import erf


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


def elu(x, alpha=1.0):
    """ELU(x) = x if x > 0 else alpha (e^x - 1) (``expm1``: exact near 0)."""
    xp = get_array_module(x)
    return xp.where(x > 0, x, x.dtype.type(alpha) * xp.expm1(xp.minimum(x, x.dtype.type(0))))


def elu_backward(grad_out, x, alpha=1.0):
    """dy/dx = 1 where x > 0, else alpha e^x."""
    xp = get_array_module(x)
    neg = x.dtype.type(alpha) * xp.exp(xp.minimum(x, x.dtype.type(0)))
    return xp.where(x > 0, grad_out, grad_out * neg)


def silu(x):
    """SiLU(x) = x sigma(x) (also called swish)."""
    return x * sigmoid(x)


def silu_backward(grad_out, x):
    """d(x sigma)/dx = sigma + x sigma (1 - sigma) = sigma (1 + x (1 - sigma))."""
    s = sigmoid(x)
    one = x.dtype.type(1)
    return grad_out * s * (one + x * (one - s))


_SQRT_HALF = 0.7071067811865476              # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327           # 1/sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654         # sqrt(2/pi)
_GELU_CUBIC = 0.044715


def gelu(x, approximate="none"):
    """GELU(x) = x Phi(x), Phi the standard normal CDF: ``x/2 (1 + erf(x/sqrt(2)))`` exactly
    (erf from :mod:`.special`), or with ``approximate="tanh"`` PyTorch's
    ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    xp = get_array_module(x)
    half, one = x.dtype.type(0.5), x.dtype.type(1)
    if approximate == "tanh":
        inner = x.dtype.type(_SQRT_2_OVER_PI) * (x + x.dtype.type(_GELU_CUBIC) * x * x * x)
        return half * x * (one + xp.tanh(inner))
    return x * half * (one + erf(x * x.dtype.type(_SQRT_HALF)))


def gelu_backward(grad_out, x, approximate="none"):
    """Exact: d(x Phi)/dx = Phi(x) + x phi(x), phi(x) = e^{-x^2/2} / sqrt(2 pi).
    tanh form, with u = sqrt(2/pi)(x + 0.044715 x^3) and t = tanh(u):
    d/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    xp = get_array_module(x)
    dt = x.dtype.type
    half, one = dt(0.5), dt(1)
    if approximate == "tanh":
        t = xp.tanh(dt(_SQRT_2_OVER_PI) * (x + dt(_GELU_CUBIC) * x * x * x))
        du = dt(_SQRT_2_OVER_PI) * (one + dt(3 * _GELU_CUBIC) * x * x)
        return grad_out * (half * (one + t) + half * x * (one - t * t) * du)
    cdf = half * (one + erf(x * dt(_SQRT_HALF)))
    pdf = dt(_INV_SQRT_2PI) * xp.exp(dt(-0.5) * x * x)
    return grad_out * (cdf + x * pdf)
