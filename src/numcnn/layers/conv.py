"""Conv2D: the deck's convolution layer, n kernels spanning all input channels -> depth n
(or, with groups, each kernel spanning its group's channels)."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError, ShapeError
from ..init import as_generator, init_bias, init_weight
from ._padding import parse_padding, show_padding
from .base import Layer, Parameter, check_bool, check_dtype, check_positive_int


def init_conv_parameters(layer, name, groups, weight_channels, bias, init, rng, dtype):
    """Check ``groups`` and create ``weight`` (``weight_channels[0]``,
    ``weight_channels[1] / groups``, kh, kw) and ``bias`` (out_channels,), initialised as PyTorch
    does (fan_in = the weight's dimension 1 times the kernel).  Shared by Conv2D, whose weight
    is (out, in/groups, ...), and ConvTranspose2D, whose weight is (in, out/groups, ...)."""
    layer.groups = check_positive_int(groups, "groups", name)
    if layer.in_channels % layer.groups or layer.out_channels % layer.groups:
        raise ConfigError(f"{name}: groups={layer.groups} must divide both in_channels "
                          f"({layer.in_channels}) and out_channels ({layer.out_channels}); "
                          "choose channel counts that are multiples of groups (groups="
                          "in_channels is a depthwise convolution)")
    layer.init = init
    rng = as_generator(rng)
    shape = (weight_channels[0], weight_channels[1] // layer.groups) + layer.kernel_size
    layer.weight = Parameter(init_weight(shape, init, rng, dtype), "weight")
    fan_in = shape[1] * layer.kernel_size[0] * layer.kernel_size[1]
    bias = check_bool(bias, "bias", type(layer).__name__)
    layer.bias = Parameter(init_bias(layer.out_channels, fan_in, init, rng, dtype), "bias") \
        if bias else None
    layer._cache = None
    layer.needs_input_grad = True


def conv_layer_backward(layer, backward_fn, grad_out):
    """dL/dW and dL/db accumulated into the layer's parameters, dL/dinput returned; shared by
    Conv2D and ConvTranspose2D, whose kernels ``backward_fn`` take the same arguments."""
    dx, dw, db = backward_fn(grad_out, layer.weight.value, layer._need_cache(),
                             need_bias=layer.bias is not None, need_input=layer.needs_input_grad)
    layer.weight.accumulate(dw)
    if layer.bias is not None:
        layer.bias.accumulate(db)
    return dx


class Conv2D(Layer):
    """2-D convolution over an (N, C, H, W) batch.

    Args:
        in_channels: C, the depth of the input.
        out_channels: the number of kernels, which is the depth of the output.
        kernel_size, stride, dilation: ints or (h, w) pairs.
        padding: zero padding: an int, an (h, w) pair, ``((top, bottom), (left, right))``,
            ``"valid"`` (none) or ``"same"`` (stride 1 only; output size = input size, an odd
            total split with the extra row/column at the bottom/right, as PyTorch does).
        groups: split the channels into this many groups, each convolved with its own
            out_channels/groups kernels (PyTorch's); ``groups == in_channels`` is a depthwise
            convolution.  Both channel counts must be multiples of it.
        bias: add a learned bias per kernel.
        init: weight initialisation scheme (see :mod:`numcnn.init`), He/Kaiming by default.
        rng: seed or ``numpy.random.Generator`` for the initial weights.
        dtype: parameter dtype (float32 unless asked otherwise).

    Shape: (N, in_channels, H, W) -> (N, out_channels, H', W'),
    H' = 1 + (H + top + bottom - dilation*(kernel_size - 1) - 1) // stride.
    Parameters: ``weight`` (out_channels, in_channels/groups, kh, kw) and ``bias``
    (out_channels,).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, init="kaiming_uniform", rng=None, dtype="float32"):
        name = f"Conv2D({in_channels}, {out_channels}, kernel_size={kernel_size})"
        check_dtype(dtype, name)
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.out_channels = check_positive_int(out_channels, "out_channels", name)
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = F.pair(stride, "stride")
        self.dilation = F.pair(dilation, "dilation")
        for label, v, lo in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                             ("dilation", self.dilation, 1)):
            if min(v) < lo:
                raise ConfigError(f"{name}: {label} must be >= {lo}, got {v}")
        self._padding_arg, self.padding, self.pads = parse_padding(
            padding, name, self.kernel_size, self.dilation)
        if padding == "same" and self.stride != (1, 1):
            raise ConfigError(f"{name}: padding='same' needs stride 1 (got stride {self.stride}), "
                              "as in PyTorch; for a strided layer give the padding as numbers, "
                              "e.g. padding=k//2")
        init_conv_parameters(self, name, groups, (self.out_channels, self.in_channels), bias,
                             init, rng, dtype)

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self._padding_arg, "dilation": list(self.dilation),
                "groups": self.groups, "bias": self.bias is not None}

    def __repr__(self):
        s = f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={_short(self.kernel_size)}"
        if self.stride != (1, 1):
            s += f", stride={_short(self.stride)}"
        if self.pads != ((0, 0), (0, 0)) or isinstance(self._padding_arg, str):
            s += f", padding={show_padding(self._padding_arg)}"
        if self.dilation != (1, 1):
            s += f", dilation={_short(self.dilation)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False") + ")"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (self.out_channels,) + tuple(
            F.pool_output_size(size, self.kernel_size[a], self.stride[a], *self.pads[a],
                               self.dilation[a]) for a, size in enumerate((h, w)))

    def flops(self, input_shape):
        o, ho, wo = self.output_shape(input_shape)
        k = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        return 2 * k * o * ho * wo + (o * ho * wo if self.bias is not None else 0)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels, layout)
        h, w = x.shape[2:]
        eff = [self.dilation[i] * (self.kernel_size[i] - 1) + 1 for i in range(2)]
        hp, wp = h + sum(self.pads[0]), w + sum(self.pads[1])
        if hp < eff[0] or wp < eff[1]:
            raise ShapeError(f"{self!r}: the kernel ({eff[0]}x{eff[1]} with dilation) is larger than "
                             f"the padded input ({hp}x{wp}, "
                             f"from input shape {tuple(x.shape)}); use a larger image, more "
                             "padding or a smaller kernel")
        out, self._cache = F.conv2d_forward(
            x, self.weight.value, None if self.bias is None else self.bias.value,
            self.stride, self.pads, self.dilation, layout, training, self.groups)
        return out

    def backward(self, grad_out):
        return conv_layer_backward(self, F.conv2d_backward, grad_out)


def _short(v):
    return v[0] if v[0] == v[1] else tuple(v)
