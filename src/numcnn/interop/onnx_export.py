"""numcnn -> ONNX: one small converter per layer class (onnx-chainer's layout).

``to_onnx(model, path)`` writes a graph computing ``model.forward`` in evaluation mode:

* opset 17, IR version 8 (see :mod:`numcnn.interop._onnx` for why);
* input ``"input"``: float32 ``(batch, C, H, W)`` (or ``(batch, features)``), the batch dimension
  dynamic; output ``"output"``: ``(batch, ...)``, what ``forward`` returns (logits unless the
  model ends in Softmax);
* initializers named as ``model.state_dict()`` names them (``0.weight``, ``1.running_mean``...),
  so Netron shows the same names as numcnn and PyTorch;
* ``metadata_props``: ``numcnn_version``, ``classes`` (JSON list or null), ``normalization`` (JSON
  ``{"mean": [...], "std": [...]}`` or null) and ``input_scaling``: ``"none"`` (the graph takes
  prepared floats, like ``forward``) or ``"x/255, then (x-mean)/std"`` with ``normalize=True``,
  where the graph takes raw 0..255 pixel values as float32, like ``predict`` takes uint8 images.

A float64 model is written with float32 weights (ONNX deployment runs float32).
Converters: ``CONVERTERS[LayerClass](g, layer, x, prefix) -> output name``; add one for your
own layer with ``@converter(MyLayer)``.  A layer without one is refused by name.
"""
from __future__ import annotations

import json

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError
from ..files import as_path, atomic_write
from ..layers import (ELU, GELU, AvgPool2D, BatchNorm1D, BatchNorm2D, ChannelPadShortcut, Concat,
                      Conv2D, ConvTranspose2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                      GlobalMaxPool2D, Identity, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid,
                      SiLU, Softmax, Tanh, Upsample)
from ..validate import check_bool
from ._onnx import BATCH, INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, numcnn_version, require_onnx

#: layer class -> converter(g, layer, x, prefix) -> the name of the layer's output
CONVERTERS: dict = {}


def converter(*layer_classes):
    """Register the decorated function as the ONNX converter of ``layer_classes``."""
    def register(fn):
        for cls in layer_classes:
            CONVERTERS[cls] = fn
        return fn
    return register


class GraphBuilder:
    """What converters write into: nodes, initializers (float32) and fresh value names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers, self._names = [], [], set()

    def _fresh(self, name):
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, name, array, dtype=np.float32):
        """An initializer ``name`` holding ``array`` (cast to ``dtype``); returns its name."""
        a = np.array(to_numpy(array), dtype=dtype, order="C")      # 0-d stays 0-d
        name = self._fresh(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def node(self, op, inputs, prefix, **attrs):
        """Add node ``op`` named ``{prefix}/{op}``; returns its (single) output's name."""
        name = self._fresh(f"{prefix}/{op}")
        out = self._fresh(f"{name}_output")
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def convert(self, layer, x, prefix, where="to_onnx"):
        """The output of ``layer`` applied to value ``x`` (sub-layers of containers too)."""
        fn = CONVERTERS.get(type(layer))        # the exact class: a subclass may compute otherwise
        if fn is None:
            known = ", ".join(sorted(c.__name__ for c in CONVERTERS))
            raise ConfigError(f"{where}: layer {prefix} {layer!r} ({type(layer).__module__}."
                              f"{type(layer).__name__}) cannot be exported to ONNX: there is no "
                              f"converter for it (numcnn converts {known}); write one with "
                              "@numcnn.interop.onnx_export.converter(YourLayer)")
        return fn(self, layer, x, prefix)


def _pads(pads):
    """numcnn's ((top, bottom), (left, right)) -> ONNX's [top, left, bottom, right]."""
    (t, b), (l, r) = pads
    return [t, l, b, r]


@converter(Conv2D)
def convert_conv2d(g, layer, x, prefix):
    inputs = [x, g.const(f"{prefix}.weight", layer.weight.value)]
    if layer.bias is not None:
        inputs.append(g.const(f"{prefix}.bias", layer.bias.value))
    return g.node("Conv", inputs, prefix, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), pads=_pads(layer.pads),
                  dilations=list(layer.dilation), group=layer.groups)


@converter(ConvTranspose2D)
def convert_conv_transpose2d(g, layer, x, prefix):
    # weight (in, out/groups, kh, kw) is ONNX's layout too; pads crop the output as in PyTorch
    inputs = [x, g.const(f"{prefix}.weight", layer.weight.value)]
    if layer.bias is not None:
        inputs.append(g.const(f"{prefix}.bias", layer.bias.value))
    return g.node("ConvTranspose", inputs, prefix, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), pads=_pads(layer.pads),
                  dilations=list(layer.dilation), group=layer.groups,
                  output_padding=list(layer.output_padding))


@converter(MaxPool2D)
def convert_max_pool2d(g, layer, x, prefix):
    # numcnn pads with -inf, as ONNX MaxPool does (padding never wins the max)
    return g.node("MaxPool", [x], prefix, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), pads=_pads(layer.pads),
                  dilations=list(layer.dilation), ceil_mode=int(layer.ceil_mode))


@converter(AvgPool2D)
def convert_avg_pool2d(g, layer, x, prefix):
    return g.node("AveragePool", [x], prefix, kernel_shape=list(layer.kernel_size),
                  strides=list(layer.stride), pads=_pads(layer.pads),
                  ceil_mode=int(layer.ceil_mode), count_include_pad=int(layer.count_include_pad))


@converter(GlobalAvgPool2D, GlobalMaxPool2D)
def convert_global_pool(g, layer, x, prefix):
    # numcnn's global pools give (N, C): ONNX's keep (N, C, 1, 1), so flatten after
    op = "GlobalAveragePool" if isinstance(layer, GlobalAvgPool2D) else "GlobalMaxPool"
    return g.node("Flatten", [g.node(op, [x], prefix)], prefix, axis=1)


@converter(Upsample)
def convert_upsample(g, layer, x, prefix):
    scales = g.const(f"{prefix}.scales", [1.0, 1.0, *map(float, layer.scale_factor)])
    if layer.mode == "bilinear":
        # PyTorch's coordinates: half_pixel (align_corners False), or corners matched
        mode = "align_corners" if layer.align_corners else "half_pixel"
        return g.node("Resize", [x, "", scales], prefix, mode="linear",
                      coordinate_transformation_mode=mode)
    # nearest with integer factors: output pixel i reads input floor(i / s) ("asymmetric")
    return g.node("Resize", [x, "", scales], prefix, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@converter(Dense)
def convert_dense(g, layer, x, prefix):
    # y = x W^T + b: Gemm with transB=1 takes W as numcnn (and PyTorch) store it, (out, in)
    inputs = [x, g.const(f"{prefix}.weight", layer.weight.value)]
    if layer.bias is not None:
        inputs.append(g.const(f"{prefix}.bias", layer.bias.value))
    return g.node("Gemm", inputs, prefix, transB=1)


@converter(BatchNorm1D, BatchNorm2D)
def convert_batch_norm(g, layer, x, prefix):
    inputs = [x] + [g.const(f"{prefix}.{n}", v) for n, v in (
        ("weight", layer.weight.value), ("bias", layer.bias.value),
        ("running_mean", layer.running_mean), ("running_var", layer.running_var))]
    # ONNX's momentum weighs the old running value (PyTorch's weighs the new batch)
    return g.node("BatchNormalization", inputs, prefix, epsilon=layer.eps,
                  momentum=1.0 - layer.momentum)


@converter(Dropout)
def convert_dropout(g, layer, x, prefix):
    # identity at inference; the node keeps p, so an import gives the same layer back
    return g.node("Dropout", [x, g.const(f"{prefix}.p", np.float32(layer.p))], prefix)


@converter(Flatten)
def convert_flatten(g, layer, x, prefix):
    if layer.start_dim == 1:
        return g.node("Flatten", [x], prefix, axis=1)
    # keep the first start_dim axes (0 copies an input dimension), merge the rest (-1)
    shape = g.const(f"{prefix}.shape", [0] * layer.start_dim + [-1], dtype=np.int64)
    return g.node("Reshape", [x, shape], prefix)


@converter(Identity)
def convert_identity(g, layer, x, prefix):
    return g.node("Identity", [x], prefix)


@converter(ReLU)
def convert_relu(g, layer, x, prefix):
    return g.node("Relu", [x], prefix)


@converter(Sigmoid)
def convert_sigmoid(g, layer, x, prefix):
    return g.node("Sigmoid", [x], prefix)


@converter(Tanh)
def convert_tanh(g, layer, x, prefix):
    return g.node("Tanh", [x], prefix)


@converter(LeakyReLU)
def convert_leaky_relu(g, layer, x, prefix):
    return g.node("LeakyRelu", [x], prefix, alpha=layer.negative_slope)


@converter(Softmax)
def convert_softmax(g, layer, x, prefix):
    return g.node("Softmax", [x], prefix, axis=1)


@converter(ELU)
def convert_elu(g, layer, x, prefix):
    return g.node("Elu", [x], prefix, alpha=layer.alpha)


@converter(SiLU)
def convert_silu(g, layer, x, prefix):
    # x * sigmoid(x): opset 17 has no SiLU; this is what torch.onnx.export writes too
    return g.node("Mul", [x, g.node("Sigmoid", [x], prefix)], prefix)


@converter(GELU)
def convert_gelu(g, layer, x, prefix):
    """Opset 17 has no Gelu: PyTorch's own decomposition, node for node (the importer knows it).

    exact: 0.5 x (1 + erf(x / sqrt 2)); tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    """
    c = lambda name, v: g.const(f"{prefix}.{name}", np.float32(v))
    if layer.approximate == "tanh":
        cube = g.node("Mul", [x, g.node("Mul", [x, x], prefix)], prefix)
        inner = g.node("Add", [x, g.node("Mul", [c("k", 0.044715), cube], prefix)], prefix)
        t = g.node("Tanh", [g.node("Mul", [c("sqrt_2_over_pi", np.sqrt(2 / np.pi)), inner], prefix)],
                   prefix)
        phi = g.node("Add", [c("one", 1.0), t], prefix)
    else:
        erf = g.node("Erf", [g.node("Div", [x, c("sqrt2", np.sqrt(2.0))], prefix)], prefix)
        phi = g.node("Add", [erf, c("one", 1.0)], prefix)
    return g.node("Mul", [g.node("Mul", [x, phi], prefix), c("half", 0.5)], prefix)


def _chain(g, layers, x, prefix):
    for j, layer in enumerate(layers):
        x = g.convert(layer, x, f"{prefix}.{j}")
    return x


@converter(Residual)
def convert_residual(g, layer, x, prefix):
    # the fork: x feeds the body and the shortcut (or is the shortcut), joined by Add
    body = _chain(g, layer.body, x, f"{prefix}.body")
    short = x if layer.shortcut is None else _chain(g, layer.shortcut, x, f"{prefix}.shortcut")
    return g.node("Add", [body, short], prefix)


@converter(Concat)
def convert_concat(g, layer, x, prefix):
    outs = [_chain(g, branch, x, f"{prefix}.branches.{i}") for i, branch in enumerate(layer.branches)]
    return g.node("Concat", outs, prefix, axis=1)


@converter(ChannelPadShortcut)
def convert_channel_pad_shortcut(g, layer, x, prefix):
    """x[:, :, ::s, ::s] (Slice), then zero channels appended (Pad), as PyTorch writes it."""
    if layer.stride != (1, 1):
        big = np.iinfo(np.int64).max
        x = g.node("Slice", [x, g.const(f"{prefix}.starts", [0, 0], np.int64),
                             g.const(f"{prefix}.ends", [big, big], np.int64),
                             g.const(f"{prefix}.axes", [2, 3], np.int64),
                             g.const(f"{prefix}.steps", list(layer.stride), np.int64)], prefix)
    extra = layer.out_channels - layer.in_channels
    if not extra:
        return g.node("Identity", [x], prefix)
    pads = g.const(f"{prefix}.pads", [0, 0, 0, 0, 0, extra, 0, 0], np.int64)
    return g.node("Pad", [x, pads], prefix, mode="constant")


def _input_scaling(g, model, x, shape):
    """x / 255, then (x - mean) / std: what ``Sequential.prepare_input`` does to uint8 images."""
    x = g.node("Div", [x, g.const("normalize.scale", np.float32(255.0))], "normalize")
    if model.normalization is None:
        return x
    mean, std = (np.asarray(to_numpy(v), np.float32) for v in model.normalization)
    per_channel = (1, -1) + (1,) * (len(shape) - 1)      # broadcast over (N, C, H, W)
    x = g.node("Sub", [x, g.const("normalize.mean", mean.reshape(per_channel))], "normalize")
    return g.node("Div", [x, g.const("normalize.std", std.reshape(per_channel))], "normalize")


def build_onnx_model(model, normalize=False, input_shape=None):
    """The ``onnx.ModelProto`` of ``model`` (checked with the full checker); see the module doc."""
    onnx = require_onnx()
    normalize = check_bool(normalize, "normalize", "to_onnx")
    shape = input_shape if input_shape is not None else model.input_shape
    if not shape:
        raise ConfigError("to_onnx: the model has no input_shape; pass input_shape=(C, H, W) "
                          "(one image's shape) or build the model with input_shape=")
    shape = tuple(int(d) for d in shape)
    out_shape = model.shapes(shape)[-1][1]          # also checks the layers fit that input
    g = GraphBuilder(onnx)
    x = INPUT_NAME
    if normalize:
        x = _input_scaling(g, model, x, shape)
    for i, layer in enumerate(model.layers):
        x = g.convert(layer, x, str(i))
    if x == INPUT_NAME:
        g.nodes.append(onnx.helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))
    else:
        for node in g.nodes:               # the last layer's node writes the graph's output
            node.output[:] = [OUTPUT_NAME if o == x else o for o in node.output]
    f32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        g.nodes, "numcnn", [onnx.helper.make_tensor_value_info(INPUT_NAME, f32, [BATCH, *shape])],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, f32, [BATCH, *out_shape])],
        initializer=g.initializers)
    proto = onnx.helper.make_model(graph, producer_name="numcnn", producer_version=numcnn_version(),
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    proto.doc_string = repr(model)
    norm = None
    if model.normalization is not None:
        mean, std = model.normalization
        norm = {"mean": [float(v) for v in np.ravel(to_numpy(mean))],
                "std": [float(v) for v in np.ravel(to_numpy(std))]}
    onnx.helper.set_model_props(proto, {
        "numcnn_version": numcnn_version(),
        "classes": json.dumps(model.classes),
        "normalization": json.dumps(norm),
        "input_scaling": "x/255, then (x-mean)/std" if normalize else "none"})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        # a converter's bug, never the user's: say so rather than write a broken file
        raise ConfigError(f"to_onnx: the ONNX checker refused the graph ({exc})") from None
    return proto


def to_onnx(model, path, normalize=False, input_shape=None):
    """Write ``model`` as an ONNX file at ``path`` (atomically); returns ``path``.

    Args:
        normalize: put the input scaling into the graph (``x/255``, then ``(x-mean)/std`` with
            the model's ``normalization``), so the graph takes raw 0..255 images as float32.
        input_shape: one sample's shape, when the model was built without ``input_shape``.
    """
    path = as_path(path, "to_onnx")
    proto = build_onnx_model(model, normalize=normalize, input_shape=input_shape)
    atomic_write(path, proto.SerializeToString())
    return path
