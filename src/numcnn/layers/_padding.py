"""The padding forms Conv2D and the pools accept (PyTorch's, plus ONNX/Keras's asymmetric one).

* an int ``p`` or a pair ``(ph, pw)``: that many rows/columns on both sides;
* ``((top, bottom), (left, right))``: each side on its own (ONNX's ``pads``, TF's explicit);
* ``"valid"``: no padding;
* ``"same"`` (convolutions with stride 1 only, as in PyTorch): the output has the input's size.
  The total ``d (k - 1)`` is split with the odd row/column at the bottom/right, as PyTorch,
  TensorFlow and ONNX's ``SAME_UPPER`` do.

Layers keep ``padding`` as ``(ph, pw)`` when it is symmetric (every other part of numcnn reads
that pair), else as ``((top, bottom), (left, right))``; ``pads`` is always the latter.  The
form the user gave ("same", "valid", an int...) is what ``config()`` stores.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def _int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def parse_padding(value, layer, kernel_size, dilation=(1, 1), allow_same=True):
    """``(config_value, padding, pads)`` for a padding argument, or a ConfigError naming
    ``layer`` and the accepted forms."""
    forms = ("an int, an (h, w) pair, ((top, bottom), (left, right)), 'valid'"
             + (" or 'same'" if allow_same else ""))
    if isinstance(value, str):
        if value == "valid":
            pads = ((0, 0), (0, 0))
        elif value == "same" and allow_same:
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for k, d in zip(kernel_size, dilation))
        else:
            raise ConfigError(f"{layer}: padding must be {forms}, got {value!r}")
        stored = value
    elif _int(value):
        pads = ((int(value),) * 2,) * 2
        stored = [int(value)] * 2
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_int(v) for v in value):
        pads = tuple((int(v), int(v)) for v in value)
        stored = [int(v) for v in value]
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_int(v) for v in p)
                  for p in value)):
        pads = tuple((int(p[0]), int(p[1])) for p in value)
        stored = [[int(v) for v in p] for p in value]
    else:
        raise ConfigError(f"{layer}: padding must be {forms}, got {value!r}")
    if min(min(p) for p in pads) < 0:
        raise ConfigError(f"{layer}: padding must be >= 0, got {value!r}")
    symmetric = all(a == b for a, b in pads)
    padding = (pads[0][0], pads[1][0]) if symmetric else pads
    return stored, padding, pads


def show_padding(stored):
    """The padding as the user wrote it, for a layer's repr."""
    if isinstance(stored, str):
        return repr(stored)
    if isinstance(stored[0], list):
        return str(tuple(tuple(p) for p in stored))
    return str(stored[0]) if stored[0] == stored[1] else str(tuple(stored))
