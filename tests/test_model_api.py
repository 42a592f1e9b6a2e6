"""Sequential as Keras and PyTorch users use it: modes, seeds, files, and misuse."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import numcnn
from numcnn import models
from numcnn.errors import ConfigError, DTypeError, ShapeError
from numcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU, Softmax
from numcnn.losses import CrossEntropy
from numcnn.model import Sequential
from numcnn.optim import SGD


def dropout_model(seed_dropouts=False):
    kw = (lambda i: {"rng": i}) if seed_dropouts else (lambda i: {})
    return Sequential([Flatten(), Dense(16, 32, rng=1), ReLU(), Dropout(0.5, **kw(7)),
                       Dense(32, 32, rng=2), ReLU(), Dropout(0.5, **kw(8)), Dense(32, 3, rng=3)],
                      input_shape=(1, 4, 4))


def test_two_unseeded_dropout_layers_draw_different_masks_but_the_same_on_every_build():
    a, b = dropout_model(), dropout_model()
    x = np.ones((4, 32), np.float32)
    m1 = a.layers[3].forward(x) != 0
    m2 = a.layers[6].forward(x) != 0
    assert not np.array_equal(m1, m2)                     # their own seeds
    assert np.array_equal(m1, b.layers[3].forward(x) != 0)   # reproducible build to build
    assert 0.3 < m1.mean() < 0.7


@pytest.mark.parametrize("seeded", [False, True])
def test_saved_and_loaded_model_continues_training_bit_identically(seeded, tmp_path):
    """Weights and the dropout generators' states are in the file."""
    model = dropout_model(seeded)
    r = np.random.default_rng(0)
    x, y = r.random((8, 1, 4, 4), dtype=np.float32), r.integers(0, 3, 8)

    def steps(m, n=3):
        opt, loss, out = SGD(m.parameters(), lr=0.1), CrossEntropy(), []
        for _ in range(n):
            out.append(loss.forward(m.forward(x), y))
            m.backward(loss.backward())
            opt.step()
            opt.zero_grad()
        return out

    steps(model, 2)
    model.save(tmp_path / "m.safetensors")
    loaded = numcnn.load(tmp_path / "m.safetensors")
    assert steps(loaded) == steps(model)


def test_train_and_eval_modes_like_pytorch():
    model = Sequential([Conv2D(1, 2, 3, padding=1, bias=False, rng=0), BatchNorm2D(2), ReLU(),
                        Flatten(), Dropout(0.5), Dense(2 * 4 * 4, 3, rng=1)], input_shape=(1, 4, 4))
    x = np.random.default_rng(1).standard_normal((5, 1, 4, 4)).astype(np.float32)
    assert model.training and model.eval() is model and not model.training
    stats = {k: v.copy() for k, v in model.buffers().items()}
    out1, out2 = model(x), model(x)
    np.testing.assert_array_equal(out1, out2)                        # no dropout
    assert all(np.array_equal(v, model.buffers()[k]) for k, v in stats.items())  # stats untouched
    np.testing.assert_array_equal(out1, model.forward(x, training=False))
    assert model.train() is model and model.training
    model(x)                                                          # training: stats move
    assert not np.array_equal(stats["1.running_mean"], model.buffers()["1.running_mean"])


def test_evaluate_of_a_model_ending_in_softmax_reports_the_cross_entropy():
    plain = Sequential([Flatten(), Dense(16, 3, rng=2)], input_shape=(1, 4, 4))
    soft = Sequential([Flatten(), Dense(16, 3, rng=2), Softmax()], input_shape=(1, 4, 4))
    r = np.random.default_rng(2)
    x, y = r.random((9, 1, 4, 4), dtype=np.float32), np.arange(9) % 3
    z = plain.forward(x, training=False).astype(np.float64)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = -logp[np.arange(9), y].mean()
    assert plain.evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-6)
    assert soft.evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("norm,fragment", [
    (([0.5, 0.5], [0.2, 0.2]), "one value or one per channel (3)"),
    (([0.5], [0.0]), "std > 0"),
    (([np.nan], [1.0]), "finite"),
    (5, "a (mean, std) pair")])
def test_normalization_is_checked_when_set_so_a_saved_model_always_loads(norm, fragment, tmp_path):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Sequential([Flatten(), Dense(12, 2)], input_shape=(3, 2, 2), normalization=norm)
    m = Sequential([Flatten(), Dense(12, 2)], input_shape=(3, 2, 2),
                   normalization=([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]))
    m.save(tmp_path / "m.safetensors")
    mean, std = numcnn.load(tmp_path / "m.safetensors").normalization
    np.testing.assert_allclose(mean, [0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(std, [1, 2, 3], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["garbage", None, "int32", np.float16])
def test_bad_dtypes_are_config_errors(dtype):
    with pytest.raises(ConfigError, match="dtype must be float32 or float64"):
        Dense(2, 2, dtype=dtype)
    with pytest.raises(ConfigError, match="dtype must be float32 or float64"):
        models.digits_cnn().astype(dtype)


@pytest.mark.parametrize("make,fragment", [
    (lambda: Sequential(ReLU()), "pass a list of layers"),
    (lambda: Sequential(None), "pass a list of layers"),
    (lambda: Sequential([Flatten(), Dense(4, 2)], input_shape=5), "input_shape must be"),
    (lambda: Sequential([Flatten(), Dense(4, 2)], input_shape=(1, "a")), "input_shape must be"),
    (lambda: (lambda r: Sequential([r, Flatten(), r]))(ReLU()), "same layer object"),
    (lambda: models.lenet5(image_size=12), r"image_size must be an int >= 16"),
    (lambda: models.mnist_small(image_size="28"), "image_size must be an int >= 4"),
    (lambda: numcnn.training.Trainer(models.digits_cnn(), loss="mse"), "CrossEntropy"),
    (lambda: Conv2D(1, 2, 3, bias="no"), "bias must be True or False, got 'no'"),
    (lambda: Dense(2, 2, bias=None), "bias must be True or False"),
    (lambda: models.digits_cnn().forward(np.zeros((1, 1, 8, 8), np.float32), training="no"),
     "training must be True or False"),
    (lambda: ReLU().forward(np.zeros((1, 2)), layout="NHWC"), "layout must be 'NCHW'"),
    (lambda: models.digits_cnn().train("no"), "mode must be True or False"),
    (lambda: Sequential([Flatten(), Dense(4, 2)], input_shape=(1, 2, 2), classes="ab"),
     "classes must be a list of names"),
    (lambda: Sequential([Flatten(), Dense(4, 2)], classes=range(2)), "not all strings"),
])

def test_construction_misuse_is_a_config_error(make, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make()


def test_running_misuse_is_a_clear_error():
    m = models.digits_cnn()
    x = np.zeros((2, 1, 8, 8), np.float32)
    for call in (m.forward, m.layers[0].forward, m.predict):    # one error for one mistake
        with pytest.raises(DTypeError, match=r"expected a NumPy \(or CuPy\) array, got "
                                             r"torch.Tensor; .* x.numpy\(\)"):
            call(torch.zeros(2, 1, 8, 8))
    m.forward(x)
    with pytest.raises(ShapeError, match="got NoneType"):
        m.backward(None)
    with pytest.raises(ConfigError, match="k .* must be a positive integer"):
        m.evaluate(x, np.array([0, 1]), k="a")
    with pytest.raises(DTypeError, match="t.numpy"):
        m.evaluate(torch.zeros(2, 1, 8, 8), np.array([0, 1]))


def test_backward_can_return_the_input_gradient_and_it_matches_torch():
    """dL/dx of the data (a saliency map) on request; the parameter gradients are the same."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from run import to_torch
    model = models.lenet5(rng=3)
    r = np.random.default_rng(3)
    x, y = r.random((4, 1, 28, 28), dtype=np.float32), r.integers(0, 10, 4)
    loss = CrossEntropy()
    loss.forward(model.forward(x), y)
    assert model.backward(loss.backward()) is None                  # by default: not computed
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    loss.forward(model.forward(x), y)
    dx = model.backward(loss.backward(), input_grad=True)
    tmodel = to_torch(model)
    xt = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.cross_entropy(tmodel(xt), torch.from_numpy(y)).backward()
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-7)
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)
    assert model.layers[0].needs_input_grad is False                 # back to the default


def test_backward_refuses_a_gradient_of_another_dtype():
    model = models.digits_cnn()
    out = model.forward(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DTypeError, match="float64 gradient for a float32 output"):
        model.backward(np.zeros(out.shape))


def test_sequential_takes_any_iterable_of_layers():
    m = Sequential((layer for layer in [Flatten(), Dense(4, 2)]), input_shape=(1, 2, 2))
    assert len(m.layers) == 2


def test_saving_class_names_that_are_not_strings_is_refused_before_writing(tmp_path):
    m = models.digits_cnn()
    m.classes = list(range(10))
    with pytest.raises(ConfigError, match="not all strings"):
        m.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
