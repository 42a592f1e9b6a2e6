"""Small helpers shared by the kernels: argument normalisation and output-size arithmetic."""
from __future__ import annotations

from ..errors import ConfigError


def pair(value, name: str) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``; refuses anything that is not one or two ints."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        value = (int(value), int(value))
    try:
        a, b = value
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return a, b


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """``H' = 1 + (H + 2p - d(k - 1) - 1) // s`` (CS231n's ``1 + (H + 2p - k) / s`` when d = 1)."""
    return 1 + (size + 2 * padding - dilation * (kernel - 1) - 1) // stride


def pads4(padding):
    """``(ph, pw)`` or ``((top, bottom), (left, right))`` -> ``((top, bottom), (left, right))``."""
    a, b = padding
    if isinstance(a, (tuple, list)):
        return (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
    return (int(a), int(a)), (int(b), int(b))


def split_pads(padding):
    """Split a padding into the symmetric part ``(ph, pw)`` the kernels' fast paths take and the
    rest, ``((top, bottom), (left, right))`` padded explicitly beforehand (None when none)."""
    (t, b), (l, r) = pads4(padding)
    ph, pw = min(t, b), min(l, r)
    extra = ((t - ph, b - ph), (l - pw, r - pw))
    return (ph, pw), (None if extra == ((0, 0), (0, 0)) else extra)


def pool_output_size(size, kernel, stride, pad_start, pad_end, dilation=1, ceil_mode=False):
    """PyTorch's pooling output size: ``1 + (H + p0 + p1 - d(k - 1) - 1) / s``, rounded down, or
    up with ``ceil_mode`` as long as the last window still starts inside the input or the
    leading padding (``(H' - 1) s < H + p0``), else one fewer."""
    span = size + pad_start + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_start:
        out -= 1
    return out
