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
