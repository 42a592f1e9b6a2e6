"""Watch a convolution happen: the deck's animated demo, step by step.

The deck's "Convolutions" slide is CS231n's "toggle movement" figure: a 5x5x3 input padded by 1,
two 3x3x3 filters sliding with stride 2, giving a 3x3x2 output.  Each output number is

    o[o][y, x] = sum(window * w_o) + b_o

where ``window`` is the (C, kh, kw) block of the padded input under the filter when it sits at
output position ``(y, x)``: rows ``y*stride .. y*stride + kh - 1`` and columns
``x*stride .. x*stride + kw - 1``.  Multiply the window and the filter number by number, add all
C*kh*kw products and the filter's bias: that is one output value.  Doing it for every position
and every filter gives the output volume, whose depth is the number of filters.

This module computes those steps one at a time (:func:`conv_steps`), prints them
(:func:`format_step`), draws them as an animated GIF (:func:`render_gif`) and checks that the
slow step-by-step answer equals :func:`numcnn.functional.conv2d`, the fast one-matrix-multiply
version the layers use.  :func:`kernel_gallery` shows what classic hand-made 3x3 kernels (blur,
sharpen, edges) do to an image: how convolutions "highlight aspects of an image".

Arrays follow PyTorch's layout: ``x`` is (N, C, H, W) and ``weight`` is (O, C, kh, kw), so
``weight[o, c, i, j]`` is the deck's ``w_o[i, j, c]`` (the deck writes ``w1[:,:,c]`` for the
3x3 slice of channel c; here that slice is ``weight[0, c]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from ..functional import conv2d, conv_output_size, pad2d, pair

__all__ = ["ConvStep", "DemoResult", "deck_example", "conv_steps", "format_step", "render_frames",
           "render_gif", "classic_kernels", "apply_kernels", "kernel_gallery", "sample_image",
           "user_demo", "user_demo_inputs", "MAX_DEMO_SIZE", "DECK_SEED"]

#: the largest padded image (height and width) :func:`user_demo` will animate
MAX_DEMO_SIZE = 16
#: Largest magnitude of a pixel, kernel value or bias in a user's demo (every product is printed).
DEMO_MAX_VALUE = 1e6

# The deck's filter W1, written as the deck writes it: one 3x3 slice per input channel c.
_DECK_W1_SLICES = (
    [[0, -1, 0], [1, 1, 0], [1, -1, 1]],      # w1[:,:,0]
    [[0, 1, -1], [-1, 1, 1], [1, 1, 1]],      # w1[:,:,1]
    [[1, -1, -1], [1, -1, 1], [1, 0, 0]],     # w1[:,:,2]
)
# Our second filter (the deck shows only one): small integers, chosen by hand.
_SECOND_FILTER_SLICES = (
    [[1, 0, -1], [1, 0, -1], [1, 0, -1]],
    [[-1, 0, 1], [0, 1, 0], [1, 0, -1]],
    [[0, 1, 0], [1, -1, 1], [0, 1, 0]],
)


# ---------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ConvStep:
    """One output number of a convolution and everything that went into it.

    Attributes:
        o: output channel, i.e. which filter (``w_o``) produced this value.
        y, x: the output position (row, column).
        origin: ``(row, col)`` of the window's top-left corner in the *padded* input.
        window: ``(C, kh, kw)`` block of the padded input under the filter.
        kernel: ``(C, kh, kw)`` the filter ``weight[o]``.
        products: ``window * kernel``, number by number.
        channel_sums: ``(C,)`` the products of each input channel added up.
        total: all products added up, ``sum(window * kernel)``.
        bias: the filter's bias ``b_o``.
        value: ``total + bias``, the output value ``o[o][y, x]``.
    """

    o: int
    y: int
    x: int
    origin: tuple
    window: np.ndarray
    kernel: np.ndarray
    products: np.ndarray
    channel_sums: np.ndarray
    total: float
    bias: float
    value: float


#: the seed of :func:`deck_example`'s input, picked so its output has negative numbers and few
#: zeros, like the deck's picture
DECK_SEED = 10


def deck_example(seed=DECK_SEED):
    """The deck's convolution: a 5x5x3 input, padding 1, two 3x3x3 filters, stride 2.

    Returns ``(x, weight, bias, stride, padding)``:

    * ``x``: (1, 3, 5, 5) small integers 0..2 drawn from a seeded random generator (the deck's
      picture shows random inputs too, and doesn't print them; a fixed seed makes ours
      repeatable),
    * ``weight``: (2, 3, 3, 3).  Filter 0 is the deck's W1 (``weight[0, c, i, j] = w1[i, j, c]``);
      filter 1 is a second small-integer filter of our own,
    * ``bias``: ``[0, 1]`` (filter 0 has the deck's ``b1 = 0``),
    * ``stride = 2``, ``padding = 1``.

    Output size: ``H' = 1 + (5 + 2*1 - 3) // 2 = 3``, so the output volume is 3x3x2 and the demo
    has 2*3*3 = 18 steps.  All values are stored as float64 so they can go straight into
    :func:`numcnn.functional.conv2d`; they are whole numbers, so every step can be checked by hand.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(1, 3, 5, 5)).astype(np.float64)
    weight = np.stack([np.array(_DECK_W1_SLICES, dtype=np.float64),
                       np.array(_SECOND_FILTER_SLICES, dtype=np.float64)])   # (O, C, kh, kw)
    bias = np.array([0.0, 1.0])
    return x, weight, bias, 2, 1


def conv_steps(x, weight, bias=None, stride=1, padding=0):
    """Compute a convolution one output value at a time, the way the deck describes it.

    Args:
        x: one image, ``(1, C, H, W)`` (a ``(C, H, W)`` array is taken as a batch of one).
        weight: ``(O, C, kh, kw)``, one ``(C, kh, kw)`` filter per output channel.
        bias: ``(O,)``, a single number for every filter, or None for no bias.
        stride, padding: ints or ``(h, w)`` pairs; the padding is zeros.

    Returns:
        ``(steps, out)``: ``steps`` is a list of :class:`ConvStep` in the order the animation
        shows them (filter 0 at every position row by row, then filter 1, ...), and ``out`` is the
        ``(1, O, H', W')`` output built from those steps, with
        ``H' = 1 + (H + 2*padding - kh) // stride`` (and likewise ``W'``).  ``out`` equals
        ``numcnn.functional.conv2d(x, weight, bias, stride, padding)``; the tests check that.
    """
    x, weight, bias, stride, padding = _check_conv_args(x, weight, bias, stride, padding)
    _, c, h, w = x.shape
    o_count, _, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride[0], padding[0])
    wo = conv_output_size(w, kw, stride[1], padding[1])
    xpad = pad2d(x, padding)[0]                         # (C, Hp, Wp)
    out = np.zeros((1, o_count, ho, wo))
    steps = []
    for o in range(o_count):
        kernel = weight[o]
        for y in range(ho):
            for x_ in range(wo):
                r0, c0 = y * stride[0], x_ * stride[1]
                window = xpad[:, r0:r0 + kh, c0:c0 + kw].copy()
                products = window * kernel
                total = float(products.sum())
                value = total + float(bias[o])
                out[0, o, y, x_] = value
                steps.append(ConvStep(o, y, x_, (r0, c0), window, kernel.copy(), products,
                                      products.sum(axis=(1, 2)), total, float(bias[o]), value))
    return steps, out


def format_step(step: ConvStep) -> str:
    """A step as text for the terminal: the sum, then window, kernel and products per channel.

    Example (deck example, filter 0 at output row 1, column 2)::

        o[0][1,2] = sum(window * w0) + b0 = (1) + (6) + (-1) + 0 = 6
          output channel 0, row 1, column 2: the window is rows 2..4, columns 4..6 of the padded input
          c   window           w0[c]            window * w0[c]   sum
          0   [  2  1  0 ]     [  0 -1  0 ]     [  0 -1  0 ]
              [  2  1  0 ]  *  [  1  1  0 ]  =  [  2  1  0 ]     1
              [  1  2  0 ]     [  1 -1  1 ]     [  1 -2  0 ]
          1   ...

    The numbers in brackets in the first line are the per-channel sums.
    """
    o, kh = step.o, step.kernel.shape[1]
    kw = step.kernel.shape[2]
    sums = " + ".join(f"({_fmt(s)})" for s in step.channel_sums)
    lines = [f"o[{o}][{step.y},{step.x}] = sum(window * w{o}) + b{o} = {sums}{_plus(step.bias)}"
             f" = {_fmt(step.value)}",
             f"  output channel {o}, row {step.y}, column {step.x}: the window is rows "
             f"{step.origin[0]}..{step.origin[0] + kh - 1}, columns "
             f"{step.origin[1]}..{step.origin[1] + kw - 1} of the padded input"]
    blocks = []
    num_w = max(len(_fmt(v)) for a in (step.window, step.kernel, step.products) for v in a.ravel())
    for c in range(step.window.shape[0]):
        mats = [_matrix_lines(step.window[c], num_w), _matrix_lines(step.kernel[c], num_w),
                _matrix_lines(step.products[c], num_w)]
        blocks.append((c, mats, _fmt(step.channel_sums[c])))
    widths = [max(len("window"), max(len(b[1][0][0]) for b in blocks)),
              max(len(f"w{o}[c]"), max(len(b[1][1][0]) for b in blocks)),
              max(len(f"window * w{o}[c]"), max(len(b[1][2][0]) for b in blocks))]
    cw = max(1, len(str(len(blocks) - 1)))
    lines.append(f"  {'c'.ljust(cw)}   {'window'.ljust(widths[0])}     {f'w{o}[c]'.ljust(widths[1])}"
                 f"     {f'window * w{o}[c]'.ljust(widths[2])}   sum")
    mid = kh // 2
    for c, mats, s in blocks:
        for r in range(kh):
            op1, op2 = ("*", "=") if r == mid else (" ", " ")
            label = str(c).ljust(cw) if r == 0 else " " * cw
            tail = f"   {s}" if r == mid else ""
            lines.append(f"  {label}   {mats[0][r].ljust(widths[0])}  {op1}  "
                         f"{mats[1][r].ljust(widths[1])}  {op2}  {mats[2][r].ljust(widths[2])}{tail}"
                         .rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The animation
# ---------------------------------------------------------------------------------------------
#: height of one number's cell in the GIF, in pixels (small demos; big ones use 24)
CELL = 32

_COLORS = {
    "text": (33, 33, 33), "faint": (150, 150, 150), "grid": (190, 190, 190),
    "input": (227, 238, 250), "pad": (240, 240, 240), "window": (160, 198, 238),
    "window_edge": (21, 101, 192),
    "filter": (251, 227, 227), "filter_edge": (198, 40, 40),
    "product": (255, 244, 214),
    "out": (228, 244, 228), "out_todo": (248, 248, 248), "out_now": (56, 142, 60),
    "out_edge": (27, 94, 32), "white": (255, 255, 255),
}


def render_frames(x, weight, bias=None, stride=1, padding=0):
    """The animation's frames as a list of RGB ``PIL.Image`` objects, one per output value.

    Handy in a notebook (``frames[5]`` shows step 6).  See :func:`render_gif` for what each
    frame shows.  Every frame is kept in memory, so prefer :func:`render_gif` for big demos.
    """
    painter = _Painter(x, weight, bias, stride, padding)
    return [frame.copy() for frame, _ in painter.frames()]


def render_gif(x, weight, bias=None, stride=1, padding=0, path="convolution.gif", frame_ms=600):
    """Write the convolution as an animated GIF, one frame per output value.

    Each frame is laid out like CS231n's figure (the deck's "toggle movement" slide):

    * left, in blue: the zero-padded input volume, one grid of numbers per channel
      (``x[:,:,c]``, padding in grey), with the filter's current window outlined on every channel;
    * next, in red: each filter ``w_o`` channel by channel and its bias ``b_o``; the filter in use
      is outlined, the others are greyed out;
    * in yellow: ``window * w_o`` number by number for each channel, and each channel's sum;
    * right, in green: the output volume; values computed so far are filled in and the one being
      computed now is dark green;
    * at the bottom: the arithmetic, ``o = (sum of channel 0) + (channel 1) + ... + bias``.

    Args:
        x, weight, bias, stride, padding: as for :func:`conv_steps`.
        path: where to write the GIF.
        frame_ms: how long each frame is shown, in milliseconds (the last frame, with the whole
            output, stays four times as long).  The GIF loops forever.

    Returns:
        ``(path, number_of_frames)``; the deck example gives 18 frames.
    """
    if not frame_ms > 0:
        raise ConfigError(f"render_gif: frame_ms must be a positive number of milliseconds, got {frame_ms}")
    painter = _Painter(x, weight, bias, stride, padding)
    n = len(painter.steps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [int(frame_ms)] * n
    durations[-1] = int(frame_ms) * 4
    frames = painter.palette_frames()
    first = next(frames)
    # ``append_images`` may be an iterator: frames are drawn while the file is written.
    # optimize=True lets Pillow mark unchanged pixels transparent: files many times smaller
    first.save(path, format="GIF", save_all=True, append_images=frames, duration=durations,
               loop=0, optimize=True)
    return str(path), n


class _Palette:
    """Maps RGB pixels to the indices of one fixed 256-colour palette (GIF frames are paletted).

    The palette holds the most frequent exact colours of a few sample frames: the flat fills
    (white, the cell colours) keep their exact values; rare anti-aliasing shades of the text go
    to the nearest palette colour.  (Pillow's own conversion to a given palette matches colours
    only approximately and can merge our light greys and blues.)
    """

    def __init__(self, samples, exact=()):
        colours, counts = np.unique(np.concatenate([self._pack(np.asarray(s)).ravel()
                                                    for s in samples]), return_counts=True)
        counts = counts.astype(np.int64)
        must = self._pack(np.array(list(exact), dtype=np.uint8).reshape(-1, 3))
        colours = np.concatenate([must, colours])          # the exact colours come first
        counts = np.concatenate([np.full(len(must), np.iinfo(np.int64).max), counts])
        colours, first = np.unique(colours, return_index=True)
        counts = counts[first]
        top = colours[np.argsort(-counts, kind="stable")[:255]]   # one index left for transparency
        rgb = self._unpack(top)
        self.palette = rgb.astype(np.uint8).ravel().tolist() + [0] * (3 * (256 - len(top)))
        self._rgb = rgb.astype(np.float64)
        self._lut = np.zeros(1 << 24, dtype=np.uint8)     # packed RGB -> palette index
        self._known = np.zeros(1 << 24, dtype=bool)

    @staticmethod
    def _pack(a):
        a = a.astype(np.uint32)
        return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]

    @staticmethod
    def _unpack(p):
        return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1)

    def indices(self, rgb):
        """(h, w, 3) uint8 -> (h, w) uint8 palette indices."""
        packed = self._pack(rgb)
        unknown = ~self._known[packed]
        if unknown.any():
            new = np.unique(packed[unknown])
            d = ((self._unpack(new)[:, None, :].astype(np.float64) - self._rgb[None]) ** 2).sum(axis=-1)
            self._lut[new] = d.argmin(axis=1)
            self._known[new] = True
        return self._lut[packed]


class _Canvas:
    """An image and a drawing context on it (text is pasted onto the image, shapes drawn)."""

    def __init__(self, img):
        from PIL import ImageDraw
        self.img, self.draw = img, ImageDraw.Draw(img)


class _Painter:
    """Lays out the frames and draws them.

    Drawing every number of every frame would be slow for a 16x16 image (about 200 frames of
    about 1000 numbers each), so the painter keeps a ``progress`` picture (everything that does
    not move, plus the output values computed so far) and draws only the parts that change on a
    copy of it: the window, the active filter, the products, the current output cell and the
    text.  The GIF writer converts only those parts to palette colours.
    """

    def __init__(self, x, weight, bias, stride, padding):
        from PIL import Image, ImageDraw
        self.steps, out = conv_steps(x, weight, bias, stride, padding)
        x, weight, bias, stride, padding = _check_conv_args(x, weight, bias, stride, padding)
        self.xpad, self.weight, self.bias, self.out = pad2d(x, padding)[0], weight, bias, out[0]
        self.stride, self.padding = stride, padding
        c, hp, wp = self.xpad.shape
        o_count, _, kh, kw = weight.shape
        ho, wo = self.out.shape[1:]

        big = max(hp, wp) > 9
        self.cell_h = 24 if big else CELL
        self.f_num = _font(13 if big else 16)
        self.f_label = _font(14 if big else 15)
        self.f_head = _font(16 if big else 17)
        self.f_title = _font(18 if big else 19)
        self._probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
        self._tiles = {}

        def cell_w(values):
            return max(self.cell_h, max(self._text_w(_fmt(v), self.f_num) for v in values) + 10)

        # one cell width per kind of grid, so wide products don't widen the input grids
        self.w_in = cell_w(self.xpad.ravel())
        self.w_f = cell_w(np.concatenate([weight.ravel(), bias.ravel()]))
        self.w_p = cell_w(np.concatenate([s.products.ravel() for s in self.steps]))
        self.w_out = cell_w(self.out.ravel())
        m, gap, self.label_h, head_h = 24, 36 if not big else 28, 24, 52
        self.margin = m
        self.band_h = self.label_h + max(hp, kh) * self.cell_h + 18       # one input channel
        self.out_band_h = self.label_h + ho * self.cell_h + 18            # one output channel

        sum_w = max(self._text_w("= " + _fmt(s), self.f_head)
                    for st in self.steps for s in st.channel_sums) + 12
        heads = [(f"Input Volume (+pad {_pair_txt(padding)})", f"{hp}x{wp}x{c}", wp * self.w_in)]
        heads += [(f"Filter W{o}", f"{kh}x{kw}x{c}", kw * self.w_f) for o in range(o_count)]
        heads += [(f"window * W{o_count - 1}", "per channel", kw * self.w_p + sum_w),
                  ("Output Volume", f"{ho}x{wo}x{o_count}", wo * self.w_out)]
        self.cols = []
        left = m
        for title, sub, content_w in heads:
            width = max(content_w, self._text_w(title, self.f_head), self._text_w(sub, self.f_label))
            self.cols.append((left, width, title, sub))
            left += width + gap
        self.top = m + 34 + head_h
        in_bottom = self.top + c * self.band_h + self.label_h + self.cell_h + 8   # + the biases
        out_bottom = self.top + o_count * self.out_band_h
        self.formula_top = max(in_bottom, out_bottom) + 14
        formula_w = max(self._text_w(line, self.f_head) + 40
                        for s in self.steps for line in self._formula(s))
        title_w = max(self._text_w(self._title(k), self.f_title) for k in (0, len(self.steps) - 1))
        self.width = max(left - gap + m, formula_w + 2 * m, title_w + 2 * m)
        self.height = self.formula_top + 60 + m
        self.progress = None

    # -- helpers ----------------------------------------------------------------------------------
    def _text_w(self, s, font):
        box = self._probe.textbbox((0, 0), s, font=font)
        return box[2] - box[0]

    def _text(self, draw, xy, s, font, fill, centre=False, bg=_COLORS["white"]):
        """Draw ``s`` with its left edge (or centre) at x, vertically centred on y, on a plain
        background ``bg``.  Each (text, font, colours) is rendered once and then pasted."""
        from PIL import Image, ImageDraw
        key = (s, id(font), fill, bg)
        tile = self._tiles.get(key)
        if tile is None:
            box = self._probe.textbbox((0, 0), s, font=font)
            tile = Image.new("RGB", (max(1, box[2] - box[0]), max(1, box[3] - box[1])), bg)
            ImageDraw.Draw(tile).text((-box[0], -box[1]), s, font=font, fill=fill)
            self._tiles[key] = tile
        x, y = xy
        if centre:
            x -= tile.width / 2
        draw.img.paste(tile, (int(round(x)), int(round(y - tile.height / 2))))

    def _cell(self, draw, left, top, cw, bg, text=None, fg=None):
        draw.draw.rectangle([left, top, left + cw, top + self.cell_h], fill=bg, outline=_COLORS["grid"])
        if text:
            self._text(draw, (left + cw / 2, top + self.cell_h / 2), text, self.f_num,
                       fg or _COLORS["text"], centre=True, bg=bg)

    def _grid(self, draw, left, top, values, cw, bg, fg=None):
        for (i, j), v in np.ndenumerate(values):
            self._cell(draw, left + j * cw, top + i * self.cell_h, cw, bg, _fmt(v), fg)

    def _outline(self, draw, left, top, rows, cols, cw, colour, width=4):
        box = (left - 2, top - 2, left + cols * cw + 2, top + rows * self.cell_h + 2)
        draw.draw.rectangle(box, outline=colour, width=width)
        return (box[0] - 1, box[1] - 1, box[2] + 2, box[3] + 2)

    def _band_top(self, c):
        return self.top + c * self.band_h

    def _out_cell(self, o, y, x):
        return (self.cols[-1][0] + x * self.w_out,
                self._out_top(o) + self.label_h + y * self.cell_h)

    def _out_top(self, o):
        return self.top + o * self.out_band_h

    def _title(self, k):
        st = self.steps[k]
        return (f"Step {k + 1} of {len(self.steps)}:  filter W{st.o} at output row {st.y}, "
                f"col {st.x}   (stride {_pair_txt(self.stride)}, padding {_pair_txt(self.padding)})")

    def _formula(self, st):
        sums = " + ".join(f"({_fmt(s)})" for s in st.channel_sums)
        return (f"o[:,:,{st.o}] at row {st.y}, col {st.x}  =  sum(window * W{st.o}) + b{st.o}",
                f"= {sums}{_plus(st.bias)}  =  {_fmt(st.value)}")

    def _input_cell_style(self, c, i, j, in_window):
        hp, wp = self.xpad.shape[1:]
        ph, pw = self.padding
        inside = ph <= i < hp - ph and pw <= j < wp - pw
        bg = _COLORS["window"] if in_window else _COLORS["input"] if inside else _COLORS["pad"]
        return bg, _COLORS["text"] if inside else _COLORS["faint"]

    # -- drawing ----------------------------------------------------------------------------------
    def _base(self):
        """Everything that never changes, with every filter greyed out and the output empty."""
        from PIL import Image
        img = Image.new("RGB", (self.width, self.height), _COLORS["white"])
        draw = _Canvas(img)
        c_count, o_count = self.xpad.shape[0], self.weight.shape[0]
        for left, _, head, sub in self.cols[:-2] + self.cols[-1:]:
            self._text(draw, (left, self.top - 40), head, self.f_head, _COLORS["text"])
            self._text(draw, (left, self.top - 18), sub, self.f_label, _COLORS["faint"])
        self._text(draw, (self.cols[-2][0], self.top - 18), self.cols[-2][3], self.f_label,
                   _COLORS["faint"])
        in_left = self.cols[0][0]
        for c in range(c_count):
            top = self._band_top(c)
            self._text(draw, (in_left, top + 10), f"x[:,:,{c}]", self.f_label, _COLORS["text"])
            for (i, j), v in np.ndenumerate(self.xpad[c]):
                bg, fg = self._input_cell_style(c, i, j, False)
                self._cell(draw, in_left + j * self.w_in, top + self.label_h + i * self.cell_h,
                           self.w_in, bg, _fmt(v), fg)
        for o in range(o_count):
            self._filter(draw, o, active=False)
            top = self._out_top(o)
            self._text(draw, (self.cols[-1][0], top + 10), f"o[:,:,{o}]", self.f_label,
                       _COLORS["text"])
            for (i, j), _ in np.ndenumerate(self.out[o]):
                self._cell(draw, *self._out_cell(o, i, j), self.w_out, _COLORS["out_todo"])
        draw.draw.line([self.margin, self.formula_top - 6, self.width - self.margin,
                   self.formula_top - 6], fill=_COLORS["grid"], width=1)
        return img

    def _filter(self, draw, o, active):
        """Filter ``o``'s column (its channels and its bias); returns the box it covers."""
        left, width = self.cols[1 + o][:2]
        kh, kw = self.weight.shape[2:]
        fg = _COLORS["text"] if active else _COLORS["faint"]
        c_count = self.xpad.shape[0]
        for c in range(c_count + 1):
            top = self._band_top(c)
            gtop = top + self.label_h
            label, values = (f"w{o}[:,:,{c}]", self.weight[o, c]) if c < c_count else \
                (f"b{o}", np.array([[self.bias[o]]]))
            self._text(draw, (left, top + 10), label, self.f_label, fg)
            self._grid(draw, left, gtop, values, self.w_f, _COLORS["filter"], fg)
            if active:
                self._outline(draw, left, gtop, *values.shape, self.w_f, _COLORS["filter_edge"])
        return (left - 4, self.top, left + width + 4, self._band_top(c_count) + self.band_h)

    def frames(self):
        """Yield ``(frame, boxes)`` per step: an RGB image and the regions where it differs
        from ``self.progress`` (which then gets the step's output value filled in)."""
        self.progress = self._base()
        kh, kw = self.weight.shape[2:]
        c_count = self.xpad.shape[0]
        in_left = self.cols[0][0]
        p_left, p_width = self.cols[-2][:2]
        m = self.margin
        for k, st in enumerate(self.steps):
            frame = self.progress.copy()
            draw = _Canvas(frame)
            boxes = [(0, 0, self.width, self.top - 50)]                    # the title
            self._text(draw, (m, m + 10), self._title(k), self.f_title, _COLORS["text"])

            r0, c0 = st.origin
            for c in range(c_count):
                gtop = self._band_top(c) + self.label_h
                for i in range(r0, r0 + kh):
                    for j in range(c0, c0 + kw):
                        bg, fg = self._input_cell_style(c, i, j, True)
                        self._cell(draw, in_left + j * self.w_in, gtop + i * self.cell_h,
                                   self.w_in, bg, _fmt(self.xpad[c, i, j]), fg)
                boxes.append(self._outline(draw, in_left + c0 * self.w_in, gtop + r0 * self.cell_h,
                                           kh, kw, self.w_in, _COLORS["window_edge"]))

            boxes.append(self._filter(draw, st.o, active=True))

            boxes.append((p_left - 4, self.top - 52, p_left + p_width + 4, self.formula_top - 8))
            self._text(draw, (p_left, self.top - 40), f"window * W{st.o}", self.f_head, _COLORS["text"])
            for c in range(c_count):
                top = self._band_top(c)
                self._text(draw, (p_left, top + 10), f"x * w{st.o}[:,:,{c}]", self.f_label,
                           _COLORS["text"])
                self._grid(draw, p_left, top + self.label_h, st.products[c], self.w_p,
                           _COLORS["product"])
                self._text(draw, (p_left + kw * self.w_p + 10, top + self.label_h + kh * self.cell_h / 2),
                           "= " + _fmt(st.channel_sums[c]), self.f_head, _COLORS["text"])

            cx, cy = self._out_cell(st.o, st.y, st.x)
            self._cell(draw, cx, cy, self.w_out, _COLORS["out_now"], _fmt(st.value), _COLORS["white"])
            boxes.append(self._outline(draw, cx, cy, 1, 1, self.w_out, _COLORS["out_edge"], width=3))

            ft = self.formula_top
            boxes.append((0, ft, self.width, self.height))
            line1, line2 = self._formula(st)
            self._text(draw, (m, ft + 14), line1, self.f_head, _COLORS["text"])
            self._text(draw, (m + 40, ft + 44), line2, self.f_head, _COLORS["out_edge"])
            yield frame, [self._clip(b) for b in boxes]

            pdraw = _Canvas(self.progress)
            self._cell(pdraw, cx, cy, self.w_out, _COLORS["out"], _fmt(st.value))
            self._progress_box = self._clip((cx, cy, cx + self.w_out + 1, cy + self.cell_h + 1))

    def palette_frames(self):
        """Like :meth:`frames`, but as palette images for the GIF, converting only what changed."""
        from PIL import Image
        frames = self.frames()
        first, boxes = next(frames)
        palette = _Palette([self.progress, first, self._swatch()], exact=_COLORS.values())
        index = palette.indices(np.asarray(self.progress))       # the progress picture, as indices
        frame = first
        while True:
            out = index.copy()
            for l, t, r, b in boxes:
                out[t:b, l:r] = palette.indices(np.asarray(frame.crop((l, t, r, b))))
            img = Image.frombytes("P", frame.size, out.tobytes())
            img.putpalette(palette.palette)
            yield img
            try:
                frame, boxes = next(frames)
            except StopIteration:
                return
            l, t, r, b = self._progress_box
            index[t:b, l:r] = palette.indices(np.asarray(self.progress.crop((l, t, r, b))))

    def _swatch(self):
        """Digits in every text colour on every cell colour: the anti-aliasing shades to keep."""
        from PIL import Image
        pairs = [(bg, fg) for bg in ("input", "pad", "window", "filter", "product", "out",
                                     "white") for fg in ("text", "faint")]
        pairs += [("out_now", "white"), ("white", "out_edge")]
        img = Image.new("RGB", (160, 24 * len(pairs)), _COLORS["white"])
        draw = _Canvas(img)
        for n, (bg, fg) in enumerate(pairs):
            draw.draw.rectangle([0, 24 * n, 160, 24 * n + 24], fill=_COLORS[bg])
            self._text(draw, (4, 24 * n + 12), "-0123456789.", self.f_num, _COLORS[fg],
                       bg=_COLORS[bg])
        return img

    def _clip(self, box):
        l, t, r, b = (int(round(v)) for v in box)
        return max(0, l), max(0, t), min(self.width, r), min(self.height, b)


# ---------------------------------------------------------------------------------------------
# Classic hand-made kernels
# ---------------------------------------------------------------------------------------------
def classic_kernels():
    """Classic 3x3 image kernels, by name, as float64 arrays.

    * ``identity``: copies the image.
    * ``edge`` (edge detect, the 8-neighbour Laplacian with its sign flipped): 8 times the pixel
      minus its 8 neighbours; zero on flat areas, large where the brightness changes in any
      direction.
    * ``sobel_x`` / ``sobel_y``: brightness increasing to the right / downwards (vertical /
      horizontal edges), with the centre row / column weighted double.
    * ``sharpen``: the pixel plus 4 times its difference from its 4 neighbours.
    * ``box_blur``: the mean of the 3x3 neighbourhood.
    * ``gaussian_blur``: a weighted mean, centre 4/16, edges 2/16, corners 1/16.
    * ``emboss``: a diagonal difference that looks like light from the top left.

    numcnn's convolution, like PyTorch's and the deck's, does not flip the kernel
    (it is a cross-correlation), so a kernel is applied exactly as written here.
    """
    return {
        "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64),
        "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float64),
        "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
        "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
        "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
        "box_blur": np.ones((3, 3)) / 9.0,
        "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16.0,
        "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
    }


def apply_kernels(image, kernels=None, border="zeros"):
    """Convolve an image with each kernel, keeping its size; returns ``{name: result}``.

    Args:
        image: a grey ``(H, W)`` image or a ``(C, H, W)`` one, uint8 or float.  A ``(H, W, 3)``
            or ``(H, W, 4)`` array, as ``numpy.asarray(PIL_image)`` gives, is recognised too.
        kernels: ``{name: (kh, kw) array}`` with odd kh and kw; :func:`classic_kernels` if None.
        border: ``"zeros"`` (the convolution's own zero padding, as in a CNN layer) or ``"edge"``
            (repeat the outermost pixels instead, so flat areas stay flat up to the border).

    Returns:
        ``{name: float64 array}``, each the shape and layout of ``image``, in the image's own
        units (uint8 images are not rescaled), so the identity kernel gives the image back.

    How: each kernel is the weight of a 1-in, 1-out convolution with zero padding
    ``(kh // 2, kw // 2)`` (1 for 3x3), which keeps H and W.  To filter every colour channel on its
    own with that single-channel kernel, the channels are moved into the batch axis:
    ``(C, H, W) -> (C, 1, H, W)``, so one :func:`numcnn.functional.conv2d` call filters them all
    (a "grouped" convolution).  All kernels of the same size go in the same call as its outputs.
    With ``border="zeros"`` the padding counts as black, so e.g. a blur darkens the outermost
    ring and an edge detector finds an "edge" all around the picture; ``border="edge"`` pads the
    image with copies of its border pixels first and then convolves with padding 0.
    """
    img, layout = _as_image(image, "apply_kernels")
    kernels = classic_kernels() if kernels is None else kernels
    if not isinstance(kernels, dict) or not kernels:
        raise ConfigError("apply_kernels: kernels must be a non-empty dict {name: 2-D array}")
    if border not in ("zeros", "edge"):
        raise ConfigError(f"apply_kernels: border must be 'zeros' or 'edge', got {border!r}")
    groups = {}
    for name, k in kernels.items():
        k = _as_float(k, f"apply_kernels: kernel {name!r}")
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ShapeError(f"apply_kernels: kernel {name!r} must be a 2-D array with odd sides "
                             f"(e.g. 3x3) so the output keeps the image's size; got shape {k.shape}")
        groups.setdefault(k.shape, []).append((name, k))
    c, h, w = img.shape
    batch = img.reshape(c, 1, h, w)                      # channels -> batch axis
    results = {}
    for (kh, kw), items in groups.items():
        weight = np.stack([k for _, k in items])[:, None]            # (K, 1, kh, kw)
        pad = (kh // 2, kw // 2)
        if border == "edge":
            padded = np.pad(batch, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2), mode="edge")
            out = conv2d(padded, weight, None, 1, 0)                 # (C, K, H, W)
        else:
            out = conv2d(batch, weight, None, 1, pad)                # (C, K, H, W)
        for i, (name, _) in enumerate(items):
            results[name] = _restore_layout(out[:, i], layout)
    return {name: results[name] for name in kernels}


def kernel_gallery(image, path="kernels.png", kernels=None, figsize=None, dpi=100):
    """Save a PNG with the original image and what each kernel makes of it, side by side.

    Each tile is titled with the kernel's name and its numbers.  Kernels whose numbers add up to
    1 (identity, blurs, sharpen, emboss) keep the overall brightness and are shown on the image's
    own scale (clipped to it).  Kernels that add up to 0 (edge detect, Sobel) give 0 on flat areas
    and positive or negative values at edges, so their tile shows the *size* of the response,
    ``|result|`` (averaged over colour channels), white for the strongest responses: bright =
    edge.  The gallery pads with copies of the border pixels (``border="edge"`` in
    :func:`apply_kernels`) so the picture's frame doesn't show up as an edge.

    Args:
        image: as for :func:`apply_kernels`.
        path: the PNG to write.
        kernels: ``{name: kernel}``; :func:`classic_kernels` if None.
        figsize: inches ``(w, h)``; by default 3.4 x 3.6 inches per tile, 3 tiles per row.
        dpi: pixels per inch, so the PNG is ``figsize * dpi`` pixels.

    Returns:
        ``path`` as a string.
    """
    img, layout = _as_image(image, "kernel_gallery")
    kernels = classic_kernels() if kernels is None else kernels
    results = apply_kernels(img, kernels, border="edge")
    n = 1 + len(results)
    ncols = 3 if n > 4 else n
    nrows = math.ceil(n / ncols)
    figsize = figsize or (3.4 * ncols, 3.6 * nrows + 0.4)
    lo, hi = (0.0, 255.0) if np.issubdtype(np.asarray(image).dtype, np.integer) else \
        (float(img.min()), float(img.max()))

    from .plots import _new_figure, _save
    fig = _new_figure(figsize, dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    tiles = [("original", None, img)] + [(name, np.asarray(kernels[name], dtype=float), r)
                                          for name, r in results.items()]
    for ax, (name, k, r) in zip(axes.ravel(), tiles):
        if k is not None and abs(k.sum()) < 1e-9:
            mag = np.abs(r).mean(axis=0)
            top = float(np.percentile(mag, 99.5)) or float(mag.max()) or 1.0
            ax.imshow(np.clip(mag / top, 0, 1), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            note = True
        else:
            ax.imshow(_display(r, lo, hi), cmap="gray" if r.shape[0] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            note = False
        title = _GALLERY_TITLES.get(name, name.replace("_", " ")) + ("  *" if note else "")
        if k is not None:
            title += "\n" + _kernel_label(k)
        ax.set_title(title, fontsize=10, family="monospace" if k is not None else None)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("What classic 3x3 kernels highlight in an image\n"
                 "(* kernels that add up to 0 find edges; their tiles show the size |result|, "
                 "white = strongest)", fontsize=12)
    return _save(fig, path)


_GALLERY_TITLES = {
    "identity": "identity (no change)", "edge": "edge detect (Laplacian)",
    "sobel_x": "Sobel x: vertical edges", "sobel_y": "Sobel y: horizontal edges",
    "sharpen": "sharpen", "box_blur": "box blur", "gaussian_blur": "Gaussian blur",
    "emboss": "emboss",
}


def sample_image(size=64, rgb=False):
    """A small synthetic test picture (uint8): a gradient, a bright disc, a dark square, stripes.

    Handy for :func:`kernel_gallery` when there is no photo at hand.  Returns ``(size, size)``
    or, with ``rgb=True``, ``(3, size, size)`` with coloured shapes.
    """
    if size < 8:
        raise ConfigError(f"sample_image: size must be at least 8, got {size}")
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    grey = 60 + 80 * xx
    disc = (xx - 0.3) ** 2 + (yy - 0.3) ** 2 < 0.2 ** 2
    square = (xx > 0.55) & (xx < 0.9) & (yy > 0.15) & (yy < 0.5)
    stripes = (yy > 0.62) & (np.floor(xx * size / 4) % 2 == 0)
    triangle = (yy > 0.62) & (yy < 0.95) & (xx > 0.55) & (xx - 0.55 < (yy - 0.62))
    if not rgb:
        img = grey.copy()
        img[disc] = 235
        img[square] = 15
        img[stripes & (xx < 0.45)] = 200
        img[triangle] = 170
        return np.clip(img, 0, 255).astype(np.uint8)
    img = np.stack([grey, grey, grey])
    for mask, colour in ((disc, (240, 200, 40)), (square, (30, 60, 200)),
                         (stripes & (xx < 0.45), (220, 40, 40)), (triangle, (40, 180, 80))):
        for ch in range(3):
            img[ch][mask] = colour[ch]
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Your own image
# ---------------------------------------------------------------------------------------------
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
    img = _as_float(image_array, "user_demo: image")
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ShapeError(f"user_demo: the image must be grey (H, W) or channels-first (C, H, W); "
                         f"got shape {img.shape}")
    c, h, w = img.shape
    k = _as_float(kernel, "user_demo: kernel")
    if k.ndim == 2:
        if c != 1:
            raise ShapeError(f"user_demo: the kernel has shape {k.shape}, i.e. 1 channel, but the "
                             f"image has {c} channels; pass a ({c}, {k.shape[0]}, {k.shape[1]}) "
                             f"kernel (e.g. numpy.stack([k] * {c})) or a grey (H, W) image")
        k = k[None, None]
    elif k.ndim == 3:
        k = k[None]
    if k.ndim != 4:
        raise ShapeError(f"user_demo: the kernel must be (kh, kw), (C, kh, kw) or (O, C, kh, kw); "
                         f"got shape {tuple(np.shape(kernel))}")
    if k.shape[1] != c:
        raise ShapeError(f"user_demo: the kernel has {k.shape[1]} channels (shape "
                         f"{tuple(np.shape(kernel))}) but the image has {c} (shape "
                         f"{tuple(np.shape(image_array))}); a filter must span all input channels")
    stride, padding = _check_stride_padding(stride, padding, "user_demo")
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    if 2 * max(padding) >= MAX_DEMO_SIZE:
        raise ConfigError(f"user_demo: padding {padding} alone makes the image wider than "
                          f"{MAX_DEMO_SIZE - 1} pixels, too big to animate; use a padding of at "
                          f"most {(MAX_DEMO_SIZE - 2) // 2}")
    if hp > MAX_DEMO_SIZE or wp > MAX_DEMO_SIZE:
        fit_w, fit_h = (max(1, MAX_DEMO_SIZE - 2 * p) for p in (padding[1], padding[0]))
        raise ConfigError(f"user_demo: the padded image is {hp}x{wp}, too big to animate (at most "
                          f"{MAX_DEMO_SIZE}x{MAX_DEMO_SIZE} after padding); resize it first, e.g. "
                          f"PIL.Image.fromarray(img).resize(({fit_w}, {fit_h}))")
    b = _as_float(bias, "user_demo: bias")
    if b.ndim == 0:
        b = np.full(k.shape[0], float(b))
    for what, a in (("image", img), ("kernel", k), ("bias", b)):
        if a.size and float(np.abs(a).max()) > DEMO_MAX_VALUE:
            raise ConfigError(f"user_demo: the {what} holds {float(np.abs(a).max()):g}; the demo "
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


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    """Whole numbers without decimals, others with up to 2 (3 significant digits when small)."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    if abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    elif abs(v) >= 0.1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.2g}"
    if "." in s and "e" not in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _pair_txt(p):
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _matrix_lines(m, w):
    cells = [[_fmt(v) for v in row] for row in m]
    return ["[ " + " ".join(s.rjust(w) for s in row) + " ]" for row in cells]


def _kernel_label(k):
    """The kernel's numbers on one line, with a common fraction pulled out (``1/16 x [...]``)."""
    for d in (1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16, 25):
        if np.allclose(k * d, np.round(k * d)):
            body = " / ".join(" ".join(_fmt(v) for v in row) for row in np.round(k * d))
            return body if d == 1 else f"1/{d} x [{body}]"
    return " / ".join(" ".join(_fmt(v) for v in row) for row in k)


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:            # Pillow < 10.1: the small fixed-size bitmap font
        return ImageFont.load_default()


def _as_float(a, what):
    a = to_numpy(a) if hasattr(a, "dtype") else np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"{what}: expected numbers, got an array of dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{what}: contains NaN or infinity")
    return a


def _check_stride_padding(stride, padding, where):
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if min(stride) < 1:
        raise ConfigError(f"{where}: stride must be >= 1, got {stride}")
    if min(padding) < 0:
        raise ConfigError(f"{where}: padding must be >= 0, got {padding}")
    return stride, padding


def _check_conv_args(x, weight, bias, stride, padding):
    x = _as_float(x, "conv_steps: x")
    weight = _as_float(weight, "conv_steps: weight")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ShapeError(f"conv_steps: x must be one image, (1, C, H, W) or (C, H, W); got shape {x.shape}")
    if weight.ndim != 4:
        raise ShapeError(f"conv_steps: weight must be (O, C, kh, kw); got shape {weight.shape}")
    if weight.shape[1] != x.shape[1]:
        raise ShapeError(f"conv_steps: the filters have {weight.shape[1]} channels (weight "
                         f"{weight.shape}) but the image has {x.shape[1]} (x {x.shape})")
    o = weight.shape[0]
    if bias is None:
        bias = np.zeros(o)
    else:
        bias = _as_float(bias, "conv_steps: bias")
        if bias.ndim == 0:
            bias = np.full(o, float(bias))
        if bias.shape != (o,):
            raise ShapeError(f"conv_steps: bias must be one number or ({o},), got shape {bias.shape}")
    stride, padding = _check_stride_padding(stride, padding, "conv_steps")
    hp, wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if weight.shape[2] > hp or weight.shape[3] > wp:
        raise ShapeError(f"conv_steps: the kernel ({weight.shape[2]}x{weight.shape[3]}) is larger "
                         f"than the padded image ({hp}x{wp}); use more padding or a smaller kernel")
    return x, weight, bias, stride, padding


def _plus(bias):
    """`` + 1`` or `` - 1`` (not ``+ -1``): the bias term of a printed sum."""
    return f" - {_fmt(-bias)}" if bias < 0 else f" + {_fmt(bias)}"


def _as_image(image, where):
    """``(H, W)``, ``(C, H, W)`` or ``(H, W, 3|4)`` -> float ``(C, H, W)`` and how to undo it.

    A last axis of 3 or 4 is read as colour channels (``numpy.asarray(PIL_image)``), even when
    the first axis could be channels too (a picture 1, 3 or 4 rows high); a ``(C, H, W)``
    array is recognised when its last axis (the width) is not 3 or 4.
    """
    img = _as_float(image, f"{where}: image")
    if img.ndim == 2:
        return img[None], "hw"
    if img.ndim == 3:
        if img.shape[2] in (3, 4):
            return np.ascontiguousarray(img.transpose(2, 0, 1)), "hwc"
        return img, "chw"
    raise ShapeError(f"{where}: expected a grey (H, W) or a (C, H, W) image, got shape {img.shape}")


def _restore_layout(chw, layout):
    if layout == "hw":
        return chw[0]
    if layout == "hwc":
        return np.ascontiguousarray(chw.transpose(1, 2, 0))
    return chw


def _display(chw, lo, hi):
    """(C, H, W) on the scale [lo, hi] -> an image matplotlib can show, values in [0, 1]."""
    span = (hi - lo) or 1.0
    v = np.clip((chw - lo) / span, 0, 1)
    if v.shape[0] == 1:
        return v[0]
    if v.shape[0] >= 3:
        return v[:3].transpose(1, 2, 0)
    return v.mean(axis=0)
