"""The optional ``onnx`` package, imported only when ONNX is used, and the choices shared by
export and import."""
from __future__ import annotations

from ..errors import ConfigError

#: operator set written by :func:`numcnn.interop.onnx_export.to_onnx`: 17 (ONNX 1.12, 2022) has
#: every operator numcnn needs, and every onnxruntime since 1.12 (also onnxruntime-web) runs it
OPSET = 17
#: IR version 8 is the one that belongs to opset 17 (onnx.helper.VERSION_TABLE); newer runtimes
#: read older IR versions, while a newer IR would shut out older runtimes for no gain
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"


def require_onnx():
    """The ``onnx`` module, or a ConfigError saying how to install it."""
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401 - submodules used by the callers
    except ImportError:
        raise ConfigError('ONNX export and import need the onnx package: pip install '
                          '"numcnn[onnx]" (or pip install onnx)') from None
    return onnx


def numcnn_version():
    """numcnn's version, from the installed package's metadata (no import of numcnn itself)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("numcnn")
    except (ImportError, PackageNotFoundError):       # pragma: no cover - a source checkout
        return "unknown"
