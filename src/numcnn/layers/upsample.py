"""Upsample: make feature maps larger (decoders, U-Net's expanding path)."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError
from .base import Layer


class Upsample(Layer):
    """Nearest-neighbour upsampling by an integer ``scale_factor`` (or an (h, w) pair of them):
    (N, C, H, W) -> (N, C, H*sh, W*sw), each pixel repeated into an sh x sw block, as PyTorch's
    ``nn.Upsample(scale_factor=s, mode="nearest")``.  Backward sums each block's gradients."""

    def __init__(self, scale_factor, mode="nearest"):
        self.scale_factor = F.pair(scale_factor, "scale_factor")
        if min(self.scale_factor) < 1:
            raise ConfigError(f"Upsample: scale_factor must be a positive int or (h, w) pair of "
                              f"them, got {scale_factor!r}")
        if mode != "nearest":
            raise ConfigError(f"Upsample: mode must be 'nearest' (the only mode numcnn has), got "
                              f"{mode!r}; for learned upsampling use ConvTranspose2D")
        self.mode = mode
        self._cache = None

    def config(self):
        return {"scale_factor": list(self.scale_factor), "mode": self.mode}

    def __repr__(self):
        sh, sw = self.scale_factor
        return f"Upsample(scale_factor={sh if sh == sw else (sh, sw)})"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c, h * self.scale_factor[0], w * self.scale_factor[1])

    def flops(self, input_shape):
        return 0

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        self._cache = True
        return F.upsample_nearest2d(x, self.scale_factor)

    def backward(self, grad_out):
        self._need_cache()
        return F.upsample_nearest2d_backward(grad_out, self.scale_factor)
