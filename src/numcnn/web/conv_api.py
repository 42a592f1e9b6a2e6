"""The numbers of the convolution page and the kernel page, all from :mod:`numcnn.viz.convdemo`.

The browser never computes a convolution: it sends sizes (and the numbers a person typed), and
gets back every window, product, per-channel sum, bias and output value that
:func:`numcnn.viz.convdemo.conv_steps` produced, plus the text :func:`format_step` prints for
``numcnn convdemo``.

Dilation: ``conv_steps`` slides a dense kernel, so a dilated filter is shown the way the maths
works: the kernel spread out to ``d*(k - 1) + 1`` cells with zeros between its taps.  The zero
cells add ``0 * x = 0`` to every sum, so the output equals ``conv2d(..., dilation=d)`` (the tests
check it); ``taps`` says which cells of the spread kernel are real weights.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..functional import conv_output_size
from ..viz import convdemo
from .security import ApiError

#: bounds of the convolution demo (the padded input is at most ``convdemo.MAX_DEMO_SIZE``)
CONV_LIMITS = {"size": (1, 16), "depth": (1, 4), "filters": (1, 4), "kernel": (1, 7),
               "stride": (1, 4), "padding": (0, 4), "dilation": (1, 3)}
#: the deck's example: 5x5x3 input, pad 1, two 3x3x3 filters, stride 2 -> 3x3x2
DECK = {"size": 5, "depth": 3, "filters": 2, "kernel": 3, "stride": 2, "padding": 1, "dilation": 1}
#: at most this many numbers (windows + products) in one answer (about 1 MB of JSON)
MAX_STEP_NUMBERS = 120_000
#: the kernel page's pictures are at most this many pixels on their long side
KERNEL_IMAGE_SIDE = 160
#: kernel page: typed kernels are 3x3 or 5x5, values within +/- this
KERNEL_MAX_VALUE = 1000.0


def _int_param(params, name):
    lo, hi = CONV_LIMITS[name]
    value = params.get(name, DECK[name])
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}, got {value!r}") from None
    if not f.is_integer() or not lo <= f <= hi:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(f)


def _array(value, shape, name):
    """A nested list of numbers with exactly ``shape``, as float64."""
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"{name} must be a nested list of numbers shaped {list(shape)}") from None
    if a.shape != tuple(shape):
        raise ApiError(400, f"{name} must have shape {list(shape)} (from the sizes chosen), got "
                       f"{list(a.shape)}")
    if not np.isfinite(a).all():
        raise ApiError(400, f"{name} holds NaN or infinity; type ordinary numbers")
    return a


def output_size_text(n, k, s, p, d):
    """The deck's formula with the numbers filled in, e.g. ``1 + (5 + 2*1 - 3) / 2 = 3``."""
    span = d * (k - 1) + 1
    inner = n + 2 * p - span
    ks = str(k) if d == 1 else f"({d}*({k} - 1) + 1)"
    exact = inner % s == 0
    text = f"1 + ({n} + 2*{p} - {ks}) / {s} = {1 + inner / s:g}"
    if not exact:
        text += f", rounded down to {1 + inner // s}"
    return text, exact


def conv_demo(params: dict) -> dict:
    """Answer ``POST /api/conv``: the demo's input, filters, output and every step.

    ``params``: ``size, depth, filters, kernel, stride, padding, dilation`` (whole numbers within
    :data:`CONV_LIMITS`; the deck's values by default), ``seed`` (``"deck"`` or an int: the
    random values), and optionally ``x`` ``(depth, size, size)``, ``weight``
    ``(filters, depth, kernel, kernel)``, ``bias`` ``(filters,)`` with a person's own numbers.
    """
    if not isinstance(params, dict):
        raise ApiError(400, "expected a JSON object with the demo's sizes")
    unknown = set(params) - set(CONV_LIMITS) - {"seed", "x", "weight", "bias"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; the demo takes "
                       f"{sorted(CONV_LIMITS) + ['seed', 'x', 'weight', 'bias']}")
    n, c, o, k, s, p, d = (_int_param(params, name) for name in
                           ("size", "depth", "filters", "kernel", "stride", "padding", "dilation"))
    span = d * (k - 1) + 1
    if n + 2 * p > convdemo.MAX_DEMO_SIZE:
        raise ApiError(422, f"the padded input would be {n + 2 * p}x{n + 2 * p}; the demo shows at "
                       f"most {convdemo.MAX_DEMO_SIZE}x{convdemo.MAX_DEMO_SIZE}: use a smaller input "
                       "or less padding")
    if span > n + 2 * p:
        what = f"{k}x{k}" if d == 1 else f"{k}x{k} dilated by {d} (spanning {span}x{span})"
        raise ApiError(422, f"the kernel ({what}) is larger than the padded input "
                       f"({n + 2 * p}x{n + 2 * p}): the output would have no cells. Use more "
                       "padding, a smaller kernel or a larger input")
    ho = conv_output_size(n, k, s, p, d)
    numbers = 2 * o * ho * ho * c * span * span
    if numbers > MAX_STEP_NUMBERS:
        raise ApiError(422, f"this demo would send {numbers:,} numbers (every window and product "
                       f"of {o * ho * ho} steps); the limit is {MAX_STEP_NUMBERS:,}: use fewer "
                       "filters or channels, or a smaller input")
    seed = params.get("seed", "deck")
    sizes = {"size": n, "depth": c, "filters": o, "kernel": k, "stride": s, "padding": p,
             "dilation": d}
    if seed == "deck" and sizes == DECK:
        x, weight, bias, _, _ = convdemo.deck_example()
        x = x[0]
    else:
        if seed == "deck":
            seed = convdemo.DECK_SEED
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
            raise ApiError(400, f"seed must be \"deck\" or a whole number from 0 to 2**32 - 1, got {seed!r}")
        rng = np.random.default_rng(seed)
        # small whole numbers, like the deck's picture: every step can be checked by hand
        x = rng.integers(0, 3, size=(c, n, n)).astype(np.float64)
        weight = rng.integers(-1, 2, size=(o, c, k, k)).astype(np.float64)
        bias = rng.integers(0, 2, size=o).astype(np.float64)
    if params.get("x") is not None:
        x = _array(params["x"], (c, n, n), "x")
    if params.get("weight") is not None:
        weight = _array(params["weight"], (o, c, k, k), "weight")
    if params.get("bias") is not None:
        bias = _array(params["bias"], (o,), "bias")
    taps = np.zeros((span, span), dtype=bool)
    taps[::d, ::d] = True
    spread = np.zeros((o, c, span, span))
    spread[:, :, ::d, ::d] = weight
    try:
        xx, ww, bb, stride, padding = convdemo.user_demo_inputs(x, spread, s, p, bias)
        steps, out = convdemo.conv_steps(xx, ww, bb, stride, padding)
    except ConfigError as exc:              # e.g. a typed value beyond the demo's +/-1e6
        raise ApiError(422, str(exc)) from None
    formula, exact = output_size_text(n, k, s, p, d)
    xpad = np.pad(x, ((0, 0), (p, p), (p, p)))
    return {
        "sizes": sizes, "seed": seed,
        "x": x.tolist(), "x_padded": xpad.tolist(), "weight": weight.tolist(),
        "weight_spread": spread.tolist(), "taps": taps.tolist(), "bias": bias.tolist(),
        "output": out[0].tolist(), "output_shape": [o, ho, ho],
        "output_size": {"formula": formula, "exact": exact, "value": ho,
                        "note": None if exact else
                        f"(n + 2p - k) is not a multiple of the stride {s}: the last "
                        f"{(n + 2 * p - span) % s} row(s)/column(s) of the padded input are "
                        "never under the filter (the formula rounds down, as PyTorch does)"},
        "steps": [{"o": st.o, "y": st.y, "x": st.x, "origin": list(st.origin),
                   "window": st.window.tolist(), "products": st.products.tolist(),
                   "channel_sums": st.channel_sums.tolist(), "total": st.total, "bias": st.bias,
                   "value": st.value, "text": convdemo.format_step(st)} for st in steps],
    }


# ----------------------------------------------------------------------------- kernel page
_KERNEL_TITLES = {"identity": "identity (no change)", "edge": "edges (Laplacian)",
                  "sobel_x": "Sobel x: vertical edges", "sobel_y": "Sobel y: horizontal edges",
                  "sharpen": "sharpen", "box_blur": "box blur", "gaussian_blur": "Gaussian blur",
                  "emboss": "emboss"}


def kernel_list() -> list:
    return [{"name": name, "title": _KERNEL_TITLES.get(name, name), "values": k.tolist()}
            for name, k in convdemo.classic_kernels().items()]


def parse_kernel(name: str | None, values: str | None):
    """A classic kernel by name, or ``name="custom"`` with 9 or 25 comma-separated numbers."""
    if name in (None, ""):
        name = "edge"
    if name != "custom":
        kernels = convdemo.classic_kernels()
        if name not in kernels:
            raise ApiError(400, f"unknown kernel {name!r}; choose one of "
                           f"{', '.join(kernels)} or 'custom' with values=...")
        return name, kernels[name]
    if not values:
        raise ApiError(400, "kernel=custom needs values=a,b,c,... (9 numbers for 3x3, 25 for 5x5)")
    try:
        nums = [float(v) for v in values.replace(";", ",").split(",") if v.strip() != ""]
    except ValueError:
        raise ApiError(400, f"values must be numbers separated by commas, got {values[:80]!r}") from None
    if len(nums) not in (9, 25):
        raise ApiError(400, f"a typed kernel is 3x3 (9 numbers) or 5x5 (25 numbers); got {len(nums)}")
    k = np.array(nums).reshape(int(math.isqrt(len(nums))), -1)
    if not np.isfinite(k).all() or np.abs(k).max() > KERNEL_MAX_VALUE:
        raise ApiError(400, f"kernel values must be finite numbers within +/-{KERNEL_MAX_VALUE:g}")
    return "custom", k


def apply_kernel(image: np.ndarray, name: str, kernel: np.ndarray, border: str) -> dict:
    """Answer ``/api/kernels``: the grey picture, the feature map, one colour scale for both.

    ``image``: ``(1, H, W)`` uint8.  The feature map is ``convdemo.apply_kernels`` (one
    :func:`numcnn.functional.conv2d`), the same size as the picture.
    """
    if border not in ("zeros", "edge"):
        raise ApiError(400, f"border must be 'zeros' or 'edge', got {border!r}")
    img = image[0].astype(np.float64)
    out = convdemo.apply_kernels(img, {name: kernel}, border=border)[name]
    # one scale for both pictures, symmetric around 0 so that the sign is the hue: numbers can be
    # compared across the two; the 99.5th percentile keeps one extreme pixel from washing out
    # everything else (values beyond it are drawn at full colour)
    top = max(255.0, float(np.percentile(np.abs(out), 99.5)))
    return {"kernel": {"name": name, "values": kernel.tolist(), "sum": float(kernel.sum())},
            "border": border, "height": int(img.shape[0]), "width": int(img.shape[1]),
            "input": np.round(img, 3).tolist(), "output": np.round(out, 3).tolist(),
            "output_range": [float(out.min()), float(out.max())],
            "scale": {"min": -top, "max": top,
                      "explain": f"one colour scale for both pictures: white is 0, orange positive, "
                                 f"blue negative, full colour at +/-{top:.4g} (or beyond). The "
                                 f"input's pixels are 0..255, so it shows in shades of orange; "
                                 f"the kernel's numbers add up to {float(kernel.sum()):g}"
                                 + (", so flat areas give 0 (white) and edges give strong "
                                    "positive and negative values" if abs(kernel.sum()) < 1e-9 else
                                    ", so flat areas keep their brightness")}}
