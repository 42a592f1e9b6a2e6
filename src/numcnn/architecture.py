"""The architecture format: a model described as data (JSON or TOML), checked before it is built.

A description is what :meth:`Sequential.config` returns and what model files store::

    {"input_shape": [1, 28, 28],                 # one sample's (C, H, W); optional
     "layers": [                                 # applied in order
        {"type": "Conv2D", "in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"type": "ReLU"},
        {"type": "MaxPool2D", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "in_features": 1176, "out_features": 10}]}

Each layer is ``{"type": <class name in numcnn.layers>, <its constructor arguments>}``; the names
and defaults are PyTorch's (``docs/architecture-format.md`` lists every type).  TOML writes the
same thing as ``input_shape = [1, 28, 28]`` and one ``[[layers]]`` table per layer.

Who uses it: ``numcnn train --model net.json``, ``numcnn summary net.toml``, :func:`load_architecture`
from Python, the model-file reader (:mod:`numcnn.io`) and the ONNX importer.  Everything read
from outside passes :func:`check_architecture` (sizes, NaN, dtypes) before any layer allocates,
and :func:`check_model_size` (activation sizes) before any forward pass.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import models
from .errors import ConfigError, ModelFileError, NumcnnError
from .files import as_path, read_regular
from .init import as_generator
from .layers import layer_from_config
from .layers.container import MAX_DEPTH, walk_shapes
from .model import Sequential
from .validate import spec_int, spec_pair

#: architecture files larger than this are refused before parsing
MAX_FILE_BYTES = 1 << 20
#: descriptions with more layers than this are refused before any layer is built (building and
#: summarising are linear in the layer count; the deepest classic CNNs have a few hundred)
MAX_LAYERS = 10_000


#: The largest model numcnn builds from a description: 2**28 elements of parameters and buffers
#: in all (1 GiB of float32, about twice VGG-16), and 2**28 elements for any one layer's output
#: (or padded input, or im2col buffer) per image.  Checked before anything is allocated, so an
#: architecture asking for ``out_channels=10**12`` is refused at once instead of exhausting memory.
MAX_ELEMENTS = 2 ** 28


def _spec_elements(spec) -> int:
    """Parameter + buffer elements a layer description asks for (0 where its arguments are not
    even integers: the layer's constructor refuses those with its own message)."""
    kind = spec.get("type")
    if kind in ("Conv2D", "ConvTranspose2D"):     # at most cout * (cin * kh * kw + 1)
        cin, cout = spec_int(spec.get("in_channels")), spec_int(spec.get("out_channels"))
        k = spec_pair(spec.get("kernel_size"))
        if cin is None or cout is None or k is None:
            return 0
        return max(cout, 0) * (max(cin, 0) * k[0] * k[1] + 1)
    if kind == "Dense":
        fin, fout = spec_int(spec.get("in_features")), spec_int(spec.get("out_features"))
        if fin is None or fout is None:
            return 0
        return max(fout, 0) * (max(fin, 0) + 1)
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        n = spec_int(spec.get("num_features"))
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
        branches = spec.get("branches")
        paths = [("body", spec.get("body")), ("shortcut", spec.get("shortcut"))] \
            if spec["type"] == "Residual" else \
            list(enumerate(branches if isinstance(branches, list) else []))   # else: Concat says
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
    if len(config["layers"]) > MAX_LAYERS:
        raise error(f"{where}: {len(config['layers']):,} layers; numcnn builds at most "
                    f"{MAX_LAYERS:,} from a description - the file is corrupt or generated wrongly")
    shape = config.get("input_shape")
    if shape is not None:
        if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 8 \
                or any(spec_int(d) is None or d < 1 for d in shape):
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
        pad = getattr(layer, "pads", None)            # ((top, bottom), (left, right))
        if pad is not None and len(shape) == 3:
            c, h, w = shape
            sizes.append(c * (h + sum(pad[0])) * (w + sum(pad[1])))
            k = getattr(layer, "kernel_size", None)
            if k is not None and len(out) == 3 and hasattr(layer, "in_channels"):
                sizes.append(c * k[0] * k[1] * out[1] * out[2])      # im2col columns
        if max(sizes) > MAX_ELEMENTS:
            raise error(f"{where}: layer {i} {layer!r} would need {max(sizes):,} elements per "
                        f"image for input shape {shape}; numcnn refuses more than "
                        f"{MAX_ELEMENTS:,} - the description is corrupt or far too large")


def build_model(spec, shape, num_classes, seed):
    """A preset name, or a .json/.toml file describing a Sequential."""
    if spec in models.PRESETS:
        c, h, w = shape
        if h != w:
            raise ConfigError(f"preset {spec!r} needs square images, the data has {h}x{w}")
        return models.build(spec, in_channels=c, num_classes=num_classes, image_size=h, rng=seed)
    if os.path.splitext(spec)[1].lower() in (".json", ".toml"):
        return load_architecture(spec, seed)
    raise ConfigError(f"unknown model {spec!r}: choose a preset ({', '.join(models.PRESETS)}) or "
                      "give a .json/.toml architecture file")


def load_architecture(path, seed=0):
    """Read ``{"input_shape": [C, H, W], "layers": [{"type": "Conv2D", ...}, ...]}`` (JSON/TOML).

    At most :data:`MAX_FILE_BYTES` (1 MiB) and :data:`MAX_LAYERS` layers; a regular file."""
    path = as_path(path, "read architecture file")
    raw = read_regular(path, "architecture file", ConfigError, limit=MAX_FILE_BYTES)
    is_toml = path.lower().endswith(".toml")
    try:
        if is_toml:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError("TOML architectures need Python 3.11+; use JSON instead") from None
            spec = tomllib.loads(raw.decode("utf-8"))
        else:
            spec = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if is_toml else 'JSON'}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise ConfigError(f"{path}: expected a 'layers' list of {{\"type\": ..., ...}} tables")
    # sizes, NaN arguments, dtypes and input_shape are checked before anything is allocated
    check_architecture(spec, path, error=ConfigError)
    rng = as_generator(seed)
    layers = []
    for i, ls in enumerate(spec["layers"]):
        if isinstance(ls, dict) and ls.get("type") in ("Conv2D", "ConvTranspose2D", "Dense",
                                                       "Residual", "Concat"):
            ls = {**ls, "rng": rng}
        try:
            if isinstance(ls, dict) and not isinstance(ls.get("type"), str):
                raise ConfigError(f"the 'type' of a layer must be a string, got {ls.get('type')!r}")
            layers.append(layer_from_config(ls))
        except NumcnnError as exc:
            raise ConfigError(f"{path}: layer {i}: {exc}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                RecursionError) as exc:     # a layer constructor choking on a bad argument
            raise ConfigError(f"{path}: layer {i}: bad arguments ({type(exc).__name__}: {exc})") from None
    try:
        model = Sequential(layers, input_shape=spec.get("input_shape"))
    except NumcnnError as exc:          # layers that do not fit together: name the file
        raise ConfigError(f"{path}: {exc}") from None
    check_model_size(model, path, error=ConfigError)
    return model
