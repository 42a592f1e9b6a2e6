"""Constructor arguments of the loss: a bad value is a ConfigError naming the argument and the
accepted range, never a raw TypeError/ValueError from float()."""
from __future__ import annotations

import numpy as np
import pytest

from numcnn.errors import ConfigError
from numcnn.losses import CrossEntropy


@pytest.mark.parametrize("value", ["x", None, "0.1", True, float("nan"), float("inf"), -0.1, 1.0,
                                   [0.1], np.array([0.1, 0.2])],
                         ids=["str", "None", "numeric-str", "bool", "nan", "inf", "negative", "one",
                              "list", "array"])
def test_cross_entropy_bad_label_smoothing_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"CrossEntropy: label_smoothing must be a number in "
                                          r"\[0, 1\) .*got "):
        CrossEntropy(value)


@pytest.mark.parametrize("value", [0, 0.25, np.float32(0.25), np.float64(0.25)],
                         ids=["int", "float", "float32", "float64"])
def test_cross_entropy_label_smoothing_takes_any_real_number_type(value):
    loss = CrossEntropy(label_smoothing=value)
    assert type(loss.label_smoothing) is float and loss.label_smoothing == float(value)
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = np.array([0, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    eps = float(value)
    target = (1 - eps) * np.eye(3)[labels] + eps / 3          # PyTorch's smoothed target
    assert loss.forward(logits, labels) == pytest.approx(-(target * logp).sum(axis=1).mean(), rel=1e-12)
