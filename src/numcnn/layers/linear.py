"""Dense (fully connected) and Flatten layers."""
from __future__ import annotations

import math

from .. import functional as F
from ..init import as_generator, init_bias, init_weight
from ..errors import ShapeError
from .base import Layer, Parameter, check_bool, check_dtype, check_positive_int


class Dense(Layer):
    """Fully connected layer, ``y = x W^T + b`` (PyTorch's ``nn.Linear``).

    Shape: (N, in_features) -> (N, out_features).  ``weight`` is (out_features, in_features).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True, init="kaiming_uniform", rng=None,
                 dtype="float32"):
        name = f"Dense({in_features}, {out_features})"
        check_dtype(dtype, name)
        self.in_features = check_positive_int(in_features, "in_features", name)
        self.out_features = check_positive_int(out_features, "out_features", name)
        rng = as_generator(rng)
        self.init = init
        self.weight = Parameter(init_weight((self.out_features, self.in_features), init, rng, dtype), "weight")
        bias = check_bool(bias, "bias", "Dense")
        self.bias = Parameter(init_bias(self.out_features, self.in_features, init, rng, dtype), "bias") if bias else None
        self._cache = None
        self.needs_input_grad = True

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}{'' if self.bias is not None else ', bias=False'})"

    def output_shape(self, input_shape):
        return (self.out_features,)

    def flops(self, input_shape):
        return 2 * self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 2, f"(N, {self.in_features})", self.in_features)
        self._cache = x
        return F.linear_forward(x, self.weight.value, None if self.bias is None else self.bias.value)

    def backward(self, grad_out):
        x = self._need_cache()
        dx, dw, db = F.linear_backward(grad_out, x, self.weight.value, self.bias is not None,
                                       self.needs_input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W): the bridge from feature maps to fully connected layers.

    ``start_dim`` (PyTorch's, default 1): the first axis to merge; every axis from it to the
    last becomes one, e.g. ``start_dim=2`` gives (N, C, H*W).  The batch axis 0 stays.
    """

    def __init__(self, start_dim=1):
        self.start_dim = check_positive_int(start_dim, "start_dim", "Flatten")
        self._cache = None

    def config(self):
        return {"start_dim": self.start_dim}

    def __repr__(self):
        return "Flatten()" if self.start_dim == 1 else f"Flatten(start_dim={self.start_dim})"

    def output_shape(self, input_shape):
        keep = self.start_dim - 1
        if keep >= len(input_shape):
            raise ShapeError(f"{self!r}: start_dim {self.start_dim} is past the last axis of "
                             f"input shape (N, {', '.join(map(str, input_shape))})")
        return tuple(input_shape[:keep]) + (math.prod(input_shape[keep:]),)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        if self.start_dim >= x.ndim:
            raise ShapeError(f"{self!r}: start_dim {self.start_dim} is past the last axis of "
                             f"a {x.ndim}-D input; use start_dim < {x.ndim}")
        if self.start_dim == x.ndim - 1:        # nothing to merge: the input as it is
            self._cache = ("same", x.shape)
            return x
        if layout == "CNHW" and x.ndim == 4:      # back to each sample's (C, H, W) order
            self._cache = ("CNHW", x.shape)
            x = x.transpose(1, 0, 2, 3)
        else:
            self._cache = ("NCHW", x.shape)
        if self.start_dim == 1:
            return F.flatten(x)
        return x.reshape(x.shape[:self.start_dim] + (-1,))

    def backward(self, grad_out):
        layout, shape = self._need_cache()
        if layout == "same":
            return grad_out
        if layout == "CNHW":
            c, n, h, w = shape
            return F.flatten_backward(grad_out, (n, c, h, w)).transpose(1, 0, 2, 3).copy()
        return F.flatten_backward(grad_out, shape)
