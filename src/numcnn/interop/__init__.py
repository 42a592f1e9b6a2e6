"""Models in and out of numcnn: ONNX export/import and PyTorch weights (safetensors).

* ``model.to_onnx(path, normalize=False)`` (:mod:`.onnx_export`)
* ``numcnn.from_onnx(path, fuse_bn=False)`` (:mod:`.onnx_import`)
* ``model.state_dict()`` / ``model.load_state_dict(mapping, strict=True, name_map=None)`` and
  :func:`load_torch_weights` (:mod:`.state_dict`)

Importing this package does not import ``onnx``: that happens on first use (``pip install
"numcnn[onnx]"``).  See docs/onnx.md.
"""
from ..model import register_entry_point
from .onnx_export import to_onnx
from .onnx_import import OnnxImportError, from_onnx
from .state_dict import StateDictError, load_state_dict, load_torch_weights, state_dict

register_entry_point("to_onnx", to_onnx)
register_entry_point("state_dict", state_dict)
register_entry_point("load_state_dict", load_state_dict)

__all__ = ["to_onnx", "from_onnx", "state_dict", "load_state_dict", "load_torch_weights",
           "StateDictError", "OnnxImportError"]
