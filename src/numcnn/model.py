"""Sequential: layers chained one after another, and ``summary``."""
from __future__ import annotations

import warnings

import numpy as np

from .backend import current, get_array_module, keep_freed_memory, module, to_numpy
from .errors import ConfigError, DTypeError, InputRangeWarning, NumcnnError, ShapeError, StateError
from .functional import softmax
from .layers.activation import Softmax
from .layers.base import Layer, layer_from_config, layer_to_config
from .layers.container import check_distinct, seed_dropout
from .validate import check_array, check_bool, check_dtype, check_finite

#: ``model.fit``, ``model.evaluate``, ``model.save``... belong to floors above the model (the
#: trainer, the file format, ONNX; numcnn.parallel's "parallel_forward"/"parallel_backward" run
#: a batch in shards on a thread pool).  Those floors register their function here when imported
#: (``import numcnn`` imports them all), so the model calls up without importing up: no cycle.
_ENTRY_POINTS: dict = {}


def register_entry_point(name, fn):
    """Make ``Sequential.<name>(...)`` call ``fn(model, ...)`` (used by numcnn's upper floors)."""
    _ENTRY_POINTS[name] = fn


def _entry_point(name):
    fn = _ENTRY_POINTS.get(name)
    if fn is None:
        raise StateError(f"model.{name} is provided by a part of numcnn that is not loaded; "
                         "import numcnn (the package) rather than numcnn.model alone")
    return fn


def _check_input_shape(input_shape):
    """``input_shape`` as a tuple of positive ints (one sample's shape), or None."""
    if input_shape is None:
        return None
    try:
        shape = tuple(input_shape)
        ok = all(not isinstance(d, bool) and isinstance(d, (int, np.integer)) and d >= 1 for d in shape)
    except TypeError:
        ok = False
    if not ok or not shape:
        raise ConfigError(f"Sequential: input_shape must be one sample's shape as positive ints, "
                          f"e.g. (1, 28, 28), got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _check_normalization(value, input_shape):
    """``(mean, std)``: finite, std > 0, one value or one per channel."""
    try:
        mean, std = value
        mean = np.asarray(to_numpy(mean), dtype=np.float32).ravel()
        std = np.asarray(to_numpy(std), dtype=np.float32).ravel()
    except (TypeError, ValueError):
        raise ConfigError(f"normalization must be a (mean, std) pair of per-channel numbers, got "
                          f"{value!r}") from None
    channels = input_shape[0] if input_shape else None
    if mean.shape != std.shape or mean.size not in ({1, channels} - {None}) \
            or not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ConfigError(f"normalization must be (mean, std) with one value or one per channel"
                          f"{f' ({channels})' if channels else ''}, finite, std > 0; got "
                          f"mean {mean.tolist()}, std {std.tolist()}")
    return mean, std


class Sequential:
    """A model that applies ``layers`` in order.

    ``forward(x)`` runs them front to back (training unless :meth:`eval` was called, or as
    ``training=`` says) and ``backward(grad)`` back to front,
    each layer turning dL/d(its output) into dL/d(its input) and filling its parameters' grads.

    Args:
        layers: a list of :class:`numcnn.layers.Layer`.
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``; used by ``summary`` and checked
            (with every layer's output shape) when given.
        normalization: optional ``(mean, std)`` per-channel arrays applied by :meth:`predict` to
            raw (uint8) images, stored in model files.
        classes: optional class names, stored in model files.
        device: ``"cpu"`` or ``"gpu"`` (CuPy); default: the backend chosen with
            :func:`numcnn.use` (NumPy unless asked otherwise).
    """

    #: layout of 4-D tensors between layers: "CNHW" (channels first: the convolution GEMM's
    #: natural output, so no transposed copies between layers) or "NCHW".  Inputs, outputs and
    #: gradients at the model's boundary are always (N, C, H, W).
    internal_layout = "CNHW"

    def __init__(self, layers, input_shape=None, normalization=None, classes=None, device=None):
        try:
            if isinstance(layers, (Layer, str, bytes)):
                raise TypeError
            layers = list(layers)                       # a list, tuple, generator...
        except TypeError:
            raise ConfigError(f"Sequential: pass a list of layers, e.g. Sequential([Conv2D(...), "
                              f"ReLU()]), got {type(layers).__name__}") from None
        seen = set()                                    # ids: one pass, not N^2 comparisons
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"Sequential: item {i} is {type(layer).__name__}, not a numcnn layer")
            if id(layer) in seen:
                raise ConfigError(f"Sequential: item {i} ({layer!r}) is the same layer object as an "
                                  "earlier item; each position needs its own layer (build a new "
                                  "one; weights are not shared)")
            seen.add(id(layer))
        if not layers:
            raise ConfigError("Sequential: needs at least one layer")
        self.layers = layers
        self.training = True                 # model.train() / model.eval(), as in PyTorch
        self.input_shape = _check_input_shape(input_shape)
        self.normalization = normalization
        if isinstance(classes, (str, bytes)):
            raise ConfigError(f"Sequential: classes must be a list of names, got the string "
                              f"{classes!r}")
        self.classes = list(classes) if classes is not None else None
        check_distinct(layers, "Sequential")     # nested positions too (Residual, Concat)
        for i, layer in enumerate(layers):       # Dropout() without a seed: its own, also nested
            seed_dropout(layer, (i,))
        #: what the model was trained on (see numcnn.data.provenance), stored in model files
        self.training_data = None
        self._range_warned = False           # InputRangeWarning: once per model
        for layer in layers[1:]:
            layer.check_finite = False       # the model's input is checked once, at the front
        first = next((l for l in layers if hasattr(l, "needs_input_grad")), None)
        if first is not None and first is layers[0]:
            first.needs_input_grad = False   # nobody needs dL/dx of the data
        if self.input_shape is not None:
            self.shapes()                    # validates that the layers fit together
        self.check_classes(self.classes, "Sequential: got")
        if device is not None:
            self.to(device)
        elif current() is not np:            # numcnn.use("cupy") puts new models on the GPU
            self.to("gpu")

    # -- normalisation statistics, checked when set (a model file must load back) ---------------
    @property
    def normalization(self):
        """``(mean, std)`` per channel for raw uint8 images (see :meth:`prepare_input`), or None."""
        return self._normalization

    @normalization.setter
    def normalization(self, value):
        self._normalization = None if value is None else _check_normalization(value, self.input_shape)

    # -- running --------------------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (the default): dropout drops, batch norm uses and updates batch
        statistics.  Returns the model, as PyTorch's ``train()`` does."""
        self.training = check_bool(mode, "mode", "Sequential.train")
        return self

    def eval(self):
        """Evaluation mode: dropout off, batch norm uses its running statistics."""
        return self.train(False)

    def forward(self, x, training=None):
        """Run every layer; ``x`` is (N, C, H, W) (or (N, features)), the output likewise.

        ``training``: True or False for this call; None (default) follows :meth:`train` /
        :meth:`eval` (training unless ``model.eval()`` was called).
        """
        training = self.training if training is None else check_bool(training, "training",
                                                                       "Sequential.forward")
        check_array(x, "Sequential.forward")
        keep_freed_memory()                        # reuse freed blocks (set once): numcnn.backend
        if not self._range_warned and isinstance(x, np.ndarray):
            self._check_input_scale(x, "forward")
        self._numcnn_shards = None
        if "parallel_forward" in _ENTRY_POINTS:    # every core: numcnn.parallel.threads
            out = _ENTRY_POINTS["parallel_forward"](self, x, training)
            if out is not None:
                return out
        return self._forward_here(x, training)

    def _forward_here(self, x, training):
        """Every layer in turn on this thread (the checks done): what :meth:`forward` runs when
        the thread pool does not take the batch (each shard's replica runs it too)."""
        cnhw = self.internal_layout == "CNHW" and getattr(x, "ndim", 0) == 4
        layout = "CNHW" if cnhw else "NCHW"
        if cnhw:
            x = x.transpose(1, 0, 2, 3)            # a view: the first layer copies it anyway
        for layer in self.layers:
            x = layer.forward(x, training=training, layout=layout)
        self._in_cnhw = cnhw
        self._out_cnhw = cnhw and x.ndim == 4
        return x.transpose(1, 0, 2, 3) if self._out_cnhw else x

    __call__ = forward

    def backward(self, grad, input_grad=False):
        """Back through every layer in reverse, filling every parameter's ``grad``.

        Returns dL/dx, the gradient with respect to the model's input, when ``input_grad`` is
        True (e.g. a saliency map: which pixels the loss is most sensitive to).  Otherwise a
        first Conv2D or Dense layer skips computing it (nobody trains the data) and the result
        is None; a model starting with another layer returns dL/dx either way.
        """
        if not hasattr(grad, "shape") or not hasattr(grad, "dtype"):
            raise ShapeError(f"Sequential.backward: expected dL/d(output) as an array shaped like "
                             f"the forward output, got {type(grad).__name__}")
        if getattr(self, "_numcnn_shards", None) is not None:     # the forward ran in shards
            return _ENTRY_POINTS["parallel_backward"](self, grad, input_grad)
        return self._backward_here(grad, input_grad)

    def _backward_here(self, grad, input_grad=False):
        """Back through every layer on this thread (see :meth:`_forward_here`)."""
        first = self.layers[0]
        if input_grad and hasattr(first, "needs_input_grad"):
            first.needs_input_grad = True
            try:
                return self._backward_here(grad)
            finally:
                first.needs_input_grad = False
        if getattr(self, "_out_cnhw", False):
            grad = grad.transpose(1, 0, 2, 3)
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        if getattr(self, "_in_cnhw", False) and grad is not None and grad.ndim == 4:
            grad = get_array_module(grad).ascontiguousarray(grad.transpose(1, 0, 2, 3))
        return grad

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self) -> dict:
        return {f"{i}.{n}": p for i, layer in enumerate(self.layers)
                for n, p in layer.named_parameters().items()}

    def buffers(self) -> dict:
        return {f"{i}.{n}": b for i, layer in enumerate(self.layers) for n, b in layer.buffers().items()}

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype):
        """Cast every parameter and buffer to float32 or float64 (gradient checks use float64).
        An optimizer made before this keeps its state in the old dtype: make a new one."""
        dtype = check_dtype(dtype, "Sequential.astype")
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def to(self, device):
        """Move to ``"cpu"`` (NumPy) or ``"gpu"``/``"cuda"`` (CuPy)."""
        if device in ("cpu", "numpy"):
            xp = np
        elif device in ("gpu", "cuda", "cupy"):
            xp = module("cupy")              # the default backend stays what numcnn.use() chose
        else:
            raise ConfigError(f"unknown device {device!r}; use 'cpu' or 'gpu'")
        for layer in self.layers:
            layer.to(xp)
        return self

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].value.dtype if params else np.dtype(np.float32)

    @property
    def xp(self):
        params = self.parameters()
        return get_array_module(params[0].value) if params else np

    def prepare_input(self, x):
        """Raw images -> the float array the first layer expects, on the model's device.

        uint8 images are scaled to [0, 1] and normalised with the stored ``(mean, std)``.  Float
        input is taken as already prepared: it is only cast to the model's dtype (no copy when it
        has it already; float16 is widened, float64 narrowed for a float32 model).  Other
        integer dtypes, bool and non-numeric input are refused.
        """
        xp = self.xp
        if not hasattr(x, "dtype"):
            x = np.asarray(x)
        check_array(x, "predict")
        dt = self.dtype
        if x.dtype.kind in "ui":
            if x.dtype != np.uint8:
                raise DTypeError(f"predict: integer input of dtype {x.dtype} is ambiguous; pass uint8 "
                                 "images (0..255) or floats already scaled")
            x = xp.asarray(x).astype(dt) / dt.type(255)
        elif x.dtype.kind == "f":
            if not self._range_warned and isinstance(x, np.ndarray):
                self._check_input_scale(x, "predict")
            with np.errstate(over="ignore"):        # too-large values become inf: refused next
                return xp.asarray(x).astype(dt, copy=False)     # floats are taken as prepared
        else:
            raise DTypeError(f"predict: expected image arrays of uint8 or float, got dtype {x.dtype}")
        return self._normalize(x)

    def expected_input_range(self):
        """``(low, high)`` of prepared input (what :meth:`forward` should get), from the stored
        normalisation and the training data's raw value range; None when not known."""
        rec = self.training_data if isinstance(self.training_data, dict) else {}
        lo, hi = rec.get("value_range") or ((0, 255) if self.normalization is not None else (None, None))
        if lo is None:
            return None
        if self.normalization is None:             # trained on floats taken as prepared
            return (float(lo), float(hi)) if rec.get("dtype", "").startswith("float") else None
        mean, std = (np.asarray(v, dtype=np.float64) for v in self.normalization)
        a, b = (lo / 255.0 - mean) / std, (hi / 255.0 - mean) / std
        return float(a.min()), float(b.max())

    def _check_input_scale(self, x, where):
        """Warn (once per model) when float input clearly is not on the prepared scale, e.g.
        ``x / 255`` into a model whose training normalised by mean/std (its spread is a third
        of what the model saw), or raw 0..255 floats (a hundred times too wide)."""
        if x.dtype.kind != "f" or x.size == 0:
            return
        expected = self.expected_input_range()
        if expected is None:
            return
        a, b = expected
        width = b - a
        sample = x.reshape(-1)[:: max(1, x.size // 65536)]     # a cheap look, not every pixel
        with np.errstate(invalid="ignore"):
            lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
        span = hi - lo
        if not (width > 0 and np.isfinite(span) and span > 0):
            return
        if 0.35 * width <= span <= 3 * width and hi >= a + 0.25 * width and lo <= b - 0.25 * width:
            return
        self._range_warned = True
        warnings.warn(InputRangeWarning(
            f"{where}: the float input runs from {lo:.3g} to {hi:.3g}, but this model expects "
            f"prepared input from about {a:.3g} to {b:.3g} (its training images scaled by 1/255 "
            "and normalised with the stored mean/std). Pass raw uint8 images to predict/evaluate, "
            "or model.prepare_input(raw_images) to forward; results on this input are unreliable "
            "(said once per model)"), stacklevel=3)

    def _normalize(self, x):
        if self.normalization is None:
            return x
        mean, std = self.normalization
        xp = get_array_module(x)
        mean = xp.asarray(mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        std = xp.asarray(std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def predict(self, x, batch_size=256):
        """Class probabilities ``(N, classes)`` (NumPy) for a batch of images, in evaluation mode.

        Accepts raw uint8 images (normalised with the stored statistics) or float arrays that are
        already prepared.  Works through ``x`` in batches so memory stays bounded.
        """
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"predict: the model takes images of shape {self.input_shape} "
                             f"(C, H, W) but got a batch of shape {tuple(x.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"predict: batch_size must be a positive integer, got {batch_size!r}")
        if len(x) == 0:
            raise ShapeError("predict: got an empty batch")
        outs = []
        ends_in_softmax = isinstance(self.layers[-1], Softmax)
        for start in range(0, len(x), batch_size):
            xb = self.prepare_input(x[start:start + batch_size])
            check_finite(xb, "predict")
            out = self.forward(xb, training=False)
            outs.append(to_numpy(out if ends_in_softmax else softmax(out, axis=1)))
        return np.concatenate(outs)

    def num_outputs(self):
        """How many classes the model scores (its output width), when its input shape says so;
        None when it has no input shape or does not end in ``(N, K)``."""
        try:
            out = self.shapes()[-1][1] if self.input_shape else None
        except NumcnnError:
            return None
        return int(out[0]) if out is not None and len(out) == 1 else None

    def check_classes(self, classes, what, error=ConfigError,
                      advice="give one name per output", outputs=None):
        """``classes`` (names, or None) must name each of the model's outputs exactly once;
        ``what`` starts the message, e.g. ``"Sequential: got"``; ``outputs``: the output width
        when known (else :meth:`num_outputs`)."""
        if classes is not None and (isinstance(classes, (str, bytes)) or not all(
                isinstance(c, str) for c in classes)):
            raise error(f"{what} class names that are not all strings ({list(classes)[:5]!r}...); "
                        "give names such as ['cat', 'dog'] (str(i) for numbered classes)")
        k = self.num_outputs() if outputs is None else outputs
        if classes is not None and k is not None and len(classes) != k:
            raise error(f"{what} {len(classes)} class names for a model with {k} outputs; {advice}")

    def predict_classes(self, x, batch_size=256):
        return self.predict(x, batch_size).argmax(axis=1)

    # -- description -----------------------------------------------------------------------------
    def config(self) -> dict:
        return {"layers": [layer_to_config(l) for l in self.layers],
                "input_shape": list(self.input_shape) if self.input_shape else None}

    @classmethod
    def from_config(cls, config: dict, **kw):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ConfigError("a model description needs a 'layers' list")
        return cls([layer_from_config(s) for s in config["layers"]],
                   input_shape=config.get("input_shape"), **kw)

    def shapes(self, input_shape=None):
        """[(layer, output_shape)] for one sample; raises ShapeError where layers don't fit."""
        shape = tuple(input_shape or self.input_shape or ())
        if not shape:
            raise ConfigError("summary needs an input shape: Sequential(..., input_shape=(C, H, W))")
        out = []
        for i, layer in enumerate(self.layers):
            expected = getattr(layer, "in_channels", None) or getattr(layer, "in_features", None) \
                or getattr(layer, "num_features", None)
            if expected is not None and shape[0] != expected:
                raise ShapeError(f"layer {i} {layer!r} expects {expected} input channels/features but "
                                 f"the previous layer gives shape {shape}")
            try:
                shape = tuple(layer.output_shape(shape))
            except NumcnnError:
                raise
            except (ValueError, TypeError, IndexError) as exc:   # e.g. a 2-D shape into Conv2D
                raise ShapeError(f"layer {i} {layer!r} cannot take an input of shape {shape} "
                                 f"({exc}); give one sample's shape as the layer expects, e.g. "
                                 "(C, H, W) for convolutions") from None
            if min(shape) < 1:
                raise ShapeError(f"layer {i} {layer!r} would output shape {shape}: the input is too "
                                 "small for this architecture")
            out.append((layer, shape))
        return out

    def summary(self, input_shape=None) -> str:
        """A table of layers with output shapes, parameter counts and FLOPs per sample."""
        shape = tuple(input_shape or self.input_shape or ())
        rows = [("#", "layer", "output shape", "params", "FLOPs")]
        total_p = total_f = 0
        prev = shape
        for i, (layer, out_shape) in enumerate(self.shapes(shape)):
            n_p = sum(int(np.prod(p.shape)) for p in layer.parameters())
            fl = layer.flops(prev)
            total_p += n_p
            total_f += fl
            rows.append((str(i), repr(layer), "x".join(map(str, out_shape)), f"{n_p:,}", _human(fl)))
            for name, inner, in_shape, inner_out, depth in getattr(layer, "walk", _no_walk)(prev, f"{i}."):
                # the layers inside a block, indented (counted once, in the block's row)
                rows.append((name, "  " * depth + repr(inner), "x".join(map(str, inner_out)),
                             f"{sum(int(np.prod(p.shape)) for p in inner.parameters()):,}",
                             _human(inner.flops(in_shape))))
            prev = out_shape
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        line = "  ".join("-" * w for w in widths)
        fmt = lambda r: "  ".join(r[c].ljust(widths[c]) if c < 3 else r[c].rjust(widths[c]) for c in range(5))
        text = [f"input: {'x'.join(map(str, shape))}", fmt(rows[0]), line] + [fmt(r) for r in rows[1:]]
        text += [line, f"total: {total_p:,} parameters, {_human(total_f)} FLOPs per image (forward)"]
        return Summary("\n".join(text))

    def _repr_html_(self):
        """A model shown in a notebook: a table of its layers (with output shapes and parameter
        counts when the input shape is known)."""
        import html
        try:
            shapes = [s for _, s in self.shapes()] if self.input_shape else None
        except NumcnnError:
            shapes = None
        head = "<tr><th>#</th><th>layer</th>" + ("<th>output shape</th>" if shapes else "") + \
            "<th>parameters</th></tr>"
        rows, total = [], 0
        for i, layer in enumerate(self.layers):
            n = sum(int(np.prod(p.shape)) for p in layer.parameters())
            total += n
            shape = f"<td>{'x'.join(map(str, shapes[i]))}</td>" if shapes else ""
            rows.append(f"<tr><td>{i}</td><td><code>{html.escape(repr(layer))}</code></td>{shape}"
                        f"<td style='text-align:right'>{n:,}</td></tr>")
        inp = f" on {'x'.join(map(str, self.input_shape))} inputs" if self.input_shape else ""
        classes = f"; classes: {html.escape(', '.join(self.classes[:12]))}" \
            f"{' ...' if len(self.classes) > 12 else ''}" if self.classes else ""
        return (f"<p><b>Sequential</b>: {len(self.layers)} layers{inp}, {total:,} parameters"
                f"{classes}</p><table>{head}{''.join(rows)}</table>")

    def __repr__(self):
        inner = ",\n".join(f"  {l!r}" for l in self.layers)
        return f"Sequential([\n{inner}\n])"

    # -- entry points wired by the floors above (see register_entry_point) ---------------------
    def fit(self, train, val=None, resume=None, **kw):
        """Train on ``train = (x, y)`` (or a DataLoader); see :class:`numcnn.training.Trainer`."""
        return _entry_point("fit")(self, train, val, resume=resume, **kw)

    def evaluate(self, x, y, batch_size=256, k=5):
        """Accuracy, top-k, per-class metrics and confusion matrix (see :mod:`numcnn.metrics`)."""
        return _entry_point("evaluate")(self, x, y, batch_size=batch_size, k=k)

    def save(self, path, **kw):
        """Write this model to a ``.safetensors`` file (see :mod:`numcnn.io`)."""
        _entry_point("save")(self, path, **kw)

    def to_onnx(self, path, **kw):
        """Write an ONNX graph computing this model's eval-mode forward (numcnn.interop)."""
        return _entry_point("to_onnx")(self, path, **kw)

    def state_dict(self):
        """``{name: array}`` in PyTorch ``nn.Sequential`` naming (numcnn.interop)."""
        return _entry_point("state_dict")(self)

    def load_state_dict(self, mapping, strict=True, name_map=None):
        """Load PyTorch-named weights (see numcnn.interop.state_dict)."""
        return _entry_point("load_state_dict")(self, mapping, strict=strict, name_map=name_map)


def _no_walk(shape, prefix):
    return ()


class Summary(str):
    """:meth:`Sequential.summary`'s table: a ``str`` (print it) that a notebook shows as the
    table itself, not as a quoted string full of ``\\n``."""

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        import html
        return f"<pre>{html.escape(str(self))}</pre>"


def _human(n):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
