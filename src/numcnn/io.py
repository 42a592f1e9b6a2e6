"""Model files: one ``.safetensors`` file, weights plus the architecture as JSON, no pickle.

Layout of a file written by :func:`save_model`:

* tensors ``layers.{i}.{name}``: every parameter (``weight``, ``bias``) and buffer
  (``running_mean``, ``running_var``) of layer ``i``;
* metadata (strings): ``format`` = ``numcnn/1``, ``architecture`` (JSON of
  ``Sequential.config()``), ``normalization`` (JSON ``{"mean": [...], "std": [...]}`` or ``null``),
  ``classes`` (JSON list or ``null``);
* checkpoints add tensors ``optim.{i}.{name}`` (optimizer state) and metadata ``checkpoint``
  (JSON: epoch, batch, optimizer type/config/steps, history, random states).

Files are written atomically: to a temporary file in the same folder, flushed and fsync'd, then
renamed over the target, so a crash at any moment leaves either the old file or the new one.
Loading never runs code from the file: the header is JSON, the tensors are raw little-endian
arrays, and every name, shape and dtype is checked against the architecture before use.
"""
from __future__ import annotations

import json
import os
import secrets
import struct

import numpy as np

from .backend import current, to_numpy
from .errors import ConfigError, ModelFileError
from .layers.container import MAX_DEPTH, walk_shapes

FORMAT = "numcnn/1"
MAX_HEADER = 64 * 1024 * 1024
_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "U8": np.uint8,
           "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items()}


def _as_path(path, what):
    """``path`` as a str, or ConfigError when it is not a path at all (None, a number...)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ConfigError(f"{what}: expected a file path, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def _temp_file(folder):
    """``(fd, path)`` of a new ``.tmp-*.part`` file in ``folder``, created with mode 0666 so the
    process's umask applies as for any new file (mkstemp's private 0600 would lock other users
    out of shared models)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder!r}")   # pragma: no cover


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` via temp file + fsync + rename (never a half-written file).

    A file that is replaced keeps its permissions (where the file system allows chmod)."""
    path = _as_path(path, "write")
    if os.path.isdir(path):
        raise ConfigError(f"cannot write {path!r}: it is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _temp_file(folder)
    try:
        try:
            keep = os.stat(path).st_mode & 0o7777
        except OSError:
            keep = None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            try:
                os.chmod(tmp, keep)
            except OSError:                  # e.g. vfat, CIFS: the new file's mode will do
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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


def decode_safetensors(data: bytes, where="file"):
    """Parse safetensors bytes into ``(tensors, metadata)``, checking every size first."""
    if len(data) < 8:
        raise ModelFileError(f"{where}: too short to be a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER, len(data) - 8):
        raise ModelFileError(f"{where}: header claims {n} bytes but the file has {len(data) - 8} "
                             "after the length field; the file is truncated or not a model file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{where}: the header is not valid JSON ({exc}); not a model file") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{where}: the header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{where}: __metadata__ must map names to strings")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, spec in header.items():
        try:
            dt = np.dtype(_DTYPES[spec["dtype"]])
            shape = tuple(int(d) for d in spec["shape"])
            start, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ModelFileError(f"{where}: tensor {name!r} has a bad header entry {spec!r}") from None
        count = 1
        for d in shape:
            if d < 0:
                raise ModelFileError(f"{where}: tensor {name!r} has a negative dimension {shape}")
            count *= d
        if not 0 <= start <= end <= len(body) or end - start != count * dt.itemsize:
            raise ModelFileError(f"{where}: tensor {name!r} ({spec['dtype']} {list(shape)}) does not "
                                 f"fit its data offsets [{start}, {end}) in {len(body)} data bytes; "
                                 "the file is truncated or corrupt")
        tensors[name] = np.frombuffer(body[start:end], dtype=dt.newbyteorder("<")).reshape(shape).copy()
    return tensors, meta


def read_file(path, what="model file"):
    path = _as_path(path, f"read {what}")
    if not os.path.exists(path):
        raise ModelFileError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise ModelFileError(f"{what} {path!r} is a folder; give the .safetensors file inside it")
    with open(path, "rb") as f:
        return f.read()


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
            "rng": json.dumps(rng)}


def save_model(model, path, extra_tensors=None, extra_metadata=None):
    """Write ``model`` (and, for checkpoints, extra tensors/metadata) atomically to ``path``."""
    path = _as_path(path, "save")
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


#: The largest model numcnn builds from a description: 2**28 elements of parameters and buffers
#: in all (1 GiB of float32, about twice VGG-16), and 2**28 elements for any one layer's output
#: (or padded input, or im2col buffer) per image.  Checked before anything is allocated, so an
#: architecture asking for ``out_channels=10**12`` is refused at once instead of exhausting memory.
MAX_ELEMENTS = 2 ** 28


def _spec_int(v):
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def _spec_pair(v):
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            return None
        a, b = _spec_int(v[0]), _spec_int(v[1])
        return None if a is None or b is None else (max(a, 0), max(b, 0))
    a = _spec_int(v)
    return None if a is None else (max(a, 0), max(a, 0))


def _spec_elements(spec) -> int:
    """Parameter + buffer elements a layer description asks for (0 where its arguments are not
    even integers: the layer's constructor refuses those with its own message)."""
    kind = spec.get("type")
    if kind == "Conv2D":
        cin, cout = _spec_int(spec.get("in_channels")), _spec_int(spec.get("out_channels"))
        k = _spec_pair(spec.get("kernel_size"))
        if cin is None or cout is None or k is None:
            return 0
        return max(cout, 0) * (max(cin, 0) * k[0] * k[1] + 1)
    if kind == "Dense":
        fin, fout = _spec_int(spec.get("in_features")), _spec_int(spec.get("out_features"))
        if fin is None or fout is None:
            return 0
        return max(fout, 0) * (max(fin, 0) + 1)
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        n = _spec_int(spec.get("num_features"))
        return 4 * max(n or 0, 0)
    return 0


def _non_finite(v, depth=0):
    if isinstance(v, float):
        return not np.isfinite(v)
    if isinstance(v, (list, tuple)) and depth < 4:
        return any(_non_finite(u, depth + 1) for u in v)
    return False


def _all_specs(specs, where, error, prefix="", depth=1):
    """``(name, spec)`` of every layer description, nested ones too (``"3.body.0"``): the
    paths of Residual (body, shortcut) and Concat (branches), at most MAX_DEPTH deep."""
    for i, spec in enumerate(specs):
        name = f"{prefix}{i}"
        yield name, spec
        if not isinstance(spec, dict) or spec.get("type") not in ("Residual", "Concat"):
            continue
        paths = [("body", spec.get("body")), ("shortcut", spec.get("shortcut"))] \
            if spec["type"] == "Residual" else list(enumerate(spec.get("branches") or []))
        paths = [(f"branches.{k}" if spec["type"] == "Concat" else k, v) for k, v in paths]
        for key, sub in paths:
            if isinstance(sub, dict):
                sub = [sub]
            if not isinstance(sub, list):
                continue                   # the container's constructor says what is wrong
            if depth >= MAX_DEPTH:
                raise error(f"{where}: layer {name} ({spec['type']!r}) nests containers more "
                            f"than {MAX_DEPTH} deep; the description is corrupt")
            yield from _all_specs(sub, where, error, f"{name}.{key}.", depth + 1)


def check_architecture(config, where, error=ModelFileError):
    """Refuse a model description that is hostile or absurd *before* building it.

    Checks what ``Sequential.from_config`` cannot check without allocating: the total number of
    parameter elements (at most :data:`MAX_ELEMENTS`), NaN/inf arguments, parameter dtypes other
    than float32/float64 and a malformed ``input_shape``.  Anything else (unknown types, bad
    arguments) is left to the layers' constructors, which raise ConfigError.
    """
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return
    shape = config.get("input_shape")
    if shape is not None:
        if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 8 \
                or any(_spec_int(d) is None or d < 1 for d in shape):
            raise error(f"{where}: input_shape must be a list of positive integers such as "
                        f"[1, 28, 28], got {shape!r}")
        n = 1
        for d in shape:
            n *= int(d)
        if n > MAX_ELEMENTS:
            raise error(f"{where}: input_shape {list(shape)} is {n:,} elements per image, more "
                        f"than numcnn's limit of {MAX_ELEMENTS:,}")
    total = 0
    for i, spec in _all_specs(config["layers"], where, error):
        if not isinstance(spec, dict):
            continue                       # from_config/layer_from_config say what is wrong
        for key, v in spec.items():
            if _non_finite(v):
                raise error(f"{where}: layer {i} ({spec.get('type')!r}): argument {key!r} is "
                            f"{v!r}; every number in an architecture must be finite")
        if "dtype" in spec:
            try:
                dt = np.dtype(spec["dtype"])
            except Exception:  # noqa: BLE001 - the constructor reports unknown dtypes
                dt = None
            if dt is not None and dt not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise error(f"{where}: layer {i} ({spec.get('type')!r}): dtype must be float32 "
                            f"or float64, got {spec['dtype']!r}")
        n = _spec_elements(spec)
        total += n
        if n > MAX_ELEMENTS or total > MAX_ELEMENTS:
            raise error(f"{where}: layer {i} ({spec.get('type')!r}) needs {n:,} parameter "
                        f"elements ({total:,} so far); numcnn refuses models of more than "
                        f"{MAX_ELEMENTS:,} elements ({MAX_ELEMENTS * 4 // 2 ** 30} GiB of "
                        "float32) - the description is corrupt or far too large")


def check_model_size(model, where, error=ModelFileError):
    """Refuse a built model whose per-image activations would exceed :data:`MAX_ELEMENTS` for
    some layer (e.g. ``padding=10**9``): checked from the shapes alone, before any forward pass."""
    if not model.input_shape:
        return
    for i, layer, shape, out, _ in walk_shapes(model.layers, model.input_shape):   # nested too
        sizes = [int(np.prod(out, dtype=object))]
        pad = getattr(layer, "padding", None)
        if pad is not None and len(shape) == 3:
            c, h, w = shape
            sizes.append(c * (h + 2 * pad[0]) * (w + 2 * pad[1]))
            k = getattr(layer, "kernel_size", None)
            if k is not None and len(out) == 3 and hasattr(layer, "in_channels"):
                sizes.append(c * k[0] * k[1] * out[1] * out[2])      # im2col columns
        if max(sizes) > MAX_ELEMENTS:
            raise error(f"{where}: layer {i} {layer!r} would need {max(sizes):,} elements per "
                        f"image for input shape {shape}; numcnn refuses more than "
                        f"{MAX_ELEMENTS:,} - the description is corrupt or far too large")


def model_from_parts(tensors, meta, where):
    """Rebuild a Sequential from decoded tensors and metadata; refuses anything inconsistent."""
    from .model import Sequential
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
    _restore_rng_states(model, _json_meta(meta, "rng", where, default={}), where)
    if current() is not np:           # numcnn.use("cupy"): loaded models live on the GPU too
        model.to("gpu")
    return model


def _restore_rng_states(model, states, where):
    """Dropout generators continue where the saved model's left off (bit-identical training)."""
    if not isinstance(states, dict):
        raise ModelFileError(f"{where}: bad 'rng' metadata; it must map layer indices to states")
    for i, state in states.items():
        layer = model.layers[int(i)] if str(i).isdigit() and int(i) < len(model.layers) else None
        if layer is None or layer._rng_state() is None:
            raise ModelFileError(f"{where}: 'rng' metadata names layer {i!r}, which has no "
                                 "random generator")
        try:
            layer._set_rng_state(state)
        except (TypeError, ValueError, KeyError, OverflowError):
            raise ModelFileError(f"{where}: bad random-generator state for layer {i}") from None


def load_model(path):
    """Load a model written by :func:`save_model` (or a checkpoint: its model part)."""
    where = _as_path(path, "read model file")
    return model_from_parts(*decode_safetensors(read_file(where), where=where), where)


def load_checkpoint(path):
    """``(model, optimizer_arrays, info)`` from a checkpoint written by the trainer."""
    where = _as_path(path, "read checkpoint")
    tensors, meta = decode_safetensors(read_file(path, "checkpoint"), where=where)
    model = model_from_parts(tensors, meta, where)
    info = _json_meta(meta, "checkpoint", where)
    if not isinstance(info, dict):
        raise ModelFileError(f"{where}: not a checkpoint (no 'checkpoint' metadata); it is a plain "
                             "model file, which can be evaluated but not resumed")
    optim = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return model, optim, info
