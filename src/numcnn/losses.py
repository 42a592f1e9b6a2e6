"""Loss functions: how far the model is from the right answer (the deck's "Loss Function")."""
from __future__ import annotations

import numbers

from .backend import get_array_module
from .errors import ConfigError, DTypeError, NonFiniteError, ShapeError, StateError
from .functional import cross_entropy_backward, cross_entropy_forward


class CrossEntropy:
    """Softmax + cross-entropy from raw logits, mean over the batch.

    ``forward(logits (N, K), labels (N,) int class ids) -> float`` and ``backward() -> dL/dlogits``
    which is the deck's ``y_hat - y`` divided by N.  ``label_smoothing`` in [0, 1) mixes the
    one-hot target with the uniform distribution, as PyTorch's ``CrossEntropyLoss`` does.
    """

    def __init__(self, label_smoothing=0.0):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
                or not 0.0 <= float(label_smoothing) < 1.0:      # NaN fails the range test too
            raise ConfigError(f"CrossEntropy: label_smoothing must be a number in [0, 1) (0 for "
                              f"plain one-hot targets, 0.1 is usual), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._cache = None

    def config(self):
        return {"label_smoothing": self.label_smoothing}

    def __repr__(self):
        return f"CrossEntropy(label_smoothing={self.label_smoothing})" if self.label_smoothing else "CrossEntropy()"

    def __call__(self, logits, labels):
        return self.forward(logits, labels)

    def forward(self, logits, labels) -> float:
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
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ConfigError(f"CrossEntropy: labels must be in [0, {k - 1}] for {k} classes, got "
                              f"values from {int(labels.min())} to {int(labels.max())}; check the "
                              "dataset's labels against the model's last layer")
        loss, probs, target = cross_entropy_forward(logits, labels, self.label_smoothing)
        loss = float(loss)
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise NonFiniteError(f"CrossEntropy: the loss is {loss}: the logits hold NaN or inf")
        self._cache = (probs, target)
        return loss

    def backward(self):
        if self._cache is None:
            raise StateError("CrossEntropy: backward() was called before forward(logits, labels)")
        probs, target = self._cache
        self._cache = None
        return cross_entropy_backward(probs, target)
