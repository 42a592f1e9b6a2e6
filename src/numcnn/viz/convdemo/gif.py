"""The convolution demo as an animated GIF: one frame per output value (Pillow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...functional import pad2d
from .steps import _check_conv_args, conv_steps
from .text import _fmt, _pair_txt, channel_exact, sum_equation


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
        raise ConfigError(f"convolution demo GIF: frame_ms must be a positive number of milliseconds, got {frame_ms}")
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
        return (f"o[:,:,{st.o}] at row {st.y}, col {st.x}  =  sum(window * W{st.o}) + b{st.o}",
                "= " + sum_equation(st).replace(" = ", "  =  ").replace(" ~ ", "  ~  "))

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
                           ("= " if channel_exact(st, c) else "~ ") + _fmt(st.channel_sums[c]),
                           self.f_head, _COLORS["text"])

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


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:            # Pillow < 10.1: the small fixed-size bitmap font
        return ImageFont.load_default()


class Animation:
    """A GIF held in memory that a notebook plays inline (``_repr_html_``: an ``<img>`` with the
    GIF embedded as base64; no JavaScript).  ``save(path)`` writes it; ``data`` is its bytes."""

    def __init__(self, data: bytes, frames: int):
        self.data, self.frames = data, frames

    def _repr_html_(self):
        import base64
        return (f'<img src="data:image/gif;base64,{base64.b64encode(self.data).decode()}" '
                f'alt="convolution, step by step ({self.frames} frames)"/>')

    def save(self, path):
        """Write the GIF to ``path`` (atomically) and return the path."""
        from ...files import atomic_write
        atomic_write(str(path), self.data)
        return str(path)

    def __repr__(self):
        return f"<Animation: {self.frames} frames, {len(self.data):,} bytes of GIF>"


def animate(x=None, weight=None, bias=None, stride=1, padding=0, frame_ms=600):
    """The convolution as an :class:`Animation` that plays inline in a notebook.

    Without arguments: the deck's example (:func:`deck_example`); otherwise as
    :func:`render_gif`.  Nothing is written to disk (``.save(path)`` does that)."""
    import os
    import tempfile

    if x is None:
        from .steps import deck_example
        x, weight, bias, stride, padding = deck_example()
    with tempfile.TemporaryDirectory() as d:
        path, frames = render_gif(x, weight, bias, stride, padding, os.path.join(d, "demo.gif"),
                                  frame_ms)
        with open(path, "rb") as f:
            return Animation(f.read(), frames)
