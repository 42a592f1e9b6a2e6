"""Graph models as layers: :class:`Residual` (ResNet's ``body(x) + shortcut(x)``), :class:`Concat`
(Inception's and U-Net's branches side by side), :class:`Identity`, and He et al.'s
parameter-free shortcut :class:`ChannelPadShortcut`.

A container is a layer: it nests in :class:`numcnn.Sequential` and in other containers, and it
has the same contract (``forward``/``backward``, parameters, buffers, ``config()``,
``output_shape``, ``flops``).  Its paths are chains of layers; a path given as a Sequential (or a
list, or one layer) is stored as the list of its layers.

Names, as PyTorch would name the same modules built from ``nn.Sequential`` and ``nn.ModuleList``
(the parameter keys of ``named_parameters()``, ``buffers()`` and model files):

* ``Residual``: ``body.{j}.{name}`` and ``shortcut.{j}.{name}``, e.g. ``3.body.0.weight`` in a
  Sequential is ``model[3].body[0].weight`` in PyTorch (``block.body[0]`` here too);
* ``Concat``: ``branches.{i}.{j}.{name}``, e.g. ``2.branches.1.0.weight`` is
  ``model[2].branches[1][0].weight``.

Backward is explicit: where a path forks (one x feeding a body and a shortcut, or several
branches), dL/dx is the sum of the gradients that come back along the paths (the chain rule at
a fork); the code says so where it adds them.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from ..errors import ConfigError, NumcnnError, ShapeError
from ..functional.graph import (channel_axis, channel_pad_backward, channel_pad_forward,
                                concat_backward, concat_forward)
from .base import Layer, check_positive_int, layer_from_config, layer_to_config

#: How deep containers may nest (a Residual in a Concat in a Residual ... counts one per level).
#: Far beyond any real network; it keeps a hostile description from exhausting the stack.
MAX_DEPTH = 32


def _user_shape(shape, layout):
    """A tensor's shape as the user knows it, (N, C, H, W), whatever the internal layout."""
    shape = tuple(shape)
    return (shape[1], shape[0]) + shape[2:] if layout == "CNHW" and len(shape) == 4 else shape


def _is_sequential(obj):
    """A numcnn.Sequential (duck-typed: the model floor sits above this one)."""
    return not isinstance(obj, Layer) and isinstance(getattr(obj, "layers", None), list) \
        and all(isinstance(layer, Layer) for layer in obj.layers)


def _takes_rng(cls):
    try:
        return "rng" in inspect.signature(cls).parameters
    except (TypeError, ValueError):             # pragma: no cover - builtins only
        return False


def _build(spec, rng, where):
    """A layer from its config dict; layers with weights get ``rng`` unless the spec has one."""
    from .base import REGISTRY
    cls = REGISTRY.get(spec.get("type")) if isinstance(spec.get("type"), str) else None
    if rng is not None and cls is not None and "rng" not in spec \
            and (cls.param_names or issubclass(cls, _Container)) and _takes_rng(cls):
        spec = {**spec, "rng": rng}
    try:
        return layer_from_config(spec)
    except NumcnnError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _chain(spec, owner, what, rng=None):
    """``spec`` (a layer, a config dict, a Sequential, or a list of those) -> a list of layers."""
    if isinstance(spec, (Layer, dict)):
        items = [spec]
    elif _is_sequential(spec):
        items = list(spec.layers)
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ConfigError(f"{owner}: {what} must be a layer, a list of layers or a Sequential, "
                          f"got {type(spec).__name__}; e.g. {what}=[Conv2D(16, 16, 3, padding=1), "
                          "BatchNorm2D(16)]")
    chain = []
    for j, item in enumerate(items):
        if _is_sequential(item):
            chain.extend(item.layers)
            continue
        if isinstance(item, dict):
            item = _build(item, rng, f"{owner}: {what} item {j}")
        if not isinstance(item, Layer):
            raise ConfigError(f"{owner}: {what} item {j} is {type(item).__name__}, not a numcnn "
                              "layer; give layers such as Conv2D(...) or ReLU()")
        chain.append(item)
    if not chain:
        raise ConfigError(f"{owner}: {what} is empty; give at least one layer (Identity() for a "
                          "path that passes its input through)")
    for layer in chain:
        # A Sequential handed over as a path switched its first layer's input gradient off;
        # inside a path every layer's dL/dx is needed (the container decides for its first).
        if hasattr(layer, "needs_input_grad"):
            layer.needs_input_grad = True
        # The container checks its input for NaN/inf once; what its layers compute from it
        # needs no second pass (as in Sequential, where only the first layer checks).
        layer.check_finite = False
    return chain


def _expected_width(layer):
    return getattr(layer, "in_channels", None) or getattr(layer, "in_features", None) \
        or getattr(layer, "num_features", None)


def chain_output_shape(owner, name, chain, shape):
    """One sample's shape after the layers of path ``name``; ShapeError where they don't fit."""
    shape = tuple(shape)
    for j, layer in enumerate(chain):
        expected = _expected_width(layer)
        if expected is not None and shape[0] != expected:
            raise ShapeError(f"{owner!r}: {name}.{j} {layer!r} expects {expected} input "
                             f"channels/features but its input has shape {shape}; make the "
                             f"layers of {name} fit together")
        shape = tuple(layer.output_shape(shape))
        if min(shape) < 1:
            raise ShapeError(f"{owner!r}: {name}.{j} {layer!r} would output shape {shape}: the "
                             "input is too small for this block")
    return shape


def walk_shapes(layers, input_shape, prefix="", depth=0):
    """Yield ``(name, layer, input_shape, output_shape, depth)`` for every layer of ``layers``
    and, after each container, for the layers inside it (depth + 1), with nested names such as
    ``3.body.0``.  Shapes are one sample's (no batch axis)."""
    shape = tuple(input_shape)
    for i, layer in enumerate(layers):
        name = f"{prefix}{i}"
        out = tuple(layer.output_shape(shape))
        yield name, layer, shape, out, depth
        if isinstance(layer, _Container):
            yield from layer.walk(shape, f"{name}.", depth + 1)
        shape = out


def seed_dropout(layer, key):
    """Give every Dropout in ``layer`` made without a seed a seed of its own, derived from
    ``key`` + its position (so no two Dropout layers of a model draw the same masks)."""
    if isinstance(layer, _Container):
        for p, (_, chain) in enumerate(layer._paths()):
            for j, inner in enumerate(chain):
                seed_dropout(inner, key + (p, j))
    elif getattr(layer, "seeded", True) is False:
        layer.rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=key))


def check_distinct(layers, owner):
    """Every position of a model (nested ones too) needs its own layer object: a layer's cache
    holds one forward pass, so an object used twice would back-propagate the wrong one."""
    seen = {}

    def visit(layer, name):
        if id(layer) in seen:
            raise ConfigError(f"{owner}: {name} ({layer!r}) is the same layer object as "
                              f"{seen[id(layer)]}; each position needs its own layer (build a new "
                              "one; weights are not shared)")
        seen[id(layer)] = name
        if isinstance(layer, _Container):
            for cname, child in layer.children():
                visit(child, f"{name}.{cname}" if name else cname)

    for i, layer in enumerate(layers):
        visit(layer, str(i) if owner == "Sequential" else "")
    return seen


def check_rng_state(state, depth=0):
    """Raise TypeError/ValueError/KeyError unless ``state`` is a random state a layer could
    take back: a NumPy generator's, or a container's ``{nested name: state}`` (checkpoints
    are checked with this before the model is touched)."""
    if isinstance(state, dict) and "bit_generator" not in state:
        if depth >= MAX_DEPTH or not state:
            raise ValueError("random states nested too deep, or empty")
        for name, inner in state.items():
            if not isinstance(name, str):
                raise TypeError(f"a random state's layer name must be a string, got {name!r}")
            check_rng_state(inner, depth + 1)
        return
    np.random.default_rng().bit_generator.state = state     # a throw-away generator


def nesting_depth(layer):
    """1 for a plain layer, 1 + the deepest path for a container."""
    if not isinstance(layer, _Container):
        return 1
    return 1 + max((nesting_depth(c) for _, c in layer.children()), default=0)


class _Container(Layer):
    """Shared machinery: named paths of layers, parameters and buffers under nested names,
    random states, shapes and the activation hook of :func:`record_activations`."""

    _hook = None

    def _paths(self):
        """``[(name, [layers])]``: "body"/"shortcut" or "branches.0", "branches.1", ..."""
        raise NotImplementedError

    def _setup(self, owner):
        """Common checks once the paths are set: distinct objects, nesting depth, seeds."""
        check_distinct([self], owner)
        depth = nesting_depth(self)
        if depth > MAX_DEPTH:
            raise ConfigError(f"{owner}: containers nested {depth} deep; numcnn allows at most "
                              f"{MAX_DEPTH}")
        seed_dropout(self, ())
        self._needs_input_grad = True
        self._cache = None

    def children(self):
        """``(name, layer)`` of the layers on every path, e.g. ``("body.0", Conv2D(...))``."""
        for name, chain in self._paths():
            for j, layer in enumerate(chain):
                yield f"{name}.{j}", layer

    def walk(self, input_shape, prefix="", depth=1):
        """:func:`walk_shapes` over every path of this container, from its ``input_shape``."""
        for name, chain in self._paths():
            yield from walk_shapes(chain, input_shape, f"{prefix}{name}.", depth)

    # -- parameters, buffers, random states under nested names --------------------------------
    def named_parameters(self) -> dict:
        return {f"{c}.{n}": p for c, layer in self.children()
                for n, p in layer.named_parameters().items()}

    def buffers(self) -> dict:
        return {f"{c}.{n}": b for c, layer in self.children() for n, b in layer.buffers().items()}

    def set_buffer(self, name, value):
        for c, layer in self.children():
            if name.startswith(c + "."):
                layer.set_buffer(name[len(c) + 1:], value)
                return
        raise KeyError(f"{self!r} has no buffer {name!r}")

    def _rng_state(self):
        states = {c: layer._rng_state() for c, layer in self.children()}
        states = {c: s for c, s in states.items() if s is not None}
        return states or None

    def _set_rng_state(self, state):
        if not isinstance(state, dict):
            raise TypeError(f"{self!r}: random states must map layer names to states")
        layers = dict(self.children())
        for name, s in state.items():
            layer = layers.get(name)
            if layer is None or layer._rng_state() is None:
                raise KeyError(f"{self!r} has no random generator at {name!r}")
            layer._set_rng_state(s)

    # -- dL/dx of the data is not needed before the first layer of a model ---------------------
    @property
    def needs_input_grad(self):
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value):
        # Safe to pass on: a path's first layer computes dL/dx only for this container's dL/dx.
        self._needs_input_grad = bool(value)
        for _, chain in self._paths():
            if hasattr(chain[0], "needs_input_grad"):
                chain[0].needs_input_grad = bool(value)

    # -- running a path ----------------------------------------------------------------------
    def _run(self, chain, name, x, training, layout):
        for j, layer in enumerate(chain):
            x = layer.forward(x, training=training, layout=layout)
            if self._hook is not None:
                self._hook(f"{name}.{j}", layer, x, layout)
        return x

    @staticmethod
    def _run_backward(chain, grad):
        for layer in reversed(chain):
            grad = layer.backward(grad)
        return grad

    def _check(self, x, layout):
        self._check_input(x, (2, 3, 4), "(N, C, H, W) or (N, features)", layout=layout)


class Identity(Layer):
    """y = x (PyTorch's ``nn.Identity``): a path that passes its input through, e.g. U-Net's skip
    as a branch of :class:`Concat`.  Backward passes dL/dy through unchanged."""

    def __init__(self):
        self._cache = None

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        self._cache = True
        return x

    def backward(self, grad_out):
        self._need_cache()
        return grad_out


class ChannelPadShortcut(Layer):
    """He et al. 2016's shortcut option A: "identity mapping, with extra zero entries padded for
    increasing dimensions"; parameter-free.

    Keeps every ``stride``-th pixel (the strided body halves the image) and appends
    ``out_channels - in_channels`` channels of zeros (after the input's channels, as
    fb.resnet.torch does).  This is the shortcut of the paper's CIFAR ResNets (0.27M parameters
    for ResNet-20); option B would be ``[Conv2D(in, out, 1, stride=2, bias=False),
    BatchNorm2D(out)]``.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, in_channels, out_channels, stride=2):
        from ..functional import pair
        name = f"ChannelPadShortcut({in_channels}, {out_channels})"
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.out_channels = check_positive_int(out_channels, "out_channels", name)
        if self.out_channels < self.in_channels:
            raise ConfigError(f"{name}: out_channels must be >= in_channels (it pads channels, "
                              "never drops them); use a 1x1 Conv2D shortcut to reduce channels")
        self.stride = pair(stride, "stride")
        if min(self.stride) < 1:
            raise ConfigError(f"{name}: stride must be >= 1, got {self.stride}")
        self._cache = None

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "stride": list(self.stride)}

    def __repr__(self):
        s = self.stride[0] if self.stride[0] == self.stride[1] else self.stride
        return f"ChannelPadShortcut({self.in_channels}, {self.out_channels}, stride={s})"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (self.out_channels, -(-h // self.stride[0]), -(-w // self.stride[1]))

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels, layout)
        self._cache = (tuple(x.shape), layout)
        return channel_pad_forward(x, self.out_channels, self.stride, layout)

    def backward(self, grad_out):
        shape, layout = self._need_cache()
        return channel_pad_backward(grad_out, shape, self.stride, layout)


class Residual(_Container):
    """A residual block: ``y = body(x) + shortcut(x)`` (He et al. 2016).

    Args:
        body: a layer, a list of layers or a Sequential (its layers are taken over), e.g.
            ``[Conv2D(16, 16, 3, padding=1, bias=False), BatchNorm2D(16), ReLU(),
            Conv2D(16, 16, 3, padding=1, bias=False), BatchNorm2D(16)]``.
        shortcut: None for the identity, or a layer / list / Sequential whose output has the
            body's shape, e.g. ``[Conv2D(16, 32, 1, stride=2, bias=False), BatchNorm2D(32)]`` or
            ``ChannelPadShortcut(16, 32)``.
        rng: seed or Generator for the layers built from config dicts (ignored otherwise).

    Backward: dL/dy reaches both paths unchanged (d(a + b)/da = 1), and dL/dx is the sum of
    what the body and the shortcut send back.  The ReLU that follows the add in a ResNet
    block is the next layer, not part of the block.

    Parameters are named ``body.{j}.{name}`` and ``shortcut.{j}.{name}``.
    """

    def __init__(self, body, shortcut=None, rng=None):
        self.body = _chain(body, "Residual", "body", rng)
        self.shortcut = None if shortcut is None else _chain(shortcut, "Residual", "shortcut", rng)
        self._setup("Residual")

    def _paths(self):
        return [("body", self.body)] + ([("shortcut", self.shortcut)] if self.shortcut else [])

    def config(self):
        return {"body": [layer_to_config(layer) for layer in self.body],
                "shortcut": None if self.shortcut is None
                else [layer_to_config(layer) for layer in self.shortcut]}

    def __repr__(self):
        short = "identity" if self.shortcut is None else \
            f"{len(self.shortcut)} layer{'s' * (len(self.shortcut) > 1)}"
        return f"Residual(body: {len(self.body)} layers, shortcut: {short})"

    def output_shape(self, input_shape):
        out = chain_output_shape(self, "body", self.body, input_shape)
        short = tuple(input_shape) if self.shortcut is None else \
            chain_output_shape(self, "shortcut", self.shortcut, input_shape)
        if out != short:
            raise ShapeError(self._mismatch(out, short))
        return out

    def _mismatch(self, body, short):
        fix = ("give a shortcut that matches it, e.g. shortcut=[Conv2D(in, out, 1, stride=s, "
               "bias=False), BatchNorm2D(out)] or ChannelPadShortcut(in, out, stride=s)")
        what = "the identity shortcut passes" if self.shortcut is None else "the shortcut outputs"
        return (f"{self!r}: the body outputs shape {body} but {what} {short}; body(x) + "
                f"shortcut(x) needs equal shapes: {fix}")

    def flops(self, input_shape):
        total, shape = 0, tuple(input_shape)
        for _, chain in self._paths():
            shape = tuple(input_shape)
            for layer in chain:
                total += layer.flops(shape)
                shape = tuple(layer.output_shape(shape))
        return total + math.prod(shape)          # the add: one per output element

    def forward(self, x, training=True, layout="NCHW"):
        self._check(x, layout)
        y = self._run(self.body, "body", x, training, layout)
        s = x if self.shortcut is None else self._run(self.shortcut, "shortcut", x, training, layout)
        if y.shape != s.shape:      # never let broadcasting add (C, N, 1, 1) to (C, N, H, W)
            raise ShapeError(self._mismatch(_user_shape(y.shape, layout),
                                            _user_shape(s.shape, layout)))
        self._cache = True
        return y + s

    def backward(self, grad_out):
        self._need_cache()
        # y = body(x) + shortcut(x): both terms have derivative 1, so each path gets dL/dy as is.
        g_body = self._run_backward(self.body, grad_out)
        g_short = grad_out if self.shortcut is None else self._run_backward(self.shortcut, grad_out)
        if not self._needs_input_grad:
            return None
        # The fork: x fed both the body and the shortcut, so dL/dx is the SUM of the gradients
        # of the two paths (the chain rule at a fork).  A new array: neither term is changed.
        return g_body + g_short


class Concat(_Container):
    """Branches side by side: each gets the same input, their outputs are concatenated along
    the channels (Inception's blocks; U-Net's skip is a branch ``Identity()``).

    Args:
        branches: a list whose items are each a layer, a list of layers or a Sequential.
        rng: seed or Generator for the layers built from config dicts (ignored otherwise).

    Shape: (N, C, H, W) -> (N, sum of the branches' channels, H', W'); every branch must give
    the same H', W' (or, for (N, features) outputs, they are joined along the features).
    Backward: branch i gets its channels' slice of dL/dy; dL/dx is the sum of what the branches
    send back.  Parameters are named ``branches.{i}.{j}.{name}``.
    """

    def __init__(self, branches, rng=None):
        if isinstance(branches, (Layer, dict, str, bytes)) or _is_sequential(branches) \
                or not isinstance(branches, (list, tuple)):
            raise ConfigError(f"Concat: branches must be a list of branches (each a layer, a list "
                              f"of layers or a Sequential), got {type(branches).__name__}; e.g. "
                              "Concat([Conv2D(16, 8, 1), [Conv2D(16, 8, 3, padding=1), ReLU()]])")
        if not branches:
            raise ConfigError("Concat: needs at least one branch")
        self.branches = [_chain(b, "Concat", f"branch {i}", rng) for i, b in enumerate(branches)]
        self._setup("Concat")

    def _paths(self):
        return [(f"branches.{i}", chain) for i, chain in enumerate(self.branches)]

    def config(self):
        return {"branches": [[layer_to_config(layer) for layer in chain]
                             for chain in self.branches]}

    def __repr__(self):
        n = len(self.branches)
        return f"Concat({n} branch{'es' * (n > 1)})"

    def _shapes_error(self, i, shape, first, n=""):
        return (f"{self!r}: branch {i} outputs shape {n}{shape} but branch 0 outputs "
                f"{n}{first}; the branches must agree on everything but the channels (give them "
                "the same stride, and padding that keeps the size, e.g. padding=1 for a 3x3 "
                "kernel), or resize one branch")

    def output_shape(self, input_shape):
        outs = [chain_output_shape(self, f"branches.{i}", chain, input_shape)
                for i, chain in enumerate(self.branches)]
        for i, out in enumerate(outs[1:], 1):
            if len(out) != len(outs[0]) or out[1:] != outs[0][1:]:
                raise ShapeError(self._shapes_error(i, out, outs[0]))
        return (sum(out[0] for out in outs),) + outs[0][1:]

    def flops(self, input_shape):
        total = 0
        for _, chain in self._paths():
            shape = tuple(input_shape)
            for layer in chain:
                total += layer.flops(shape)
                shape = tuple(layer.output_shape(shape))
        return total

    def forward(self, x, training=True, layout="NCHW"):
        self._check(x, layout)
        outs = [self._run(chain, f"branches.{i}", x, training, layout)
                for i, chain in enumerate(self.branches)]
        axis = channel_axis(outs[0].ndim, layout)
        first = _user_shape(outs[0].shape, layout)
        for i, out in enumerate(outs[1:], 1):
            shape = _user_shape(out.shape, layout)
            if len(shape) != len(first) or shape[:1] + shape[2:] != first[:1] + first[2:]:
                raise ShapeError(self._shapes_error(i, shape, first))
        self._cache = ([out.shape[axis] for out in outs], axis)
        return concat_forward(outs, axis)

    def backward(self, grad_out):
        sizes, axis = self._need_cache()
        dx = None
        for chain, g in zip(self.branches, concat_backward(grad_out, sizes, axis)):
            g = self._run_backward(chain, g)
            if self._needs_input_grad:
                # The fork: every branch read the same x, so dL/dx is the SUM of the gradients
                # that the branches send back (the chain rule at a fork).
                dx = g if dx is None else dx + g
        return dx


class record_activations:
    """``with record_activations(layer, prefix, fn):`` calls ``fn(name, inner_layer, output,
    layout)`` after each layer inside ``layer`` (and inside its nested containers) runs, with
    nested names such as ``3.body.0``; nothing happens for a plain layer.  Used to draw the
    feature maps of layers inside blocks."""

    def __init__(self, layer, prefix, fn):
        self._set = []
        self._install(layer, prefix, fn)

    def _install(self, layer, prefix, fn):
        if not isinstance(layer, _Container):
            return
        layer._hook = lambda name, inner, out, layout: fn(f"{prefix}.{name}", inner, out, layout)
        self._set.append(layer)
        for name, child in layer.children():
            self._install(child, f"{prefix}.{name}", fn)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for layer in self._set:
            layer._hook = None
        return False
