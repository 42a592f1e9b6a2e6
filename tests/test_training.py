"""Training: history, checkpoints, bit-identical resume (epoch boundary and Ctrl-C mid-epoch),
early stopping, divergence, evaluate, and the 'digits' acceptance run."""
from __future__ import annotations

import json
import math
import re
import os
import signal
import sys
import time

import numpy as np
import pytest

import numcnn.training as training
from numcnn import datasets, models
from numcnn import io as nio
from numcnn.data.augment import Augment
from numcnn.errors import ConfigError, DTypeError, NonFiniteError, NumcnnError, ShapeError, StateError
from numcnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from numcnn.metrics import confusion_matrix
from numcnn.model import Sequential
from numcnn.training import HISTORY_KEYS, Trainer, TrainingDiverged, evaluate


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def small(digits):
    """256 training images (8 batches of 32) and 100 validation images."""
    (xtr, ytr), (xte, yte) = digits
    return (xtr[:256], ytr[:256]), (xte[:100], yte[:100])


def bn_dropout_model(rng=0):
    """cifar_vgg in miniature for 1x8x8: conv-BN-ReLU-pool, dense-BN1D-ReLU-dropout-dense."""
    return Sequential([
        Conv2D(1, 8, 3, padding=1, bias=False, rng=rng), BatchNorm2D(8), ReLU(), MaxPool2D(2),
        Flatten(), Dense(8 * 4 * 4, 32, rng=rng), BatchNorm1D(32), ReLU(), Dropout(0.3, rng=rng + 1),
        Dense(32, 10, rng=rng)], input_shape=(1, 8, 8))


def params_of(model):
    return [p.value.copy() for p in model.parameters()]


def assert_same_state(a, b):
    """Bit-identical weights, batch-norm buffers and dropout generators."""
    pa, pb = a.parameters(), b.parameters()
    assert len(pa) == len(pb)
    for i, (p, q) in enumerate(zip(pa, pb)):
        assert p.value.dtype == q.value.dtype
        assert np.array_equal(p.value, q.value), f"parameter {i} differs"
    for k, v in a.buffers().items():
        assert np.array_equal(v, b.buffers()[k]), f"buffer {k} differs"
    for la, lb in zip(a.layers, b.layers):
        assert la._rng_state() == lb._rng_state()


# -- fit: history and files ---------------------------------------------------------------------------
def test_fit_history_files_and_falling_loss(small, tmp_path):
    train, val = small
    model = models.digits_cnn()
    trainer = Trainer(model, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine", epochs=3,
                      batch_size=32, out_dir=str(tmp_path), progress=False)
    h = trainer.fit(train, val)
    assert set(h) == set(HISTORY_KEYS)
    assert h["epoch"] == [1, 2, 3]
    for k in HISTORY_KEYS:
        assert len(h[k]) == 3, k
    # cosine over 3 epochs: lr = 0.05 (1 + cos(pi e / 3)) / 2 for e = 0, 1, 2
    np.testing.assert_allclose(h["lr"], [0.05 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)],
                               rtol=1e-12)
    assert all(t > 0 for t in h["time"])
    np.testing.assert_allclose(h["images_per_s"], [256 / t for t in h["time"]], rtol=1e-9)
    assert all(0 <= a <= 1 for a in h["train_acc"] + h["val_acc"])
    # it learns
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert h["val_acc"][-1] > 0.5
    # files
    assert sorted(os.listdir(tmp_path)) == ["best.safetensors", "checkpoint.safetensors",
                                            "history.json", "model.safetensors"]
    with open(tmp_path / "history.json") as f:
        assert json.load(f) == h
    x = val[0]
    final = nio.load_model(tmp_path / "model.safetensors")
    assert np.array_equal(final.predict(x), model.predict(x))
    assert final.normalization is not None
    best = nio.load_model(tmp_path / "best.safetensors")
    assert best.config() == model.config()
    ck_model, optim, info = nio.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert (info["epoch"], info["batch"], info["partial"]) == (3, 0, None)
    assert info["optimizer"]["type"] == "SGD" and info["optimizer"]["steps"] == 3 * 8
    assert info["history"] == h
    assert len(optim) == len(model.parameters())          # one momentum buffer per parameter
    assert_same_state(ck_model, model)
    # the val numbers in the history are evaluate()'s
    rep = evaluate(model, *val)
    assert rep["loss"] == h["val_loss"][-1] and rep["accuracy"] == h["val_acc"][-1]


def test_fit_without_validation_uses_training_loss(small):
    train, _ = small
    h = models.digits_cnn().fit(train, epochs=2, batch_size=64, progress=False, optimizer="adam", lr=2e-3)
    assert h["val_loss"] == [None, None] and h["val_acc"] == [None, None]
    assert h["train_loss"][1] < h["train_loss"][0]


# -- resume ---------------------------------------------------------------------------------------------
CONFIGS = {
    "sgd-cosine": dict(make=models.digits_cnn, optimizer="sgd", lr=0.05, schedule="cosine", augment=None),
    "bn-dropout-adam": dict(make=bn_dropout_model, optimizer="adam", lr=2e-3, schedule="step", augment=None),
    "augment-adamw": dict(make=models.digits_cnn, optimizer="adamw", lr=2e-3, schedule="cosine",
                          augment=Augment(shift=1)),
}
EPOCHS, BATCHES = 4, 8      # 256 images / 32


def _trainer(cfg, out_dir):
    return Trainer(cfg["make"](), optimizer=cfg["optimizer"], lr=cfg["lr"], schedule=cfg["schedule"],
                   epochs=EPOCHS, batch_size=32, seed=3, augment=cfg["augment"], out_dir=str(out_dir),
                   progress=False)


def _ctrl_c_after(trainer, n_steps):
    """Press Ctrl-C (a real SIGINT to this process) right after optimizer step ``n_steps``."""
    import threading
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        pytest.skip("needs POSIX signals delivered to the main thread")
    real_step = trainer.optimizer.step
    count = [0]

    def step():
        real_step()
        count[0] += 1
        if count[0] == n_steps:
            os.kill(os.getpid(), signal.SIGINT)

    trainer.optimizer.step = step
    return count


@pytest.fixture(scope="module")
def reference_runs(small, tmp_path_factory):
    """Each config trained 4 epochs without interruption."""
    train, val = small
    out = {}
    for name, cfg in CONFIGS.items():
        t = _trainer(cfg, tmp_path_factory.mktemp(f"ref-{name}"))
        t.fit(train, val)
        out[name] = t
    return out


@pytest.mark.parametrize("where", ["epoch-boundary", "mid-epoch"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_is_bit_identical(name, where, small, reference_runs, tmp_path):
    train, val = small
    cfg = CONFIGS[name]
    ref = reference_runs[name]
    first = _trainer(cfg, tmp_path)
    # Ctrl-C during the last step of epoch 2 finishes that epoch (epoch-boundary checkpoint);
    # during step 3 of epoch 2 it saves a mid-epoch checkpoint at batch 3
    stop_at = 2 * BATCHES if where == "epoch-boundary" else BATCHES + 3
    count = _ctrl_c_after(first, stop_at)
    handler_before = signal.getsignal(signal.SIGINT)
    h1 = first.fit(train, val)
    assert signal.getsignal(signal.SIGINT) is handler_before     # the handler is put back
    assert first.interrupted and count[0] == stop_at             # stopped right there
    assert not (tmp_path / "model.safetensors").exists()         # no "final" model when interrupted
    _, _, info = nio.load_checkpoint(tmp_path / "checkpoint.safetensors")
    if where == "epoch-boundary":
        assert h1["epoch"] == [1, 2]
        assert (info["epoch"], info["batch"], info["partial"]) == (2, 0, None)
    else:
        assert h1["epoch"] == [1]
        assert (info["epoch"], info["batch"]) == (1, 3)
        assert info["partial"]["seen"] == 3 * 32
    assert info["optimizer"]["steps"] == stop_at
    # a fresh process would build a fresh model and trainer, then resume
    second = _trainer(cfg, tmp_path)
    h2 = second.fit(train, val, resume=str(tmp_path / "checkpoint.safetensors"))
    assert not second.interrupted
    assert second.optimizer.steps == ref.optimizer.steps == EPOCHS * BATCHES
    assert_same_state(second.model, ref.model)
    for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert h2[k] == ref.history[k], k
    st_a, st_b = ref.optimizer.state_arrays(), second.optimizer.state_arrays()
    assert st_a.keys() == st_b.keys() and all(np.array_equal(st_a[k], st_b[k]) for k in st_a)
    assert nio.load_model(tmp_path / "model.safetensors").config() == ref.model.config()


def test_resume_refuses_other_settings(small, tmp_path):
    train, val = small
    t = Trainer(models.digits_cnn(), optimizer="sgd", lr=0.05, epochs=1, batch_size=32,
                out_dir=str(tmp_path), progress=False)
    t.fit(train, val)
    ck = str(tmp_path / "checkpoint.safetensors")
    other_dir = str(tmp_path / "other")
    cases = [
        (dict(model=models.mnist_small(image_size=8)), "different architecture"),
        (dict(model=bn_dropout_model()), "different architecture"),
        (dict(optimizer="adam"), "trained with SGD but this run uses Adam"),
        (dict(batch_size=64), "batch_size=32"),
        (dict(seed=1), "seed=0"),
        (dict(momentum=0.5), r"other settings \(momentum=0\.9 -> 0\.5\)"),
        (dict(weight_decay=1e-4), r"weight_decay=0\.0 -> 0\.0001"),
        (dict(schedule="cosine"), r"schedule='constant' -> 'cosine'"),
    ]
    for change, message in cases:
        kw = dict(model=models.digits_cnn(), optimizer="sgd", lr=0.05, epochs=3, batch_size=32,
                  out_dir=other_dir, progress=False)
        kw.update(change)
        model = kw.pop("model")
        with pytest.raises(StateError, match=message):
            Trainer(model, **kw).fit(train, val, resume=ck)
    # a plain model file is not a checkpoint; a checkpoint with half its metadata is refused clearly
    from numcnn.errors import ModelFileError
    with pytest.raises(ModelFileError, match="not a checkpoint"):
        Trainer(models.digits_cnn(), epochs=2, batch_size=32, progress=False).fit(
            train, resume=str(tmp_path / "model.safetensors"))
    nio.save_model(t.model, tmp_path / "half.safetensors", extra_metadata={"checkpoint": '{"epoch": 1}'})
    with pytest.raises(ModelFileError, match="incomplete or corrupt checkpoint metadata"):
        Trainer(models.digits_cnn(), epochs=2, batch_size=32, progress=False).fit(
            train, resume=str(tmp_path / "half.safetensors"))


def test_checkpoint_keeps_per_parameter_step_counts_and_refuses_forged_ones(small, tmp_path):
    """Adam's per-parameter step counts go into the checkpoint's metadata and come back on
    resume; checkpoints written before they existed resume with the global count; a forged list
    is refused before anything is touched."""
    train, val = small
    t = Trainer(models.digits_cnn(), optimizer="adam", lr=1e-3, epochs=1, batch_size=32,
                out_dir=str(tmp_path), progress=False)
    t.fit(train, val)
    ck = tmp_path / "checkpoint.safetensors"
    model, arrays, info = nio.load_checkpoint(ck)
    steps = info["optimizer"]["steps"]
    assert steps == math.ceil(len(train[0]) / 32)
    assert info["optimizer"]["param_steps"] == [steps] * len(model.parameters())

    def forged(name, param_steps):
        meta = json.loads(json.dumps(info))
        if param_steps is None:
            del meta["optimizer"]["param_steps"]
        else:
            meta["optimizer"]["param_steps"] = param_steps
        path = tmp_path / name
        nio.save_model(model, path, {f"optim.{k}": v for k, v in arrays.items()},
                       {"checkpoint": json.dumps(meta)})
        return str(path)

    def resume(path, out):
        r = Trainer(models.digits_cnn(), optimizer="adam", lr=1e-3, epochs=2, batch_size=32,
                    out_dir=str(tmp_path / out), progress=False)
        r.fit(train, val, resume=path)
        return r.optimizer

    assert resume(forged("old.safetensors", None), "a").param_steps == [2 * steps] * len(model.parameters())
    assert resume(str(ck), "b").param_steps == [2 * steps] * len(model.parameters())
    from numcnn.errors import ModelFileError
    for bad in ("3", [-1] * 8, [1.5] * 8):
        with pytest.raises(ModelFileError, match="step counts per parameter"):
            resume(forged("bad.safetensors", bad), "c")
    with pytest.raises(StateError, match="step counts for 2 parameters"):
        resume(forged("short.safetensors", [1, 1]), "d")


@pytest.mark.parametrize("kind", ["uint8", "float32"])
def test_training_validation_evaluate_and_predict_prepare_images_the_same_way(small, kind):
    """uint8 images are scaled and normalised with the model's statistics everywhere (training
    batches, validation, evaluate, predict); float images are taken as prepared everywhere, so a
    model fitted on floats keeps no statistics and trains on exactly the given values."""
    (xtr, ytr), (xva, yva) = small
    if kind == "float32":
        xtr, xva = xtr.astype(np.float32) / 16, xva.astype(np.float32) / 16
    model = models.digits_cnn()
    seen = []
    forward = model.forward

    def recording_forward(x, training=True):
        if training:
            seen.append(np.array(x))
        return forward(x, training)

    model.forward = recording_forward
    hist = Trainer(model, optimizer="adam", lr=2e-3, epochs=2, batch_size=32,
                   progress=False).fit((xtr, ytr), (xva, yva))
    assert (model.normalization is None) == (kind == "float32")
    prepared = {row.tobytes() for row in model.prepare_input(xtr)}   # what predict would feed
    assert len(seen) == 16 and all(row.tobytes() in prepared for b in seen for row in b)
    ev = evaluate(model, xva, yva)
    assert hist["val_acc"][-1] == pytest.approx(ev["accuracy"], abs=1e-12)
    assert hist["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert ev["accuracy"] > 0.5                          # it learned: the two agree on something real


def test_resuming_a_uint8_checkpoint_with_float_images_is_refused(small, tmp_path):
    """The checkpoint's model normalises raw images; float data is taken as prepared, so the
    run would silently change its inputs (and checkpoints from numcnn versions that normalised
    float data too look the same)."""
    (xtr, ytr), _ = small
    Trainer(models.digits_cnn(), epochs=1, batch_size=32, out_dir=str(tmp_path),
            progress=False).fit((xtr, ytr))
    model = models.digits_cnn()
    before = params_of(model)
    with pytest.raises(StateError, match="this data is float, taken as prepared"):
        Trainer(model, epochs=2, batch_size=32, progress=False).fit(
            (xtr.astype(np.float32) / 16, ytr), resume=str(tmp_path / "checkpoint.safetensors"))
    assert all(np.array_equal(a, b) for a, b in zip(before, params_of(model)))


def test_fit_checks_the_class_names_before_the_first_step(small, tmp_path):
    (xtr, ytr), _ = small
    model = models.digits_cnn()
    model.classes = ["a", "b"]
    with pytest.raises(ConfigError, match="fit: model.classes has 2 class names for a model with 10"):
        Trainer(model, epochs=1, batch_size=32, out_dir=str(tmp_path), progress=False).fit((xtr, ytr))
    assert not any(tmp_path.iterdir())


def test_fit_checks_validation_images_before_the_first_step(small):
    (xtr, ytr), (xva, yva) = small
    for bad, err, text in [(xva[:, :, :6], ShapeError, "fit (validation data): the model takes "
                                                           "images of shape (1, 8, 8)"),
                           (xva.astype(np.int64), DTypeError, "int64")]:
        model = models.digits_cnn()
        before = params_of(model)
        with pytest.raises(err, match=re.escape(text)):
            Trainer(model, epochs=1, batch_size=32, progress=False).fit((xtr, ytr), (bad, yva))
        assert all(np.array_equal(a, b) for a, b in zip(before, params_of(model)))


def test_resume_may_lower_the_learning_rate_and_add_epochs_but_not_ask_for_fewer(small, tmp_path):
    train, val = small
    Trainer(models.digits_cnn(), optimizer="sgd", lr=0.05, epochs=2, batch_size=32,
            out_dir=str(tmp_path), progress=False).fit(train, val)
    ck = str(tmp_path / "checkpoint.safetensors")
    t = Trainer(models.digits_cnn(), optimizer="sgd", lr=0.005, epochs=3, batch_size=32,
                out_dir=str(tmp_path / "more"), progress=False)
    t.fit(train, val, resume=ck)
    assert t.history["epoch"] == [1, 2, 3] and t.history["lr"][-1] == pytest.approx(0.005)
    with pytest.raises(StateError, match="already finished 2 epoch.*more than the 1 this run asks"):
        Trainer(models.digits_cnn(), optimizer="sgd", lr=0.05, epochs=1, batch_size=32,
                progress=False).fit(train, val, resume=ck)


def test_progress_lines_prints_one_line_per_epoch_and_no_bar(small, capsys):
    train, val = small
    Trainer(models.digits_cnn(), epochs=2, batch_size=32, progress="lines").fit(train, val)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and err == ""
    assert re.match(r"epoch 1: loss [\d.]+, acc [\d.]+%, val loss [\d.]+, val acc [\d.]+%, ", lines[0])
    assert lines[1].startswith("epoch 2: ")
    Trainer(models.digits_cnn(), epochs=1, batch_size=32, progress=False).fit(train, val)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ConfigError, match="progress must be True, False or 'lines'"):
        Trainer(models.digits_cnn(), progress="bars")


def test_a_model_ending_in_softmax_is_refused_for_cross_entropy_training():
    from numcnn.layers import Softmax
    model = Sequential(models.digits_cnn().layers + [Softmax()], input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="ends in Softmax, but CrossEntropy takes raw logits"):
        Trainer(model)


def test_cross_entropy_of_an_empty_batch_is_a_shape_error():
    from numcnn.losses import CrossEntropy
    with pytest.raises(ShapeError, match="empty batch"):
        CrossEntropy().forward(np.zeros((0, 10), np.float32), np.zeros(0, np.int64))


# -- early stopping -----------------------------------------------------------------------------------
@pytest.mark.parametrize("patience, epochs_run", [(0, 3), (1, 3), (2, 4), (5, 7)])
def test_early_stopping(patience, epochs_run, small, tmp_path, monkeypatch):
    """Validation losses scripted 1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96, 0.95, ...: the best is
    epoch 2, and the run stops after ``patience`` epochs in a row without improvement."""
    train, val = small
    script = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96, 0.95, 0.94, 0.93]
    real = training.evaluate
    seen = []

    def scripted(model, x, y, **kw):
        rep = real(model, x, y, **kw)
        seen.append(params_of(model))
        rep["loss"] = script[len(seen) - 1]
        return rep

    monkeypatch.setattr(training.trainer, "evaluate", scripted)   # what the trainer calls
    model = models.digits_cnn()
    t = Trainer(model, optimizer="sgd", lr=0.01, epochs=10, batch_size=128, patience=patience,
                out_dir=str(tmp_path), progress=False)
    h = t.fit(train, val)
    assert h["epoch"] == list(range(1, epochs_run + 1))
    assert len(h["epoch"]) < 10
    assert h["val_loss"] == script[:epochs_run]
    # best.safetensors holds the weights of epoch 2, the final model those of the last epoch
    best = nio.load_model(tmp_path / "best.safetensors")
    assert all(np.array_equal(p.value, q) for p, q in zip(best.parameters(), seen[1]))
    final = nio.load_model(tmp_path / "model.safetensors")
    assert all(np.array_equal(p.value, q) for p, q in zip(final.parameters(), seen[-1]))
    _, _, info = nio.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert info["early_stopping"] == {"best": 0.9, "wait": epochs_run - 2}


def test_early_stopping_never_stops_an_improving_run(small):
    train, val = small
    h = Trainer(models.digits_cnn(), optimizer="adam", lr=2e-3, epochs=3, batch_size=64, patience=0,
                progress=False).fit(train, val)
    assert h["val_loss"][0] > h["val_loss"][1] > h["val_loss"][2]
    assert h["epoch"] == [1, 2, 3]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_patience_is_refused(bad):
    with pytest.raises(ConfigError, match="patience"):
        Trainer(models.digits_cnn(), patience=bad)


# -- divergence ------------------------------------------------------------------------------------
def test_huge_learning_rate_raises_training_diverged(small, tmp_path):
    train, val = small
    with _no_numpy_warnings():
        t = Trainer(models.digits_cnn(), optimizer="sgd", lr=1e6, epochs=3, batch_size=32,
                    out_dir=str(tmp_path), progress=False)
        with pytest.raises(TrainingDiverged) as info:
            t.fit(train, val)
    err = info.value
    assert isinstance(err, NonFiniteError) and isinstance(err, NumcnnError)
    msg = str(err)
    assert "epoch 1, step " in msg and "learning rate (1e+06)" in msg and "lower it" in msg
    assert msg.count("learning rate") == 1                         # said once
    assert not (tmp_path / "checkpoint.safetensors").exists()     # nothing good to keep


def test_divergence_keeps_the_last_good_checkpoint(small, tmp_path):
    train, val = small
    good = Trainer(models.digits_cnn(), optimizer="sgd", lr=0.05, epochs=1, batch_size=32,
                   out_dir=str(tmp_path), progress=False)
    good.fit(train, val)
    ck = tmp_path / "checkpoint.safetensors"
    before = ck.read_bytes()
    # same run continued with a learning rate of 1e6: epoch 2 blows up
    with _no_numpy_warnings():
        bad = Trainer(models.digits_cnn(), optimizer="sgd", lr=1e6, epochs=3, batch_size=32,
                      out_dir=str(tmp_path), progress=False)
        with pytest.raises(TrainingDiverged, match=r"epoch 2, step \d+: .*learning rate \(1e\+06\).*"
                                                   r"last good checkpoint .*checkpoint\.safetensors is intact"):
            bad.fit(train, val, resume=str(ck))
    assert ck.read_bytes() == before
    model, _, info = nio.load_checkpoint(ck)
    assert info["epoch"] == 1
    assert_same_state(model, good.model)


def test_divergence_in_the_last_step_of_an_epoch_is_not_checkpointed(digits, tmp_path):
    """One batch per epoch: the step that blows the weights up to inf is the epoch's last; the
    end-of-epoch checkpoint must not be overwritten with weights that can't even be loaded."""
    (xtr, ytr), (xte, yte) = digits
    train, val = (xtr[:64], ytr[:64]), (xte[:50], yte[:50])
    good = Trainer(models.digits_cnn(), optimizer="sgd", lr=0.05, momentum=0.0, epochs=1, batch_size=64,
                   out_dir=str(tmp_path), progress=False)
    good.fit(train, val)
    ck = tmp_path / "checkpoint.safetensors"
    before = ck.read_bytes()
    with _no_numpy_warnings():
        bad = Trainer(models.digits_cnn(), optimizer="sgd", lr=3.4e38, momentum=0.0, epochs=3,
                      batch_size=64, out_dir=str(tmp_path), progress=False)
        with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1: .*learning rate"):
            bad.fit(train, val, resume=str(ck))
    assert ck.read_bytes() == before
    nio.load_checkpoint(ck)
    with open(tmp_path / "history.json") as f:
        assert json.load(f)["epoch"] == [1]
    assert bad.history["epoch"] == [1]              # in memory too: the last good epoch
    assert all(len(v) == 1 for v in bad.history.values())


class _no_numpy_warnings:
    """A diverging run is explained by one TrainingDiverged, not by NumPy's overflow warnings
    on the way there: none may escape."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings(record=True)
        self._seen = self._w.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
        runtime = [str(w.message) for w in self._seen if issubclass(w.category, RuntimeWarning)]
        assert not runtime, runtime


# -- evaluate --------------------------------------------------------------------------------------------
def test_evaluate_reproduces_predict(reference_runs, digits):
    model = reference_runs["bn-dropout-adam"].model
    (_, _), (xte, yte) = digits
    rep = evaluate(model, xte, yte, batch_size=100)
    probs = model.predict(xte)
    pred = probs.argmax(1)
    assert rep["samples"] == len(yte) == 360
    assert rep["accuracy"] == np.mean(pred == yte)
    assert rep["confusion_matrix"] == confusion_matrix(yte, pred, 10).tolist()
    top5 = np.argsort(-probs, axis=1)[:, :5]
    assert rep["top5_accuracy"] == pytest.approx(np.mean((top5 == yte[:, None]).any(1)), abs=1e-12)
    nll = -np.log(probs[np.arange(len(yte)), yte].astype(np.float64)).mean()
    assert rep["loss"] == pytest.approx(nll, rel=1e-5)
    # batch size doesn't matter; evaluation mode doesn't touch batch-norm statistics
    buffers = {k: v.copy() for k, v in model.buffers().items()}
    rep2 = evaluate(model, xte, yte, batch_size=7)
    assert rep2["accuracy"] == rep["accuracy"] and rep2["confusion_matrix"] == rep["confusion_matrix"]
    assert all(np.array_equal(v, model.buffers()[k]) for k, v in buffers.items())
    # shape mismatch is a clear error
    from numcnn.errors import ShapeError
    with pytest.raises(ShapeError, match=r"\(1, 8, 8\)"):
        evaluate(model, np.zeros((2, 1, 28, 28), np.uint8), np.zeros(2, int))


# -- acceptance: digits -------------------------------------------------------------------------------
@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_quickly(digits):
    (xtr, ytr), (xte, yte) = digits
    model = models.digits_cnn()
    trainer = Trainer(model, optimizer="adam", lr=2e-3, schedule="cosine", epochs=8, batch_size=32,
                      progress=False)
    t0 = time.perf_counter()
    h = trainer.fit((xtr, ytr))
    elapsed = time.perf_counter() - t0
    acc = evaluate(model, xte, yte)["accuracy"]
    print(f"\ndigits-cnn on digits: test accuracy {acc * 100:.2f}% after {len(h['epoch'])} epochs, "
          f"{elapsed:.1f} s of training ({sum(h['time']):.1f} s in epochs)")
    assert acc >= 0.97
    assert elapsed < 60          # the target is 30 s; CI machines vary


@pytest.mark.parametrize("with_val", [True, False])
def test_a_run_that_diverges_at_the_end_of_an_epoch_keeps_only_good_epochs_in_its_history(
        small, tmp_path, with_val):
    """The last optimizer step of epoch 2 turns a weight into NaN: epoch 2 is in neither the
    returned history nor history.json, and the epoch-1 checkpoint stays."""
    from numcnn.optim import SGD
    train, val = small
    model = models.digits_cnn()

    class Poisoned(SGD):
        def step(self):
            super().step()
            if self.steps == 16:                      # 256 images / 32 = 8 steps an epoch
                self.params[0].value[0, 0, 0, 0] = np.nan
    t = Trainer(model, optimizer=Poisoned(model.parameters(), lr=0.05), epochs=3, batch_size=32,
                out_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 8"):
        t.fit(train, val if with_val else None)
    assert t.history["epoch"] == [1] and all(len(v) == 1 for v in t.history.values())
    with open(tmp_path / "history.json") as f:
        assert json.load(f)["epoch"] == [1]
    assert nio.load_checkpoint(tmp_path / "checkpoint.safetensors")[2]["epoch"] == 1
