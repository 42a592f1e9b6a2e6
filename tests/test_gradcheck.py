"""numcnn.gradcheck: every layer's backward agrees with central differences, and a wrong backward
is caught."""
from __future__ import annotations

import numpy as np
import pytest

import numcnn
from numcnn.errors import ConfigError, StateError
from numcnn.gradcheck import MAX_ENTRIES, NOISE_ULPS, GradcheckReport
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


# -- entries whose true gradient is 0, and mistakes that must still show ---------------------------
def _bn_model(seed, pool=False):
    """Conv -> BatchNorm -> ReLU (-> MaxPool) -> Flatten -> Dense with a loss: batch norm subtracts
    each channel's mean, so the conv bias's true gradient is exactly 0 and its central
    differences are pure round-off (~1e-10)."""
    layers = [Conv2D(2, 3, 3, rng=seed), BatchNorm2D(3), ReLU()]
    layers += [MaxPool2D(2), Flatten(), Dense(12, 4, rng=seed)] if pool else [Flatten(), Dense(27, 4, rng=seed)]
    r = np.random.default_rng(seed)
    x = r.standard_normal((4, 2, 6, 6) if pool else (4, 2, 5, 5))
    return numcnn.Sequential(layers), x, r.integers(0, 4, size=4)


@pytest.mark.parametrize("pool", [False, True], ids=["plain", "pool"])
@pytest.mark.parametrize("seed", range(6))
def test_gradcheck_passes_when_batch_norm_makes_the_conv_bias_gradient_zero(seed, pool):
    model, x, labels = _bn_model(seed, pool)
    model.astype(np.float64)
    loss = CrossEntropy()
    loss.forward(model.forward(x), labels)
    model.backward(loss.backward())
    assert np.abs(model.layers[0].bias.grad).max() < 1e-12          # the premise: true gradient 0
    report = numcnn.gradcheck(model, x, labels, CrossEntropy())
    assert report.ok(), str(report)                                # was 2e-2..9e-2 on "0.bias"
    assert report.errors["0.bias"] < TOL
    assert 0 < report.atol < 1e-6


def _scale_conv_dx(monkeypatch):          # a 0.1% error in dL/dx
    original = Conv2D.backward
    monkeypatch.setattr(Conv2D, "backward", lambda self, g: original(self, g) * 1.001)
    return {"input": 5e-4}


def _zero_dense_bias_grad(monkeypatch):
    original = Dense.backward

    def backward(self, g):
        dx = original(self, g)
        self.bias.grad = np.zeros_like(self.bias.grad)
        return dx

    monkeypatch.setattr(Dense, "backward", backward)
    return {"5.bias": 0.99}


def _relu_without_mask(monkeypatch):
    monkeypatch.setattr(ReLU, "_df", staticmethod(lambda g, out: g))
    return {"input": 1e-2, "0.weight": 1e-2, "1.weight": 1e-2}


def _half_max_pool_backward(monkeypatch):
    import numcnn.functional as F
    monkeypatch.setattr(MaxPool2D, "_backward",
                        staticmethod(lambda g, cache: 0.5 * F.max_pool2d_backward(g, cache)))
    return {"input": 0.49, "0.weight": 0.49, "1.weight": 0.49, "1.bias": 0.49}


@pytest.mark.parametrize("break_it", [_scale_conv_dx, _zero_dense_bias_grad, _relu_without_mask,
                                      _half_max_pool_backward])
@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_round_off_allowance_still_catches_real_mistakes(monkeypatch, break_it, seed):
    """The same model as above, which passes: each broken backward shows in the named tensors."""
    model, x, labels = _bn_model(seed, pool=True)
    expected = break_it(monkeypatch)
    report = numcnn.gradcheck(model, x, labels, CrossEntropy())
    assert not report.ok(), str(report)
    for name, least in expected.items():
        assert report.errors[name] > least, str(report)
    assert report.errors["5.weight"] < TOL                           # after every bug: still right


def test_gradcheck_round_off_allowance_follows_the_documented_rule():
    layer = Dense(7, 5, rng=4)
    r = np.random.default_rng(3)
    x, labels = r.standard_normal((4, 7)), r.integers(0, 5, size=4)
    report = numcnn.gradcheck(layer, x, labels, CrossEntropy(), eps=1e-5)
    logits = x @ layer.weight.value.astype(np.float64).T + layer.bias.value
    scale = max(CrossEntropy().forward(logits, labels), np.abs(logits).max())
    assert report.atol == pytest.approx(NOISE_ULPS * np.finfo(np.float64).eps * scale / 1e-5, rel=1e-9)
    # layer mode: S = sum |y * G| with G the first draw of the seeded generator
    report = numcnn.gradcheck(layer, x, rng=7)
    g = np.random.default_rng(7).standard_normal((4, 5))
    s = np.abs(logits * g).sum()
    assert report.atol == pytest.approx(NOISE_ULPS * np.finfo(np.float64).eps * s / 1e-6, rel=1e-9)


# -- every entry of small tensors -------------------------------------------------------------------
class _OneWrongEntryConv2D(Conv2D):
    """A conv whose backward gets exactly one of its 72 weight-gradient entries 5% wrong."""

    def backward(self, grad_out):
        dx = super().backward(grad_out)
        self.weight.grad = self.weight.grad.copy()
        self.weight.grad[1, 0, 2, 1] *= 1.05
        return dx


@pytest.mark.parametrize("seed", range(10))
def test_gradcheck_catches_one_wrong_entry_of_a_small_weight_gradient_for_every_seed(seed):
    layer = _OneWrongEntryConv2D(2, 4, 3, rng=seed)
    assert layer.weight.value.size == 72
    x = np.random.default_rng(seed).standard_normal((2, 2, 5, 5))
    report = numcnn.gradcheck(layer, x, rng=seed)        # was caught for 4 seeds in 10
    assert report.errors["weight"] == pytest.approx(0.05 / 1.05, rel=1e-3)
    assert report.errors["input"] < TOL and report.errors["bias"] < TOL
    assert not report.ok()


def test_gradcheck_checks_small_tensors_in_full_and_samples_every_large_one():
    layer = Dense(30, 20)                           # weight: 600 entries, more than MAX_ENTRIES
    x = np.random.default_rng(0).standard_normal((3, 30))
    report = numcnn.gradcheck(layer, x)
    assert MAX_ENTRIES == 256
    assert report.checked == 90 + 256 + 20          # input and bias in full, weight sampled
    assert set(report.errors) == {"input", "weight", "bias"} and report.ok()
    report = numcnn.gradcheck(layer, x, max_entries=5)
    assert report.checked == 15 and set(report.errors) == {"input", "weight", "bias"}


# -- misuse ------------------------------------------------------------------------------------------
class _DenseWithoutBiasGrad(Dense):
    """A broken backward that never fills the bias's gradient."""

    def backward(self, grad_out):
        dx = super().backward(grad_out)
        self.bias.grad = None
        return dx


def test_gradcheck_names_the_parameter_a_backward_left_without_gradient():
    model = numcnn.Sequential([Dense(3, 4), ReLU(), _DenseWithoutBiasGrad(4, 2)])
    with pytest.raises(StateError, match=r"parameter '2\.bias'.*None after backward"):
        numcnn.gradcheck(model, np.ones((2, 3)))
    with pytest.raises(StateError, match="parameter 'bias'"):
        numcnn.gradcheck(_DenseWithoutBiasGrad(3, 2), np.ones((2, 3)))


@pytest.mark.parametrize("model,x,kw,message", [
    ("x", np.ones((2, 3)), {}, "model must be a numcnn layer.*got str"),
    (None, np.ones((2, 3)), {}, "model must be a numcnn layer.*got NoneType"),
    (Dense(3, 2), "abc", {}, "x must be an input batch of numbers, got str"),
    (Dense(3, 2), np.ones((2, 3)), {"eps": 0}, "eps must be a positive finite number, got 0"),
    (Dense(3, 2), np.ones((2, 3)), {"eps": "1e-6"}, "eps must be a positive finite number"),
    (Dense(3, 2), np.ones((2, 3)), {"eps": float("nan")}, "eps must be a positive finite number"),
    (Dense(3, 2), np.ones((2, 3)), {"max_entries": 0}, "max_entries must be an int >= 1.*got 0"),
    (Dense(3, 2), np.ones((2, 3)), {"max_entries": 2.5}, "max_entries must be an int >= 1"),
    (Dense(3, 2), np.ones((2, 3)), {"floor": -1.0}, "floor must be a positive finite number"),
    (Dense(3, 2), np.ones((2, 3)), {"labels": [0, 1]}, "pass both labels and loss.*got only labels"),
    (Dense(3, 2), np.ones((2, 3)), {"loss": CrossEntropy()}, "got only loss"),
    (Dense(3, 2), np.ones((2, 3)), {"labels": [0, 1], "loss": "ce"}, "loss must be a numcnn loss"),
])
def test_gradcheck_refuses_bad_arguments_with_config_error(model, x, kw, message):
    with pytest.raises(ConfigError, match=message):
        numcnn.gradcheck(model, x, **kw)


def test_gradcheck_refuses_to_check_nothing():
    with pytest.raises(ConfigError, match="nothing to check.*ReLU.*check_input=False"):
        numcnn.gradcheck(ReLU(), np.ones((2, 3)), check_input=False)


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:                                            # noqa: BLE001 - any CUDA failure
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.cupy
@pytest.mark.parametrize("seed", range(2))
def test_gradcheck_on_cupy_perturbs_each_entry_both_ways(seed):
    """CuPy's flat[i] is a 0-d view: kept as the "old" value it moved with the +eps step and the
    -eps step landed on the unperturbed weight, halving every central difference (errors 0.5)."""
    cupy = _cupy_or_skip()
    model, x, labels = _bn_model(seed, pool=True)
    model.to("gpu")
    report = numcnn.gradcheck(model, cupy.asarray(x), labels, CrossEntropy())
    assert report.ok(), str(report)
    assert report.checked == 256 + 54 + 3 + 6 + 48 + 4           # the 288 inputs sampled
    layer = _OneWrongEntryConv2D(2, 4, 3, rng=seed).to(cupy)
    report = numcnn.gradcheck(layer, cupy.asarray(np.random.default_rng(seed).standard_normal((2, 2, 5, 5))))
    assert report.errors["weight"] == pytest.approx(0.05 / 1.05, rel=1e-3) and report.errors["input"] < TOL
