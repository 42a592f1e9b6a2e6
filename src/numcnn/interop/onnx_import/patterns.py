"""Activations opset 17 has no operator for (SiLU, GELU), written as small subgraphs: matched
before the walk and replaced by one synthetic node for their builder.

:data:`PATTERNS` describes the subgraphs (PyTorch's decompositions, which numcnn's exporter writes
too); :func:`find_patterns` finds them in the graph; :data:`SYNTHETIC` builds the nodes made for
them.
"""
from __future__ import annotations

import math

import numpy as np

from ...layers import SiLU
from .._onnx import require_onnx
from .builders import _elementwise, _gelu
from .reader import _short, _Unsupported


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
SYNTHETIC = {"SiLU": _elementwise(SiLU), "Gelu": _gelu}


def _small_const(ctx, name, producer):
    v = ctx.values.get(name)
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
            return ctx.tensors.array(a.t, f"Constant {_short(node.name)!r}")
        except _Unsupported:
            return None
    return None


def find_patterns(ctx):
    """Replace each subgraph that computes SiLU or GELU (PyTorch's decompositions, which
    numcnn's exporter writes too) by one node for its builder; inner values must be used
    only inside the pattern."""
    nodes = list(ctx.graph.node)
    producer = {o: n for n in nodes for o in n.output if o}
    consumed, replace = set(), {}

    def match(pat, name, env, used, root=False):
        if pat == "X":
            if "X" in env:
                return env["X"] == name
            env["X"] = name
            return True
        if pat[0] == "C":
            v = _small_const(ctx, name, producer)
            return v is not None and v.dtype.kind == "f" and \
                abs(float(v.reshape(())) - pat[1]) <= 1e-6 * abs(pat[1])
        node = producer.get(name)
        if node is None or node.op_type != pat[0] or node.domain not in ("", "ai.onnx") \
                or len(node.attribute) or len(node.input) != len(pat) - 1 \
                or id(node) in consumed or (not root and ctx.uses.get(name) != 1):
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
                ctx.synthetic.add(id(new))
                replace[id(node)] = new
                consumed.update(used)
                break
    return [replace.get(id(n), n) for n in nodes if id(n) in replace or id(n) not in consumed]
