"""The error function erf, element-wise on NumPy or CuPy arrays (for the exact GELU).

NumPy has no erf and SciPy is not a dependency, so here is the classic one from fdlibm
(Sun Microsystems' ``s_erf.c``, 1993; the same coefficients serve FreeBSD's libm, musl and Go's
``math.Erf``), accurate to under one ulp in float64.  It splits |x| into four ranges, each with
its own rational (Pade-type) approximation:

* |x| < 0.84375:        erf(x) = x + x * R(x^2) / S(x^2)
* 0.84375 <= |x| < 1.25: erf(x) = erx + P(s) / Q(s), s = |x| - 1, erx = erf(1) rounded to 32 bits
* 1.25 <= |x| < 6:       erf(x) = 1 - exp(-z^2 - 0.5625 + (z - x)(z + x) + R(1/x^2)/S(1/x^2)) / x,
                         two sets of coefficients split at |x| = 1/0.35; z is x with the low 32
                         bits of its mantissa cleared, so z^2 is exact and exp(-x^2) keeps its
                         accuracy (the "pseudo-single precision" trick)
* |x| >= 6:              erf(x) = 1 (to float64 precision)
and erf(-x) = -erf(x).  Every range is evaluated for the whole array and the right one picked
per element: no Python loop over elements.  Float32 input is computed in float64 and rounded.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module

_ERX = 8.45062911510467529297e-01
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _poly(coeffs, t):
    """c0 + c1 t + c2 t^2 + ... by Horner's rule."""
    acc = get_array_module(t).full_like(t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * t + c
    return acc


def erf(x):
    """erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, element-wise, in ``x``'s dtype."""
    xp = get_array_module(x)
    a = xp.abs(x.astype(np.float64))
    # range 1: |x| < 0.84375 (each range is evaluated on its own clipped copy, so the other
    # elements, inf included, stay finite there)
    a1 = xp.minimum(a, 0.84375)
    z = a1 * a1
    small = a1 + a1 * (_poly(_PP, z) / _poly(_QQ, z))
    # range 2: 0.84375 <= |x| < 1.25
    s = xp.clip(a, 0.84375, 1.25) - 1.0
    mid = _ERX + _poly(_PA, s) / _poly(_QA, s)
    # range 3: 1.25 <= |x| < 6 (clipped so the other elements stay finite)
    b = xp.clip(a, 1.25, 6.0)
    t = 1.0 / (b * b)
    ratio = xp.where(b < 1 / 0.35, _poly(_RA, t) / _poly(_SA, t), _poly(_RB, t) / _poly(_SB, t))
    zb = (b.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)
    large = 1.0 - xp.exp(-zb * zb - 0.5625) * xp.exp((zb - b) * (zb + b) + ratio) / b
    out = xp.where(a < 0.84375, small, xp.where(a < 1.25, mid, xp.where(a < 6.0, large, 1.0)))
    out = xp.where(xp.isnan(a), a, out)
    return xp.copysign(out, x.astype(np.float64)).astype(x.dtype)
