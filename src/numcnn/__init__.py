"""numcnn: convolutional neural networks from scratch on NumPy, every number visible.

    import numcnn
    model = numcnn.models.lenet5()
    loss = numcnn.losses.CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    logits = model.forward(x)            # x: (N, 1, 28, 28) float32
    l = loss.forward(logits, y)          # y: (N,) int class ids
    model.backward(loss.backward())      # dL/dz = y_hat - y, then back through every layer
    opt.step(); opt.zero_grad()          # w <- w - lr * dL/dw
"""
from . import errors, functional, init, layers, losses, models, optim
from .backend import use
from .errors import NumcnnError
from .gradcheck import gradcheck
from .model import Sequential
from . import interop                # registers model.to_onnx / state_dict / load_state_dict
from .interop import from_onnx

__version__ = "0.1.0"


def load(path):
    """Load a model saved with ``model.save(path)`` (a ``.safetensors`` file)."""
    from .io import load_model
    return load_model(path)


def __getattr__(name):
    # data, I/O, training and plots are imported on first use so ``import numcnn`` stays light
    import importlib
    if name in ("datasets", "data", "io", "training", "viz", "metrics"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'numcnn' has no attribute {name!r}")


__all__ = ["Sequential", "load", "from_onnx", "layers", "losses", "optim", "models", "functional", "init",
           "gradcheck", "errors", "NumcnnError", "use"]
