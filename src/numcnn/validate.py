"""Validation in one place: arguments, arrays, and numbers read from outside.

Every check here raises a :class:`numcnn.errors.NumcnnError` subclass whose message names where
the value came from (``where``/``layer``), what it was, and what is wanted.  Layers, the model,
the trainer and the file readers all call these, so a rule is written once:

* arguments: :func:`check_bool`, :func:`check_positive_int`, :func:`check_finite_number`,
  :func:`check_dtype`;
* arrays at the boundary: :func:`check_array`, :func:`check_finite`, :func:`check_xy` (images and
  labels for training or evaluation), :func:`check_labels`;
* numbers in descriptions read from files: :func:`spec_int`, :func:`spec_pair` (None for
  anything that is not a plain integer, so the caller can say what was wrong).

It imports nothing of numcnn but the errors and the array-module seam: every floor may use it.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module, to_numpy
from .errors import ConfigError, DTypeError, NonFiniteError, ShapeError


def check_finite(x, where: str, shape=None):
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or inf (one cheap reduction first).

    ``shape`` is the shape to report (the user's (N, C, H, W) view); ``x.shape`` by default.
    """
    if shape is None:
        shape = tuple(x.shape)
    xp = get_array_module(x)
    with np.errstate(over="ignore", invalid="ignore"):
        total = x.sum()           # overflow of huge finite values is rechecked exactly below
    if not bool(xp.isfinite(total)):
        bad = ~xp.isfinite(x)
        if bool(bad.any()):
            count = int(bad.sum())
            raise NonFiniteError(f"{where}: input of shape {shape} has {count} NaN/inf "
                                 f"value(s) of {x.size}; "
                                 "clean the data, or lower the learning rate if this appears "
                                 "during training")


def check_dtype(dtype, layer):
    """Parameters are float32 or float64; anything else is refused."""
    try:                   # (None would quietly mean float64 to NumPy; so would dt == None)
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not (dt == np.float32 or dt == np.float64):
        raise ConfigError(f"{layer}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_array(x, where, what="(N, C, H, W)"):
    """``x`` must be a NumPy or CuPy array: not a list (ShapeError), nor another library's
    tensor (DTypeError: a torch tensor's dtype is not NumPy's), with the conversion to use."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ShapeError(f"{where}: expected an array of shape {what}, got "
                         f"{type(x).__name__}; convert it with numpy.asarray first")
    if not isinstance(x.dtype, np.dtype):
        raise DTypeError(f"{where}: expected a NumPy (or CuPy) array, got "
                         f"{type(x).__module__}.{type(x).__name__}; convert it first (for a "
                         "torch tensor: x.numpy())")


def check_bool(value, name, layer):
    """True or False (a string such as 'no' would silently count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{layer}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_finite_number(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ConfigError(f"{layer}: {name} must be a finite number, got {value!r}")
    return float(value)


def check_positive_int(value, name, layer, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{layer}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_xy(x, y, what, input_shape=None):
    """Images and labels as arrays, checked the way the model will use them (shape, dtype,
    finite values, label ids) before any training happens.  Data is kept on the host (CuPy
    arrays are copied off the GPU); batches go to the model's device as they are used."""
    x = host_array(x, what, "images")
    y = host_array(y, what, "labels")
    if x.ndim != 4:
        raise ShapeError(f"{what}: images must be (N, C, H, W), got shape {x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ShapeError(f"{what}: the model takes images of shape {tuple(input_shape)} (C, H, W) "
                         f"but the data has shape {tuple(x.shape[1:])}")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DTypeError(f"{what}: images must be uint8 or float (uint8 for 0..255, floats "
                         f"already scaled), got dtype {x.dtype}; convert them, e.g. "
                         "x.astype('float32') / 65535 for 16-bit images")
    if y.shape != (len(x),):
        raise ShapeError(f"{what}: labels must be shape ({len(x)},), got {y.shape}")
    if len(x) == 0:
        raise ConfigError(f"{what}: the dataset is empty")
    check_labels(y, what)
    check_finite_images(x, what)
    return x, y


def host_array(a, what, name):
    """``a`` as a NumPy array: NumPy arrays and lists as they are, CuPy arrays copied to the
    host; anything else (a torch tensor...) is refused with the conversion to use."""
    if type(a).__module__.startswith("cupy"):
        return to_numpy(a)
    if hasattr(a, "dtype") and not isinstance(a.dtype, np.dtype):
        raise DTypeError(f"{what}: {name} must be NumPy arrays, got {type(a).__module__}."
                         f"{type(a).__name__}; convert them (for a torch tensor: t.numpy())")
    return np.asarray(a)


def check_pair(data, what):
    """``(x, y)``, or a ConfigError saying how to pass the data."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError(f"{what}: pass the data as a pair (images, labels) or a DataLoader, got "
                          f"{type(data).__name__}" + (f" of length {len(data)}"
                                                      if isinstance(data, (tuple, list)) else ""))
    return data


def check_labels(y, what, num_classes=None):
    """Labels must be whole class ids >= 0 (and < ``num_classes`` when it is known)."""
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ConfigError(f"{what}: labels must be integer class ids, got dtype {y.dtype}"
                              + (" with non-integer values" if y.dtype.kind == "f" else ""))
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        want = ">= 0" if num_classes is None else \
            f"in [0, {num_classes - 1}] (the model has {num_classes} outputs)"
        bad = int(np.flatnonzero((y < 0) | (y >= (num_classes or np.inf)))[0])
        raise ConfigError(f"{what}: labels must be class ids {want}, got values from {lo} to "
                          f"{hi} (label {y[bad]} at index {bad}); check the dataset's labels "
                          "against the model's last layer")


def check_finite_images(x, what, chunk=4096):
    """Refuse float images holding NaN/inf at the boundary (one cheap sum per chunk first),
    so bad data is reported as bad data rather than as a diverging run."""
    if x.dtype.kind != "f":
        return
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        if np.isfinite(xb.sum(dtype=np.float64)):
            continue
        bad = ~np.isfinite(xb.reshape(len(xb), -1)).all(axis=1)
        if bad.any():
            i = start + int(np.flatnonzero(bad)[0])
            n = int((~np.isfinite(x)).sum())
            raise NonFiniteError(f"{what}: the images hold {n} NaN/inf value(s), the first in "
                                 f"image {i}; clean the data (numcnn never trains on or "
                                 "evaluates non-finite inputs)")


def spec_int(v):
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def spec_pair(v):
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            return None
        a, b = spec_int(v[0]), spec_int(v[1])
        return None if a is None or b is None else (max(a, 0), max(b, 0))
    a = spec_int(v)
    return None if a is None else (max(a, 0), max(a, 0))
