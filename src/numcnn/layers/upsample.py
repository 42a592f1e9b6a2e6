"""Upsample: make feature maps larger (decoders, U-Net's expanding path)."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError
from .base import Layer, check_bool


class Upsample(Layer):
    """Upsampling by an integer ``scale_factor`` (or an (h, w) pair of them):
    (N, C, H, W) -> (N, C, H*sh, W*sw), as PyTorch's ``nn.Upsample(scale_factor=s, mode=...)``.

    ``mode="nearest"``: each pixel repeated into an sh x sw block; backward sums each block's
    gradients.  ``mode="bilinear"``: PyTorch's bilinear interpolation, with ``align_corners``
    False (its default: pixel centres line up) or True (corner pixels line up).
    """

    def __init__(self, scale_factor, mode="nearest", align_corners=None):
        if isinstance(scale_factor, float) and scale_factor.is_integer():
            scale_factor = int(scale_factor)          # PyTorch users write 2.0
        elif isinstance(scale_factor, (tuple, list)):
            scale_factor = [int(v) if isinstance(v, float) and v.is_integer() else v
                            for v in scale_factor]
        self.scale_factor = F.pair(scale_factor, "scale_factor")
        if min(self.scale_factor) < 1:
            raise ConfigError(f"Upsample: scale_factor must be a positive int or (h, w) pair of "
                              f"them, got {scale_factor!r}")
        if mode not in ("nearest", "bilinear"):
            raise ConfigError(f"Upsample: mode must be 'nearest' or 'bilinear', got {mode!r}; "
                              "for learned upsampling use ConvTranspose2D")
        if mode == "nearest" and align_corners:
            raise ConfigError("Upsample: align_corners applies to mode='bilinear' only (as in "
                              "PyTorch); leave it None for 'nearest'")
        self.mode = mode
        self.align_corners = None if align_corners is None else check_bool(
            align_corners, "align_corners", "Upsample")
        self._cache = None

    def config(self):
        cfg = {"scale_factor": list(self.scale_factor), "mode": self.mode}
        if self.align_corners is not None:
            cfg["align_corners"] = self.align_corners
        return cfg

    def __repr__(self):
        sh, sw = self.scale_factor
        s = f"Upsample(scale_factor={sh if sh == sw else (sh, sw)}"
        if self.mode != "nearest":
            s += f", mode={self.mode!r}"
        if self.align_corners:
            s += ", align_corners=True"
        return s + ")"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c, h * self.scale_factor[0], w * self.scale_factor[1])

    def flops(self, input_shape):
        if self.mode == "nearest":
            return 0
        c, ho, wo = self.output_shape(input_shape)
        return 2 * 2 * c * ho * wo          # two taps per axis, a multiply and an add each

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        if self.mode == "nearest":
            self._cache = ("nearest",)
            return F.upsample_nearest2d(x, self.scale_factor)
        out, mats = F.upsample_bilinear2d(x, self.scale_factor, bool(self.align_corners))
        self._cache = ("bilinear", mats)
        return out

    def backward(self, grad_out):
        cache = self._need_cache()
        if cache[0] == "nearest":
            return F.upsample_nearest2d_backward(grad_out, self.scale_factor)
        return F.upsample_bilinear2d_backward(grad_out, cache[1])
