"""Adapter for the PyPI package ``convnet`` (a peer NumPy/SciPy CNN library), used by run.py.

Everything here is optional: run.py imports this module only inside a guard, and every
function fails softly when ``convnet`` is not installed (``available()`` is False).

What convnet offers (read from its source, version 2.5.3):

* ``convnet.Model([layers])``; ``model.build((None, H, W, C))`` creates the parameters;
  ``model.forward(x, training)`` / ``model.backward(grad)``; ``model.compile(loss, optimizer,
  lr=..., momentum=...)`` sets ``model.loss`` and ``model.optimizer``; one training step is
  what ``Model.fit`` does per batch: forward, ``loss.forward``, ``loss.backward``,
  ``model.backward``, ``optimizer.step(model._params_and_grads())``.
* Tensors are NHWC.  ``Conv2D(filters, (kh, kw), stride, padding='same'|'valid', use_bias,
  use_fft)`` with ``params['W']`` of shape (kh, kw, C, filters); ``Dense(units)`` with
  ``params['W']`` (in, out); ``Flatten`` flattens (H, W, C) per sample; ``MaxPool2D((k, k),
  stride)``; ``Activation('relu')``.  No arbitrary padding and no dilation.
* ``SGD(lr, momentum)``: v = momentum*v - lr*g; w += v, i.e. PyTorch's momentum SGD for a
  constant learning rate.

Its Conv2D forward has three paths.  For 3x3/5x5 stride-1 kernels it prefers (1) a per-sample,
per-filter, per-channel ``cv2.filter2D`` loop, then (2) a per-channel ``scipy.signal.oaconvolve``
loop, and only then (3) im2col + GEMM.  Paths (1) and (2) flip the kernel (a true convolution,
and (1) also shifts the output by the padding), while the backward pass always computes the
gradients of path (3)'s cross-correlation, so only path (3) gives the same network as numcnn and
PyTorch and correct gradients.  The benchmark therefore runs convnet with
``jax_backend.USE_OPENCV = False`` and ``Conv2D(use_fft=False)`` and checks, every run, that its
logits match numcnn's for the same weights (``run.py`` reports the check, and how far the default
path is off).
"""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("NN_DISABLE_AUTO_THREADS", "1")   # convnet's import would rewrite *_NUM_THREADS

try:
    import convnet                          # noqa: E402
    from convnet import jax_backend as _backend  # noqa: E402
except Exception as exc:                    # not installed, or a dependency (cv2, h5py) missing
    convnet = None
    _backend = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    IMPORT_ERROR = None


class NotExpressible(Exception):
    """convnet has no way to express this layer (the message says why)."""


def available() -> bool:
    return convnet is not None


def version() -> str:
    return getattr(convnet, "__version__", "?") if convnet is not None else "not installed"


def configure(threads: int, opencv_path: bool = False):
    """Thread counts for convnet's helpers, and its conv path (im2col+GEMM unless opencv_path)."""
    _backend.USE_OPENCV = bool(opencv_path and _backend.OPENCV_AVAILABLE)
    try:
        import numexpr
        numexpr.set_num_threads(threads)
    except Exception:
        pass
    try:
        import cv2
        cv2.setNumThreads(threads)
    except Exception:
        pass


def describe() -> str:
    if convnet is None:
        return f"not installed ({IMPORT_ERROR})"
    extra = []
    if _backend is not None:
        extra.append(f"backend {_backend.get_device_name()}")
        extra.append("conv path im2col+GEMM (OpenCV/FFT forward paths disabled)")
        try:
            import numexpr
            extra.append(f"numexpr {numexpr.__version__} ({numexpr.get_num_threads()} threads)")
        except Exception:
            pass
    return f"convnet {version()}, " + ", ".join(extra)


def _same_padding(k, p, s, d):
    return s == (1, 1) and d == (1, 1) and all(kk % 2 == 1 and pp == (kk - 1) // 2 for kk, pp in zip(k, p))


def build(model, input_shape, use_fft=False):
    """A convnet.Model with the same layers and weights as numcnn ``model`` (input (C, H, W)).

    Raises NotExpressible naming the first piece convnet can't express.
    """
    from numcnn import layers as L
    if convnet is None:
        raise NotExpressible("convnet not installed")
    out, todo = [], []          # todo: (convnet layer, numcnn layer, numcnn input shape)
    shapes = model.shapes(input_shape)
    in_shapes = [tuple(input_shape)] + [s for _, s in shapes[:-1]]
    for (layer, _), shape in zip(shapes, in_shapes):
        if isinstance(layer, L.Conv2D):
            k, p, s, d = layer.kernel_size, layer.padding, layer.stride, layer.dilation
            if d != (1, 1):
                raise NotExpressible(f"dilation {d}")
            if s[0] != s[1]:
                raise NotExpressible(f"stride {s}")
            if p == (0, 0):
                pad = "valid"
            elif _same_padding(k, p, s, d):
                pad = "same"
            else:
                raise NotExpressible(f"padding {p} (only 'same'/'valid')")
            c = convnet.Conv2D(layer.out_channels, tuple(k), stride=s[0], padding=pad,
                               use_bias=layer.bias is not None, use_fft=use_fft)
        elif isinstance(layer, L.ReLU):
            c = convnet.Activation("relu")
        elif isinstance(layer, L.MaxPool2D):
            if layer.padding != (0, 0) or layer.kernel_size[0] != layer.kernel_size[1] \
                    or layer.stride[0] != layer.stride[1]:
                raise NotExpressible(f"{layer!r}")
            c = convnet.MaxPool2D(tuple(layer.kernel_size), stride=layer.stride[0])
        elif isinstance(layer, L.Flatten):
            c = convnet.Flatten()
        elif isinstance(layer, L.Dense):
            c = convnet.Dense(layer.out_features, use_bias=layer.bias is not None)
        else:
            raise NotExpressible(f"no {type(layer).__name__} layer")
        out.append(c)
        todo.append((c, layer, shape))
    cm = convnet.Model(out)
    c, h, w = input_shape
    cm.build((None, h, w, c))
    flat_from = None            # (C, H, W) entering the last Flatten
    for c_layer, layer, shape in todo:
        if isinstance(layer, L.Flatten):
            flat_from = shape if len(shape) == 3 else None
            continue
        if isinstance(layer, L.Conv2D):       # (O, C, kh, kw) -> (kh, kw, C, O)
            c_layer.params["W"] = np.ascontiguousarray(layer.weight.value.transpose(2, 3, 1, 0))
        elif isinstance(layer, L.Dense):      # (out, in) -> (in, out); after Flatten the input
            wt = layer.weight.value           # order is (H, W, C) in convnet, (C, H, W) in numcnn
            if flat_from is not None:
                cc, hh, ww = flat_from
                wt = wt.reshape(-1, cc, hh, ww).transpose(0, 2, 3, 1).reshape(wt.shape[0], -1)
                flat_from = None
            c_layer.params["W"] = np.ascontiguousarray(wt.T)
        else:
            continue
        if layer.bias is not None:
            c_layer.params["b"] = layer.bias.value.copy()
    cm.compile("categorical_crossentropy", "sgd", lr=0.01, momentum=0.9)
    return cm


def to_nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def train_step(cm, x_nhwc, y):
    """What convnet's Model.fit does for one batch (integer labels, no one-hot needed)."""
    logits = cm.forward(x_nhwc, training=True)
    loss = cm.loss.forward(logits, y)
    cm.backward(cm.loss.backward())
    cm.optimizer.step(cm._params_and_grads())
    return loss


def infer(cm, x_nhwc):
    return cm.forward(x_nhwc, training=False)


def default_path_error(model, input_shape, x, ref_logits):
    """max |logits - ref| with convnet's default conv paths (OpenCV filter2D / FFT) switched on."""
    if not _backend.OPENCV_AVAILABLE:   # its FFT path would take minutes per layer
        return None
    old = _backend.USE_OPENCV
    try:
        _backend.USE_OPENCV = _backend.OPENCV_AVAILABLE
        cm = build(model, input_shape, use_fft=True)
        return float(np.abs(np.asarray(cm.forward(to_nhwc(x), training=False)) - ref_logits).max())
    finally:
        _backend.USE_OPENCV = old


def maxpool_backward_error():
    """max |dx - reference| of convnet's MaxPool2D((2, 2)) backward on a small random batch.

    Its fast path caches x.reshape(N, H/2, 2, W/2, 2, C) and reads it back as
    (N, H/2, W/2, 4, C), so gradients can land on pixels that were not the window's maximum.
    """
    from numcnn.functional import max_pool2d_backward, max_pool2d_forward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    pool = convnet.MaxPool2D((2, 2))
    pool.build((None, 4, 4, 3))
    y = pool.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = pool.backward(g)
    _, cache = max_pool2d_forward(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), (2, 2), (2, 2), (0, 0))
    ref = max_pool2d_backward(np.ascontiguousarray(g.transpose(0, 3, 1, 2)), cache)
    return float(np.abs(ref.transpose(0, 2, 3, 1) - dx).max())
