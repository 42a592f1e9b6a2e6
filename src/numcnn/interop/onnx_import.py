"""ONNX -> numcnn: a table from ``op_type`` to builder (tinygrad's ``extra/onnx.py`` layout).

``from_onnx(path)`` walks the graph in its (topological) order.  Every value it meets is one of

* **data**: what a chain of numcnn layers makes of the graph's input (``_Data``: those layers
  and one sample's shape);
* **constant**: an initializer, a ``Constant`` node's tensor, or what shape arithmetic makes of
  them (numpy arrays);
* **shape**: a shape vector that holds the dynamic batch size ``N`` (``Shape`` -> ``Gather`` ->
  ``Unsqueeze`` -> ``Concat``, as ``torch.onnx.export`` writes ``x.view(x.size(0), -1)``).

A builder checks its node's attributes (an attribute it does not know is *unsupported*, never
ignored), and appends a layer to its data input's chain.  A node whose inputs are all constants
is folded with numpy (``FOLDERS``).  Where two chains meet again (``Add``, ``Concat``) their
common prefix is the fork and the rest become a ``Residual`` or ``Concat`` block.  Activations
opset 17 writes as small subgraphs (SiLU, GELU) are matched as ``PATTERNS`` before the walk.
Everything unsupported is collected (operator, attribute, node name) and reported at once; no
model is returned then.

Hostile files: the file size is checked before it is read, every tensor's declared size before
its bytes are touched (numcnn decodes tensors itself, not ``numpy_helper.to_array``), the
number of nodes and initializers is capped, and external-data files must lie inside the model's
folder.  Weights are stored as float32 (float16/float64 graphs are widened/narrowed).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..architecture import MAX_ELEMENTS
from ..errors import ConfigError, ModelFileError, NumcnnError
from ..files import as_path
from ..layers import (ELU, GELU, REGISTRY, AvgPool2D, BatchNorm1D, BatchNorm2D,
                      ChannelPadShortcut, Conv2D, ConvTranspose2D, Dense, Dropout, Flatten,
                      GlobalAvgPool2D, GlobalMaxPool2D, Identity, LeakyReLU, MaxPool2D, ReLU,
                      Sigmoid, SiLU, Softmax, Tanh, Upsample)
from ..validate import check_bool
from ._onnx import require_onnx

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


class _Data:
    """A value computed from the graph input: ``layers`` applied to it; one sample's ``shape``."""

    __slots__ = ("layers", "shape", "last_input")

    def __init__(self, layers, shape, last_input=None):
        self.layers, self.shape = tuple(layers), tuple(shape)
        self.last_input = last_input          # the shape the last layer took, when known


class _Shape:
    """A vector (or scalar) of ints some of which are the batch size ``"N"``."""

    __slots__ = ("vals", "scalar")

    def __init__(self, vals, scalar=False):
        self.vals, self.scalar = list(vals), scalar


# -- reading the file -----------------------------------------------------------------------------
def _short(text, n=80):
    text = str(text)
    return text if len(text) <= n else text[:n - 3] + "..."


def _load_proto(path):
    onnx = require_onnx()
    if not os.path.exists(path):
        raise ModelFileError(f"ONNX file {path!r} does not exist")
    if not os.path.isfile(path):
        raise ModelFileError(f"ONNX file {path!r} is not a file")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes is more than numcnn imports "
                             f"({MAX_FILE_BYTES:,}: its largest model, {MAX_ELEMENTS:,} float32 "
                             "weights, plus the graph)")
    with open(path, "rb") as f:
        # read(n) allocates n bytes up front: ask for what the file has (one more shows growth)
        data = f.read(size + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: the file grew past {MAX_FILE_BYTES:,} bytes while it was read")
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


# -- attributes -------------------------------------------------------------------------------------
def _f32_value(v):
    """A float32 attribute as the shortest decimal that names it (0.9f -> 0.9, 1e-5f -> 1e-05),
    so eps, momentum and slopes read back as the numbers that were written."""
    return float(str(np.float32(v)))


def _attr_value(a):
    t = a.type
    if t == 1:
        return _f32_value(a.f)
    if t == 2:
        return int(a.i)
    if t == 3:
        return a.s.decode("utf-8", "replace")
    if t == 4:
        return a.t
    if t == 6:
        return [_f32_value(v) for v in a.floats]
    if t == 7:
        return [int(v) for v in a.ints]
    raise _Unsupported(f"attribute {_short(a.name)!r} has a type ({t}) numcnn does not read")


def _attrs(node, allowed):
    """``{name: value}`` with defaults from ``allowed``; unknown attributes are unsupported."""
    out = dict(allowed)
    for a in node.attribute:
        if a.name not in allowed:
            raise _Unsupported(f"attribute {_short(a.name)!r} is not supported")
        out[a.name] = _attr_value(a)
    return out


def _ints(value, n, what):
    if not isinstance(value, list) or len(value) != n or any(v < 0 for v in value):
        raise _Unsupported(f"{what} must be {n} non-negative ints here, got {_short(value)}")
    return value


# -- the walk ---------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto, path, fuse_bn, input_shape):
        self.proto, self.path, self.fuse_bn = proto, path, fuse_bn
        self.graph = proto.graph
        self.tensors = _Tensors(path)
        self.values = {}                 # name -> _Data | np.ndarray | _Shape
        self.producer = {}               # name -> op_type of the node that wrote it
        self.problems = []
        self.bad = set()
        self.opset = self._opset()
        self.uses = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for out in self.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1
        self.input_name, self.input_shape, self.static_batch = self._input(input_shape)
        self.synthetic = set()
        self.nodes = self._find_patterns()

    def fail(self, msg):
        raise ModelFileError(f"{self.path}: {msg}")

    def _opset(self):
        version = None
        for o in self.proto.opset_import:
            if o.domain in ("", "ai.onnx"):
                version = int(o.version)
        if version is None:
            self.fail("no ai.onnx opset_import; not a valid ONNX model")
        onnx = require_onnx()
        newest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= version <= newest:
            self.fail(f"opset {version} is outside what numcnn imports ({MIN_OPSET}..{newest}); "
                      "re-export the model with opset 17")
        return version

    def _input(self, given):
        g = self.graph
        if len(g.node) > MAX_NODES:
            self.fail(f"{len(g.node):,} nodes; numcnn imports graphs of at most {MAX_NODES:,}")
        if len(g.initializer) > MAX_INITIALIZERS:
            self.fail(f"{len(g.initializer):,} initializers; numcnn imports at most "
                      f"{MAX_INITIALIZERS:,}")
        if len(g.sparse_initializer):
            raise OnnxImportError(f"{self.path}: sparse initializers are not supported")
        inits = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1 or len(g.output) != 1:
            self.fail(f"numcnn imports graphs with one input and one output; this one has "
                      f"{len(inputs)} input(s) and {len(g.output)} output(s)")
        inp = inputs[0]
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or tt.elem_type != 1:
            raise OnnxImportError(f"{self.path}: the input {_short(inp.name)!r} must be a float32 "
                                  f"tensor (elem_type 1), got {tt.elem_type if inp.type.HasField('tensor_type') else 'no tensor type'}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) not in (2, 4):
            raise OnnxImportError(f"{self.path}: the input {_short(inp.name)!r} has rank "
                                  f"{len(dims)}; numcnn takes (N, C, H, W) images or "
                                  "(N, features)")
        if given is not None:
            try:
                shape = tuple(given)
                bad = any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in shape)
            except TypeError:
                bad = True
            if bad:
                raise ConfigError(f"from_onnx: input_shape must be one sample's shape as ints, "
                                  f"e.g. (3, 32, 32), got {given!r}")
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(dims) - 1 or any(d < 1 for d in shape) or any(
                    d is not None and d > 0 and d != s for d, s in zip(dims[1:], shape)):
                raise OnnxImportError(f"{self.path}: input_shape {shape} does not fit the "
                                      f"graph's input {dims[1:]}")
        else:
            if any(d is None or d < 1 for d in dims[1:]):
                raise OnnxImportError(f"{self.path}: the input's shape {dims} is not fixed "
                                      "after the batch dimension; pass input_shape=(C, H, W)")
            shape = tuple(dims[1:])
        if math.prod(shape) > MAX_ELEMENTS:
            self.fail(f"an input of shape {shape} is more than numcnn's {MAX_ELEMENTS:,} "
                      "elements per sample")
        batch = dims[0] if dims[0] is not None and dims[0] > 0 else None
        self.values[inp.name] = _Data((), shape)
        for t in g.initializer:
            if t.name in self.values:
                self.fail(f"the name {_short(t.name)!r} is defined twice")
            try:
                self.values[t.name] = self.tensors.array(t, f"initializer {_short(t.name)!r}")
            except _Unsupported as exc:
                self.problems.append(f"initializer {_short(t.name)!r}: {exc}")
                self.bad.add(t.name)
        return inp.name, shape, batch

    # -- helpers for builders
    def data(self, node, i=0):
        v = self.values.get(node.input[i]) if len(node.input) > i else None
        if not isinstance(v, _Data):
            raise _Unsupported(f"input {i} must be computed from the graph's input")
        return v

    def const(self, node, i, what, optional=False):
        name = node.input[i] if len(node.input) > i else ""
        if not name:
            if optional:
                return None
            raise _Unsupported(f"needs its {what} input")
        v = self.values.get(name)
        if not isinstance(v, np.ndarray):
            raise _Unsupported(f"the {what} ({_short(name)!r}) must be a constant (an initializer)")
        return v

    def append(self, node, x, layer):
        shape = tuple(layer.output_shape(x.shape))
        if min(shape, default=1) < 1:
            raise _Unsupported(f"{layer!r} would output shape {shape} for input {x.shape}")
        size = math.prod(shape)
        k = getattr(layer, "kernel_size", None)
        if k is not None and hasattr(layer, "in_channels"):
            size = max(size, x.shape[0] * k[0] * k[1] * math.prod(shape[1:]))   # im2col columns
        if size > MAX_ELEMENTS:
            raise _Unsupported(f"{layer!r} would need {size:,} elements per sample; numcnn's "
                               f"limit is {MAX_ELEMENTS:,}")
        self.set(node, _Data(x.layers + (layer,), shape, x.shape))

    def set(self, node, value, i=0):
        self.values[node.output[i]] = value

    # -- the walk
    # -- activations opset 17 has no operator for, written as small subgraphs -------------------
    def _small_const(self, name, producer):
        v = self.values.get(name)
        if isinstance(v, np.ndarray):
            return v if v.size == 1 else None
        node = producer.get(name)
        if node is None or node.op_type != "Constant" or len(node.attribute) != 1:
            return None
        a = node.attribute[0]
        if a.name == "value_float":
            return np.float32(a.f)
        if a.name == "value" and a.type == 4 and list(a.t.dims) in ([], [1]):
            try:
                return self.tensors.array(a.t, f"Constant {_short(node.name)!r}")
            except _Unsupported:
                return None
        return None

    def _find_patterns(self):
        """Replace each subgraph that computes SiLU or GELU (PyTorch's decompositions, which
        numcnn's exporter writes too) by one node for its builder; inner values must be used
        only inside the pattern."""
        nodes = list(self.graph.node)
        producer = {o: n for n in nodes for o in n.output if o}
        consumed, replace = set(), {}

        def match(pat, name, env, used, root=False):
            if pat == "X":
                if "X" in env:
                    return env["X"] == name
                env["X"] = name
                return True
            if pat[0] == "C":
                v = self._small_const(name, producer)
                return v is not None and v.dtype.kind == "f" and \
                    abs(float(v.reshape(())) - pat[1]) <= 1e-6 * abs(pat[1])
            node = producer.get(name)
            if node is None or node.op_type != pat[0] or node.domain not in ("", "ai.onnx") \
                    or len(node.attribute) or len(node.input) != len(pat) - 1 \
                    or id(node) in consumed or (not root and self.uses.get(name) != 1):
                return False
            orders = [list(node.input)]
            if pat[0] in ("Add", "Mul"):
                orders.append(orders[0][::-1])
            for order in orders:
                env2, used2 = dict(env), set(used)
                if all(match(p, n, env2, used2) for p, n in zip(pat[1:], order)):
                    env.update(env2)
                    used.update(used2 | {id(node)})
                    return True
            return False

        for node in nodes:
            if node.op_type != "Mul" or len(node.output) != 1:
                continue
            for op, attrs, pat in PATTERNS:
                env, used = {}, set()
                if match(pat, node.output[0], env, used, root=True):
                    onnx = require_onnx()
                    new = onnx.helper.make_node(op, [env["X"]], [node.output[0]],
                                                name=node.name, **attrs)
                    self.synthetic.add(id(new))
                    replace[id(node)] = new
                    consumed.update(used)
                    break
        return [replace.get(id(n), n) for n in nodes if id(n) in replace or id(n) not in consumed]

    def run(self):
        defined = set(self.values) | {""}
        for node in self.nodes:
            where = f"{node.op_type!r} (node {_short(node.name or '?')!r})"
            if id(node) in self.synthetic:
                where = f"{node.op_type!r} (the nodes computing it, ending in {_short(node.name or '?')!r})"
            elif node.domain not in ("", "ai.onnx"):
                self.problems.append(f"{where}: operator domain {_short(node.domain)!r} is not "
                                     "supported")
                self.bad.update(node.output)
                continue
            for name in node.input:
                if name not in defined:
                    self.fail(f"{where} reads {_short(name)!r} before anything writes it (the "
                              "graph is not in topological order, or is damaged)")
            for name in node.output:
                if name and name in defined:
                    self.fail(f"{where} writes {_short(name)!r}, which is already defined")
            defined.update(node.output)
            builder = SYNTHETIC[node.op_type] if id(node) in self.synthetic else \
                BUILDERS.get(node.op_type)
            if node.op_type in FOLDERS and node.input and all(
                    isinstance(self.values.get(n), np.ndarray) for n in node.input if n):
                builder = _fold                    # constants in, a constant out: numpy does it
            if builder is None:
                self.problems.append(f"{where}: operator {node.op_type!r} is not supported")
                self.bad.update(node.output)
                continue
            if any(name in self.bad for name in node.input):
                self.bad.update(node.output)
                continue
            try:
                builder(self, node)
            except _Unsupported as exc:
                self.problems.append(f"{where}: {exc}")
                self.bad.update(node.output)
            except (NumcnnError, ValueError, TypeError, OverflowError, KeyError,
                    IndexError) as exc:
                # a layer refusing what the node asks for (e.g. padding wider than the kernel),
                # or a malformed node (no outputs, missing inputs): refused, never half-built
                self.problems.append(f"{where}: {type(exc).__name__}: {_short(exc, 300)}")
                self.bad.update(node.output)
        out = self.graph.output[0].name
        if not self.problems and not isinstance(self.values.get(out), _Data):
            self.problems.append(f"the output {_short(out)!r} is not computed from the input")
        if self.problems:
            ops = sorted({p.split(" ", 1)[0].strip("'") for p in self.problems if "(node" in p})
            hint = ""
            if any(p.key == "input_scaling" and p.value != "none" for p in self.proto.metadata_props):
                hint = ("\nthis graph was exported by numcnn with normalize=True: it scales raw "
                        "pixels in nodes, which numcnn keeps outside its layers "
                        "(model.normalization); export with normalize=False to import it")
            raise OnnxImportError(self.problems,
                f"{self.path}: cannot import this graph as numcnn layers: {len(self.problems)} "
                f"unsupported part(s){' (operators ' + ', '.join(ops) + ')' if ops else ''}:\n"
                + "\n".join(f"  - {p}" for p in self.problems)
                + f"\nnumcnn imports: {', '.join(sorted(BUILDERS))} (and folds constant "
                f"{', '.join(sorted(FOLDERS - set(BUILDERS)))})" + hint)
        result = self.values[out]
        self._check_declared_output(result)
        return result

    def _check_declared_output(self, result):
        tt = self.graph.output[0].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        want = (None,) + result.shape
        if dims and (len(dims) != len(want) or any(
                d not in (None, 0) and w is not None and d != w for d, w in zip(dims[1:], want[1:]))):
            raise OnnxImportError(f"{self.path}: the graph declares its output as {dims} but "
                                  f"computes (N, {', '.join(map(str, result.shape))})")


# -- builders: one per op_type ------------------------------------------------------------------------
BUILDERS: dict = {}


def builds(*op_types):
    def register(fn):
        for op in op_types:
            BUILDERS[op] = fn
        return fn
    return register


def _float32(a):
    with np.errstate(over="ignore"):
        a = np.asarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise _Unsupported("weights hold NaN or inf")
    return a


def _set_param(layer, name, value):
    p = getattr(layer, name)
    if tuple(p.value.shape) != tuple(value.shape):
        raise _Unsupported(f"{name} has shape {tuple(value.shape)}, expected {tuple(p.value.shape)}")
    p.value = _float32(value)


def _spatial_pads(pads, auto_pad, size, kernel, stride, dilation):
    """numcnn's padding from ONNX ``pads`` ([top, left, bottom, right]) or ``auto_pad``:
    (ph, pw) when symmetric, else ((top, bottom), (left, right))."""
    if auto_pad == "VALID":
        return (0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sides = []
        for n, k, s_, d in zip(size, kernel, stride, dilation):
            total = max((math.ceil(n / s_) - 1) * s_ + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2       # UPPER: the extra one at the end
            sides.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        pads = [sides[0][0], sides[1][0], sides[0][1], sides[1][1]]
    elif auto_pad not in ("NOTSET", ""):
        raise _Unsupported(f"auto_pad {auto_pad!r} is not supported")
    else:
        pads = _ints(pads, 4, "pads") if pads is not None else [0, 0, 0, 0]
    if pads[0] == pads[2] and pads[1] == pads[3]:
        return (pads[0], pads[1])
    return ((pads[0], pads[2]), (pads[1], pads[3]))


@builds("Conv")
def _conv(ctx, node):
    x = ctx.data(node)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias", optional=True)
    a = _attrs(node, {"auto_pad": "NOTSET", "dilations": [1, 1], "group": 1,
                      "kernel_shape": None, "pads": None, "strides": [1, 1]})
    if w.ndim != 4 or len(x.shape) != 3:
        raise _Unsupported(f"only 2-D convolutions of (N, C, H, W) input: weight {w.shape}, "
                           f"input (N, {', '.join(map(str, x.shape))})")
    groups = a["group"]
    if groups < 1 or x.shape[0] % groups or w.shape[0] % groups:
        raise _Unsupported(f"group={groups} does not divide the channels")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise _Unsupported(f"kernel_shape {a['kernel_shape']} disagrees with the weight {w.shape}")
    if w.shape[1] * groups != x.shape[0]:
        raise _Unsupported(f"weight {w.shape} with group={groups} expects {w.shape[1] * groups} "
                           f"input channels, got {x.shape[0]}")
    stride = _ints(a["strides"], 2, "strides")
    dilation = _ints(a["dilations"], 2, "dilations")
    if min(stride + dilation) < 1:
        raise _Unsupported("strides and dilations must be >= 1")
    pad = _spatial_pads(a["pads"], a["auto_pad"], x.shape[1:], w.shape[2:], stride, dilation)
    if b is not None and b.shape != (w.shape[0],):
        raise _Unsupported(f"bias {b.shape} does not fit weight {w.shape}")
    layer = Conv2D(int(x.shape[0]), int(w.shape[0]), tuple(int(k) for k in w.shape[2:]),
                   stride=tuple(stride), padding=pad, dilation=tuple(dilation), groups=groups,
                   bias=b is not None, rng=0)
    _set_param(layer, "weight", w)
    if b is not None:
        _set_param(layer, "bias", b)
    ctx.append(node, x, layer)


@builds("ConvTranspose")
def _conv_transpose(ctx, node):
    x = ctx.data(node)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias", optional=True)
    a = _attrs(node, {"auto_pad": "NOTSET", "dilations": [1, 1], "group": 1, "kernel_shape": None,
                      "output_padding": [0, 0], "pads": None, "strides": [1, 1]})
    if w.ndim != 4 or len(x.shape) != 3:
        raise _Unsupported(f"only 2-D transposed convolutions of (N, C, H, W) input: weight "
                           f"{w.shape}, input (N, {', '.join(map(str, x.shape))})")
    groups = a["group"]
    if a["auto_pad"] not in ("NOTSET", ""):
        raise _Unsupported(f"auto_pad {a['auto_pad']!r} is not supported (give pads)")
    if groups < 1 or w.shape[0] != x.shape[0] or x.shape[0] % groups:
        raise _Unsupported(f"weight {w.shape} with group={groups} does not take {x.shape[0]} "
                           "channels")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise _Unsupported(f"kernel_shape {a['kernel_shape']} disagrees with the weight {w.shape}")
    pads = _ints(a["pads"] if a["pads"] is not None else [0, 0, 0, 0], 4, "pads")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Unsupported(f"asymmetric pads {pads} are not supported in ConvTranspose")
    stride = _ints(a["strides"], 2, "strides")
    dilation = _ints(a["dilations"], 2, "dilations")
    if b is not None and b.shape != (w.shape[1] * groups,):
        raise _Unsupported(f"bias {b.shape} does not fit weight {w.shape}")
    layer = ConvTranspose2D(int(x.shape[0]), int(w.shape[1]) * groups,
                            tuple(int(k) for k in w.shape[2:]), stride=tuple(stride),
                            padding=(pads[0], pads[1]),
                            output_padding=tuple(_ints(a["output_padding"], 2, "output_padding")),
                            groups=groups, bias=b is not None, dilation=tuple(dilation), rng=0)
    _set_param(layer, "weight", w)
    if b is not None:
        _set_param(layer, "bias", b)
    ctx.append(node, x, layer)


def _dense(ctx, node, x, weight, bias):
    """A Dense layer with ``weight`` (out, in) and optional ``bias`` (out,)."""
    if len(x.shape) != 1:
        raise _Unsupported(f"a fully connected layer needs (N, features) input, got "
                           f"(N, {', '.join(map(str, x.shape))}); flatten first")
    if weight.ndim != 2 or weight.shape[1] != x.shape[0]:
        raise _Unsupported(f"weight {weight.shape} does not take {x.shape[0]} features")
    layer = Dense(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None, rng=0)
    _set_param(layer, "weight", weight)
    if bias is not None:
        _set_param(layer, "bias", bias)
    ctx.append(node, x, layer)


def _bias_vector(c, n, what):
    """A bias broadcast to (n,) from shapes (), (1,), (n,), (1, n)."""
    if c.size == 1:
        return np.full(n, c.reshape(()), dtype=np.float32)
    if c.shape in ((n,), (1, n)):
        return c.reshape(n)
    raise _Unsupported(f"{what} of shape {c.shape} does not broadcast to ({n},) as a bias")


@builds("Gemm")
def _gemm(ctx, node):
    x = ctx.data(node)
    b = ctx.const(node, 1, "B (weight)")
    c = ctx.const(node, 2, "C (bias)", optional=True)
    a = _attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if a["transA"] != 0:
        raise _Unsupported("attribute transA=1 is not supported")
    if b.ndim != 2:
        raise _Unsupported(f"B must be 2-D, got {b.shape}")
    weight = np.asarray(b if a["transB"] else b.T, dtype=np.float64)   # (out, in)
    bias = None if c is None else _bias_vector(np.asarray(c, np.float64), weight.shape[0], "C")
    # alpha and beta scale the weights (rounded once, to float32, like every weight)
    if a["alpha"] != 1.0:
        weight = weight * a["alpha"]
    if bias is not None and a["beta"] != 1.0:
        bias = bias * a["beta"]
    _dense(ctx, node, x, weight, bias)


@builds("MatMul")
def _matmul(ctx, node):
    x = ctx.data(node)
    b = ctx.const(node, 1, "B (weight)")
    _attrs(node, {})
    if b.ndim != 2:
        raise _Unsupported(f"only (N, in) x (in, out) with a constant (in, out), got B {b.shape}")
    _dense(ctx, node, x, b.T, None)


@builds("Add")
def _add(ctx, node):
    _attrs(node, {})
    vals = [ctx.values.get(n) for n in node.input]
    if len(vals) != 2:
        raise _Unsupported("needs two inputs")
    datas = [v for v in vals if isinstance(v, _Data)]
    if len(datas) == 2:
        return _residual(ctx, node, *datas)
    if len(datas) == 1 and any(isinstance(v, np.ndarray) for v in vals):
        i = 0 if isinstance(vals[0], _Data) else 1
        return _bias_add(ctx, node, node.input[i], datas[0], vals[1 - i])
    raise _Unsupported("adds values numcnn cannot compute (shape arithmetic on data?)")


def _bias_add(ctx, node, name, x, c):
    """MatMul/Conv followed by Add(constant): the layer's bias (when it has none yet)."""
    layer = x.layers[-1] if x.layers else None
    if ctx.producer.get(name) not in ("MatMul", "Conv") or ctx.uses.get(name) != 1 \
            or layer is None or layer.bias is not None:
        raise _Unsupported("adding a constant is supported only as the bias of the MatMul or Conv "
                           "right before it")
    if isinstance(layer, Dense):
        bias = _bias_vector(np.asarray(c, np.float64), layer.out_features, "the added constant")
        new = Dense(layer.in_features, layer.out_features, bias=True, rng=0)
    else:
        n = layer.out_channels
        if c.size != 1 and c.shape not in ((n, 1, 1), (1, n, 1, 1)):
            raise _Unsupported(f"the added constant {c.shape} is not a per-channel bias")
        bias = _bias_vector(np.asarray(c, np.float64).reshape(-1), n, "the added constant")
        new = Conv2D(layer.in_channels, n, layer.kernel_size, stride=layer.stride,
                     padding=layer.pads, dilation=layer.dilation, groups=layer.groups, bias=True,
                     rng=0)
    new.weight.value = layer.weight.value
    _set_param(new, "bias", bias)
    ctx.set(node, _Data(x.layers[:-1] + (new,), x.shape, x.last_input))


def _split_branches(datas):
    """The longest common chain of layers (by identity), then each branch's own layers."""
    n = 0
    while all(len(d.layers) > n for d in datas) and all(
            d.layers[n] is datas[0].layers[n] for d in datas):
        n += 1
    return datas[0].layers[:n], [d.layers[n:] for d in datas]


def _residual(ctx, node, a, b):
    # a fork joined again: out = body(x) + shortcut(x), both from the value where they split
    residual = REGISTRY.get("Residual")
    if residual is None:
        raise _Unsupported("adding two computed values (a residual connection) needs "
                           "numcnn.layers.Residual, which this numcnn does not have")
    if a.shape != b.shape:
        raise _Unsupported(f"adds shapes {a.shape} and {b.shape} (broadcasting is not supported)")
    common, (body, shortcut) = _split_branches([a, b])
    if not body:
        body, shortcut = shortcut, body
    if not body:
        raise _Unsupported("adds a value to itself (x + x)")
    layer = residual(list(body), list(shortcut) if shortcut else None)
    ctx.set(node, _Data(common + (layer,), a.shape))


@builds("Concat")
def _concat(ctx, node):
    a = _attrs(node, {"axis": None})
    vals = [ctx.values.get(n) for n in node.input]
    if vals and all(isinstance(v, (_Shape, np.ndarray)) for v in vals):
        return _shape_concat(ctx, node, vals, a["axis"])
    if not all(isinstance(v, _Data) for v in vals) or len(vals) < 2:
        raise _Unsupported("concatenates values that are not all computed from the input")
    concat = REGISTRY.get("Concat")
    if concat is None:
        raise _Unsupported("concatenating computed values (branches) needs numcnn.layers.Concat, "
                           "which this numcnn does not have")
    rank = len(vals[0].shape) + 1
    if a["axis"] not in (1, 1 - rank) or any(len(v.shape) != rank - 1 or v.shape[1:] != vals[0].shape[1:]
                                             for v in vals):
        raise _Unsupported(f"only concatenation along channels (axis 1) of equal-sized maps, got "
                           f"axis {a['axis']} of {[v.shape for v in vals]}")
    common, branches = _split_branches(vals)
    layer = concat([list(br) or [Identity()] for br in branches])
    shape = (sum(v.shape[0] for v in vals),) + vals[0].shape[1:]
    ctx.set(node, _Data(common + (layer,), shape))


def _pool_args(ctx, node, x, allowed):
    a = _attrs(node, {"auto_pad": "NOTSET", "ceil_mode": 0, "kernel_shape": None, "pads": None,
                      "strides": None, "dilations": None, **allowed})
    if len(x.shape) != 3:
        raise _Unsupported(f"pools (N, C, H, W) maps, got (N, {', '.join(map(str, x.shape))})")
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("the Indices output is not supported")
    kernel = _ints(a["kernel_shape"], 2, "kernel_shape")
    stride = _ints(a["strides"] if a["strides"] is not None else [1, 1], 2, "strides")
    dilation = _ints(a["dilations"] if a["dilations"] is not None else [1, 1], 2, "dilations")
    if min(kernel + stride + dilation) < 1:
        raise _Unsupported("kernel_shape, strides and dilations must be >= 1")
    pad = _spatial_pads(a["pads"], a["auto_pad"], x.shape[1:], kernel, stride, dilation)
    if a["ceil_mode"]:
        # ONNX's first opsets and PyTorch disagree about a last window that starts in the
        # padding; accepted where they agree: that window starts inside the input
        sides = pad if isinstance(pad[0], tuple) else tuple((p, p) for p in pad)
        for n, (lo, hi), k, s_, d in zip(x.shape[1:], sides, kernel, stride, dilation):
            out = -(-(n + lo + hi - d * (k - 1) - 1) // s_) + 1
            if (out - 1) * s_ >= n + lo:
                raise _Unsupported("ceil_mode=1 with a last window starting in the padding is "
                                   "not supported")
    return a, tuple(kernel), tuple(stride), pad, tuple(dilation)


@builds("MaxPool")
def _max_pool(ctx, node):
    x = ctx.data(node)
    a, kernel, stride, pad, dilation = _pool_args(ctx, node, x, {"storage_order": 0})
    if a["storage_order"] != 0:
        raise _Unsupported("storage_order=1 is not supported")
    ctx.append(node, x, MaxPool2D(kernel, stride=stride, padding=pad, dilation=dilation,
                                  ceil_mode=bool(a["ceil_mode"])))


@builds("AveragePool")
def _avg_pool(ctx, node):
    x = ctx.data(node)
    a, kernel, stride, pad, dilation = _pool_args(ctx, node, x, {"count_include_pad": 0})
    if dilation != (1, 1):
        raise _Unsupported(f"dilations {list(dilation)} in average pooling are not supported")
    ctx.append(node, x, AvgPool2D(kernel, stride=stride, padding=pad,
                                  ceil_mode=bool(a["ceil_mode"]),
                                  count_include_pad=bool(a["count_include_pad"])))


@builds("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node):
    x = ctx.data(node)
    _attrs(node, {})
    if len(x.shape) != 3:
        raise _Unsupported(f"pools (N, C, H, W) maps, got (N, {', '.join(map(str, x.shape))})")
    kind = AvgPool2D if node.op_type == "GlobalAveragePool" else MaxPool2D
    # the input's size is fixed, so one window of exactly that size is the global pool (a
    # Flatten right after makes it numcnn's GlobalAvgPool2D / GlobalMaxPool2D: see _flat)
    ctx.append(node, x, kind(tuple(x.shape[1:])))


@builds("BatchNormalization")
def _batch_norm(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1,
                      "is_test": 1, "consumed_inputs": None})
    if a["training_mode"] or not a["spatial"] or not a["is_test"]:
        raise _Unsupported("only inference-mode, per-channel batch norm (training_mode=0, "
                           "spatial=1) is supported")
    if any(node.output[1:]):
        raise _Unsupported("the running-statistics outputs (training mode) are not supported")
    c = x.shape[0]
    params = [ctx.const(node, i, what) for i, what in
              enumerate(("scale", "B", "mean", "var"), start=1)]
    if any(p.shape != (c,) for p in params):
        raise _Unsupported(f"scale/B/mean/var must be ({c},), got {[p.shape for p in params]}")
    if len(x.shape) not in (1, 3) or not a["epsilon"] > 0:
        raise _Unsupported(f"batch norm of (N, {', '.join(map(str, x.shape))}) with epsilon "
                           f"{a['epsilon']}")
    momentum = min(max(round(1.0 - a["momentum"], 7), 0.0), 1.0)
    prev = x.layers[-1] if x.layers else None
    if ctx.fuse_bn and isinstance(prev, Conv2D) and ctx.producer.get(node.input[0]) == "Conv" \
            and ctx.uses.get(node.input[0]) == 1:
        return _fused(ctx, node, x, prev, params, a["epsilon"])
    layer = (BatchNorm2D if len(x.shape) == 3 else BatchNorm1D)(c, eps=a["epsilon"],
                                                                     momentum=momentum)
    _set_param(layer, "weight", params[0])
    _set_param(layer, "bias", params[1])
    layer.running_mean = _float32(params[2])
    layer.running_var = _float32(params[3])
    if np.any(layer.running_var < 0):
        raise _Unsupported("the running variance has negative values")
    ctx.append(node, x, layer)


def _fused(ctx, node, x, conv, params, eps):
    """Conv then BN as one Conv: w' = w * g/sqrt(var + eps), b' = (b - mean) * g/sqrt(var + eps) + beta
    (computed in float64, rounded once)."""
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
    scale = gamma / np.sqrt(var + eps)
    w = np.asarray(conv.weight.value, np.float64) * scale[:, None, None, None]
    b = np.zeros_like(mean) if conv.bias is None else np.asarray(conv.bias.value, np.float64)
    fused = Conv2D(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                   padding=conv.pads, dilation=conv.dilation, groups=conv.groups, bias=True, rng=0)
    _set_param(fused, "weight", w)
    _set_param(fused, "bias", (b - mean) * scale + beta)
    ctx.set(node, _Data(x.layers[:-1] + (fused,), x.shape, x.last_input))


def _elementwise(layer_cls, allowed=None, make=None):
    def build(ctx, node):
        x = ctx.data(node)
        a = _attrs(node, allowed or {})
        ctx.append(node, x, make(a) if make else layer_cls())
    return build


BUILDERS["Relu"] = _elementwise(ReLU)
BUILDERS["Sigmoid"] = _elementwise(Sigmoid)
BUILDERS["Tanh"] = _elementwise(Tanh)
BUILDERS["LeakyRelu"] = _elementwise(LeakyReLU, {"alpha": 0.01},
                                     lambda a: LeakyReLU(a["alpha"]))
BUILDERS["Elu"] = _elementwise(ELU, {"alpha": 1.0}, lambda a: ELU(a["alpha"]))


def _gelu_layer(a):
    if a["approximate"] not in ("none", "tanh"):
        raise _Unsupported(f"approximate={a['approximate']!r} is not supported")
    return GELU(a["approximate"])


BUILDERS["Gelu"] = _elementwise(GELU, {"approximate": "none"}, _gelu_layer)     # opset 20

#: (node made for the builder, its attributes, the subgraph it replaces): "X" is the input, ("C",
#: v) a constant equal to v (to float32 precision); Add and Mul match either operand order
PATTERNS = [
    ("SiLU", {}, ("Mul", "X", ("Sigmoid", "X"))),
    ("Gelu", {"approximate": "none"},              # 0.5 x (1 + erf(x / sqrt 2))
     ("Mul", ("Mul", "X", ("Add", ("Erf", ("Div", "X", ("C", math.sqrt(2.0)))), ("C", 1.0))),
      ("C", 0.5))),
    ("Gelu", {"approximate": "tanh"},              # 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
     ("Mul", ("Mul", "X", ("Add", ("Tanh", ("Mul", ("Add", "X", ("Mul", ("Mul", "X", ("Mul", "X", "X")),
                                                                 ("C", 0.044715))),
                                            ("C", math.sqrt(2.0 / math.pi)))), ("C", 1.0))),
      ("C", 0.5))),
]
SYNTHETIC = {"SiLU": _elementwise(SiLU), "Gelu": BUILDERS["Gelu"]}


@builds("Resize")
def _resize(ctx, node):
    """Nearest or bilinear upsampling by integer factors, as torch.onnx.export writes
    nn.Upsample(scale_factor=s, mode=...): numcnn's Upsample."""
    x = ctx.data(node)
    a = _attrs(node, {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                      "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75,
                      "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0,
                      "keep_aspect_ratio_policy": "stretch", "axes": None})
    scales = ctx.const(node, 2, "scales", optional=True)
    sizes = ctx.const(node, 3, "sizes", optional=True)
    if len(x.shape) != 3 or a["axes"] is not None or a["exclude_outside"] or a["antialias"]:
        raise _Unsupported("only resizing (N, C, H, W) over all axes is supported")
    if scales is not None and scales.size:
        f = [float(v) for v in scales.reshape(-1)]
    elif sizes is not None and sizes.size == 4:
        want = [int(v) for v in sizes.reshape(-1)]
        f = [1.0, want[1] / x.shape[0], want[2] / x.shape[1], want[3] / x.shape[2]]
    else:
        raise _Unsupported("needs constant scales or sizes")
    if len(f) != 4 or f[:2] != [1.0, 1.0] or any(v < 1 or v != int(v) for v in f[2:]):
        raise _Unsupported(f"only integer upsampling of H and W is supported, got scales {f}")
    # integer factors: "asymmetric" reads input floor(i / s); half_pixel with round_prefer_floor
    # (ONNX's defaults) reads round((i + 0.5) / s - 0.5) = floor(i / s) too for whole s
    ctm = a["coordinate_transformation_mode"]
    factor = (int(f[2]), int(f[3]))
    if a["mode"] == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        # PyTorch's bilinear: half_pixel (pytorch_half_pixel differs only for 1-pixel outputs,
        # which upsampling by whole factors of a non-empty map never makes), or align_corners
        return ctx.append(node, x, Upsample(factor, mode="bilinear",
                                            align_corners=True if ctm == "align_corners" else None))
    ok = a["mode"] == "nearest" and (
        (ctm == "asymmetric" and a["nearest_mode"] == "floor")
        or (ctm == "half_pixel" and a["nearest_mode"] == "round_prefer_floor"))
    if not ok:
        raise _Unsupported(f"mode {a['mode']!r} with {ctm!r} / {a['nearest_mode']!r} is neither "
                           "numcnn's nearest nor its bilinear upsampling")
    ctx.append(node, x, Upsample(factor))


@builds("Softmax")
def _softmax(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"axis": -1 if ctx.opset >= 13 else 1})
    if len(x.shape) != 1 or a["axis"] not in (1, -1):
        raise _Unsupported(f"only softmax over the classes of (N, classes) is supported, got "
                           f"axis {a['axis']} of (N, {', '.join(map(str, x.shape))})")
    ctx.append(node, x, Softmax())


@builds("Dropout")
def _dropout(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"ratio": 0.5, "seed": 0, "is_test": 0})
    ratio = ctx.const(node, 1, "ratio", optional=True)
    training = ctx.const(node, 2, "training_mode", optional=True)
    if training is not None and (training.size != 1 or bool(training.reshape(-1)[0])):
        raise _Unsupported("training_mode=True (dropout at inference) is not supported")
    if len(node.output) > 1 and node.output[1] and ctx.uses.get(node.output[1]):
        raise _Unsupported("the mask output is not supported")
    p = _f32_value(ratio.reshape(-1)[0]) if ratio is not None and ratio.size == 1 else a["ratio"]
    if not 0.0 <= p <= 1.0:
        raise _Unsupported(f"ratio {p} is not a probability")
    ctx.append(node, x, Dropout(p))          # identity in evaluation mode; keeps p for training


@builds("Identity")
def _identity(ctx, node):
    _attrs(node, {})
    value = ctx.values.get(node.input[0]) if len(node.input) == 1 else None
    if value is None:
        raise _Unsupported("needs one input numcnn computed")
    if isinstance(value, _Data):
        ctx.append(node, value, Identity())       # numcnn's Identity layer, exported as this
    else:
        ctx.values[node.output[0]] = value


def _flat(ctx, node, x, start_dim):
    """Flatten(start_dim); right after a global pool (its (N, C, 1, 1) output used only here),
    the two are numcnn's GlobalAvgPool2D / GlobalMaxPool2D, which give (N, C) directly."""
    op = ctx.producer.get(node.input[0])
    if start_dim == 1 and op in ("GlobalAveragePool", "GlobalMaxPool") \
            and ctx.uses.get(node.input[0]) == 1 and x.last_input is not None:
        pool = GlobalAvgPool2D() if op == "GlobalAveragePool" else GlobalMaxPool2D()
        return ctx.set(node, _Data(x.layers[:-1] + (pool,), (x.shape[0],), x.last_input))
    ctx.append(node, x, Flatten(start_dim))


@builds("Flatten")
def _flatten(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"axis": 1})
    if a["axis"] != 1 and not (a["axis"] == -1 and len(x.shape) == 1):
        raise _Unsupported(f"only axis=1 (keep the batch) is supported, got {a['axis']}")
    _flat(ctx, node, x, 1)


@builds("Reshape")
def _reshape(ctx, node):
    x = ctx.data(node)
    a = _attrs(node, {"allowzero": 0})
    target = ctx.values.get(node.input[1]) if len(node.input) > 1 else None
    if isinstance(target, np.ndarray) and target.dtype.kind in "iu" and target.ndim == 1:
        target = _Shape([int(v) for v in target])
    if not isinstance(target, _Shape) or target.scalar:
        raise _Unsupported("the target shape must be a constant or computed from Shape()")
    dims = ["N", *x.shape]
    want = []
    for i, v in enumerate(target.vals):
        if v == 0 and not a["allowzero"]:
            if i >= len(dims):
                raise _Unsupported(f"target {target.vals}: 0 copies a dimension the input lacks")
            v = dims[i]
        want.append(v)
    if want and ctx.static_batch is not None and want[0] == ctx.static_batch:
        want[0] = "N"                    # a graph exported for one fixed batch size
    if want.count(-1) == 1 and all(isinstance(v, int) for v in want[1:]):
        known = math.prod(v for v in want[1:] if v != -1)
        if want[0] == -1:                # (-1, rest): the batch is what is left
            if known == math.prod(x.shape):
                want[0] = "N"
        elif known and math.prod(x.shape) % known == 0:
            want[want.index(-1)] = math.prod(x.shape) // known
    # Flatten(start_dim=k): keep the batch and k - 1 axes, merge the rest
    for k in range(1, len(dims)):
        if want == dims[:k] + [math.prod(dims[k:])]:
            return _flat(ctx, node, x, k)
    if want == dims:
        ctx.values[node.output[0]] = x            # a reshape to the same shape
        return
    raise _Unsupported(f"reshape of (N, {', '.join(map(str, x.shape))}) to {want}: numcnn "
                       "only flattens trailing axes (N, C, H, W) -> (N, C*H*W) or (N, C, H*W)")


@builds("Pad")
def _pad(ctx, node):
    """Zero channels appended (He et al.'s shortcut A), after an x[:, :, ::s, ::s] Slice or not:
    numcnn's ChannelPadShortcut."""
    x = ctx.data(node)
    a = _attrs(node, {"mode": "constant", "pads": None, "value": 0.0})
    pads = a["pads"] if a["pads"] is not None else ctx.const(node, 1, "pads").reshape(-1).tolist()
    value = ctx.const(node, 2, "constant_value", optional=True)
    value = a["value"] if value is None else (float(value.reshape(-1)[0]) if value.size == 1 else None)
    axes = ctx.const(node, 3, "axes", optional=True)
    if a["mode"] != "constant" or value != 0.0 or axes is not None or len(x.shape) != 3 \
            or len(pads) != 8 or any(p != 0 for i, p in enumerate(pads) if i != 5) or pads[5] < 0:
        raise _Unsupported(f"only zero channels appended (pads [0, 0, 0, 0, 0, k, 0, 0], mode "
                           f"constant, value 0) are supported, got pads {pads}, mode "
                           f"{a['mode']!r}, value {value}")
    prev = x.layers[-1] if x.layers else None
    stride = (1, 1)
    if isinstance(prev, MaxPool2D) and prev.kernel_size == (1, 1) and prev.pads == ((0, 0), (0, 0)) \
            and ctx.producer.get(node.input[0]) == "Slice" and ctx.uses.get(node.input[0]) == 1 \
            and x.last_input is not None:
        stride, x = prev.stride, _Data(x.layers[:-1], x.last_input)
    c = x.shape[0]
    ctx.append(node, x, ChannelPadShortcut(c, c + int(pads[5]), stride))


# -- shape arithmetic (what exporters write around Reshape) ----------------------------------------
@builds("Constant")
def _constant(ctx, node):
    a = _attrs(node, {"value": None, "value_float": None, "value_int": None,
                      "value_floats": None, "value_ints": None})
    given = [k for k, v in a.items() if v is not None]
    if len(given) != 1:
        raise _Unsupported(f"needs exactly one value attribute, got {given}")
    v = a[given[0]]
    if given[0] == "value":
        if not hasattr(v, "dims"):
            raise _Unsupported("attribute 'value' is not a tensor")
        v = ctx.tensors.array(v, f"Constant {_short(node.name)!r}")
    elif given[0] in ("value_float", "value_floats"):
        v = np.asarray(v, np.float32)
    else:
        v = np.asarray(v, np.int64)
    ctx.values[node.output[0]] = v


@builds("Shape")
def _shape(ctx, node):
    a = _attrs(node, {"start": 0, "end": None})
    v = ctx.values.get(node.input[0])
    dims = ["N", *v.shape] if isinstance(v, _Data) else list(getattr(v, "shape", ()))
    if not isinstance(v, (_Data, np.ndarray)):
        raise _Unsupported("the shape of a shape vector is not supported")
    ctx.values[node.output[0]] = _Shape(dims[a["start"]:a["end"]])


def _as_shape(v):
    if isinstance(v, _Shape):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim <= 1:
        return _Shape([int(x) for x in v.reshape(-1)], scalar=v.ndim == 0)
    raise _Unsupported("only integer shape vectors are supported here")


@builds("Gather")
def _gather(ctx, node):
    a = _attrs(node, {"axis": 0})
    data = _as_shape(ctx.values.get(node.input[0]))
    idx = ctx.const(node, 1, "indices")
    if a["axis"] != 0 or data.scalar or idx.ndim > 1 or idx.dtype.kind not in "iu":
        raise _Unsupported("only gathering entries of a shape vector is supported")
    n = len(data.vals)
    picked = []
    for i in idx.reshape(-1).tolist():
        if not -n <= i < n:
            raise _Unsupported(f"index {i} is out of range for a shape of {n} entries")
        picked.append(data.vals[i])
    ctx.values[node.output[0]] = _Shape(picked, scalar=idx.ndim == 0)


@builds("Unsqueeze")
def _unsqueeze(ctx, node):
    a = _attrs(node, {"axes": None})
    axes = a["axes"] if a["axes"] is not None else ctx.const(node, 1, "axes").reshape(-1).tolist()
    v = _as_shape(ctx.values.get(node.input[0]))
    if not v.scalar or list(axes) != [0]:
        raise _Unsupported("only turning a shape entry into a 1-entry vector is supported")
    ctx.values[node.output[0]] = _Shape(v.vals)


@builds("Cast")
def _cast(ctx, node):
    a = _attrs(node, {"to": None, "saturate": 1})
    v = ctx.values.get(node.input[0])
    if isinstance(v, _Shape) and a["to"] in (6, 7):
        ctx.values[node.output[0]] = v
    else:
        raise _Unsupported("only casts of shape vectors to int32/int64 are supported")


def _shape_concat(ctx, node, vals, axis):
    if axis not in (0, -1):
        raise _Unsupported(f"shape vectors concatenate along axis 0, got {axis}")
    parts = [_as_shape(v) for v in vals]
    if any(p.scalar for p in parts):
        raise _Unsupported("cannot concatenate scalars")
    ctx.values[node.output[0]] = _Shape([x for p in parts for x in p.vals])


# -- constant folding: nodes whose inputs are all constants (exporters' shape and pad arithmetic)
#: the most elements one folded constant may have (they are index and shape vectors)
MAX_FOLDED = 1 << 16
_CAST = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def _fold_axes(ctx, node, a, rank, index=1):
    axes = a.get("axes")
    if axes is None and len(node.input) > index and node.input[index]:
        axes = ctx.const(node, index, "axes").reshape(-1).tolist()
    if axes is None:
        return None
    axes = [int(x) + rank if x < 0 else int(x) for x in axes]
    if any(not 0 <= x < rank for x in axes) or len(set(axes)) != len(axes):
        raise _Unsupported(f"axes {axes} out of range for rank {rank}")
    return axes


def _fold_slice(ctx, node, x):
    rank = x.ndim
    starts, ends = (ctx.const(node, i, w).reshape(-1).tolist() for i, w in ((1, "starts"), (2, "ends")))
    axes = _fold_axes(ctx, node, {}, rank, 3) or list(range(len(starts)))
    steps = ctx.const(node, 4, "steps", optional=True)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise _Unsupported("starts/ends/axes/steps disagree")
    index = [slice(None)] * rank
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        index[ax] = slice(int(st), int(en), int(sp))     # numpy clamps like ONNX
    return x[tuple(index)]


def _fold(ctx, node):
    """Evaluate ``node`` with numpy; every result is a small array (shape or index vectors)."""
    op, x = node.op_type, ctx.values[node.input[0]]
    # sizes are checked before numpy computes anything (a broadcast or a gather can multiply them)
    if any(ctx.values[n].size > MAX_FOLDED for n in node.input if n):
        raise _Unsupported(f"folds only constants of at most {MAX_FOLDED:,} elements")
    if op == "ConstantOfShape":
        a = _attrs(node, {"value": None})
        shape = [int(d) for d in x.reshape(-1)]
        if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED:
            raise _Unsupported(f"shape {shape} is negative or too large")
        value = np.zeros(1, np.float32) if a["value"] is None else \
            ctx.tensors.array(a["value"], f"ConstantOfShape {_short(node.name)!r} value")
        if value.size != 1:
            raise _Unsupported("value must hold one element")
        out = np.full(shape, value.reshape(()), dtype=value.dtype)
    elif op == "Concat":
        a = _attrs(node, {"axis": None})
        parts = [ctx.values[n] for n in node.input]
        if a["axis"] is None or any(p.ndim != parts[0].ndim for p in parts) or not parts[0].ndim:
            raise _Unsupported("concatenates arrays of different ranks, or without an axis")
        if sum(p.size for p in parts) > MAX_FOLDED:
            raise _Unsupported("the concatenation is too large to fold")
        out = np.concatenate(parts, axis=a["axis"])
    elif op == "Reshape":
        a = _attrs(node, {"allowzero": 0})
        shape = [int(d) for d in ctx.const(node, 1, "shape").reshape(-1)]
        if not a["allowzero"]:
            shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
        out = x.reshape(shape)
    elif op == "Slice":
        _attrs(node, {})
        out = _fold_slice(ctx, node, x)
    elif op == "Transpose":
        a = _attrs(node, {"perm": None})
        out = np.transpose(x, a["perm"])
    elif op == "Cast":
        a = _attrs(node, {"to": None, "saturate": 1})
        if a["to"] not in _CAST:
            raise _Unsupported(f"cast to data type {a['to']} is not supported")
        out = x.astype(_CAST[a["to"]])
    elif op in ("Unsqueeze", "Squeeze"):
        a = _attrs(node, {"axes": None})
        rank = x.ndim + (len(_fold_axes(ctx, node, a, 99) or []) if op == "Unsqueeze" else 0)
        axes = _fold_axes(ctx, node, a, rank)
        if op == "Unsqueeze":
            out = np.expand_dims(x, tuple(axes or ()))
        else:
            out = np.squeeze(x, axis=None if axes is None else tuple(axes))
    elif op == "Gather":
        a = _attrs(node, {"axis": 0})
        idx = ctx.const(node, 1, "indices")
        axis = a["axis"] + x.ndim if a["axis"] < 0 else a["axis"]
        if idx.dtype.kind not in "iu" or not 0 <= axis < x.ndim or (idx.size and (
                idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis])):
            raise _Unsupported("indices out of range")
        if x.shape[axis] and idx.size * (x.size // x.shape[axis]) > MAX_FOLDED:
            raise _Unsupported("the gathered array is too large to fold")
        out = np.take(x, idx, axis=axis)
    elif op == "Shape":
        a = _attrs(node, {"start": 0, "end": None})
        out = np.asarray(x.shape[a["start"]:a["end"]], np.int64)
    else:                                  # Add, Sub, Mul, Div of equal dtypes
        _attrs(node, {})
        y = ctx.values[node.input[1]] if len(node.input) == 2 else None
        if y is None or x.dtype != y.dtype or (op == "Div" and x.dtype.kind != "f"):
            raise _Unsupported("needs two constants of one float dtype (or ints for Add/Sub/Mul)")
        if math.prod(np.broadcast_shapes(x.shape, y.shape)) > MAX_FOLDED:
            raise _Unsupported("the broadcast result is too large to fold")
        with np.errstate(all="ignore"):
            out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, y)
    if out.size > MAX_FOLDED:
        raise _Unsupported(f"folding gives {out.size:,} elements; numcnn folds at most {MAX_FOLDED:,}")
    ctx.values[node.output[0]] = np.ascontiguousarray(out)


FOLDERS = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
           "Squeeze", "Gather", "Shape", "Add", "Sub", "Mul", "Div"}


@builds("Slice")
def _slice(ctx, node):
    """x[:, :, ::sh, ::sw] (a subsampling shortcut) as MaxPool2D(1, stride=(sh, sw)): a 1x1 window
    is its one pixel, and the window count ceil(H / s) is the slice's."""
    x = ctx.data(node)
    _attrs(node, {})
    rank = len(x.shape) + 1
    starts, ends = (ctx.const(node, i, w).reshape(-1).tolist() for i, w in ((1, "starts"), (2, "ends")))
    axes = _fold_axes(ctx, node, {}, rank, 3) or list(range(len(starts)))
    steps = ctx.const(node, 4, "steps", optional=True)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    stride = [1, 1]
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if rank != 4 or ax < 2 or st != 0 or en < x.shape[ax - 1] or sp < 1:
            raise _Unsupported(f"only x[:, :, ::s, ::s] slicing is supported (starts {starts}, "
                               f"ends {ends}, axes {axes}, steps {steps})")
        stride[ax - 2] *= int(sp)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise _Unsupported("starts/ends/axes/steps disagree")
    prev = x.layers[-1] if x.layers else None
    if isinstance(prev, MaxPool2D) and prev.kernel_size == (1, 1) and prev.padding == (0, 0) \
            and ctx.producer.get(node.input[0]) == "Slice" and ctx.uses.get(node.input[0]) == 1 \
            and x.last_input is not None:
        # x[::a][::b] == x[::a*b]: one subsampling layer for consecutive slices
        stride = [stride[0] * prev.stride[0], stride[1] * prev.stride[1]]
        x = _Data(x.layers[:-1], x.last_input)
    ctx.append(node, x, MaxPool2D(1, stride=tuple(stride)))


def _record_producers(run):
    def wrapped(ctx, node):
        run(ctx, node)
        for name in node.output:
            ctx.producer[name] = node.op_type
    return wrapped


for _op in list(BUILDERS):
    BUILDERS[_op] = _record_producers(BUILDERS[_op])


# -- entry point ------------------------------------------------------------------------------------
def _metadata(proto, path, model):
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        classes = json.loads(meta["classes"]) if "classes" in meta else None
        norm = json.loads(meta["normalization"]) if "normalization" in meta else None
    except (ValueError, RecursionError):
        raise ModelFileError(f"{path}: metadata 'classes'/'normalization' is not valid JSON") from None
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ModelFileError(f"{path}: metadata 'classes' must be a JSON list of names")
        model.check_classes(classes, f"{path}: metadata stores", error=ModelFileError)
        model.classes = classes
    if norm is not None and meta.get("input_scaling", "none") == "none":
        try:
            model.normalization = (norm["mean"], norm["std"])
        except (KeyError, TypeError, NumcnnError):
            raise ModelFileError(f"{path}: bad 'normalization' metadata {_short(norm)}") from None


def from_onnx(path, fuse_bn=False, input_shape=None):
    """A :class:`numcnn.Sequential` whose eval-mode ``forward`` computes what the ONNX graph does.

    Args:
        path: an ``.onnx`` file (external-data files must lie in its folder).
        fuse_bn: fold each BatchNormalization that directly follows a Conv into that Conv's
            weights and bias (one layer instead of two; equal up to float rounding).
        input_shape: one sample's shape ``(C, H, W)``, for graphs whose input size is dynamic.

    Raises :class:`OnnxImportError` listing every unsupported operator, attribute and node, and
    :class:`numcnn.errors.ModelFileError` for damaged or hostile files.  The ``classes`` and
    ``normalization`` in numcnn's ``metadata_props`` are restored.
    """
    from ..model import Sequential
    fuse_bn = check_bool(fuse_bn, "fuse_bn", "from_onnx")
    path = as_path(path, "from_onnx")
    proto = _load_proto(path)
    imp = _Importer(proto, path, fuse_bn, input_shape)
    result = imp.run()
    if not result.layers:
        raise OnnxImportError(f"{path}: the graph returns its input unchanged; there is no layer "
                              "to import")
    model = Sequential(list(result.layers), input_shape=imp.input_shape)
    _metadata(proto, path, model)
    return model.eval()
