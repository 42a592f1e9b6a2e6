"""Errors raised by numcnn.

Every error numcnn raises on purpose is a :class:`NumcnnError`, a ``ValueError`` subclass, so
``except ValueError`` keeps working for callers who don't know numcnn.  Messages say what was
wrong (naming the layer, file or argument and the shapes involved) and what to do about it.
"""
from __future__ import annotations


class NumcnnError(ValueError):
    """Base class of every error numcnn raises on purpose."""


class ShapeError(NumcnnError):
    """An array had the wrong number of dimensions, channels or size for a layer or function."""


class DTypeError(NumcnnError):
    """An array had a dtype numcnn will not silently convert (mixed float32/float64, ints...)."""


class NonFiniteError(NumcnnError):
    """An input or a loss contained NaN or infinity."""


class DeviceError(NumcnnError):
    """Arrays on different devices (NumPy on the CPU, CuPy on the GPU) were mixed."""


class ConfigError(NumcnnError):
    """A constructor argument, architecture description or command option was invalid."""


class DataError(NumcnnError):
    """A data file or dataset could not be read: truncated, wrong magic, unknown format..."""


class DownloadError(DataError):
    """A download failed or its checksum did not match; nothing was kept."""


class ModelFileError(NumcnnError):
    """A model or checkpoint file is missing a tensor, has bad metadata or an unknown layer."""


class StorageError(NumcnnError, OSError):
    """A file could not be written (disk full, read-only, no permission): the message names the
    file and says what was kept.  Also an ``OSError`` (``errno`` set), for callers catching those."""

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


class StateError(NumcnnError):
    """An object was used in the wrong order (backward before forward, step without grads...)."""


class NumcnnWarning(UserWarning):
    """Base class of every warning numcnn gives: the result may be wrong though nothing failed."""


class InputRangeWarning(NumcnnWarning):
    """Input numbers are clearly not on the scale the model was trained on (e.g. x / 255 into a
    model that expects normalised input, or 0..255 pictures into a 0..16 model)."""


class PolarityWarning(NumcnnWarning):
    """An image is dark-on-light where the training data was light-on-dark, or the reverse."""


__all__ = [
    "NumcnnWarning", "InputRangeWarning", "PolarityWarning",
    "NumcnnError", "ShapeError", "DTypeError", "NonFiniteError", "DeviceError", "ConfigError",
    "DataError",
    "DownloadError", "ModelFileError", "StateError", "StorageError",
]
