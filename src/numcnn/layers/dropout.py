"""Dropout layer (inverted dropout): identity at evaluation."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError
from ..init import as_generator
from .base import Layer


class Dropout(Layer):
    """Zero each element with probability ``p`` while training and scale the rest by 1/(1-p).

    ``rng`` (seed or Generator) makes the masks reproducible.  Without one, a Dropout gets
    seed 0 on its own, and inside a :class:`~numcnn.Sequential` a seed of its own derived from
    its position, so that two Dropout layers never draw the same masks.
    """

    def __init__(self, p=0.5, rng=None):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = as_generator(rng)
        self.seeded = rng is not None        # False: Sequential gives it a seed of its own
        self._cache = None

    def config(self):
        return {"p": self.p}

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        if not training or self.p == 0.0:
            self._cache = 1
            return x
        out, self._cache = F.dropout_forward(x, self.p, self.rng)
        return out

    def backward(self, grad_out):
        mask = self._need_cache()
        return grad_out if isinstance(mask, int) else F.dropout_backward(grad_out, mask)

    def _rng_state(self):
        return self.rng.bit_generator.state

    def _set_rng_state(self, state):
        self.rng.bit_generator.state = state
