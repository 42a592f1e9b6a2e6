"""The trainer: ``fit`` (mini-batch gradient descent with checkpoints, early stopping, resume).

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
import threading
import time

import numpy as np

from ..backend import to_numpy
from ..data.loader import DataLoader, compute_normalization
from ..data.provenance import describe_training_data
from ..errors import ConfigError, NonFiniteError, StateError
from ..files import atomic_write, check_writable_folder
from ..io import save_model
from ..layers.activation import Softmax
from ..losses import CrossEntropy
from ..optim import OPTIMIZERS, Optimizer, make_schedule
from ..parallel.mpi import world as mpi_world
from ..validate import check_labels, check_pair, check_xy
from .checkpoint import HISTORY_KEYS, restore_checkpoint
from .evaluate import evaluate



class TrainingDiverged(NonFiniteError):
    """The loss became NaN or infinite during training."""


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
        self.stop = False                   # the trainer's `interrupted` keeps the record
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


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
        callback: optional ``callback(event, info)`` called with ``"batch"`` after every step
            (``info``: epoch, batch, batches, loss, acc, images_per_s) and ``"epoch"`` after every
            epoch (``info``: epoch, history); the web playground streams these.

    :meth:`request_stop` (from any thread) ends the run after the current step with a checkpoint,
    as Ctrl-C does.
    """

    def __init__(self, model, optimizer="sgd", loss=None, lr=None, momentum=0.9, weight_decay=0.0,
                 schedule="constant", epochs=10, batch_size=64, seed=0, augment=None, out_dir=None,
                 patience=None, progress=True, callback=None):
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
        if loss is not None and loss.reduction != "mean":
            raise ConfigError(f"the trainer reports and steps on the batch's mean loss: use "
                              f"CrossEntropy(reduction='mean'), not {loss.reduction!r} (that one "
                              "is for your own loops)")
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
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be callable(event, info), got {callback!r}")
        self.callback = callback
        self._stop = _StopFlag()
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
        return restore_checkpoint(self, path, raw_images)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, train, val=None, resume=None):
        """Train; returns the history dict (per-epoch lists under :data:`HISTORY_KEYS`)."""
        model = self.model
        model.check_classes(model.classes, "fit: model.classes has",
                            advice="set one name per output before training")
        if isinstance(train, DataLoader):
            loader = train
        else:
            x, y = check_xy(*check_pair(train, "fit"), "fit", model.input_shape)
            # the model's (mean, std) apply to raw uint8 images, here as in predict/evaluate
            # (Sequential.prepare_input); float images are taken as already prepared
            raw = x.dtype == np.uint8
            if getattr(model, "training_data", None) is None and resume is None:
                # what the model learned from, stored in its file (numcnn.data.provenance)
                model.training_data = describe_training_data(
                    x, classes=model.classes, n_test=None if val is None else len(val[1]))
            if raw and model.normalization is None:
                model.normalization = compute_normalization(x)
            loader = DataLoader(x, y, self.batch_size, shuffle=True, seed=self.seed,
                                normalize=model.normalization if raw else None,
                                augment=self.augment, dtype=model.dtype)
        k = model.num_outputs()
        if not isinstance(train, DataLoader) and k is not None:
            check_labels(y, "fit", k)
        if val is not None:
            val = check_xy(*check_pair(val, "fit (validation data)"), "fit (validation data)",
                            model.input_shape)
            if k is not None:
                check_labels(val[1], "fit (validation data)", k)
        start_epoch, start_batch, partial = 0, 0, None
        if resume is not None:
            start_epoch, start_batch, partial = self.restore(
                resume, None if isinstance(train, DataLoader) else raw)
            if start_batch >= len(loader) and start_batch > 0:   # the Trainer never writes k = n
                raise StateError(f"resume: checkpoint {resume!r} stopped at batch {start_batch} of "
                                 f"epoch {start_epoch + 1} but this data has {len(loader)} batches "
                                 "per epoch: resume with the same data and batch size")
            if not isinstance(train, DataLoader) and raw:
                loader.normalize = model.normalization
        if self.out_dir:
            check_writable_folder(self.out_dir)     # now, not after the first epoch's work
        # a diverging run is caught and explained (loss and weights are checked for NaN/inf),
        # so NumPy's overflow warnings on the way there would only be noise
        with self._stop as flag, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
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

    def request_stop(self):
        """Stop after the current step, saving a checkpoint (safe to call from another thread)."""
        self._stop.stop = True

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
        model, opt = self.model, self.optimizer
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
                if self.callback is not None:
                    el = t_prev + time.perf_counter() - t0
                    self.callback("batch", {"epoch": epoch + 1, "batch": k + 1, "batches": n_batches,
                                            "loss": loss_sum / seen, "acc": correct / seen,
                                            "images_per_s": seen / max(el, 1e-9)})
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
        if self.callback is not None:
            self.callback("epoch", {"epoch": epoch + 1, "history": h})
        return flag.stop


def fit(model, train, val=None, resume=None, **kw):
    """``Trainer(model, **kw).fit(train, val, resume)``; returns the history."""
    return Trainer(model, **kw).fit(train, val, resume=resume)
