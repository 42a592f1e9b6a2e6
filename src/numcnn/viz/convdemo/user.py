"""The demo on your own small image and kernel (``numcnn convdemo --image``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ConfigError, ShapeError
from .gif import Animation, render_gif
from .steps import DEMO_MAX_VALUE, MAX_DEMO_SIZE, _as_float, _check_conv_args, _check_stride_padding, conv_steps
from .text import format_step


@dataclass(eq=False)
class DemoResult:
    """What :func:`user_demo` returns: the inputs as used, the steps, the output and the GIF."""

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple
    padding: tuple
    steps: list
    output: np.ndarray
    path: str | None = None
    frames: int = 0
    _text: str | None = field(default=None, repr=False)

    def _repr_html_(self):
        """In a notebook: the animation when a GIF was written, else the steps as text."""
        import html
        if self.path:
            with open(self.path, "rb") as f:
                return Animation(f.read(), self.frames)._repr_html_()
        return f"<pre>{html.escape(self.text())}</pre>"

    def text(self):
        """Every step as :func:`format_step` prints it, separated by blank lines."""
        if self._text is None:
            self._text = "\n\n".join(format_step(s) for s in self.steps)
        return self._text


def user_demo_inputs(image_array, kernel, stride=1, padding=0, bias=0):
    """Check your own small image and kernel and turn them into :func:`conv_steps` arguments.

    Args:
        image_array: grey ``(H, W)`` or ``(C, H, W)`` image (uint8 or float).  It must be small
            enough to watch: at most ``MAX_DEMO_SIZE`` (16) pixels high and wide *after padding*;
            resize bigger pictures first, e.g. ``PIL.Image.open(f).convert("L").resize((12, 12))``.
        kernel: ``(kh, kw)`` for a grey image, ``(C, kh, kw)`` matching the image's channels, or
            ``(O, C, kh, kw)`` for several filters at once.
        stride, padding: ints or ``(h, w)`` pairs.
        bias: one number, or one per filter.

    Returns:
        ``(x, weight, bias, stride, padding)``: ``x`` is ``(1, C, H, W)`` float64, ``weight``
        ``(O, C, kh, kw)``, ``bias`` ``(O,)``, stride and padding ``(h, w)`` pairs, ready for
        :func:`conv_steps` and :func:`render_gif`.

    Raises:
        ShapeError: the image or kernel has the wrong number of dimensions, the kernel's channels
            don't match the image's, or the kernel is bigger than the padded image.
        ConfigError: the padded image is bigger than 16x16, or stride/padding are invalid.
    """
    img = _as_float(image_array, "convolution demo: image")
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ShapeError(f"convolution demo: the image must be grey (H, W) or channels-first (C, H, W); "
                         f"got shape {img.shape}")
    c, h, w = img.shape
    k = _as_float(kernel, "convolution demo: kernel")
    if k.ndim == 2:
        if c != 1:
            raise ShapeError(f"convolution demo: the kernel has shape {k.shape}, i.e. 1 channel, but the "
                             f"image has {c} channels; pass a ({c}, {k.shape[0]}, {k.shape[1]}) "
                             f"kernel (e.g. numpy.stack([k] * {c})) or a grey (H, W) image")
        k = k[None, None]
    elif k.ndim == 3:
        k = k[None]
    if k.ndim != 4:
        raise ShapeError(f"convolution demo: the kernel must be (kh, kw), (C, kh, kw) or (O, C, kh, kw); "
                         f"got shape {tuple(np.shape(kernel))}")
    if k.shape[1] != c:
        raise ShapeError(f"convolution demo: the kernel has {k.shape[1]} channels (shape "
                         f"{tuple(np.shape(kernel))}) but the image has {c} (shape "
                         f"{tuple(np.shape(image_array))}); a filter must span all input channels")
    stride, padding = _check_stride_padding(stride, padding, "convolution demo")
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    if 2 * max(padding) >= MAX_DEMO_SIZE:
        raise ConfigError(f"convolution demo: padding {padding} alone makes the image wider than "
                          f"{MAX_DEMO_SIZE - 1} pixels, too big to animate; use a padding of at "
                          f"most {(MAX_DEMO_SIZE - 2) // 2}")
    if hp > MAX_DEMO_SIZE or wp > MAX_DEMO_SIZE:
        fit_w, fit_h = (max(1, MAX_DEMO_SIZE - 2 * p) for p in (padding[1], padding[0]))
        raise ConfigError(f"convolution demo: the padded image is {hp}x{wp}, too big to animate (at most "
                          f"{MAX_DEMO_SIZE}x{MAX_DEMO_SIZE} after padding); resize it first, e.g. "
                          f"PIL.Image.fromarray(img).resize(({fit_w}, {fit_h}))")
    b = _as_float(bias, "convolution demo: bias")
    if b.ndim == 0:
        b = np.full(k.shape[0], float(b))
    for what, a in (("image", img), ("kernel", k), ("bias", b)):
        if a.size and float(np.abs(a).max()) > DEMO_MAX_VALUE:
            raise ConfigError(f"convolution demo: the {what} holds {float(np.abs(a).max()):g}; the demo "
                              f"prints every product and sum, so values are limited to "
                              f"+/-{DEMO_MAX_VALUE:g} (scale them down)")
    x = img[None]
    return _check_conv_args(x, k, b, stride, padding)


def user_demo(image_array, kernel, stride=1, padding=0, bias=0, path=None, frame_ms=600):
    """Run the step-by-step convolution on your own small image and kernel.

    Args:
        image_array, kernel, stride, padding, bias: see :func:`user_demo_inputs` (the image may
            be at most 16x16 after padding; a kernel must have as many channels as the image).
        path: if given, also write the animation there (see :func:`render_gif`).
        frame_ms: milliseconds per GIF frame.

    Returns:
        a :class:`DemoResult` with ``steps`` (see :func:`conv_steps`), ``output``
        ``(1, O, H', W')``, ``path`` and ``frames`` of the GIF, and ``text()`` for the terminal.

    Raises:
        ShapeError, ConfigError: as :func:`user_demo_inputs`, with a message saying what to change.

    Example::

        img = numpy.asarray(PIL.Image.open("cat.png").convert("L").resize((10, 10)))
        demo = user_demo(img, classic_kernels()["edge"], padding=1, path="cat_edges.gif")
        print(demo.text())
    """
    x, k, b, stride, padding = user_demo_inputs(image_array, kernel, stride, padding, bias)
    steps, out = conv_steps(x, k, b, stride, padding)
    result = DemoResult(x, k, b, stride, padding, steps, out)
    if path is not None:
        result.path, result.frames = render_gif(x, k, b, stride, padding, path, frame_ms)
    return result
