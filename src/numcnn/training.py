"""Training and evaluation: ``fit`` (mini-batch gradient descent with checkpoints) and ``evaluate``.

One training step is the deck's recipe, for a mini-batch instead of one image:

    logits = model.forward(x)            forward through every layer
    loss   = CrossEntropy(logits, y)     how far off we are
    model.backward(loss.backward())      dL/dz = y_hat - y, then the chain rule layer by layer
    optimizer.step()                     w <- w - lr * dL/dw (plus momentum/Adam if chosen)

Checkpoints (``out_dir/checkpoint.safetensors``) hold the weights, the optimizer state, the epoch
and batch reached, the history and every random state, so resuming continues exactly where the
run stopped: a resumed run and an uninterrupted one end bit-identical.  Ctrl-C finishes the
current step, saves such a checkpoint and returns.
"""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
import time

import numpy as np

from .backend import to_numpy
from .data.loader import DataLoader, compute_normalization
from .errors import (ConfigError, DTypeError, ModelFileError, NonFiniteError, ShapeError,
                     StateError)
from .functional import log_softmax
from .io import atomic_write, load_checkpoint, save_model
from .losses import CrossEntropy
from .metrics import classification_report
from .optim import OPTIMIZERS, Optimizer, make_schedule
from .parallel.mpi import world as mpi_world

HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "images_per_s")


class TrainingDiverged(NonFiniteError):
    """The loss became NaN or infinite during training."""


def _check_xy(x, y, what, input_shape=None):
    """Images and labels as arrays, checked the way the model will use them (shape, dtype,
    finite values, label ids) before any training happens.  Data is kept on the host (CuPy
    arrays are copied off the GPU); batches go to the model's device as they are used."""
    x = _host_array(x, what, "images")
    y = _host_array(y, what, "labels")
    if x.ndim != 4:
        raise ShapeError(f"{what}: images must be (N, C, H, W), got shape {x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ShapeError(f"{what}: the model takes images of shape {tuple(input_shape)} (C, H, W) "
                         f"but the data has shape {tuple(x.shape[1:])}")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DTypeError(f"{what}: images must be uint8 or float (uint8 for 0..255, floats "
                         f"already scaled), got dtype {x.dtype}; convert them, e.g. "
                         "x.astype('float32') / 65535 for 16-bit images")
    if y.shape != (len(x),):
        raise ShapeError(f"{what}: labels must be shape ({len(x)},), got {y.shape}")
    if len(x) == 0:
        raise ConfigError(f"{what}: the dataset is empty")
    _check_labels(y, what)
    _check_finite_images(x, what)
    return x, y


def _host_array(a, what, name):
    """``a`` as a NumPy array: NumPy arrays and lists as they are, CuPy arrays copied to the
    host; anything else (a torch tensor...) is refused with the conversion to use."""
    if type(a).__module__.startswith("cupy"):
        return to_numpy(a)
    if hasattr(a, "dtype") and not isinstance(a.dtype, np.dtype):
        raise DTypeError(f"{what}: {name} must be NumPy arrays, got {type(a).__module__}."
                         f"{type(a).__name__}; convert them (for a torch tensor: t.numpy())")
    return np.asarray(a)


def _pair(data, what):
    """``(x, y)``, or a ConfigError saying how to pass the data."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError(f"{what}: pass the data as a pair (images, labels) or a DataLoader, got "
                          f"{type(data).__name__}" + (f" of length {len(data)}"
                                                      if isinstance(data, (tuple, list)) else ""))
    return data


def _check_labels(y, what, num_classes=None):
    """Labels must be whole class ids >= 0 (and < ``num_classes`` when it is known)."""
    if y.dtype.kind not in "iu":
        if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ConfigError(f"{what}: labels must be integer class ids, got dtype {y.dtype}"
                              + (" with non-integer values" if y.dtype.kind == "f" else ""))
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        want = ">= 0" if num_classes is None else \
            f"in [0, {num_classes - 1}] (the model has {num_classes} outputs)"
        bad = int(np.flatnonzero((y < 0) | (y >= (num_classes or np.inf)))[0])
        raise ConfigError(f"{what}: labels must be class ids {want}, got values from {lo} to "
                          f"{hi} (label {y[bad]} at index {bad}); check the dataset's labels "
                          "against the model's last layer")


def _check_finite_images(x, what, chunk=4096):
    """Refuse float images holding NaN/inf at the boundary (one cheap sum per chunk first),
    so bad data is reported as bad data rather than as a diverging run."""
    if x.dtype.kind != "f":
        return
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        if np.isfinite(xb.sum(dtype=np.float64)):
            continue
        bad = ~np.isfinite(xb.reshape(len(xb), -1)).all(axis=1)
        if bad.any():
            i = start + int(np.flatnonzero(bad)[0])
            n = int((~np.isfinite(x)).sum())
            raise NonFiniteError(f"{what}: the images hold {n} NaN/inf value(s), the first in "
                                 f"image {i}; clean the data (numcnn never trains on or "
                                 "evaluates non-finite inputs)")


def _check_checkpoint_info(info, path, n_layers):
    """The training state of a checkpoint must be what the Trainer writes; ModelFileError naming
    the file otherwise (never a KeyError halfway through resuming)."""
    def bad(what):
        return ModelFileError(f"resume: {path!r} has incomplete or corrupt checkpoint metadata "
                              f"({what}); it was "
                              "not written by numcnn's Trainer or is damaged - use another "
                              "checkpoint or start fresh")

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def number(v, positive=False):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > 0 if positive else True)

    opt = info.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("type"), str) \
            or not count(opt.get("steps")) or not number(opt.get("lr"), positive=True):
        raise bad("optimizer type, steps and lr")
    ps = opt.get("param_steps")            # absent in checkpoints written before it existed
    if ps is not None and not (isinstance(ps, list) and all(count(t) for t in ps)):
        raise bad("optimizer step counts per parameter")
    if not count(info.get("epoch")) or not count(info.get("batch")):
        raise bad(f"epoch {info.get('epoch')!r}, batch {info.get('batch')!r}")
    partial = info.get("partial")
    if partial is not None and not (
            isinstance(partial, dict) and count(partial.get("seen")) and count(partial.get("correct"))
            and number(partial.get("loss_sum")) and number(partial.get("time"))):
        raise bad("the partial-epoch totals")
    hist = info.get("history")
    if not isinstance(hist, dict) or not all(isinstance(hist.get(k, []), list) for k in HISTORY_KEYS):
        raise bad("history")
    rng = info.get("rng", {})
    if not isinstance(rng, dict):
        raise bad("random states")
    for i, st in rng.items():
        if not (isinstance(i, str) and i.isdigit() and int(i) < n_layers):
            raise bad(f"random state for layer {i!r}")
        try:
            np.random.default_rng().bit_generator.state = st     # a throw-away generator
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            raise bad(f"random state for layer {i}") from None
    es = info.get("early_stopping", {})
    if not isinstance(es, dict) or not (es.get("best") is None or number(es.get("best"))) \
            or not count(es.get("wait", 0)):
        raise bad("early-stopping state")


def _check_writable_folder(path):
    """Create ``path`` if needed and make sure files can be written in it, or ConfigError."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to the output folder {os.fspath(path)!r} "
                          f"({exc.strerror or exc}); choose another folder") from None


def evaluate(model, x, y, batch_size=256, k=5, class_names=None) -> dict:
    """Loss, accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix.

    ``x`` are raw images (uint8, normalised with the model's stored statistics) or prepared floats.
    """
    x, y = _check_xy(x, y, "evaluate", model.input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"evaluate: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"evaluate: k (for top-k accuracy) must be a positive integer, got {k!r}")
    from .layers.activation import Softmax
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


class _StopFlag:
    """Turns SIGINT (Ctrl-C) into a flag checked between steps, so no step is left half done."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:                       # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def make_optimizer(optimizer, params, lr=None, momentum=0.9, weight_decay=0.0):
    if isinstance(optimizer, Optimizer):
        return optimizer
    name = str(optimizer).lower()
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return cls(params, lr=0.05 if lr is None else lr, momentum=momentum, weight_decay=weight_decay)
    return cls(params, lr=1e-3 if lr is None else lr, weight_decay=weight_decay)


class Trainer:
    """Runs epochs of mini-batch training with history, checkpoints, early stopping and resume.

    Args:
        model: a :class:`numcnn.Sequential` producing logits.
        optimizer: an Optimizer, or ``"sgd"``/``"adam"``/``"adamw"`` (with ``lr``).
        loss: defaults to :class:`numcnn.losses.CrossEntropy`.
        schedule: ``"constant"``, ``"step"`` or ``"cosine"`` (per epoch).
        epochs, batch_size, seed: the run; ``seed`` fixes the shuffling and augmentation.
        augment: a callable ``(x_uint8_batch, rng) -> batch`` (see :mod:`numcnn.data.augment`).
        out_dir: where checkpoints, the best and final model and ``history.json`` go.
        patience: early stopping after this many epochs without improvement of the validation
            loss (training loss if there is no validation set); None disables it.
        progress: ``True``: a tqdm bar per epoch and a line of results after it; ``"lines"``:
            only the line per epoch (logs, ``numcnn train --no-progress``); ``False``: silent.
    """

    def __init__(self, model, optimizer="sgd", loss=None, lr=None, momentum=0.9, weight_decay=0.0,
                 schedule="constant", epochs=10, batch_size=64, seed=0, augment=None, out_dir=None,
                 patience=None, progress=True):
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool)
                                     or patience < 0):
            raise ConfigError(f"patience must be None or an integer >= 0, got {patience!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        if loss is not None and not isinstance(loss, CrossEntropy):
            raise ConfigError(f"loss must be a numcnn.losses.CrossEntropy (the classification "
                              f"loss numcnn trains with), got {loss!r}")
        from .layers.activation import Softmax
        if isinstance(model.layers[-1], Softmax):
            raise ConfigError("the model ends in Softmax, but CrossEntropy takes raw logits (it "
                              "applies softmax itself, fused and stable): remove the last Softmax "
                              "layer; predict() still returns probabilities")
        self.model = model
        self.optimizer = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
        self.loss = loss or CrossEntropy()
        self.schedule_name = schedule
        self.schedule = make_schedule(schedule, self.optimizer, epochs)
        self.epochs, self.batch_size, self.seed = epochs, batch_size, int(seed)
        self.augment = augment
        self.out_dir = out_dir
        self.patience = patience
        if progress not in (True, False, "lines"):
            raise ConfigError(f"progress must be True, False or 'lines', got {progress!r}")
        self.progress = progress
        self.history = {k: [] for k in HISTORY_KEYS}
        self.best = math.inf
        self.wait = 0
        self.interrupted = False
        # under `mpiexec -n N` (N > 1): one rank of a data-parallel run (numcnn.parallel.mpi)
        self.distributed = mpi_world()
        if self.distributed is not None:
            self.distributed.attach(self)

    # -- paths ----------------------------------------------------------------------------------
    def _path(self, name):
        return os.path.join(self.out_dir, name) if self.out_dir else None

    @property
    def checkpoint_path(self):
        return self._path("checkpoint.safetensors")

    # -- checkpoints ----------------------------------------------------------------------------
    def _rng_states(self):
        return {str(i): l._rng_state() for i, l in enumerate(self.model.layers) if l._rng_state() is not None}

    def save_checkpoint(self, path, epoch, batch, partial):
        opt = self.optimizer
        info = {"epoch": epoch, "batch": batch, "partial": partial, "history": self.history,
                "optimizer": {"type": type(opt).__name__, "config": opt.config(), "steps": opt.steps,
                              "param_steps": opt.param_steps, "lr": opt.lr},
                "schedule": self.schedule_name, "epochs": self.epochs, "batch_size": self.batch_size,
                "seed": self.seed, "rng": self._rng_states(),
                "early_stopping": {"best": None if math.isinf(self.best) else self.best, "wait": self.wait}}
        tensors = {f"optim.{k}": v for k, v in opt.state_arrays().items()}
        save_model(self.model, path, tensors, {"checkpoint": json.dumps(info)})

    def restore(self, path, raw_images=None):
        """Load a checkpoint into this trainer's model and optimizer; returns (epoch, batch, partial).

        ``raw_images``: whether the data to continue with is uint8 (None: not known, not checked).
        """
        ck_model, optim_arrays, info = load_checkpoint(path)
        _check_checkpoint_info(info, path, len(self.model.layers))
        if raw_images is False and ck_model.normalization is not None:
            raise StateError(f"resume: checkpoint {path!r} was trained on raw uint8 images (it "
                             "normalises them with stored statistics), or by an older numcnn that "
                             "normalised float images too; this data is float, taken as prepared, "
                             "so the run would change its inputs: resume with the same uint8 "
                             "images, or start fresh")
        if ck_model.config()["layers"] != self.model.config()["layers"]:
            raise StateError(f"resume: checkpoint {path!r} holds a different architecture than the "
                             "model being trained; resume with the same model (or start fresh)")
        if ck_model.dtype != self.model.dtype:
            raise StateError(f"resume: checkpoint {path!r} holds {ck_model.dtype} weights but the "
                             f"model being trained is {self.model.dtype}; resume with the same "
                             "dtype (or start fresh)")
        if info["optimizer"]["type"] != type(self.optimizer).__name__:
            raise StateError(f"resume: checkpoint {path!r} was trained with "
                             f"{info['optimizer']['type']} but this run uses "
                             f"{type(self.optimizer).__name__}")
        if info.get("batch_size") != self.batch_size or info.get("seed") != self.seed:
            raise StateError(f"resume: checkpoint {path!r} used batch_size={info.get('batch_size')}, "
                             f"seed={info.get('seed')}; this run has batch_size={self.batch_size}, "
                             f"seed={self.seed}: resume with the same settings")
        ck_opt = info["optimizer"].get("config")
        mine = json.loads(json.dumps(self.optimizer.config()))        # lists, as stored
        changed = [f"{k}={ck_opt[k]!r} -> {mine[k]!r}" for k in mine
                   if k != "lr" and isinstance(ck_opt, dict) and k in ck_opt and ck_opt[k] != mine[k]]
        if info.get("schedule") not in (None, self.schedule_name):
            changed.append(f"schedule={info['schedule']!r} -> {self.schedule_name!r}")
        if changed:           # the learning rate may change (e.g. lowered after a divergence)
            raise StateError(f"resume: checkpoint {path!r} was trained with other settings "
                             f"({', '.join(changed)}); resume with the same ones (only the "
                             "learning rate and the number of epochs may change)")
        if info["epoch"] > self.epochs:    # equal: a finished run, resumed, changes nothing
            raise StateError(f"resume: checkpoint {path!r} has already finished {info['epoch']} "
                             f"epoch(s), more than the {self.epochs} this run asks for: ask for "
                             f"at least {info['epoch']} epochs")
        # everything that can refuse the checkpoint runs before the model is touched
        self.optimizer.params = self.model.parameters()
        self.optimizer.load_state_arrays(optim_arrays, info["optimizer"]["steps"], info["optimizer"]["lr"],
                                         info["optimizer"].get("param_steps"))
        xp = self.model.xp
        for mine, theirs in zip(self.model.layers, ck_model.layers):
            for p, q in zip(mine.parameters(), theirs.parameters()):
                p.value = xp.asarray(q.value)
                p.grad = None
            for name, b in theirs.buffers().items():
                mine.set_buffer(name, xp.asarray(b))
        self.model.normalization = ck_model.normalization
        for i, st in info.get("rng", {}).items():
            self.model.layers[int(i)]._set_rng_state(st)
        self.history = {k: list(info["history"].get(k, [])) for k in HISTORY_KEYS}
        es = info.get("early_stopping", {})
        self.best = math.inf if es.get("best") is None else es["best"]
        self.wait = es.get("wait", 0)
        return int(info["epoch"]), int(info["batch"]), info.get("partial")

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, train, val=None, resume=None):
        """Train; returns the history dict (per-epoch lists under :data:`HISTORY_KEYS`)."""
        model = self.model
        model.check_classes(model.classes, "fit: model.classes has",
                            advice="set one name per output before training")
        if isinstance(train, DataLoader):
            loader = train
        else:
            x, y = _check_xy(*_pair(train, "fit"), "fit", model.input_shape)
            # the model's (mean, std) apply to raw uint8 images, here as in predict/evaluate
            # (Sequential.prepare_input); float images are taken as already prepared
            raw = x.dtype == np.uint8
            if raw and model.normalization is None:
                model.normalization = compute_normalization(x)
            loader = DataLoader(x, y, self.batch_size, shuffle=True, seed=self.seed,
                                normalize=model.normalization if raw else None,
                                augment=self.augment, dtype=model.dtype)
        k = model.num_outputs()
        if not isinstance(train, DataLoader) and k is not None:
            _check_labels(y, "fit", k)
        if val is not None:
            val = _check_xy(*_pair(val, "fit (validation data)"), "fit (validation data)",
                            model.input_shape)
            if k is not None:
                _check_labels(val[1], "fit (validation data)", k)
        start_epoch, start_batch, partial = 0, 0, None
        if resume is not None:
            start_epoch, start_batch, partial = self.restore(
                resume, None if isinstance(train, DataLoader) else raw)
            if start_batch > len(loader):
                raise StateError(f"resume: checkpoint {resume!r} stopped at batch {start_batch} of "
                                 f"epoch {start_epoch + 1} but this data has {len(loader)} batches "
                                 "per epoch: resume with the same data and batch size")
            if not isinstance(train, DataLoader) and raw:
                loader.normalize = model.normalization
        if self.out_dir:
            _check_writable_folder(self.out_dir)     # now, not after the first epoch's work
        # a diverging run is caught and explained (loss and weights are checked for NaN/inf),
        # so NumPy's overflow warnings on the way there would only be noise
        with _StopFlag() as flag, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(start_epoch, self.epochs):
                stopped = self._run_epoch(loader, val, epoch, start_batch if epoch == start_epoch else 0,
                                          partial if epoch == start_epoch else None, flag)
                if stopped:
                    self.interrupted = True
                    break
                # stop once `patience` epochs in a row have not improved (patience=0: at the
                # first epoch that does not improve; an improving epoch never stops the run)
                if self.patience is not None and self.wait > 0 and self.wait >= self.patience:
                    break
        if self.out_dir and not self.interrupted:
            save_model(model, self._path("model.safetensors"))
        return self.history

    def _diverged(self, epoch, k, why):
        path = self.checkpoint_path
        last = f"; the last good checkpoint {path} is intact" if path and os.path.exists(path) else ""
        return TrainingDiverged(
            f"training diverged at epoch {epoch + 1}, step {k + 1}: {why}. The learning "
            f"rate ({self.optimizer.lr:g}) is probably too high: lower it (e.g. by 10x){last}")

    def _check_params_finite(self, epoch, k):
        xp = self.model.xp
        for name, p in self.model.named_parameters().items():
            if not bool(xp.isfinite(p.value).all()):
                raise self._diverged(epoch, k, f"parameter {name} holds NaN or inf after the update")

    def _step(self, xb, yb, yb_dev, flag):
        """Forward, loss and backward of one batch; returns (samples, loss sum, correct).  Under
        MPI: this rank's rows, then one Allreduce makes the gradients and the three totals the
        global batch's (numcnn.parallel.mpi.World.step)."""
        if self.distributed is not None:
            return self.distributed.step(self.model, self.loss, xb, yb, yb_dev, flag)
        logits = self.model.forward(xb, training=True)
        loss = self.loss.forward(logits, yb_dev)
        self.model.backward(self.loss.backward())
        return len(yb), loss * len(yb), int((to_numpy(logits.argmax(axis=1)) == yb).sum())

    def _run_epoch(self, loader, val, epoch, first_batch, partial, flag):
        model, opt, loss_fn = self.model, self.optimizer, self.loss
        self.schedule.set_epoch(epoch)
        n_batches = len(loader)
        seen = partial["seen"] if partial else 0
        loss_sum = partial["loss_sum"] if partial else 0.0
        correct = partial["correct"] if partial else 0
        t0 = time.perf_counter()
        t_prev = partial["time"] if partial else 0.0
        bar = None
        if self.progress is True:
            from tqdm.auto import tqdm
            bar = tqdm(total=n_batches, initial=first_batch, desc=f"epoch {epoch + 1}/{self.epochs}",
                       unit="batch", leave=True, dynamic_ncols=True)
        xp = model.xp
        try:
            batches = loader.iter_from(epoch, first_batch) if self.distributed is None else \
                self.distributed.shard_batches(loader, epoch, first_batch)     # this rank's rows
            for k, (xb, yb) in enumerate(batches, start=first_batch):
                if xp is not np:
                    xb, yb_dev = xp.asarray(xb), xp.asarray(yb)
                else:
                    yb_dev = yb
                try:
                    n, batch_loss, batch_correct = self._step(xb, yb, yb_dev, flag)
                except NonFiniteError as exc:
                    raise self._diverged(epoch, k, str(exc)) from None
                opt.step()
                opt.zero_grad()
                seen += n
                loss_sum += batch_loss
                correct += batch_correct
                if bar is not None:
                    el = t_prev + time.perf_counter() - t0
                    bar.set_postfix({"loss": f"{loss_sum / seen:.4f}", "acc": f"{correct / seen:.3f}",
                                     "img/s": f"{seen / max(el, 1e-9):,.0f}"}, refresh=False)
                    bar.update(1)
                if flag.stop and k + 1 < n_batches:
                    if self.checkpoint_path:
                        self._check_params_finite(epoch, k)
                        self.save_checkpoint(self.checkpoint_path, epoch, k + 1,
                                             {"seen": seen, "loss_sum": loss_sum, "correct": correct,
                                              "time": t_prev + time.perf_counter() - t0})
                    return True
        finally:
            if bar is not None:
                bar.close()
        elapsed = t_prev + time.perf_counter() - t0
        h = self.history
        h["epoch"].append(epoch + 1)
        h["train_loss"].append(loss_sum / seen)
        h["train_acc"].append(correct / seen)
        h["lr"].append(opt.lr)
        h["time"].append(elapsed)
        h["images_per_s"].append(seen / max(elapsed, 1e-9))
        monitor = loss_sum / seen
        if val is not None:
            rep = evaluate(model, *val, batch_size=256)
            h["val_loss"].append(rep["loss"])
            h["val_acc"].append(rep["accuracy"])
            monitor = rep["loss"]
        else:
            h["val_loss"].append(None)
            h["val_acc"].append(None)
        try:
            if not math.isfinite(monitor):
                # the epoch's last steps blew the weights up: never save them as a checkpoint
                raise self._diverged(epoch, n_batches - 1,
                                     f"the {'validation' if val is not None else 'training'} "
                                     f"loss at the end of the epoch is {monitor}")
            self._check_params_finite(epoch, n_batches - 1)
        except TrainingDiverged:
            for values in h.values():         # the history, like history.json, ends with the
                values.pop()                  # last good epoch
            raise
        if self.progress:
            msg = f"epoch {epoch + 1}: loss {h['train_loss'][-1]:.4f}, acc {h['train_acc'][-1] * 100:.2f}%"
            if val is not None:
                msg += f", val loss {h['val_loss'][-1]:.4f}, val acc {h['val_acc'][-1] * 100:.2f}%"
            msg += f", {h['images_per_s'][-1]:,.0f} img/s, {elapsed:.1f}s"
            if self.progress is True:
                from tqdm.auto import tqdm
                tqdm.write(msg)
            else:
                print(msg, flush=True)
        improved = monitor < self.best
        if improved:
            self.best, self.wait = monitor, 0
        else:
            self.wait += 1
        if self.out_dir:
            if improved:
                save_model(model, self._path("best.safetensors"))
            self.save_checkpoint(self.checkpoint_path, epoch + 1, 0, None)
            atomic_write(self._path("history.json"), json.dumps(h, indent=1).encode())
        return flag.stop


def fit(model, train, val=None, resume=None, **kw):
    """``Trainer(model, **kw).fit(train, val, resume)``; returns the history."""
    return Trainer(model, **kw).fit(train, val, resume=resume)
