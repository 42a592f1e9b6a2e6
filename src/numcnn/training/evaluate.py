"""``evaluate``: loss, accuracy, top-k, per-class metrics and the confusion matrix of a model."""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError
from ..functional import log_softmax
from ..layers.activation import Softmax
from ..metrics import classification_report
from ..validate import check_xy


def evaluate(model, x, y, batch_size=256, k=5, class_names=None) -> dict:
    """Loss, accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix.

    ``x`` are raw images (uint8, normalised with the model's stored statistics) or prepared floats.
    """
    x, y = check_xy(x, y, "evaluate", model.input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"evaluate: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"evaluate: k (for top-k accuracy) must be a positive integer, got {k!r}")
    gives_probs = isinstance(model.layers[-1], Softmax)       # outputs are probabilities already
    y = y.astype(np.int64)
    probs, loss_sum = [], 0.0
    for start in range(0, len(x), batch_size):
        xb = model.prepare_input(x[start:start + batch_size])
        logits = model.forward(xb, training=False)
        if gives_probs:
            with np.errstate(divide="ignore"):              # log 0 = -inf: the loss says so
                logp = np.log(to_numpy(logits).astype(np.float64))
        else:
            logp = to_numpy(log_softmax(logits, axis=1)).astype(np.float64)
        yb = y[start:start + batch_size]
        if yb.size and (yb.min() < 0 or yb.max() >= logp.shape[1]):
            raise ConfigError(f"evaluate: labels must be in [0, {logp.shape[1] - 1}], got "
                              f"{int(yb.min())}..{int(yb.max())}")
        loss_sum += -logp[np.arange(len(yb)), yb].sum()
        probs.append(np.exp(logp))
    names = class_names or model.classes
    model.check_classes(names, "evaluate:", outputs=logp.shape[1])
    return classification_report(np.concatenate(probs), y, names, k=k, loss=loss_sum / len(x))
