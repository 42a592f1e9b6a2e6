"""Model files: one ``.safetensors`` file, weights plus the architecture as JSON, no pickle.

Layout of a file written by :func:`save_model`:

* tensors ``layers.{i}.{name}``: every parameter (``weight``, ``bias``) and buffer
  (``running_mean``, ``running_var``) of layer ``i``;
* metadata (strings): ``format`` = ``numcnn/1``, ``architecture`` (JSON of
  ``Sequential.config()``), ``normalization`` (JSON ``{"mean": [...], "std": [...]}`` or ``null``),
  ``classes`` (JSON list or ``null``), ``training_data`` (JSON: what the model was trained on,
  see :mod:`numcnn.data.provenance`; absent in files written before it existed);
* checkpoints add tensors ``optim.{i}.{name}`` (optimizer state) and metadata ``checkpoint``
  (JSON: epoch, batch, optimizer type/config/steps, history, random states).

This module owns the model-file format; writing bytes safely is :mod:`numcnn.files`, and the
architecture JSON inside is :mod:`numcnn.architecture`.  Importing it wires ``model.save``.

Files are written atomically: to a temporary file in the same folder, flushed and fsync'd, then
renamed over the target, so a crash at any moment leaves either the old file or the new one.
Loading never runs code from the file: the header is JSON, the tensors are raw little-endian
arrays, and every name, shape and dtype is checked against the architecture before use.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from .architecture import check_architecture, check_model_size
from .backend import current, to_numpy
from .errors import ConfigError, ModelFileError
from .files import as_path, atomic_write, open_regular, read_exact  # noqa: F401 - atomic_write: numcnn.io's public name
from .model import Sequential, register_entry_point
from .validate import check_shape, file_index, file_int

FORMAT = "numcnn/1"
MAX_HEADER = 64 * 1024 * 1024
#: a header listing more tensors than this is refused before it is parsed (a model has a few
#: per layer; numcnn's architectures are capped at 10,000 layers)
MAX_TENSORS = 100_000
_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
           "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items()}


def encode_safetensors(tensors: dict, metadata: dict) -> bytes:
    """The bytes of a safetensors file (8-byte header length, JSON header, raw data)."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(to_numpy(tensors[name]))
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        code = _CODES.get(a.dtype.str)
        if code is None:
            raise ConfigError(f"cannot store tensor {name!r} of dtype {a.dtype}")
        b = a.tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def _header_length(first8, file_size, where):
    if file_size < 8:
        raise ModelFileError(f"{where}: too short to be a safetensors file ({file_size} bytes)")
    (n,) = struct.unpack("<Q", first8)
    if n > min(MAX_HEADER, file_size - 8):
        raise ModelFileError(f"{where}: header claims {n} bytes but the file has {file_size - 8} "
                             "after the length field; the file is truncated or not a model file")
    return n


def _parse_header(raw, body_len, where):
    """``(specs, metadata)`` from a safetensors JSON header: specs ``[(name, dtype, shape,
    start, end)]`` checked against ``body_len`` data bytes, which they must cover exactly (a
    file with bytes after its last tensor was appended to or is damaged)."""
    if raw.count(b'"data_offsets"') > MAX_TENSORS:
        raise ModelFileError(f"{where}: the header lists more than {MAX_TENSORS:,} tensors; not "
                             "a numcnn model file")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{where}: the header is not valid JSON ({exc}); not a model file") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{where}: the header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{where}: __metadata__ must map names to strings")
    specs, covered = [], 0
    for name, spec in header.items():
        try:
            dt = np.dtype(_DTYPES[spec["dtype"]])
            shape = check_shape(spec.get("shape") if isinstance(spec, dict) else None, where,
                                f"the shape of tensor {name!r}")
            offsets = spec["data_offsets"]
            if not isinstance(offsets, list) or len(offsets) != 2:
                raise TypeError
            start, end = (file_int(o, f"a data offset of tensor {name!r}", where) for o in offsets)
        except ModelFileError as exc:       # a forged number: say which, in the entry's words
            raise ModelFileError(f"{where}: tensor {name!r} has a bad header entry: "
                                 f"{str(exc)[len(where) + 2:]}") from None
        except (KeyError, TypeError, ValueError, OverflowError):
            shown = repr(spec) if len(repr(spec)) < 200 else repr(spec)[:197] + "..."
            raise ModelFileError(f"{where}: tensor {name!r} has a bad header entry {shown}") from None
        count = 1
        for d in shape:
            count *= d
        if not 0 <= start <= end <= body_len or end - start != count * dt.itemsize:
            raise ModelFileError(f"{where}: tensor {name!r} ({spec['dtype']} {list(shape)}) does not "
                                 f"fit its data offsets [{start}, {end}) in {body_len} data bytes; "
                                 "the file is truncated or corrupt")
        covered = max(covered, end)
        specs.append((name, dt, shape, start, end))
    if covered != body_len:
        raise ModelFileError(f"{where}: {body_len - covered:,} bytes follow the last tensor's data; "
                             "the file was appended to or is damaged - use an intact copy")
    return specs, meta


def _tensors(specs, body):
    return {name: np.frombuffer(body[start:end], dtype=dt.newbyteorder("<")).reshape(shape).copy()
            for name, dt, shape, start, end in specs}


def decode_safetensors(data: bytes, where="file"):
    """Parse safetensors bytes into ``(tensors, metadata)``, checking every size first."""
    n = _header_length(bytes(data[:8]), len(data), where)
    specs, meta = _parse_header(bytes(data[8:8 + n]), len(data) - 8 - n, where)
    return _tensors(specs, memoryview(data)[8 + n:]), meta


def read_safetensors(path, what="model file"):
    """``(tensors, metadata)`` of a safetensors file, reading no more than it declares: the
    8-byte length, then the header (checked: at most :data:`MAX_HEADER` bytes and what the file
    holds), then exactly the data bytes its tensors cover.  Only regular files are read
    (:func:`numcnn.files.open_regular`)."""
    where = as_path(path, f"read {what}")
    with open_regular(where, what, ModelFileError) as (f, size):
        n = _header_length(f.read(8) if size >= 8 else b"", size, where)
        specs, meta = _parse_header(read_exact(f, n, where, what), size - 8 - n, where)
        body = read_exact(f, size - 8 - n, where, what)
    return _tensors(specs, body), meta


def model_tensors(model) -> dict:
    out = {}
    for i, layer in enumerate(model.layers):
        for name, p in layer.named_parameters().items():
            out[f"layers.{i}.{name}"] = p.value
        for name, b in layer.buffers().items():
            out[f"layers.{i}.{name}"] = b
    return out


def model_metadata(model) -> dict:
    norm = None
    if model.normalization is not None:
        mean, std = model.normalization
        norm = {"mean": [float(v) for v in np.ravel(to_numpy(mean))],
                "std": [float(v) for v in np.ravel(to_numpy(std))]}
    rng = {str(i): l._rng_state() for i, l in enumerate(model.layers) if l._rng_state() is not None}
    return {"format": FORMAT, "architecture": json.dumps(model.config()),
            "normalization": json.dumps(norm), "classes": json.dumps(model.classes),
            "rng": json.dumps(rng), "training_data": json.dumps(getattr(model, "training_data", None))}


def save_model(model, path, extra_tensors=None, extra_metadata=None):
    """Write ``model`` (and, for checkpoints, extra tensors/metadata) atomically to ``path``."""
    path = as_path(path, "save")
    model.check_classes(model.classes, f"save {path!r}: model.classes has",
                        advice="set one name per output before saving (a file that cannot be "
                               "loaded back is never written)")
    tensors = model_tensors(model)
    tensors.update(extra_tensors or {})
    meta = model_metadata(model)
    meta.update(extra_metadata or {})
    atomic_write(path, encode_safetensors(tensors, meta))


def _json_meta(meta, key, where, default=None):
    raw = meta.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{where}: metadata {key!r} is not valid JSON ({exc})") from None


def model_from_parts(tensors, meta, where):
    """Rebuild a Sequential from decoded tensors and metadata; refuses anything inconsistent."""
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{where}: not a numcnn model file (format {meta.get('format')!r}, "
                             f"expected {FORMAT!r})")
    arch = _json_meta(meta, "architecture", where)
    if arch is None:
        raise ModelFileError(f"{where}: the metadata has no 'architecture'")
    check_architecture(arch, where)
    try:
        model = Sequential.from_config(arch)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as exc:        # ValueError includes every NumcnnError
        raise ModelFileError(f"{where}: bad architecture: {exc}") from None
    check_model_size(model, where)
    expected = model_tensors(model)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFileError(f"{where}: missing tensor(s) {', '.join(missing)} for the stored architecture")
    extra = sorted(k for k in tensors if k.startswith("layers.") and k not in expected)
    if extra:
        raise ModelFileError(f"{where}: unexpected tensor(s) {', '.join(extra)} not in the architecture")
    dtypes = {tensors[k].dtype for k in expected}
    if len(dtypes) > 1 or not all(d.kind == "f" and d.itemsize >= 4 for d in dtypes):
        raise ModelFileError(f"{where}: tensors must all be float32 or all float64, got {sorted(map(str, dtypes))}")
    for k, ref in expected.items():
        if tensors[k].shape != ref.shape:
            raise ModelFileError(f"{where}: tensor {k} has shape {tensors[k].shape}, the architecture "
                                 f"needs {ref.shape}")
        if not np.all(np.isfinite(tensors[k])):
            raise ModelFileError(f"{where}: tensor {k} holds NaN or inf")
        if k.endswith(".running_var") and np.any(tensors[k] < 0):
            raise ModelFileError(f"{where}: tensor {k} holds a negative variance "
                                 f"({float(tensors[k].min()):g}); a batch norm's running "
                                 "variance is >= 0 - the file is damaged (it would make every "
                                 "prediction NaN)")
    for i, layer in enumerate(model.layers):
        for name, p in layer.named_parameters().items():
            p.value = tensors[f"layers.{i}.{name}"]
        for name in layer.buffers():
            layer.set_buffer(name, tensors[f"layers.{i}.{name}"])
    norm = _json_meta(meta, "normalization", where)
    if norm is not None:
        try:
            with np.errstate(over="ignore"):          # too big for float32: inf, refused below
                mean = np.asarray(norm["mean"], dtype=np.float32)
                std = np.asarray(norm["std"], dtype=np.float32)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ModelFileError(f"{where}: bad normalization metadata {norm!r}") from None
        if model.input_shape and mean.size not in (1, model.input_shape[0]) or mean.shape != std.shape \
                or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or not np.all(std > 0):
            raise ModelFileError(f"{where}: bad normalization metadata {norm!r}")
        model.normalization = (mean, std)
    classes = _json_meta(meta, "classes", where)
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise ModelFileError(f"{where}: 'classes' must be a list of names")
    model.check_classes(classes, f"{where}: the file stores", error=ModelFileError,
                        advice="it was edited or damaged; use another model file")
    model.classes = classes
    model.training_data = _check_training_data(_json_meta(meta, "training_data", where), where)
    _restore_rng_states(model, _json_meta(meta, "rng", where, default={}), where)
    if current() is not np:           # numcnn.use("cupy"): loaded models live on the GPU too
        model.to("gpu")
    return model


def _check_training_data(rec, where):
    """The ``training_data`` record (see :mod:`numcnn.data.provenance`): a dict with a dataset
    name or path, a split, ``value_range`` [low, high] and class names, or None."""
    if rec is None:
        return None
    ok = isinstance(rec, dict)
    vr = rec.get("value_range") if ok else None
    ok = ok and isinstance(vr, list) and len(vr) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vr) \
        and vr[0] <= vr[1]
    ok = ok and isinstance(rec.get("dataset"), (str, type(None))) \
        and isinstance(rec.get("split", "test"), str) and isinstance(rec.get("dtype", ""), str) \
        and (rec.get("classes") is None or (isinstance(rec["classes"], list)
                                            and all(isinstance(c, str) for c in rec["classes"])))
    bg = rec.get("background", 0.0) if ok else None
    ok = ok and isinstance(bg, (int, float)) and not isinstance(bg, bool) and np.isfinite(bg)
    if not ok:
        raise ModelFileError(f"{where}: the 'training_data' metadata is damaged "
                             f"({str(rec)[:120]}); it must hold dataset, split, value_range "
                             "[low, high] and classes")
    return rec


def _restore_rng_states(model, states, where):
    """Dropout generators continue where the saved model's left off (bit-identical training)."""
    if not isinstance(states, dict):
        raise ModelFileError(f"{where}: bad 'rng' metadata; it must map layer indices to states")
    for i, state in states.items():
        k = file_index(i, len(model.layers))
        layer = None if k is None else model.layers[k]
        if layer is None or layer._rng_state() is None:
            raise ModelFileError(f"{where}: 'rng' metadata names layer {i!r}, which has no "
                                 "random generator")
        try:
            layer._set_rng_state(state)
        except (TypeError, ValueError, KeyError, OverflowError):
            raise ModelFileError(f"{where}: bad random-generator state for layer {i}") from None


def load_model(path):
    """Load a model written by :func:`save_model` (or a checkpoint: its model part)."""
    where = as_path(path, "read model file")
    return model_from_parts(*read_safetensors(where, "model file"), where)


def load_checkpoint(path):
    """``(model, optimizer_arrays, info)`` from a checkpoint written by the trainer."""
    where = as_path(path, "read checkpoint")
    tensors, meta = read_safetensors(where, "checkpoint")
    model = model_from_parts(tensors, meta, where)
    info = _json_meta(meta, "checkpoint", where)
    if not isinstance(info, dict):
        raise ModelFileError(f"{where}: not a checkpoint (no 'checkpoint' metadata); it is a plain "
                             "model file, which can be evaluated but not resumed")
    optim = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return model, optim, info


register_entry_point("save", save_model)        # model.save(path) -> save_model(model, path)
