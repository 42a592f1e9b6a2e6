"""The convolution demo as terminal text: every window, product and sum of a step."""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np

from .steps import ConvStep


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
    lines = [f"o[{o}][{step.y},{step.x}] = sum(window * w{o}) + b{o} = {sum_equation(step)}",
             f"  output channel {o}, row {step.y}, column {step.x}: the window is rows "
             f"{step.origin[0]}..{step.origin[0] + kh - 1}, columns "
             f"{step.origin[1]}..{step.origin[1] + kw - 1} of the padded input"]
    blocks = []
    num_w = max(len(_fmt(v)) for a in (step.window, step.kernel, step.products) for v in a.ravel())
    for c in range(step.window.shape[0]):
        mats = [_matrix_lines(step.window[c], num_w), _matrix_lines(step.kernel[c], num_w),
                _matrix_lines(step.products[c], num_w)]
        blocks.append((c, mats, _fmt(step.channel_sums[c]), "=" if channel_exact(step, c) else "~"))
    widths = [max(len("window"), max(len(b[1][0][0]) for b in blocks)),
              max(len(f"w{o}[c]"), max(len(b[1][1][0]) for b in blocks)),
              max(len(f"window * w{o}[c]"), max(len(b[1][2][0]) for b in blocks))]
    cw = max(1, len(str(len(blocks) - 1)))
    lines.append(f"  {'c'.ljust(cw)}   {'window'.ljust(widths[0])}     {f'w{o}[c]'.ljust(widths[1])}"
                 f"     {f'window * w{o}[c]'.ljust(widths[2])}   sum")
    mid = kh // 2
    for c, mats, s, eq in blocks:
        for r in range(kh):
            op1, op2 = ("*", eq) if r == mid else (" ", " ")
            label = str(c).ljust(cw) if r == 0 else " " * cw
            tail = f"   {s}" if r == mid else ""
            lines.append(f"  {label}   {mats[0][r].ljust(widths[0])}  {op1}  "
                         f"{mats[1][r].ljust(widths[1])}  {op2}  {mats[2][r].ljust(widths[2])}{tail}"
                         .rstrip())
    return "\n".join(lines)


#: most decimals a number is printed with; numbers that need more are printed to 6 significant
#: digits and the equations holding them say "~"
MAX_DECIMALS = 10


def _exact_text(v):
    """``v`` as the shortest decimal (at most MAX_DECIMALS places) it stands for, e.g. 0.5,
    -254.5, 0.0625, 0.3 for 0.1 + 0.2; None when it needs more (1/3).  "Stands for": equal up to
    the rounding error of a few float64 operations."""
    if not math.isfinite(v):
        return None
    tol = 64 * np.finfo(np.float64).eps * max(1.0, abs(v))
    for d in range(MAX_DECIMALS + 1):
        if abs(v - round(v, d)) <= tol and tol < 0.05 * 10.0 ** -d:
            s = f"{v:.{d}f}"
            if "." in s:
                s = s.rstrip("0").rstrip(".")
            return "0" if s in ("-0", "") else s
    return None


def _fmt(v) -> str:
    """A number as printed: exactly (``-254.5``, ``0.0625``; never rounded half to even into a
    false equation) when at most MAX_DECIMALS decimals say it, else to 6 significant digits."""
    v = float(v)
    s = _exact_text(v)
    if s is not None:
        return s
    return str(v) if not math.isfinite(v) else f"{v:.6g}"


def _dec(v):
    """The printed number as an exact Decimal (what a reader checking the sum would add)."""
    return Decimal(_fmt(v))


def sum_equation(step: ConvStep) -> str:
    """``(1) + (6) + (-1) + 0.5 = 6.5``: the per-channel sums plus the bias, and the output
    value, with "=" when the printed numbers add up exactly and "~" when some are rounded."""
    sums = " + ".join(f"({_fmt(s)})" for s in step.channel_sums)
    try:
        exact = sum(_dec(s) for s in step.channel_sums) + _dec(step.bias) == _dec(step.value)
    except ArithmeticError:            # inf/nan printed: nothing to claim
        exact = False
    return f"{sums}{_plus(step.bias)} {'=' if exact else '~'} {_fmt(step.value)}"


def channel_exact(step: ConvStep, c) -> bool:
    """Whether channel ``c``'s printed products are exactly the printed window times kernel, and
    its printed sum their exact sum (then the terminal and the GIF print "=", else "~")."""
    try:
        w, k, p = (np.vectorize(_dec, otypes=[object])(a[c]) for a in
                   (step.window, step.kernel, step.products))
        return bool(np.all(w * k == p)) and sum(p.ravel()) == _dec(step.channel_sums[c])
    except ArithmeticError:
        return False


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


def _plus(bias):
    """`` + 1`` or `` - 1`` (not ``+ -1``): the bias term of a printed sum."""
    return f" - {_fmt(-bias)}" if bias < 0 else f" + {_fmt(bias)}"


def _side_by_side(blocks, indent="  ", gap="   "):
    """``[(title, 2-D array), ...]`` as matrices next to each other, titles above."""
    mats = []
    for title, m in blocks:
        w = max(len(_fmt(v)) for v in np.ravel(m))
        lines = _matrix_lines(m, w)
        width = max(len(title), len(lines[0]))
        mats.append([title.ljust(width)] + [ln.ljust(width) for ln in lines])
    rows = max(len(m) for m in mats)
    for m in mats:
        m += [" " * len(m[0])] * (rows - len(m))
    return [(indent + gap.join(m[r] for m in mats)).rstrip() for r in range(rows)]


def format_setup(x, weight, bias, stride, padding) -> str:
    """What goes in, before the first step: the input (per channel, padding included), the
    filters and biases, stride and padding, and the output size with its formula."""
    x, weight = np.asarray(x, dtype=np.float64), np.asarray(weight, dtype=np.float64)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), (weight.shape[0],))
    sh, sw = (stride, stride) if np.isscalar(stride) else tuple(stride)
    ph, pw = (padding, padding) if np.isscalar(padding) else tuple(padding)
    _, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = 1 + (h + 2 * ph - kh) // sh, 1 + (w + 2 * pw - kw) // sw
    xp = np.pad(x[0], ((0, 0), (ph, ph), (pw, pw)))
    pad_txt = f"zero padding {_pair_txt((ph, pw))}" + (f" -> {h + 2 * ph}x{w + 2 * pw}x{c}"
                                                      if ph or pw else "")
    lines = [f"input volume {h}x{w}x{c} (height x width x depth), {pad_txt}:"]
    lines += _side_by_side([(f"x[:,:,{i}]", xp[i]) for i in range(c)])
    lines.append(f"{o} filter{'s' if o > 1 else ''} of {kh}x{kw}x{c}, stride {_pair_txt((sh, sw))}, "
                 + ", ".join(f"bias b{k} = {_fmt(b)}" for k, b in enumerate(bias)) + ":")
    for k in range(o):
        lines += _side_by_side([(f"w{k}[:,:,{i}]", weight[k, i]) for i in range(c)])
    lines.append(f"output size: H' = 1 + (H + 2*padding - kh) // stride = 1 + ({h} + 2*{ph} - {kh})"
                 f" // {sh} = {ho}, W' = {wo}: an output volume of {ho}x{wo}x{o}, "
                 f"{ho * wo * o} values, one step each:")
    return "\n".join(lines)


def format_volume(out) -> str:
    """The finished output volume ``(1, O, H', W')``, one matrix per filter."""
    out = np.asarray(out, dtype=np.float64)
    _, o, ho, wo = out.shape
    lines = [f"output volume {ho}x{wo}x{o} (height x width x depth; depth = number of filters):"]
    lines += _side_by_side([(f"o[:,:,{k}]", out[0, k]) for k in range(o)])
    return "\n".join(lines)
