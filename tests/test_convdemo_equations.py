"""Every equation the convolution demo prints is true as printed (issue 16, item 4).

The terminal text and the GIF's formula lines are parsed back into Decimals and checked with
exact arithmetic: the sum line ``(a) + (b) + bias = value``, each channel's products
``window * kernel = products`` and its sum.  Numbers that no short decimal says exactly (1/3)
make the equation print ``~`` instead of ``=``; an ``=`` is never false.
"""
from __future__ import annotations

import re
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcnn.viz import convdemo
from numcnn.viz.convdemo.gif import _Painter

NUM = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def check_sum_line(line):
    """``... = (s0) + (s1) + b = v`` (or ``- b``, or ``~ v``): True when it says "=", after
    checking that it holds exactly; False when it says "~"."""
    m = re.search(rf"((?:\({NUM}\)(?: \+ )?)+) ([+-]) ({NUM}) ([=~]) ({NUM})$", line)
    assert m, line
    sums = [Decimal(v) for v in re.findall(rf"\(({NUM})\)", m.group(1))]
    bias = Decimal(m.group(3)) * (1 if m.group(2) == "+" else -1)
    value = Decimal(m.group(5))
    if m.group(4) == "=":
        assert sum(sums) + bias == value, line
        return True
    return False


def check_step_text(text):
    """The whole of one step as printed: the sum line and every channel's matrices."""
    lines = text.splitlines()
    exact = [check_sum_line(lines[0])]
    rows = [ln for ln in lines[3:]]
    kh = len(rows) // max(1, sum(1 for ln in rows if re.match(r"^  \d", ln)))
    for start in range(0, len(rows), kh):
        block = rows[start:start + kh]
        mats = [[re.findall(NUM, grp) for grp in re.findall(r"\[([^\]]*)\]", ln)] for ln in block]
        window, kernel, prods = (np.array([[Decimal(v) for v in r[i]] for r in mats], dtype=object)
                                 for i in range(3))
        mid = block[kh // 2]
        op = re.search(r"\]  ([=~])  \[", mid).group(1)
        total = Decimal(re.findall(NUM, mid.rsplit("]", 1)[1])[-1])
        if op == "=":
            assert np.all(window * kernel == prods), "\n".join(block)
            assert sum(prods.ravel()) == total, "\n".join(block)
        exact.append(op == "=")
    return exact


def decimals(places, lo, hi):
    """Numbers as a user types them: at most ``places`` decimals, in [lo, hi]."""
    scale = 10 ** places
    return st.integers(int(lo * scale), int(hi * scale)).map(lambda k: k / scale)


@st.composite
def user_demos(draw, values):
    h, w = draw(st.integers(3, 8)), draw(st.integers(3, 8))
    kh, kw = draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))
    img = np.array(draw(st.lists(st.integers(0, 255), min_size=h * w, max_size=h * w)),
                   dtype=np.uint8).reshape(h, w)
    kernel = np.array(draw(st.lists(values, min_size=kh * kw, max_size=kh * kw))).reshape(kh, kw)
    bias = draw(values)
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    return convdemo.user_demo_inputs(img, kernel, stride, padding, bias)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_demos(decimals(3, -10, 10)))
def test_every_printed_equation_is_exact_for_typed_kernels_and_biases(args):
    """Pixels 0..255, kernels and biases typed with up to 3 decimals: every equation says "="
    and holds exactly, in the terminal and in the GIF."""
    steps, _ = convdemo.conv_steps(*args)
    painter = _Painter(*args)
    for s in steps:
        assert all(check_step_text(convdemo.format_step(s)))
        gif_line = painter._formula(s)[1].replace("  =  ", " = ").replace("  ~  ", " ~ ")
        assert check_sum_line(gif_line)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_demos(st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)))
def test_an_equals_sign_is_never_false_for_any_float_input(args):
    """Arbitrary floats (1/3-like numbers need rounding): "=" only where the printed numbers
    add up exactly; the rest say "~"."""
    steps, _ = convdemo.conv_steps(*args)
    for s in steps:
        check_step_text(convdemo.format_step(s))


def test_the_issue_example_a_half_bias_on_a_255_square():
    """``--bias 0.5`` on a white square: ``(-255) + 0.5 = -254.5``, not ``-254`` (round half to
    even), and ``(-510) + 0.5 = -509.5``."""
    img = np.zeros((8, 8), np.uint8)
    img[2:6, 2:6] = 255
    args = convdemo.user_demo_inputs(img, convdemo.classic_kernels()["edge"], 1, 0, 0.5)
    steps, out = convdemo.conv_steps(*args)
    lines = [convdemo.format_step(s).splitlines()[0] for s in steps]
    assert "o[0][0,0] = sum(window * w0) + b0 = (-255) + 0.5 = -254.5" in lines
    assert "o[0][0,1] = sum(window * w0) + b0 = (-510) + 0.5 = -509.5" in lines
    assert out[0, 0, 0, 0] == -254.5
    painter = _Painter(*args)
    assert painter._formula(steps[0])[1] == "= (-255) + 0.5  =  -254.5"


def test_a_third_is_printed_approximately_and_says_so():
    steps, _ = convdemo.conv_steps(np.full((1, 1, 3, 3), 1.0), np.full((1, 1, 3, 3), 1 / 3))
    text = convdemo.format_step(steps[0])
    assert text.splitlines()[0].endswith("(3) + 0 = 3")         # 9 x 1/3 sums to 3 exactly
    assert "  ~  [" in text                                      # the products are rounded
    assert check_step_text(text) == [True, False]
