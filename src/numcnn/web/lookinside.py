"""Look inside a model: every layer's output for one image, the filters, a saliency map, a summary.

The activation walker goes through a model container by container.  A :class:`Sequential`
is a chain: each layer's output is the next one's input.  A graph container (a
:class:`~numcnn.layers.Residual` block, a :class:`~numcnn.layers.Concat`) has a walker in
:data:`WALKERS` that reports every layer on each of its paths under a nested name, such as
``"3.body.1"`` or ``"6.branches.0.0"`` (PyTorch's names), and then the block's merged output
under its own number, so the page shows each branch and what the block makes of them.  A new
container type only needs an entry there.

Arrays go to the browser as ``{"shape": [...], "b64": base64 of little-endian float32}``: ten
times smaller and faster to write than JSON numbers (the prediction answer is sent on every
stroke of the pen).
"""
from __future__ import annotations

import base64
import re

import numpy as np

from ..backend import to_numpy
from ..functional import softmax
from ..layers import Concat, Conv2D, Dense, Flatten, Residual, Softmax
from ..layers.container import record_activations
from ..model import Sequential

#: the path names inside blocks: "3.body.0" is one level deep, "3.body.1.branches.0.2" two
_PATH_NAMES = re.compile(r"\.(?:body|shortcut|branches\.\d+)\.")
#: the most channels of one layer's activations or filters sent to the page
MAX_CHANNELS = 32
#: the largest feature map (height and width) sent; bigger maps are cropped to the centre
MAX_MAP_SIDE = 64
#: the most values of a dense layer's output sent
MAX_VECTOR = 4096


def pack(a) -> dict:
    """An array for the browser: shape, base64 float32 data, and its min and max."""
    a = np.ascontiguousarray(to_numpy(a), dtype="<f4")
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0}


def unpack(d: dict) -> np.ndarray:
    """The inverse of :func:`pack` (used by the tests and the benchmark)."""
    return np.frombuffer(base64.b64decode(d["b64"]), dtype="<f4").reshape(d["shape"])


def _kind(layer, out):
    name = type(layer).__name__
    if isinstance(layer, (Residual, Concat)):
        return "block"
    if isinstance(layer, Conv2D):
        return "conv"
    if "Pool" in name:
        return "pool"
    if out.ndim == 4:
        return "map"             # activations and norms of feature maps
    return "vector"


def _trim(a):
    """(C, H, W) or (F,) trimmed to what the page shows."""
    if a.ndim == 3:
        c, h, w = a.shape
        top, left = max(0, (h - MAX_MAP_SIDE) // 2), max(0, (w - MAX_MAP_SIDE) // 2)
        return a[:MAX_CHANNELS, top:top + MAX_MAP_SIDE, left:left + MAX_MAP_SIDE]
    return a.reshape(-1)[:MAX_VECTOR]


def walk_sequential(model, x, path=""):
    """Yield ``(path, layer, output)`` for each layer of ``model`` on the batch ``x`` (NCHW),
    and inside each graph container its layers first (see :data:`WALKERS`)."""
    for i, layer in enumerate(model.layers):
        sub = WALKERS.get(type(layer))
        p = f"{path}{i}"
        if sub is not None:                  # a nested container: its paths, then its output
            out = None
            for item in sub(layer, x, p):
                yield item
                out = item[2]
            x = out
            continue
        x = layer.forward(x, training=False, layout="NCHW")
        yield p, layer, x


def walk_block(block, x, path):
    """A Residual or Concat block: every layer on every path (the library's
    :class:`record_activations` hook names them, e.g. ``3.body.0``, nested blocks included),
    then the block's own output under ``path``."""
    inner = []
    with record_activations(block, path, lambda name, layer, out, layout: inner.append((name, layer, out))):
        out = block.forward(x, training=False, layout="NCHW")
    yield from inner
    yield path, block, out


def walk_nested_sequential(model, x, path):
    yield from walk_sequential(model, x, path + ".")


#: container type -> walker ``(container, x, path) -> iterator of (path, layer, out)``; the
#: container's own output is the last item yielded
WALKERS = {Sequential: walk_nested_sequential, Residual: walk_block, Concat: walk_block}


def activations(model, x) -> list:
    """Every layer's output for one prepared image ``x`` (1, C, H, W), for the page."""
    layers = []
    for path, layer, out in walk_sequential(model, x):
        if isinstance(layer, Flatten):
            continue                          # the same numbers as the maps before it
        a = to_numpy(out)[0]
        kind = _kind(layer, out)
        layers.append({"path": path, "depth": len(_PATH_NAMES.findall(path)), "name": type(layer).__name__,
                       "repr": repr(layer), "kind": kind, "shape": list(a.shape),
                       "shown": list(_trim(a).shape), "data": pack(_trim(a))})
    return layers


def saliency(model, x, target=None):
    """``|dL/dx|`` (max over channels) for the loss ``-log p[target]`` (default: the top class).

    One forward in evaluation mode and :meth:`Sequential.backward` with ``input_grad=True``;
    ``dL/dlogits = softmax(logits) - onehot(target)`` (or ``-1/p`` on the target when the model
    ends in Softmax).  The parameters' gradients it fills are cleared afterwards.
    Returns ``(probabilities (K,), saliency (H, W))``.
    """
    xp = model.xp
    out = model.forward(x, training=False)
    ends_in_softmax = isinstance(model.layers[-1], Softmax)
    probs = out if ends_in_softmax else softmax(out, axis=1)
    k = int(to_numpy(probs[0]).argmax()) if target is None else int(target)
    if ends_in_softmax:
        grad = xp.zeros_like(out)
        grad[0, k] = -1.0 / max(float(probs[0, k]), 1e-12)
    else:
        grad = probs.copy()
        grad[0, k] -= 1
    try:
        dx = model.backward(grad.astype(out.dtype), input_grad=True)
    finally:
        model.zero_grad()
    return to_numpy(probs[0]).astype(np.float64), np.abs(to_numpy(dx[0])).max(axis=0)


def filters(model) -> list:
    """The weights of every Conv2D layer (at most :data:`MAX_CHANNELS` filters and channels)."""
    out = []
    for path, layer in _layers(model):
        if isinstance(layer, Conv2D):
            w = to_numpy(layer.weight.value)
            out.append({"path": path, "repr": repr(layer), "shape": list(w.shape),
                        "data": pack(w[:MAX_CHANNELS, :MAX_CHANNELS])})
    return out


def _layers(model):
    """``(path, layer)`` of every layer, inside blocks too (``3.body.0``), in model order."""
    for i, layer in enumerate(model.layers):
        yield str(i), layer
        if hasattr(layer, "children"):
            yield from _children(layer, f"{i}.")


def _children(block, prefix):
    for name, inner in block.children():
        yield prefix + name, inner
        if hasattr(inner, "children"):
            yield from _children(inner, f"{prefix}{name}.")


def summary(model) -> dict:
    """The rows of :meth:`Sequential.summary` as data: output shape, parameters and FLOPs."""
    shape = model.input_shape
    rows, total_p, total_f = [], 0, 0
    prev = shape
    for i, (layer, out_shape) in enumerate(model.shapes()):
        n_p = sum(int(np.prod(p.shape)) for p in layer.parameters())
        fl = int(layer.flops(prev))
        total_p += n_p
        total_f += fl
        rows.append({"index": str(i), "depth": 0, "type": type(layer).__name__, "repr": repr(layer),
                     "output_shape": list(out_shape), "params": n_p, "flops": fl})
        # the layers inside a block, as Sequential.summary lists them (counted in the block's row)
        for name, inner, in_shape, inner_out, depth in getattr(layer, "walk", _no_walk)(prev, f"{i}."):
            rows.append({"index": name, "depth": depth, "type": type(inner).__name__,
                         "repr": repr(inner), "output_shape": list(inner_out),
                         "params": sum(int(np.prod(p.shape)) for p in inner.parameters()),
                         "flops": int(inner.flops(in_shape))})
        prev = out_shape
    return {"input_shape": list(shape), "layers": rows, "total_params": total_p,
            "total_flops": total_f, "text": model.summary()}


def _no_walk(shape, prefix):
    return iter(())


def describe(model) -> dict:
    """What the page needs to know about a model before it sends an image."""
    dense = [l for l in model.layers if isinstance(l, Dense)]
    k = model.num_outputs() or (dense[-1].out_features if dense else None)
    return {"input_shape": list(model.input_shape) if model.input_shape else None,
            "classes": model.classes or ([str(i) for i in range(k)] if k else None),
            "normalization": None if model.normalization is None else
            [np.ravel(to_numpy(v)).tolist() for v in model.normalization]}
