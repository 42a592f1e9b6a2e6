"""Loss functions: how far the model is from the right answer (the deck's "Loss Function")."""
from __future__ import annotations

import numbers

import numpy as np

from .backend import get_array_module, to_numpy
from .errors import ConfigError, DTypeError, NonFiniteError, ShapeError, StateError
from .functional import (cross_entropy_backward, cross_entropy_forward,
                         cross_entropy_general_backward, cross_entropy_general_forward)


class CrossEntropy:
    """Softmax + cross-entropy from raw logits (PyTorch's ``CrossEntropyLoss``).

    ``forward(logits (N, K), labels (N,) int class ids)`` returns the loss: a float for
    ``reduction="mean"`` (the default) or ``"sum"``, an (N,) array of per-sample losses for
    ``"none"``.  ``backward(grad=None)`` returns dL/dlogits, the deck's ``y_hat - y`` (divided
    by N for the plain mean); for ``"none"`` pass dL/d(losses) as ``grad`` (default: ones).

    Args (PyTorch's definitions, see :func:`numcnn.functional.cross_entropy_general_forward`):
        label_smoothing: in [0, 1): mixes the one-hot target with the uniform distribution.
        weight: K class weights (a sequence or array), or None.  With weights the mean is the
            weighted mean, sum_i w[y_i] l_i / sum_i w[y_i], as in PyTorch.
        ignore_index: a label value whose samples add nothing to the loss or the mean's
            denominator (PyTorch's default is -100; here None, nothing ignored).  A batch with
            every sample ignored gives loss 0 and zero gradients (PyTorch gives nan).
        reduction: "mean", "sum" or "none".
    """

    def __init__(self, label_smoothing=0.0, weight=None, ignore_index=None, reduction="mean"):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
                or not 0.0 <= float(label_smoothing) < 1.0:      # NaN fails the range test too
            raise ConfigError(f"CrossEntropy: label_smoothing must be a number in [0, 1) (0 for "
                              f"plain one-hot targets, 0.1 is usual), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        if weight is not None:
            try:
                w = np.asarray(to_numpy(weight) if hasattr(weight, "dtype") else weight,
                               dtype=np.float64)
            except (TypeError, ValueError):
                w = None
            if w is None or w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() \
                    or (w < 0).any():
                raise ConfigError(f"CrossEntropy: weight must be a 1-D sequence of K finite, "
                                  f"non-negative class weights, got {weight!r}")
            weight = w
        self.weight = weight
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, numbers.Integral)):
            raise ConfigError(f"CrossEntropy: ignore_index must be an int label value (PyTorch "
                              f"uses -100) or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"CrossEntropy: reduction must be 'mean', 'sum' or 'none', got "
                              f"{reduction!r}")
        self.reduction = reduction
        self._cache = None

    @property
    def _plain(self):
        """The original fused kernel covers this case (and stays its fast path)."""
        return self.weight is None and self.ignore_index is None and self.reduction == "mean"

    def config(self):
        cfg = {"label_smoothing": self.label_smoothing}
        if self.weight is not None:
            cfg["weight"] = [float(v) for v in self.weight]
        if self.ignore_index is not None:
            cfg["ignore_index"] = self.ignore_index
        if self.reduction != "mean":
            cfg["reduction"] = self.reduction
        return cfg

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if not (k == "label_smoothing" and v == 0.0))
        return f"CrossEntropy({args})"

    def __call__(self, logits, labels):
        return self.forward(logits, labels)

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        if getattr(logits, "ndim", None) != 2:
            raise ShapeError(f"CrossEntropy: logits must be (N, classes), got shape "
                             f"{getattr(logits, 'shape', type(logits).__name__)}")
        labels = xp.asarray(labels)
        if labels.shape != (logits.shape[0],):
            raise ShapeError(f"CrossEntropy: labels must be shape ({logits.shape[0]},) of class "
                             f"ids to match logits {tuple(logits.shape)}, got {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            if labels.dtype.kind == "f" and bool(xp.all(labels == xp.round(labels))):
                labels = labels.astype(xp.int64)
            else:
                raise DTypeError(f"CrossEntropy: labels must be integer class ids, got dtype {labels.dtype}")
        if logits.shape[0] == 0:
            raise ShapeError("CrossEntropy: got an empty batch (0 logits); pass at least one sample")
        k = logits.shape[1]
        keep = None if self.ignore_index is None else labels != self.ignore_index
        checked = labels if keep is None else labels[keep]
        if checked.size and (int(checked.min()) < 0 or int(checked.max()) >= k):
            ignored = "" if self.ignore_index is None else f" (or the ignore_index {self.ignore_index})"
            raise ConfigError(f"CrossEntropy: labels must be in [0, {k - 1}] for {k} classes"
                              f"{ignored}, got values from {int(checked.min())} to "
                              f"{int(checked.max())}; check the dataset's labels against the "
                              "model's last layer")
        if self.weight is not None and self.weight.size != k:
            raise ShapeError(f"CrossEntropy: weight has {self.weight.size} class weights but the "
                             f"logits have {k} classes; give one weight per class")
        if self._plain:
            loss, probs, target = cross_entropy_forward(logits, labels, self.label_smoothing)
            self._cache = ("plain", probs, target)
        else:
            weight = None if self.weight is None else xp.asarray(self.weight.astype(logits.dtype))
            loss, cache = cross_entropy_general_forward(logits, labels, self.label_smoothing,
                                                        weight, keep, self.reduction)
            self._cache = ("general", cache)
        if self.reduction == "none":
            if not bool(xp.isfinite(loss).all()):
                raise NonFiniteError("CrossEntropy: some losses are not finite: the logits hold "
                                     "NaN or inf")
            return loss
        loss = float(loss)
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise NonFiniteError(f"CrossEntropy: the loss is {loss}: the logits hold NaN or inf")
        return loss

    def backward(self, grad=None):
        """dL/dlogits; ``grad`` is dL/d(loss): None (1), a number, or for ``reduction="none"``
        an (N,) array."""
        if self._cache is None:
            raise StateError("CrossEntropy: backward() was called before forward(logits, labels)")
        cache, self._cache = self._cache, None
        if cache[0] == "plain":
            d = cross_entropy_backward(cache[1], cache[2])
            return d if grad is None else d * d.dtype.type(float(grad))
        logp = cache[1][0]
        if grad is not None and self.reduction == "none":
            if tuple(getattr(grad, "shape", ())) != (logp.shape[0],):
                raise ShapeError(f"CrossEntropy(reduction='none'): backward needs dL/d(losses) "
                                 f"of shape ({logp.shape[0]},), got "
                                 f"{getattr(grad, 'shape', type(grad).__name__)}")
        elif grad is not None:
            grad = float(grad)
        return cross_entropy_general_backward(cache[1], grad)
