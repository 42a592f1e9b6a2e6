"""Validation in one place: arguments, arrays, and numbers read from outside.

Every check here raises a :class:`numcnn.errors.NumcnnError` subclass whose message names where
the value came from (``where``/``layer``), what it was, and what is wanted.  Layers, the model,
the trainer and the file readers all call these, so a rule is written once:

* arguments: :func:`check_bool`, :func:`check_positive_int`, :func:`check_finite_number`,
  :func:`check_dtype`;
* arrays at the boundary: :func:`check_array`, :func:`check_finite`, :func:`check_xy` (images and
  labels for training or evaluation), :func:`check_labels`;
* numbers in descriptions read from files: :func:`spec_int`, :func:`spec_pair` (None for
  anything that is not a plain integer, so the caller can say what was wrong);
* numbers and keys read from files, with their range: :func:`file_int` (counters, steps,
  epochs: a JSON integer, not a bool, not 10**400), :func:`file_index` (ASCII decimal keys such
  as a layer index: ``"\u0663"`` and 5,000-digit strings pass ``str.isdigit`` but not this),
  :func:`check_shape` (tensor shapes: rank and element count NumPy accepts);
* labels read from data files: :func:`check_file_labels` (whole numbers in
  ``0..max_classes()-1``, checked in their own dtype before anything is sized from them);
* memory: :func:`check_data_bytes` (a decoded dataset's size, estimated from its headers, must
  fit :func:`max_data_bytes`).

Limits that a legitimate use may need to raise are environment variables:
``NUMCNN_MAX_CLASSES`` (default 10,000 classes) and ``NUMCNN_MAX_DATA_BYTES`` (default half the
machine's memory).

It imports nothing of numcnn but the errors and the array-module seam: every floor may use it.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_array_module, to_numpy
import os

from .errors import ConfigError, DataError, DTypeError, ModelFileError, NonFiniteError, ShapeError


def check_finite(x, where, shape=None):
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or inf (one cheap reduction first).

    ``where`` is a name, or an object whose ``str()`` names it (a layer: a layer's repr is only
    built when a message needs it, not on every call).

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


#: counters read from files (epochs, steps, batches) are at most this: exact in float64
MAX_COUNT = 2 ** 53
#: tensors and arrays read from files have at most this many dimensions (NumPy allows 64)
MAX_RANK = 32
#: default cap on the number of classes a dataset's labels may imply (NUMCNN_MAX_CLASSES)
MAX_CLASSES = 10_000


def file_int(v, what, where, lo=0, hi=MAX_COUNT, error=ModelFileError):
    """``v`` (a number read from a file) as an int in ``[lo, hi]``, else ``error`` naming it.
    Bools, floats, strings and out-of-range integers (10**400) are refused."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise error(f"{where}: {what} must be an integer in [{lo}, {hi}], got {shown}; the file "
                    "is damaged or was not written by numcnn")
    return int(v)


def file_index(key, n):
    """``key`` (a string read from a file) as an index in ``[0, n)``, or None: only ASCII
    decimal digits, at most 9 of them (``str.isdigit`` also accepts ``'\u0663'`` and superscripts,
    and ``int()`` refuses 5,000-digit strings)."""
    if not isinstance(key, str) or not 1 <= len(key) <= 9 or not key.isascii() \
            or not key.isdigit():
        return None
    i = int(key)
    return i if i < n else None


def check_shape(shape, where, what="shape", error=ModelFileError, max_rank=MAX_RANK,
                max_elements=2 ** 62):
    """A shape read from a file as a tuple of ints: a list of at most ``max_rank`` integers
    >= 0 whose product is at most ``max_elements`` (NumPy refuses more than 64 dimensions and
    products beyond 2**63)."""
    if not isinstance(shape, (list, tuple)) or len(shape) > max_rank:
        raise error(f"{where}: {what} must be a list of at most {max_rank} sizes, got "
                    f"{type(shape).__name__}" + (f" of length {len(shape)}"
                                                 if isinstance(shape, (list, tuple)) else ""))
    if any(isinstance(d, int) and not isinstance(d, bool) and d < 0 for d in shape):
        raise error(f"{where}: {what} {list(shape)[:8]} has a negative dimension")
    dims = tuple(file_int(d, what, where, 0, max_elements, error) for d in shape)
    count = 1
    for d in dims:
        count *= d
    if count > max_elements:
        raise error(f"{where}: {what} {list(dims)} is {count:,} elements, more than NumPy or "
                    "numcnn takes; the file is damaged")
    return dims


def _env_limit(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: must be a positive whole number")
    return value


def max_classes():
    """The most classes a dataset's labels may imply: 10,000, or ``NUMCNN_MAX_CLASSES``."""
    return _env_limit("NUMCNN_MAX_CLASSES", MAX_CLASSES)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):     # not POSIX: assume 8 GiB
        return 8 << 30


def max_data_bytes():
    """The most bytes a dataset may decode to: half the machine's memory, or
    ``NUMCNN_MAX_DATA_BYTES``."""
    return _env_limit("NUMCNN_MAX_DATA_BYTES", _physical_memory() // 2)


def _size(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def check_data_bytes(nbytes, where, what, error=DataError):
    """Refuse data that would decode to more than :func:`max_data_bytes` - from its headers,
    before decoding - saying how much, the limit, and how to raise it."""
    limit = max_data_bytes()
    if nbytes > limit:
        raise error(f"{where}: {what} would take {_size(nbytes)} ({nbytes:,} bytes) in memory, "
                    f"more than numcnn's limit of {_size(limit)} (half this machine's memory by "
                    "default); use a smaller dataset or a smaller --image-size, or raise the "
                    f"limit with the environment variable NUMCNN_MAX_DATA_BYTES={nbytes}")


def check_file_labels(y, where, error=DataError, num_classes=None):
    """Labels read from a data file as int64 ``(N,)``: whole numbers in ``0..K-1`` where ``K``
    is ``num_classes`` or at most :func:`max_classes`, checked in the labels' own dtype (a
    uint64 2**64-1 or a float 1e300 is refused, never wrapped to a negative int64)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise error(f"{where}: labels must have shape (N,) (class ids), got {y.shape}; for "
                    f"one-hot labels pass y.argmax(axis=1)")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise error(f"{where}: labels must be whole class ids, found non-integer values")
    elif y.dtype.kind not in "iub":
        raise error(f"{where}: labels must be integer class ids, got dtype {y.dtype}")
    if y.size == 0:
        return y.astype(np.int64)
    lo, hi = y.min(), y.max()
    if lo < 0:
        raise error(f"{where}: labels must be >= 0, found {lo}")
    cap = num_classes if num_classes is not None else max_classes()
    if hi >= cap:
        if num_classes is not None:
            raise error(f"{where}: labels go up to {hi} but there are only {num_classes} classes")
        top = float(hi) if y.dtype.kind == "f" else int(hi)
        raise error(f"{where}: the largest label is {top}, which would mean more than {cap:,} "
                    "classes (numcnn's cap); the labels file is damaged, or if you really have "
                    "that many classes raise the cap with the environment variable "
                    f"NUMCNN_MAX_CLASSES={int(min(float(hi), 1e18)) + 1}")
    return y.astype(np.int64)
