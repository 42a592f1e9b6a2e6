"""Numerical faults and API misuse: each gives a clear numcnn error, and nothing is lost.

* a run whose loss becomes NaN/inf stops with :class:`TrainingDiverged` naming the epoch, the
  step and the learning rate, and the last good checkpoint stays byte-for-byte intact and loads;
* NaN/inf inputs are refused at the boundary (``predict``, a layer's ``forward``, ``fit``,
  ``evaluate``) as bad *data*, not blamed on the learning rate;
* dtypes: float16/float64 images are converted exactly (same answers as float32), integer images
  other than uint8, bools, complex and objects are refused - never silently wrong;
* misuse: backward before forward, step without gradients, resuming with another architecture /
  optimizer / batch size / seed / dtype / data, labels out of range, empty data, batch size 0,
  wrong input shapes, epochs=0 - each a NumcnnError subclass, and a refused call changes nothing.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import numcnn

from numcnn import datasets
from numcnn.data.loader import DataLoader, compute_normalization
from numcnn.errors import (ConfigError, DTypeError, ModelFileError, NonFiniteError, NumcnnError,
                           ShapeError, StateError)
from numcnn.io import load_checkpoint, load_model
from numcnn.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU)
from numcnn.losses import CrossEntropy
from numcnn.model import Sequential
from numcnn.optim import SGD, Adam, AdamW
from numcnn.training import Trainer, TrainingDiverged, evaluate

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import reliability_stats as stats  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _dump_stats():
    yield
    stats.dump("test_misuse")


def expect(category, exc_type, fn, *args, contains=(), **kw):
    """Call ``fn``; it must raise ``exc_type`` (a NumcnnError subclass) whose message holds every
    string of ``contains``; returns the exception."""
    assert issubclass(exc_type, NumcnnError)
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert len(msg) >= 20, msg
    for part in contains:
        assert part in msg, f"{part!r} not in {msg!r}"
    stats.record(category, type(info.value).__name__)
    return info.value


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = datasets.load("digits")
    return x[:96], y[:96], xt[:64], yt[:64]


def small_model(dtype="float32", width=4, classes=10):
    return Sequential([Conv2D(1, width, 3, padding=1, rng=0, dtype=dtype), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(width * 16, classes, rng=1, dtype=dtype)],
                      input_shape=(1, 8, 8))


def params_of(model):
    return [p.value.copy() for p in model.parameters()]


def same_params(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# =============================================================================== numerical faults
def test_diverging_run_stops_naming_epoch_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    x, y, xt, yt = digits
    out = tmp_path / "run"
    Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=2, batch_size=32, out_dir=str(out),
            progress=False).fit((x, y), (xt, yt))
    ck, best = out / "checkpoint.safetensors", out / "best.safetensors"
    before = {p: sha(p) for p in (ck, best)}
    os.remove(out / "model.safetensors")
    # the same run continued with an absurd learning rate: the weights blow up in epoch 3
    hot = Trainer(small_model(), optimizer="sgd", lr=1e9, epochs=6, batch_size=32,
                  out_dir=str(out), progress=False)
    exc = expect("divergence", TrainingDiverged, hot.fit, (x, y), (xt, yt), resume=str(ck),
                 contains=("training diverged at epoch 3, step ", "learning rate (1e+09)",
                           "too high", "last good checkpoint", str(ck)))
    assert isinstance(exc, NonFiniteError)
    # nothing lost: the checkpoint and best model are byte-identical, load, and are finite
    assert {p: sha(p) for p in (ck, best)} == before
    model, _, info = load_checkpoint(ck)
    assert info["epoch"] == 2 and info["batch"] == 0
    assert all(np.all(np.isfinite(p.value)) for p in model.parameters())
    assert all(np.all(np.isfinite(p.value)) for p in load_model(best).parameters())
    assert not (out / "model.safetensors").exists()        # no final model from a diverged run
    # and resuming from it at a sane rate works
    hist = Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=3, batch_size=32,
                   out_dir=str(out), progress=False).fit((x, y), (xt, yt), resume=str(ck))
    assert hist["epoch"] == [1, 2, 3] and np.isfinite(hist["train_loss"][-1])


def test_divergence_without_a_checkpoint_still_names_epoch_step_and_lr(digits):
    x, y, _, _ = digits
    expect("divergence", TrainingDiverged,
           Trainer(small_model(), optimizer="sgd", lr=1e12, epochs=3, batch_size=32,
                   progress=False).fit, (x, y),
           contains=("training diverged at epoch 1, step ", "learning rate (1e+12)"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs_are_refused_at_every_boundary(tmp_path, digits, bad):
    x, y, xt, yt = digits
    xf = (x / 16).astype(np.float32)
    xf[5, 0, 3, 4] = bad
    m = small_model()
    expect("non-finite-input", NonFiniteError, m.predict, xf, contains=("predict", "NaN/inf"))
    expect("non-finite-input", NonFiniteError, m.forward, xf, contains=("Conv2D", "NaN/inf"))
    expect("non-finite-input", NonFiniteError, Dense(3, 2).forward,
           np.array([[1, bad, 2]], np.float32), contains=("Dense(3, 2)", "NaN/inf"))
    expect("non-finite-input", NonFiniteError, evaluate, m, xf, y, contains=("image 5",))
    # fit: refused as bad data before any step, with or without stored normalisation
    for norm in (None, (np.zeros(1, np.float32), np.ones(1, np.float32))):
        m = small_model()
        m.normalization = norm
        before = params_of(m)
        out = tmp_path / f"fit-{norm is None}"
        exc = expect("non-finite-input", NonFiniteError,
                     Trainer(m, epochs=1, out_dir=str(out), progress=False).fit, (xf, y),
                     contains=("image 5",))
        assert not isinstance(exc, TrainingDiverged) and "learning rate" not in str(exc)
        assert same_params(before, params_of(m)) and not out.exists()
    # validation data too, before the first epoch trains
    m = small_model()
    before = params_of(m)
    expect("non-finite-input", NonFiniteError, Trainer(m, epochs=1, progress=False).fit,
           (x, y), (np.where(np.arange(64)[:, None, None, None] == 7, bad, xt / 16.0), yt),
           contains=("validation", "image 7"))
    assert same_params(before, params_of(m))


def test_float64_that_overflows_float32_is_refused_not_fed_as_inf(digits):
    m = small_model()
    expect("non-finite-input", NonFiniteError, m.predict, np.full((2, 1, 8, 8), 1e300))


def test_predict_converts_float16_and_float64_exactly(digits):
    x = digits[0][:16]
    m = small_model()
    x32 = (x / 16).astype(np.float32)          # digits are 0..16: exact in float16
    p32 = m.predict(x32)
    assert np.array_equal(m.predict(x32.astype(np.float16)), p32)
    assert np.array_equal(m.predict(x32.astype(np.float64)), p32)
    stats.record("dtype-conversion", "float16/float64 predict == float32", 2)
    # uint8 images are scaled and normalised with the stored statistics, like training batches
    m.normalization = compute_normalization(x)
    from numcnn.data.loader import normalize
    assert np.allclose(m.predict(x), m.predict(normalize(x, *m.normalization)), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32,
                                   np.bool_, np.complex64, object, "U1"])
def test_predict_refuses_ambiguous_dtypes(dtype):
    x = np.ones((2, 1, 8, 8)).astype(dtype)
    expect("dtype-refused", DTypeError, small_model().predict, x, contains=("dtype",))


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.uint8, np.int64])
def test_layers_refuse_non_float32_64_inputs(dtype):
    for layer, shape in ((Dense(4, 2), (3, 4)), (Conv2D(1, 2, 3), (2, 1, 5, 5)), (ReLU(), (2, 3))):
        expect("dtype-refused", DTypeError, layer.forward, np.ones(shape, dtype=dtype),
               contains=("float32 or float64",))


def test_fit_converts_float16_exactly_and_refuses_other_integer_images(digits):
    x, y, _, _ = digits
    xf = (x / 16).astype(np.float32)
    h32 = Trainer(small_model(), epochs=2, batch_size=32, progress=False).fit((xf, y))
    h16 = Trainer(small_model(), epochs=2, batch_size=32, progress=False).fit((xf.astype(np.float16), y))
    assert h16["train_loss"] == h32["train_loss"]
    stats.record("dtype-conversion", "float16 fit == float32")
    for dt in (np.int32, np.int64, np.uint16, np.int8):
        m = small_model()
        before = params_of(m)
        expect("dtype-refused", DTypeError, Trainer(m, epochs=1, progress=False).fit,
               (x.astype(dt), y), contains=("uint8 or float", np.dtype(dt).name))
        assert same_params(before, params_of(m))


def test_resume_with_another_dtype_is_refused_without_touching_the_model(tmp_path, digits):
    x, y, _, _ = digits
    t = Trainer(small_model(), epochs=1, batch_size=32, out_dir=str(tmp_path), progress=False)
    t.fit((x, y))
    m64 = small_model("float64")
    before = params_of(m64)
    expect("resume-mismatch", StateError, Trainer(m64, epochs=2, batch_size=32, progress=False).fit,
           (x, y), resume=str(tmp_path / "checkpoint.safetensors"), contains=("float32", "float64"))
    assert same_params(before, params_of(m64)) and m64.dtype == np.float64


# =============================================================================== order of calls
@pytest.mark.parametrize("layer, shape", [
    (Conv2D(1, 2, 3), (2, 1, 5, 5)), (Dense(4, 3), (2, 3)), (ReLU(), (2, 3)),
    (MaxPool2D(2), (2, 1, 4, 4)), (BatchNorm2D(2), (2, 2, 3, 3)), (Dropout(0.5), (2, 3)),
    (Flatten(), (2, 1, 2, 2))], ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else "")
def test_backward_before_forward_and_twice(layer, shape):
    expect("backward-before-forward", StateError, layer.backward, np.ones(shape, np.float32),
           contains=("backward() was called before forward()",))


def test_model_and_loss_backward_before_forward():
    expect("backward-before-forward", StateError, small_model().backward, np.ones((2, 10), np.float32))
    expect("backward-before-forward", StateError, CrossEntropy().backward)
    m = small_model()
    x = np.zeros((2, 1, 8, 8), np.float32)
    loss = CrossEntropy()
    loss.forward(m.forward(x), np.array([1, 2]))
    m.backward(loss.backward())
    expect("backward-before-forward", StateError, loss.backward)            # twice
    expect("backward-before-forward", StateError, m.backward, np.ones((2, 10), np.float32))


@pytest.mark.parametrize("opt", [lambda p: SGD(p, lr=0.1, momentum=0.9), lambda p: Adam(p),
                                 lambda p: AdamW(p)], ids=["sgd", "adam", "adamw"])
def test_optimizer_step_without_gradients(opt):
    m = small_model()
    o = opt(m.parameters())
    before = params_of(m)
    expect("step-without-grads", StateError, o.step, contains=("no parameter has a gradient",))
    # after a real step and zero_grad, a second step has no gradients again
    loss = CrossEntropy()
    loss.forward(m.forward(np.zeros((2, 1, 8, 8), np.float32)), np.array([0, 1]))
    m.backward(loss.backward())
    o.step()
    o.zero_grad()
    after = params_of(m)
    assert not same_params(before, after)
    expect("step-without-grads", StateError, o.step)
    assert same_params(after, params_of(m)) and o.steps == 1


# =============================================================================== resume mismatch
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    x, y, _, _ = digits
    d = tmp_path_factory.mktemp("ck")
    t = Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=1, batch_size=32, seed=0,
                out_dir=str(d), progress=False)
    t.fit((x, y))
    # and one stopped mid-epoch (batch 2 of 3), as Ctrl-C leaves it
    t.save_checkpoint(str(d / "mid.safetensors"), 1, 2,
                      {"seen": 64, "loss_sum": 100.0, "correct": 10, "time": 0.5})
    return d


MISMATCHES = {
    "architecture": (dict(model=lambda: small_model(width=5)), StateError, "different architecture"),
    "classes": (dict(model=lambda: small_model(classes=9)), StateError, "different architecture"),
    "optimizer": (dict(optimizer="adam"), StateError, "trained with SGD but this run uses Adam"),
    "batch-size": (dict(batch_size=16), StateError, "batch_size=32"),
    "seed": (dict(seed=3), StateError, "seed=0"),
    "dtype": (dict(model=lambda: small_model("float64")), StateError, "float32"),
}


@pytest.mark.parametrize("what", sorted(MISMATCHES))
def test_resume_with_mismatched_settings_is_refused_and_changes_nothing(tmp_path, digits, checkpoint, what):
    x, y, _, _ = digits
    kw, exc_type, text = MISMATCHES[what]
    kw = dict(kw)
    model = kw.pop("model", small_model)()
    settings = dict(optimizer="sgd", lr=0.05, epochs=3, batch_size=32, seed=0, progress=False,
                    out_dir=str(tmp_path / "out"))
    settings.update(kw)
    t = Trainer(model, **settings)
    before, opt_state = params_of(model), dict(t.optimizer.state_arrays())
    yy = y % 9 if what == "classes" else y
    expect("resume-mismatch", exc_type, t.fit, (x, yy),
           resume=str(checkpoint / "checkpoint.safetensors"), contains=(text,))
    assert same_params(before, params_of(model)) and t.optimizer.state_arrays().keys() == opt_state.keys()
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()


def test_resume_mid_epoch_with_less_data_is_refused(digits, checkpoint):
    x, y, _, _ = digits
    t = Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=3, batch_size=32, progress=False)
    expect("resume-mismatch", StateError, t.fit, (x[:20], y[:20]),
           resume=str(checkpoint / "mid.safetensors"), contains=("batch 2", "1 batches per epoch"))


@pytest.mark.parametrize("which", ["model.safetensors", "missing.safetensors", ".", "history.json"])
def test_resume_from_something_that_is_not_a_checkpoint(digits, checkpoint, which):
    x, y, _, _ = digits
    t = Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=2, batch_size=32, progress=False)
    before = params_of(t.model)
    expect("resume-not-a-checkpoint", ModelFileError, t.fit, (x, y),
           resume=str(checkpoint / which) if which != "." else str(checkpoint))
    assert same_params(before, params_of(t.model))


def test_resume_with_the_same_settings_works(digits, checkpoint):
    x, y, _, _ = digits
    hist = Trainer(small_model(), optimizer="sgd", lr=0.05, epochs=2, batch_size=32,
                   progress=False).fit((x, y), resume=str(checkpoint / "checkpoint.safetensors"))
    assert hist["epoch"] == [1, 2]


# =============================================================================== data misuse
@pytest.mark.parametrize("label", [10, 11, -1, 255])
def test_labels_out_of_range_are_refused_before_training(tmp_path, digits, label):
    x, y, xt, yt = digits
    bad = y.copy()
    bad[50] = label
    m = small_model()
    before = params_of(m)
    expect("labels-out-of-range", ConfigError,
           Trainer(m, epochs=1, out_dir=str(tmp_path / "a"), progress=False).fit, (x, bad),
           contains=(f"label {label} at index 50",))
    assert same_params(before, params_of(m)) and not (tmp_path / "a").exists()
    badt = yt.copy()
    badt[3] = label
    expect("labels-out-of-range", ConfigError, Trainer(m, epochs=1, progress=False).fit, (x, y),
           (xt, badt), contains=("validation", f"label {label} at index 3"))
    expect("labels-out-of-range", ConfigError, CrossEntropy().forward,
           np.zeros((2, 10), np.float32), np.array([0, label]), contains=("labels must be in [0, 9]",))
    expect("labels-out-of-range", ConfigError, evaluate, m, xt, badt)
    assert same_params(before, params_of(m))


def test_non_integer_labels_are_refused(digits):
    x, y, _, _ = digits
    m = small_model()
    yf = y.astype(np.float64)
    yf[0] = 1.5
    expect("labels-not-integer", ConfigError, evaluate, m, x, yf, contains=("integer",))
    expect("labels-not-integer", ConfigError, Trainer(m, epochs=1, progress=False).fit, (x, yf))
    # (CrossEntropy calls this a ShapeError; any NumcnnError is fine here)
    expect("labels-not-integer", NumcnnError, CrossEntropy().forward, np.zeros((1, 10), np.float32),
           np.array([1.5]), contains=("integer class ids",))
    expect("labels-not-integer", ShapeError, Trainer(m, epochs=1, progress=False).fit, (x, y[:, None]))


def test_empty_datasets_are_refused(digits):
    x, y, _, _ = digits
    m = small_model()
    e_x, e_y = x[:0], y[:0]
    expect("empty-dataset", ConfigError, Trainer(m, epochs=1, progress=False).fit, (e_x, e_y),
           contains=("empty",))
    expect("empty-dataset", ConfigError, Trainer(m, epochs=1, progress=False).fit, (x, y), (e_x, e_y),
           contains=("empty",))
    expect("empty-dataset", ConfigError, evaluate, m, e_x, e_y, contains=("empty",))
    expect("empty-dataset", NumcnnError, DataLoader, e_x, e_y, contains=("empty",))
    expect("empty-dataset", ShapeError, m.predict, e_x, contains=("empty",))
    expect("empty-dataset", NumcnnError, compute_normalization, e_x, contains=("empty",))


@pytest.mark.parametrize("bs", [0, -1, 1.5, None, True, "32"])
def test_bad_batch_sizes(digits, bs):
    x, y, _, _ = digits
    m = small_model()
    expect("bad-batch-size", ConfigError, Trainer, m, batch_size=bs, contains=("batch_size",))
    expect("bad-batch-size", ConfigError, DataLoader, x, y, bs, contains=("batch_size",))
    if not isinstance(bs, bool):
        expect("bad-batch-size", ConfigError, evaluate, m, x, y, batch_size=bs,
               contains=("batch_size",))


@pytest.mark.parametrize("bs", [0, -1])
def test_predict_batch_size_zero_or_negative(bs):
    expect("bad-batch-size", ConfigError, small_model().predict, np.zeros((2, 1, 8, 8), np.uint8),
           batch_size=bs, contains=("batch_size",))


@pytest.mark.parametrize("bs", [None, 1.5])
def test_predict_batch_size_not_an_int(bs):
    expect("bad-batch-size", ConfigError, small_model().predict, np.zeros((2, 1, 8, 8), np.uint8),
           batch_size=bs)


@pytest.mark.parametrize("shape", [(3, 1, 9, 9), (3, 3, 8, 8), (1, 8, 8), (8, 8), (), (3, 64)])
def test_wrong_input_shapes_to_predict_and_fit(digits, shape):
    m = small_model()
    x = np.zeros(shape, np.uint8)
    expect("wrong-input-shape", ShapeError, m.predict, x, contains=("(1, 8, 8)",))
    y = np.zeros(shape[0] if shape else 0, np.int64)
    expect("wrong-input-shape", ShapeError, Trainer(m, epochs=1, progress=False).fit, (x, y))


@pytest.mark.parametrize("epochs", [0, -1, 1.5, None, True, "3"])
def test_bad_epoch_counts(epochs):
    expect("bad-epochs", ConfigError, Trainer, small_model(), epochs=epochs, contains=("epochs",))


@pytest.mark.parametrize("kw", [dict(lr=0), dict(lr=-1), dict(lr=float("nan")), dict(lr=float("inf")),
                                dict(optimizer="rmsprop"), dict(schedule="linear"), dict(patience=-1)],
                         ids=["lr0", "lr-1", "lr-nan", "lr-inf", "unknown-optimizer",
                              "unknown-schedule", "patience-1"])
def test_bad_trainer_settings(kw):
    expect("bad-settings", ConfigError, Trainer, small_model(), **kw)


@pytest.mark.parametrize("train", ["x-only", "triple", "none", "dict"])
def test_training_data_in_the_wrong_form(digits, train):
    x, y, _, _ = digits
    data = {"x-only": x, "triple": (x, y, y), "none": None, "dict": {"x": x, "y": y}}[train]
    expect("wrong-data-form", ConfigError, Trainer(small_model(), epochs=1, progress=False).fit, data,
           contains=("pair",))


@pytest.mark.parametrize("make", [
    lambda: numcnn.layers.BatchNorm2D(4, eps=float("nan")),
    lambda: numcnn.layers.BatchNorm1D(4, momentum=float("inf")),
    lambda: numcnn.layers.LeakyReLU(float("nan")),
    lambda: numcnn.layers.Conv2D(1, 2, 3, dtype="float16"),
    lambda: numcnn.layers.Dense(3, 2, dtype="object"),
    lambda: numcnn.layers.layer_from_config({"type": ["Dense"]}),
    lambda: numcnn.layers.layer_from_config({"type": "BatchNorm2D", "num_features": 3, "eps": "x"}),
], ids=["bn-eps-nan", "bn-momentum-inf", "leaky-nan", "conv-float16", "dense-object",
        "type-not-str", "bn-eps-str"])
def test_layer_constructors_refuse_bad_arguments(make):
    with pytest.raises(ConfigError):
        make()
