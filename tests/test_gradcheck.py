"""numcnn.gradcheck: every layer's backward agrees with central differences, and a wrong backward
is caught."""
from __future__ import annotations

import numpy as np
import pytest

import numcnn
from numcnn.gradcheck import GradcheckReport
from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                           LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)
from numcnn.losses import CrossEntropy

TOL = 1e-6

LAYER_CASES = {
    "Conv2D": (lambda: Conv2D(2, 3, 3), (2, 2, 5, 6)),
    "Conv2D_stride_pad_dilation": (lambda: Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 2),
                                                  dilation=(2, 1)), (2, 2, 7, 6)),
    "Conv2D_no_bias": (lambda: Conv2D(3, 2, 1, bias=False), (2, 3, 4, 4)),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 2, 4, 6)),
    "MaxPool2D_overlapping_padded": (lambda: MaxPool2D(3, stride=1, padding=1), (2, 2, 5, 5)),
    "AvgPool2D": (lambda: AvgPool2D(2), (2, 2, 4, 4)),
    "AvgPool2D_overlapping_padded": (lambda: AvgPool2D((3, 2), stride=(2, 1), padding=1), (2, 2, 5, 4)),
    "ReLU": (ReLU, (3, 2, 3, 3)),
    "LeakyReLU": (lambda: LeakyReLU(0.1), (4, 6)),
    "Sigmoid": (Sigmoid, (4, 6)),
    "Tanh": (Tanh, (4, 6)),
    "Softmax": (Softmax, (4, 6)),
    "Flatten": (Flatten, (2, 3, 2, 2)),
    "Dense": (lambda: Dense(6, 4), (3, 6)),
    "Dense_no_bias": (lambda: Dense(6, 4, bias=False), (3, 6)),
    "Dropout": (lambda: Dropout(0.5, rng=3), (4, 6)),
    "BatchNorm1D": (lambda: BatchNorm1D(4), (6, 4)),
    "BatchNorm2D": (lambda: BatchNorm2D(3), (2, 3, 3, 4)),
}


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_gradcheck_passes_for_every_layer_type(name):
    make, shape = LAYER_CASES[name]
    layer = make()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    report = numcnn.gradcheck(layer, x)
    assert isinstance(report, GradcheckReport)
    assert report.max_rel_error < TOL, str(report)
    assert "input" in report.errors
    for pname in layer.named_parameters():
        assert pname in report.errors
    assert report.checked > 0


@pytest.mark.parametrize("name", ["BatchNorm1D", "BatchNorm2D", "Dropout"])
def test_gradcheck_passes_in_eval_mode(name):
    make, shape = LAYER_CASES[name]
    layer = make()
    if hasattr(layer, "running_mean"):
        layer.running_mean[...] = 0.3
        layer.running_var[...] = 1.7
    x = np.random.default_rng(2).standard_normal(shape)
    report = numcnn.gradcheck(layer, x, training=False)
    assert report.max_rel_error < TOL, str(report)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradcheck_passes_for_dense_with_cross_entropy(smoothing):
    layer = Dense(7, 5, rng=4)
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 7))
    labels = r.integers(0, 5, size=4)
    report = numcnn.gradcheck(layer, x, labels, CrossEntropy(label_smoothing=smoothing))
    assert report.max_rel_error < TOL, str(report)


def _mnist_like_batch(n=2):
    """Random pixels in (0, 1).  Not MNIST's many exact zeros: with LeNet's zero-initialised
    biases a zero patch makes conv outputs exactly 0 (a ReLU kink) and equal values in pooling
    windows (max ties), where the loss is not differentiable and central differences measure a
    one-sided average instead of the gradient."""
    r = np.random.default_rng(11)
    x = r.uniform(0.05, 1.0, size=(n, 1, 28, 28)).astype(np.float32)
    return x, r.integers(0, 10, size=n)


def test_gradcheck_passes_for_whole_lenet5_with_cross_entropy():
    model = numcnn.models.lenet5()
    x, labels = _mnist_like_batch(2)
    # eps 1e-5 rather than the default 1e-6: through eleven layers some gradient entries are
    # ~1e-5, and at eps 1e-6 the central difference's round-off (~|loss| * 1e-16 / eps) alone is
    # a ~1e-5 relative error on them (measured 6e-6..1.2e-5); eps 1e-5 gives ~1e-7.
    report = numcnn.gradcheck(model, x, labels, CrossEntropy(), max_entries=8, eps=1e-5)
    names = set(model.named_parameters())
    assert names <= set(report.errors) and "input" in report.errors
    assert len(names) == 10                                   # 3 conv/dense x (w, b) + 2 more dense
    assert report.max_rel_error < TOL, str(report)


def test_gradcheck_leaves_the_original_model_untouched():
    model = numcnn.models.lenet5()
    before = {k: p.value.copy() for k, p in model.named_parameters().items()}
    x, labels = _mnist_like_batch(2)
    numcnn.gradcheck(model, x, labels, CrossEntropy(), max_entries=2)
    for k, p in model.named_parameters().items():
        assert p.value.dtype == np.float32
        assert np.array_equal(p.value, before[k])
        assert p.grad is None


def test_gradcheck_detects_a_wrong_input_gradient(monkeypatch):
    """A backward that returns dL/dx * 1.01 must show a ~1e-2 relative error for the input."""
    original = Dense.backward

    def wrong_backward(self, grad_out):
        return original(self, grad_out) * 1.01

    monkeypatch.setattr(Dense, "backward", wrong_backward)
    layer = Dense(5, 3)
    x = np.random.default_rng(0).standard_normal((4, 5))
    report = numcnn.gradcheck(layer, x)
    assert report.errors["input"] > 5e-3
    assert report.max_rel_error > 5e-3
    assert not report.ok()
    assert report.errors["weight"] < TOL                      # the weights' grads were right


def test_gradcheck_detects_a_wrong_weight_gradient(monkeypatch):
    original = Conv2D.backward

    def wrong_backward(self, grad_out):
        dx = original(self, grad_out)
        self.weight.grad = self.weight.grad * 1.01
        return dx

    monkeypatch.setattr(Conv2D, "backward", wrong_backward)
    layer = Conv2D(2, 2, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    report = numcnn.gradcheck(layer, x)
    assert report.errors["weight"] > 5e-3
    assert report.errors["input"] < TOL
    assert not report.ok()


def test_gradcheck_detects_a_wrong_gradient_deep_inside_lenet5(monkeypatch):
    """A 2% error in one ReLU's backward shows up in every gradient before it."""
    model = numcnn.models.lenet5()
    relu = model.layers[4]                                    # ReLU after the second conv
    assert isinstance(relu, ReLU)
    original = ReLU.backward

    def wrong_backward(self, grad_out):
        out = original(self, grad_out)
        return out * 1.02 if self.tag == "broken" else out

    monkeypatch.setattr(ReLU, "tag", None, raising=False)
    monkeypatch.setattr(ReLU, "backward", wrong_backward)
    relu.tag = "broken"
    x, labels = _mnist_like_batch(2)
    report = numcnn.gradcheck(model, x, labels, CrossEntropy(), max_entries=6)
    assert report.errors["3.weight"] > 1e-2
    assert report.errors["0.weight"] > 1e-2
    assert report.errors["11.weight"] < TOL                   # after the bug: still right


def test_gradcheck_detects_a_sign_error_in_a_kernel(monkeypatch):
    import numcnn.functional as F
    import numcnn.layers.activation as act

    monkeypatch.setattr(act.Tanh, "_df", staticmethod(lambda g, out: -F.tanh_backward(g, out)))
    report = numcnn.gradcheck(Tanh(), np.random.default_rng(0).standard_normal((3, 4)))
    assert report.max_rel_error > 1.0                         # |a - n| / max(|a|, |n|) = 2


def test_gradcheck_report_str_lists_each_tensor():
    report = numcnn.gradcheck(Dense(3, 2), np.ones((2, 3)))
    text = str(report)
    assert "input" in text and "weight" in text and "bias" in text
    assert report.ok() and report.ok(tol=1.0)
