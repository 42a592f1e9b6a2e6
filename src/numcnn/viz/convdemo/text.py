"""The convolution demo as terminal text: every window, product and sum of a step."""
from __future__ import annotations

import math

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


def _plus(bias):
    """`` + 1`` or `` - 1`` (not ``+ -1``): the bias term of a printed sum."""
    return f" - {_fmt(-bias)}" if bias < 0 else f" + {_fmt(bias)}"
