"""The walk: :class:`_Importer` reads the graph's input and initializers, then visits the nodes in
their (topological) order, hands each to its builder (``BUILDERS``, ``SYNTHETIC`` for matched
patterns, or :func:`~.folding._fold` when all its inputs are constants) and collects everything
unsupported (operator, attribute, node name) to report at once.

The importer is the builders' ``ctx``: they read values with :meth:`_Importer.data` and
:meth:`_Importer.const` and write them with :meth:`_Importer.append` (a layer added to a chain,
its size checked) and :meth:`_Importer.set`.  The builders never import this module.
"""
from __future__ import annotations

import math

import numpy as np

from ...architecture import MAX_ELEMENTS
from ...errors import ConfigError, ModelFileError, NumcnnError
from .._onnx import require_onnx
from .folding import FOLDERS, _fold
from .nodes import BUILDERS, _Data
from .patterns import SYNTHETIC, find_patterns
from .reader import (MAX_INITIALIZERS, MAX_NODES, MIN_OPSET, OnnxImportError, _short, _Tensors,
                     _Unsupported)


class _Importer:
    """One import: the graph's values by name, what is unsupported, and the builders' helpers."""

    def __init__(self, proto, path, fuse_bn, input_shape, max_nodes=MAX_NODES,
                 max_initializers=MAX_INITIALIZERS):
        self.proto, self.path, self.fuse_bn = proto, path, fuse_bn
        self.graph = proto.graph
        self.max_nodes, self.max_initializers = max_nodes, max_initializers
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
        self.nodes = find_patterns(self)

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
        if len(g.node) > self.max_nodes:
            self.fail(f"{len(g.node):,} nodes; numcnn imports graphs of at most {self.max_nodes:,}")
        if len(g.initializer) > self.max_initializers:
            self.fail(f"{len(g.initializer):,} initializers; numcnn imports at most "
                      f"{self.max_initializers:,}")
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

    # -- what builders call (the builder's ``ctx``)
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
