"""The array-module seam: NumPy now, CuPy on a GPU when asked for.

Kernels call ``xp = get_array_module(x)`` (Chainer's idiom) instead of naming ``numpy``, so the
same code runs on either library.  ``use("cupy")`` makes new parameters live on the GPU.
"""
from __future__ import annotations

import numpy

from .errors import ConfigError

_current = numpy


def use(name: str = "numpy"):
    """Select the array module for new parameters: ``"numpy"`` (default) or ``"cupy"``."""
    global _current
    if name == "numpy":
        _current = numpy
    elif name == "cupy":
        try:
            import cupy  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ConfigError(
                "numcnn.use('cupy') needs CuPy and an NVIDIA GPU; install it with "
                "'pip install numcnn[gpu]' (cupy-cuda12x) or stay on 'numpy'") from exc
        _current = cupy
    else:
        raise ConfigError(f"unknown array backend {name!r}; choose 'numpy' or 'cupy'")
    return _current


def module(name: str):
    """The array module called ``name`` ("numpy" or "cupy"), without changing the default."""
    if name == "numpy":
        return numpy
    previous = _current
    try:
        return use(name)
    finally:
        globals()["_current"] = previous


def current():
    """The array module new parameters are created with."""
    return _current


def get_array_module(*arrays):
    """The module (numpy or cupy) that owns ``arrays``; numpy for plain NumPy arrays."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy  # noqa: PLC0415
            return cupy
    return numpy


def to_numpy(a):
    """``a`` as a NumPy array: copied from the GPU for CuPy, returned as is if already NumPy."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)
