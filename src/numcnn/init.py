"""Weight initialisation, every draw from a seed or a ``numpy.random.Generator``.

fan_in = in_channels * kh * kw (conv) or in_features (dense); fan_out likewise with out.

* ``kaiming_uniform`` (He et al. 2015, for ReLU): U(-b, b), b = gain * sqrt(3 / fan_in), gain sqrt(2),
  so the activations' variance stays ~constant through ReLU layers.
* ``kaiming_normal``: N(0, gain^2 / fan_in).
* ``xavier_uniform`` (Glorot & Bengio 2010, for tanh/sigmoid): b = sqrt(6 / (fan_in + fan_out)).
* ``xavier_normal``: N(0, 2 / (fan_in + fan_out)).
* ``torch_default``: PyTorch's default for Conv2d/Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
  both weight and bias.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

SCHEMES = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "torch_default")


def as_generator(rng=None) -> np.random.Generator:
    """``None``/int seed/Generator -> Generator (``None`` means seed 0: numcnn is reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        rng = 0
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ConfigError(f"a seed must be an integer >= 0, got {int(rng)}")
        return np.random.default_rng(int(rng))
    raise ConfigError(f"rng must be an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in) or (out, in, kh, kw)."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_weight(shape, scheme="kaiming_uniform", rng=None, dtype=np.float32):
    """A new weight array of ``shape`` drawn with ``scheme``."""
    rng = as_generator(rng)
    fan_in, fan_out = fans(shape)
    if scheme == "kaiming_uniform":
        b = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
        w = rng.uniform(-b, b, size=shape)
    elif scheme == "kaiming_normal":
        w = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif scheme == "xavier_uniform":
        b = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-b, b, size=shape)
    elif scheme == "xavier_normal":
        w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    elif scheme == "torch_default":
        b = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-b, b, size=shape)
    else:
        raise ConfigError(f"unknown init scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return w.astype(dtype)


def init_bias(n, fan_in, scheme="kaiming_uniform", rng=None, dtype=np.float32):
    """Zeros, except for ``torch_default`` which draws U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    if scheme == "torch_default":
        b = 1.0 / math.sqrt(fan_in)
        return as_generator(rng).uniform(-b, b, size=(n,)).astype(dtype)
    return np.zeros((n,), dtype=dtype)
