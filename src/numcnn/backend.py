"""The array-module seam: NumPy now, CuPy on a GPU when asked for.

Kernels call ``xp = get_array_module(x)`` (Chainer's idiom) instead of naming ``numpy``, so the
same code runs on either library.  ``use("cupy")`` makes new parameters live on the GPU.
"""
from __future__ import annotations

import ctypes
import os
import sys

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
        if type(a) is numpy.ndarray:               # the common case, checked first: it is
            continue                               # asked several times per layer call
        if type(a).__module__.startswith("cupy"):
            import cupy  # noqa: PLC0415
            return cupy
    return numpy


def to_module(a, xp):
    """``a`` on array module ``xp``: no copy when it is there already; CuPy -> NumPy is an
    explicit copy off the device (CuPy refuses ``numpy.asarray`` on device arrays)."""
    if get_array_module(a) is xp:
        return a
    return to_numpy(a) if xp is numpy else xp.asarray(a)


def device_name(xp):
    """``"cpu"`` for NumPy, ``"gpu"`` for CuPy: the words ``Sequential.to`` takes."""
    return "cpu" if xp is numpy else "gpu"


def to_numpy(a):
    """``a`` as a NumPy array: copied from the GPU for CuPy, returned as is if already NumPy."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)


# -- the host allocator --------------------------------------------------------------------------
# glibc's malloc serves big blocks (128 KiB and up, a bound it raises as it sees them freed) with
# fresh mmap() pages and gives freed memory back to the kernel.  A training step allocates and
# frees the same few-MB activations, columns and gradients every time, so every step pays the
# kernel to map and zero those pages again: on this project's 2-core VM that page-fault time was
# 40% of a LeNet-5 step (13.0 -> 7.5 ms at batch 64; CIFAR net 163 -> 143 ms).  Keeping freed
# blocks up to MMAP_THRESHOLD in the heap for reuse removes it; see docs/performance.md.

#: blocks up to this size come from the heap and are reused after being freed
MMAP_THRESHOLD = 256 * 1024 * 1024
#: the heap keeps up to this much free memory at its top instead of returning it to the kernel
TRIM_THRESHOLD = 512 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # mallopt parameter numbers (malloc.h)
_allocator_state = None                             # None: not tried yet; else True / False


def keep_freed_memory() -> bool:
    """Let glibc reuse freed blocks instead of unmapping them (once per process).

    :class:`~numcnn.Sequential` calls this on its first NumPy forward pass.  It changes two
    process-wide ``mallopt`` settings (freed memory up to :data:`TRIM_THRESHOLD` stays with the
    process), so it can be turned off by setting the environment variable
    ``NUMCNN_MALLOC=system`` before the first forward pass.  Returns True when the settings are
    in effect; False on other C libraries (macOS, Windows, musl) or when turned off.
    """
    global _allocator_state
    if _allocator_state is None:
        _allocator_state = False
        if os.environ.get("NUMCNN_MALLOC", "").lower() != "system" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):      # glibc (musl has no mallopt knobs)
                    _allocator_state = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                                        and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
            except OSError:   # pragma: no cover - no C library to open
                _allocator_state = False
    return _allocator_state
