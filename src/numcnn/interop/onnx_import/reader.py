"""Reading an ONNX file as numcnn does, hostile files included: the limits, the protobuf, tensors.

The file size is checked before it is read (:func:`_load_proto`); every tensor's declared size
before its bytes are touched (:class:`_Tensors`: numcnn decodes tensors itself, not
``numpy_helper.to_array``), against one budget of :data:`MAX_ELEMENTS` for the whole file; and
external-data files must lie inside the model's folder.  The errors live here too:
:class:`OnnxImportError` (what the user sees) and ``_Unsupported`` (a builder's refusal, collected
by the walk and reported at once).

The limits are module constants; :func:`numcnn.interop.onnx_import.from_onnx` reads them from its
package when it is called and passes them in, so that setting ``onnx_import.MAX_FILE_BYTES`` (or
``MAX_NODES``, ``MAX_INITIALIZERS``) changes what the next import accepts.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ...architecture import MAX_ELEMENTS
from ...errors import ModelFileError
from .._onnx import require_onnx

#: the largest file accepted: numcnn's largest model (MAX_ELEMENTS float32) plus room for the graph
MAX_FILE_BYTES = 4 * MAX_ELEMENTS + (64 << 20)
MAX_NODES = 20_000
MAX_INITIALIZERS = 20_000
MAX_RANK = 8
#: opsets this importer knows the semantics of (7: the first with today's BatchNormalization)
MIN_OPSET = 7

# ONNX TensorProto data types numcnn reads: code -> (name, little-endian dtype, typed field)
_TENSOR_TYPES = {1: ("FLOAT", "<f4", "float_data"), 11: ("DOUBLE", "<f8", "double_data"),
                 10: ("FLOAT16", "<f2", "int32_data"), 7: ("INT64", "<i8", "int64_data"),
                 6: ("INT32", "<i4", "int32_data"), 9: ("BOOL", "|b1", "int32_data")}


class OnnxImportError(ModelFileError):
    """An ONNX file numcnn cannot turn into an equal model (``problems`` lists why)."""

    def __init__(self, problems, message=None):
        if message is None:                  # OnnxImportError("one sentence")
            problems, message = [problems], problems
        self.problems = list(problems)
        super().__init__(message)


class _Unsupported(Exception):
    """Raised by a builder: this node cannot become numcnn layers (collected, then reported)."""


def _short(text, n=80):
    text = str(text)
    return text if len(text) <= n else text[:n - 3] + "..."


def _load_proto(path, max_bytes=MAX_FILE_BYTES):
    """The ``ModelProto`` in ``path``; a file over ``max_bytes`` is refused before it is read."""
    onnx = require_onnx()
    if not os.path.exists(path):
        raise ModelFileError(f"ONNX file {path!r} does not exist")
    if not os.path.isfile(path):
        raise ModelFileError(f"ONNX file {path!r} is not a file")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ModelFileError(f"{path}: {size:,} bytes is more than numcnn imports "
                             f"({max_bytes:,}: its largest model, {MAX_ELEMENTS:,} float32 "
                             "weights, plus the graph)")
    with open(path, "rb") as f:
        # read(n) allocates n bytes up front: ask for what the file has (one more shows growth)
        data = f.read(size + 1)
    if len(data) > max_bytes:
        raise ModelFileError(f"{path}: the file grew past {max_bytes:,} bytes while it was read")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's C parser raises several types on junk
        raise ModelFileError(f"{path}: not an ONNX model: the protobuf parser refused it "
                             f"({type(exc).__name__}: {_short(exc)})") from None
    return proto


class _Tensors:
    """Decodes TensorProtos into numpy arrays, checking declared sizes against a budget first."""

    def __init__(self, path):
        self.path = path
        self.folder = os.path.dirname(os.path.abspath(path))
        self.budget = MAX_ELEMENTS

    def array(self, t, what):
        spec = _TENSOR_TYPES.get(t.data_type)
        if spec is None:
            raise _Unsupported(f"{what}: tensor data type {t.data_type} is not supported "
                               f"(numcnn reads {', '.join(s[0] for s in _TENSOR_TYPES.values())})")
        name, dt, field = spec
        dims = list(t.dims)
        if len(dims) > MAX_RANK or any(d < 0 for d in dims):
            raise ModelFileError(f"{self.path}: {what} declares dims {_short(dims)}")
        count = math.prod(dims)
        if count > self.budget:
            raise ModelFileError(f"{self.path}: {what} declares {count:,} elements; numcnn "
                                 f"imports at most {MAX_ELEMENTS:,} in all (the file is corrupt "
                                 "or the model far too large)")
        self.budget -= count
        if t.HasField("segment"):
            raise _Unsupported(f"{what}: segmented tensors are not supported")
        dtype = np.dtype(dt)
        nbytes = count * dtype.itemsize
        if t.data_location == 1:                          # EXTERNAL
            raw = self._external(t, what, nbytes)
        elif t.raw_data:
            raw = t.raw_data
        else:
            raw = None
        if raw is not None:
            if len(raw) != nbytes:
                raise ModelFileError(f"{self.path}: {what} ({name} {dims}) needs {nbytes:,} bytes "
                                     f"but holds {len(raw):,}")
            return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
        values = getattr(t, field)
        if len(values) != count:
            raise ModelFileError(f"{self.path}: {what} ({name} {dims}) needs {count:,} values "
                                 f"but holds {len(values):,}")
        if name == "FLOAT16":         # stored as the 16 bits of each value in int32_data
            return np.asarray(values, dtype=np.uint16).view(np.float16).reshape(dims)
        if name == "BOOL":
            return np.asarray(values, dtype=np.int64).astype(bool).reshape(dims)
        return np.asarray(values, dtype=dtype).reshape(dims)

    def _external(self, t, what, nbytes):
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else nbytes
        except ValueError:
            raise ModelFileError(f"{self.path}: {what}: bad external-data offset/length") from None
        if not location or "\x00" in location or os.path.isabs(location):
            raise ModelFileError(f"{self.path}: {what}: external data {_short(location)!r} is "
                                 "not a file inside the model's folder; refused")
        full = os.path.realpath(os.path.join(self.folder, location))
        inside = os.path.realpath(self.folder)
        if os.path.commonpath([full, inside]) != inside:
            raise ModelFileError(f"{self.path}: {what}: external data {_short(location)!r} is "
                                 "not a file inside the model's folder; refused")
        if not os.path.isfile(full):
            raise ModelFileError(f"{self.path}: {what}: external data file {location!r} is missing")
        if offset < 0 or length != nbytes or offset + length > os.path.getsize(full):
            raise ModelFileError(f"{self.path}: {what}: external data {location!r} [{offset}, "
                                 f"+{length}) does not hold the {nbytes:,} bytes the tensor needs")
        with open(full, "rb") as f:
            f.seek(offset)
            return f.read(nbytes)
