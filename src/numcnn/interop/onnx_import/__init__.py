"""ONNX -> numcnn: a table from ``op_type`` to builder (tinygrad's ``extra/onnx.py`` layout).

``from_onnx(path)`` walks the graph in its (topological) order.  Every value it meets is one of

* **data**: what a chain of numcnn layers makes of the graph's input (``_Data``: those layers
  and one sample's shape);
* **constant**: an initializer, a ``Constant`` node's tensor, or what shape arithmetic makes of
  them (numpy arrays);
* **shape**: a shape vector that holds the dynamic batch size ``N`` (``Shape`` -> ``Gather`` ->
  ``Unsqueeze`` -> ``Concat``, as ``torch.onnx.export`` writes ``x.view(x.size(0), -1)``).

A builder checks its node's attributes (an attribute it does not know is *unsupported*, never
ignored), and appends a layer to its data input's chain.  A node whose inputs are all constants
is folded with numpy (``FOLDERS``).  Where two chains meet again (``Add``, ``Concat``) their
common prefix is the fork and the rest become a ``Residual`` or ``Concat`` block.  Activations
opset 17 writes as small subgraphs (SiLU, GELU) are matched as ``PATTERNS`` before the walk.
Everything unsupported is collected (operator, attribute, node name) and reported at once; no
model is returned then.

Hostile files: the file size is checked before it is read, every tensor's declared size before
its bytes are touched (numcnn decodes tensors itself, not ``numpy_helper.to_array``), the
number of nodes and initializers is capped, and external-data files must lie inside the model's
folder.  Weights are stored as float32 (float16/float64 graphs are widened/narrowed).

The package, one idea a file (each imports only those above it in this list):

* :mod:`.reader`: the limits, :class:`OnnxImportError`, reading the protobuf and decoding
  tensors (sizes checked first, external data kept inside the model's folder);
* :mod:`.nodes`: what a builder reads from a node (the values ``_Data``, ``_Shape``; attributes)
  and the registry (``BUILDERS``, ``builds``);
* :mod:`.folding`: shape arithmetic (``Constant``, ``Shape``, ``Gather``...) and constant
  folding (``FOLDERS``);
* :mod:`.weighted`: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization;
* :mod:`.builders`: pools, activations, Resize, Softmax, Dropout, Identity;
* :mod:`.structure`: Add and Concat (residual and concatenated branches, a bias added after
  MatMul/Conv), Flatten, Reshape, and the Slice/Pad shortcut;
* :mod:`.patterns`: SiLU and GELU written as subgraphs (``PATTERNS``, ``SYNTHETIC``);
* :mod:`.walk`: ``_Importer``, the walk, which is every builder's ``ctx``;
* here: :func:`from_onnx` and the metadata numcnn stores (classes, normalization).
"""
from __future__ import annotations

import json

from ...errors import ModelFileError, NumcnnError
from ...files import as_path
from ...validate import check_bool
from . import builders, folding, patterns, structure, weighted
from .folding import FOLDERS, MAX_FOLDED
from .nodes import BUILDERS, builds
from .patterns import PATTERNS, SYNTHETIC
from .reader import (MAX_FILE_BYTES, MAX_INITIALIZERS, MAX_NODES, MAX_RANK, MIN_OPSET,
                     OnnxImportError, _load_proto, _short)
from .walk import _Importer

#: the modules whose builders fill BUILDERS when they are imported (all of them before from_onnx)
_BUILDER_MODULES = (builders, folding, patterns, structure, weighted)

__all__ = ["from_onnx", "OnnxImportError", "MAX_FILE_BYTES", "MAX_NODES", "MAX_INITIALIZERS",
           "MAX_RANK", "MIN_OPSET", "MAX_FOLDED", "BUILDERS", "builds", "PATTERNS", "SYNTHETIC",
           "FOLDERS"]


def _metadata(proto, path, model):
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        classes = json.loads(meta["classes"]) if "classes" in meta else None
        norm = json.loads(meta["normalization"]) if "normalization" in meta else None
    except (ValueError, RecursionError):
        raise ModelFileError(f"{path}: metadata 'classes'/'normalization' is not valid JSON") from None
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ModelFileError(f"{path}: metadata 'classes' must be a JSON list of names")
        model.check_classes(classes, f"{path}: metadata stores", error=ModelFileError)
        model.classes = classes
    if norm is not None and meta.get("input_scaling", "none") == "none":
        try:
            model.normalization = (norm["mean"], norm["std"])
        except (KeyError, TypeError, NumcnnError):
            raise ModelFileError(f"{path}: bad 'normalization' metadata {_short(norm)}") from None


def from_onnx(path, fuse_bn=False, input_shape=None):
    """A :class:`numcnn.Sequential` whose eval-mode ``forward`` computes what the ONNX graph does.

    Args:
        path: an ``.onnx`` file (external-data files must lie in its folder).
        fuse_bn: fold each BatchNormalization that directly follows a Conv into that Conv's
            weights and bias (one layer instead of two; equal up to float rounding).
        input_shape: one sample's shape ``(C, H, W)``, for graphs whose input size is dynamic.

    Raises :class:`OnnxImportError` listing every unsupported operator, attribute and node, and
    :class:`numcnn.errors.ModelFileError` for damaged or hostile files.  The ``classes`` and
    ``normalization`` in numcnn's ``metadata_props`` are restored.
    """
    from ...model import Sequential
    fuse_bn = check_bool(fuse_bn, "fuse_bn", "from_onnx")
    path = as_path(path, "from_onnx")
    # the limits are read from this package now, so that setting them here takes effect
    proto = _load_proto(path, max_bytes=MAX_FILE_BYTES)
    imp = _Importer(proto, path, fuse_bn, input_shape, max_nodes=MAX_NODES,
                    max_initializers=MAX_INITIALIZERS)
    result = imp.run()
    if not result.layers:
        raise OnnxImportError(f"{path}: the graph returns its input unchanged; there is no layer "
                              "to import")
    model = Sequential(list(result.layers), input_shape=imp.input_shape)
    _metadata(proto, path, model)
    return model.eval()
