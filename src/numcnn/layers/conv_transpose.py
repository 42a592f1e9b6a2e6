"""ConvTranspose2D: the transposed convolution that decoders (U-Net, GANs) upsample with."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError, ShapeError
from .base import Layer, check_dtype, check_positive_int
from .conv import _short, conv_layer_backward, init_conv_parameters


class ConvTranspose2D(Layer):
    """Transposed 2-D convolution (PyTorch's ``ConvTranspose2d``).

    Its forward pass is the deck's dL/dI of a convolution: it reuses the convolution's
    input-gradient kernel (:func:`numcnn.functional.conv2d_input_grad`), and its backward pass
    is a convolution forward (dL/dx) and the convolution's weight gradient with the roles of
    input and upstream gradient swapped (dL/dW); see :mod:`numcnn.functional.conv_transpose`.

    Args:
        in_channels, out_channels: depths of input and output.
        kernel_size, stride, padding, dilation: ints or (h, w) pairs, as PyTorch reads them:
            those of the convolution this one transposes (``padding`` crops that many rows and
            columns off each side of the output).
        output_padding: extra rows/columns at the bottom/right of the output (each must be
            smaller than the stride or the dilation, as in PyTorch).
        groups: as in Conv2D; both channel counts must be multiples of it.
        bias, init, rng, dtype: as in Conv2D.

    Shape: (N, in_channels, H, W) -> (N, out_channels, H', W'),
    H' = (H - 1)*stride - 2*padding + dilation*(kernel_size - 1) + output_padding + 1.
    Parameters: ``weight`` (in_channels, out_channels/groups, kh, kw), ``bias`` (out_channels,).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, init="kaiming_uniform",
                 rng=None, dtype="float32"):
        name = f"ConvTranspose2D({in_channels}, {out_channels}, kernel_size={kernel_size})"
        check_dtype(dtype, name)
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.out_channels = check_positive_int(out_channels, "out_channels", name)
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = F.pair(stride, "stride")
        self.padding = F.pair(padding, "padding")
        self.output_padding = F.pair(output_padding, "output_padding")
        self.dilation = F.pair(dilation, "dilation")
        for label, v, lo in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                             ("padding", self.padding, 0), ("dilation", self.dilation, 1),
                             ("output_padding", self.output_padding, 0)):
            if min(v) < lo:
                raise ConfigError(f"{name}: {label} must be >= {lo}, got {v}")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ConfigError(f"{name}: output_padding {self.output_padding} must be smaller "
                                  f"than the stride {self.stride} or the dilation "
                                  f"{self.dilation} (as in PyTorch); it only picks among the "
                                  "output sizes a strided convolution maps to the same size")
        init_conv_parameters(self, name, groups, (self.in_channels, self.out_channels), bias,
                             init, rng, dtype)

    @property
    def pads(self):
        return tuple((p, p) for p in self.padding)

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "output_padding": list(self.output_padding),
                "groups": self.groups, "bias": self.bias is not None,
                "dilation": list(self.dilation)}

    def __repr__(self):
        s = f"ConvTranspose2D({self.in_channels}, {self.out_channels}, kernel_size={_short(self.kernel_size)}"
        for k, default in (("stride", (1, 1)), ("padding", (0, 0)), ("output_padding", (0, 0)),
                           ("dilation", (1, 1))):
            if getattr(self, k) != default:
                s += f", {k}={_short(getattr(self, k))}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False") + ")"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (self.out_channels,) + tuple(
            F.conv_transpose_output_size(size, self.kernel_size[a], self.stride[a],
                                         self.padding[a], self.output_padding[a], self.dilation[a])
            for a, size in enumerate((h, w)))

    def flops(self, input_shape):
        c, h, w = input_shape
        o, ho, wo = self.output_shape(input_shape)
        # every input pixel meets out_channels/groups kernels of kh*kw
        k = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        return 2 * c * h * w * k + (o * ho * wo if self.bias is not None else 0)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels, layout)
        out_hw = self.output_shape((self.in_channels,) + tuple(x.shape[2:]))[1:]
        if min(out_hw) < 1:
            raise ShapeError(f"{self!r}: input of shape {tuple(x.shape)} gives an empty output "
                             f"({out_hw[0]}x{out_hw[1]}): the padding crops more than the "
                             "layer produces; use less padding or a larger input")
        out, self._cache = F.conv_transpose2d_forward(
            x, self.weight.value, None if self.bias is None else self.bias.value, self.stride,
            self.padding, self.output_padding, self.dilation, self.groups, layout)
        return out

    def backward(self, grad_out):
        return conv_layer_backward(self, F.conv_transpose2d_backward, grad_out)
