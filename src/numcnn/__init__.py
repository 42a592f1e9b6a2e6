"""numcnn: convolutional neural networks from scratch on NumPy, every number visible.

    import numcnn
    model = numcnn.models.lenet5()
    loss = numcnn.losses.CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    logits = model.forward(x)            # x: (N, 1, 28, 28) float32
    l = loss.forward(logits, y)          # y: (N,) int class ids
    model.backward(loss.backward())      # dL/dz = y_hat - y, then back through every layer
    opt.step(); opt.zero_grad()          # w <- w - lr * dL/dw

The floors, and the direction of calls, are drawn in ``docs/architecture.md``.
"""
from . import errors, functional, init, layers, losses, models, optim
# the floors above the model register model.fit / model.evaluate / model.save when imported
from . import io, training  # noqa: E402  (order: the model first, then what it calls up to)
from ._version import __version__  # noqa: F401
from .architecture import load_architecture
from .backend import use
from .errors import NumcnnError
from .gradcheck import gradcheck
from .io import load_model as load
from .model import Sequential
from .parallel import get_num_threads, set_num_threads
from . import interop  # noqa: E402  registers model.to_onnx / state_dict / load_state_dict
from .interop import from_onnx



def __getattr__(name):
    # data sets and plots are imported on first use so ``import numcnn`` stays light
    import importlib
    if name in ("datasets", "data", "viz", "metrics", "architecture"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'numcnn' has no attribute {name!r}")


__all__ = ["Sequential", "load", "from_onnx", "load_architecture", "layers", "losses", "optim",
           "models", "functional", "init", "gradcheck", "errors", "NumcnnError", "use", "io",
           "training", "interop", "set_num_threads", "get_num_threads"]
