"""A training run: what ``numcnn train`` does, as one object the command and the web app share.

A run owns its folder from start to finish::

    runs/mnist-5k-lenet5-20261203-120000/
        .lock                     held (flock) while the run lives; the kernel frees it on exit
        checkpoint.safetensors    after every epoch and on Ctrl-C / request_stop()
        best.safetensors          the epoch with the lowest validation loss
        model.safetensors         the final model
        history.json              per-epoch loss, accuracy, learning rate, speed
        evaluation.json           test-set report of the final model
        history.png  confusion.png  filters.png  feature_maps.png

>>> from numcnn.training import TrainingRun
>>> run = TrainingRun(data="digits", model="digits-cnn", epochs=5, out="runs/digits")
>>> result = run.run()                    # same files, same numbers as the command
>>> result["report"]["accuracy"]

:meth:`TrainingRun.prepare` loads the data and builds the model and trainer (nothing written);
:meth:`TrainingRun.run` trains, evaluates and writes everything.  ``log`` receives the lines the
command prints; ``callback`` receives the trainer's per-step and per-epoch events.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import time

import numpy as np

from ..architecture import build_model
from ..data.augment import Augment
from ..data.datasets import is_named, load_dataset
from ..errors import ConfigError
from ..files import atomic_write, check_writable_folder, remove_stale_temps
from ..layers import Conv2D
from ..viz import plots
from .evaluate import evaluate
from .trainer import Trainer

try:                                    # POSIX: an advisory lock the kernel drops with the process
    import fcntl
except ImportError:                     # pragma: no cover - Windows
    fcntl = None

#: the defaults of ``numcnn train`` (and of a TrainingRun)
DEFAULTS = dict(data="mnist-5k", model="lenet5", epochs=30, batch_size=32, optimizer="adam",
                momentum=0.9, schedule="cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
#: what a training run leaves in its folder (a new run refuses to overwrite them)
RUN_FILES = ("model.safetensors", "best.safetensors", "checkpoint.safetensors", "history.json")


def load_data(name, image_size=None, classes=None):
    """The dataset ``name`` (a name or a path); ``classes`` (a trained model's) fixes an image
    folder's labels; ``image_size`` resizes image folders (named sets have a fixed size)."""
    kw = {"classes": list(classes)} if classes else {}
    if image_size is not None:
        if image_size < 1:
            raise ConfigError(f"--image-size must be a positive number of pixels, got {image_size}")
        if is_named(str(name)):
            raise ConfigError(f"--image-size resizes image folders; {name!r} is a named dataset "
                              "with a fixed size (drop --image-size)")
        kw["size"] = (image_size, image_size)
    return load_dataset(name, **kw)


def first_conv(model):
    """The model's first Conv2D layer (whose filters the run draws), or None."""
    return next((layer for layer in model.layers if isinstance(layer, Conv2D)), None)


def write_json(obj, path):
    """JSON written the way every numcnn file is: atomically, its folder created if needed;
    ``"-"`` writes it to standard output."""
    if path == "-":
        sys.stdout.write(json.dumps(obj, indent=1) + "\n")
        sys.stdout.flush()
        return
    atomic_write(path, json.dumps(obj, indent=1).encode())


def write_training_plots(model, history, report, x, out):
    """history.png, confusion.png, and for a model with a conv layer filters.png and
    feature_maps.png (of ``x[:1]``); returns the paths written."""
    written = [plots.plot_history(history, os.path.join(out, "history.png")),
               plots.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"],
                                    os.path.join(out, "confusion.png"))]
    conv = first_conv(model)
    if conv is not None:
        written.append(plots.plot_filters(conv.weight.value, os.path.join(out, "filters.png")))
        written.append(plots.plot_feature_maps(model, x[:1], os.path.join(out, "feature_maps.png")))
    return written


class RunFolderLock:
    """An exclusive lock on a run folder for the run's whole life (``fcntl.flock`` on
    ``folder/.lock``).  The kernel releases it when the process dies, so a killed run never
    blocks the next one; a second run on the same folder is refused at once."""

    def __init__(self, folder):
        self.folder = folder
        self._fd = None
        self.acquired_at = None          # time.time() when the lock was taken

    def acquire(self):
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"another numcnn run is using the folder {self.folder} right "
                                      "now; wait for it to finish, or choose another --out") from None
                raise
        self._fd = fd
        self.acquired_at = time.time()
        return self

    def discard(self):
        """Release the lock and remove what :meth:`acquire` made: ``.lock`` and, if it is then
        empty, the folder (for a run refused before writing anything in a folder it created)."""
        try:
            os.unlink(os.path.join(self.folder, ".lock"))
        except OSError:
            pass
        self.release()
        try:
            os.rmdir(self.folder)
        except OSError:
            pass

    def release(self):
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class TrainingRun:
    """Train a model on a dataset and fill a run folder, exactly as ``numcnn train`` does.

    Arguments are the command's options (see ``numcnn train --help``): ``data`` a dataset name or
    path, ``model`` a preset or a .json/.toml architecture, ``out`` the run folder (default
    ``runs/<data>-<model>-<time>``), ``resume`` a checkpoint to continue.  ``log(line)`` gets
    the lines the command prints (default: print); ``callback(event, info)`` the trainer's
    events; ``argv`` the command line, to suggest how to continue after an interruption.
    """

    def __init__(self, data=DEFAULTS["data"], model=DEFAULTS["model"], epochs=DEFAULTS["epochs"],
                 batch_size=DEFAULTS["batch_size"], optimizer=DEFAULTS["optimizer"], lr=None,
                 momentum=None, weight_decay=0.0, schedule=DEFAULTS["schedule"], shift=None,
                 flip=False, image_size=None, seed=0, patience=None, out=None, resume=None,
                 progress=True, callback=None, log=None, argv=None):
        self.data, self.model_spec = data, model
        self.epochs, self.batch_size = epochs, batch_size
        self.optimizer, self.lr, self.momentum = optimizer, lr, momentum
        self.weight_decay, self.schedule = weight_decay, schedule
        self.shift, self.flip, self.image_size = shift, flip, image_size
        self.seed, self.patience = seed, patience
        self.out, self.resume = out, resume
        self.progress, self.callback = progress, callback
        self.log = log or (lambda line: print(line, flush=True))
        self.argv = list(argv or [])
        self.model = self.trainer = self.dataset = None
        self.history = self.report = None
        self.interrupted = False

    # -- setting up (reads data, builds the model; writes nothing) ------------------------------
    def prepare(self):
        """Load the data, build the model and the trainer, and check that they fit together."""
        ds = self.dataset = load_data(self.data, self.image_size)
        (xtr, _), _ = ds.splits
        classes = list(ds.classes)
        model = build_model(self.model_spec, xtr.shape[1:], len(classes), self.seed)
        k = model.num_outputs()
        if k is not None and k != len(classes):
            raise ConfigError(f"model {self.model_spec!r} has {k} outputs but {self.data!r} has "
                              f"{len(classes)} classes; make its last layer output {len(classes)}")
        model.classes = classes
        if model.input_shape and tuple(xtr.shape[1:]) != model.input_shape:
            raise ConfigError(f"model {self.model_spec!r} takes images of shape {model.input_shape} "
                              f"but {self.data!r} has {tuple(xtr.shape[1:])}")
        if self.out is None:
            stem = os.path.basename(str(self.data)).replace(".", "_")
            arch = os.path.basename(str(self.model_spec)).split(".")[0]
            self.out = os.path.join("runs", f"{stem}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer)
        if self.momentum is None:
            self.momentum = DEFAULTS["momentum"]
        elif self.optimizer != "sgd":
            raise ConfigError(f"--momentum is for --optimizer sgd; {self.optimizer} has its own "
                              "moving averages (drop --momentum, or use --optimizer sgd)")
        if self.shift is None:      # 2 pixels for 28x28 digits, 1 for 8x8: about 1/14 of the side
            self.shift = max(1, round(xtr.shape[-1] / 14))
        elif self.shift >= min(xtr.shape[-2:]) / 2:
            raise ConfigError(f"--shift {self.shift} would move most of a {xtr.shape[-2]}x"
                              f"{xtr.shape[-1]} image off its canvas; use less than "
                              f"{min(xtr.shape[-2:]) / 2:g} (the default is about 1/14 of the side)")
        augment = Augment(shift=self.shift, flip=self.flip) if (self.shift or self.flip) else None
        self.model = model
        self.trainer = Trainer(model, optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay, schedule=self.schedule,
                               epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                               augment=augment, out_dir=self.out, patience=self.patience,
                               progress=self.progress, callback=self.callback)
        return self

    def _check_folder_free(self):
        """What a previous run left in the folder decides (the lock is held):

        * nothing, or only temporaries of killed writes: a fresh start (temporaries removed);
        * ``checkpoint.safetensors``: continuable - refused without ``--resume``, saying how;
        * ``model.safetensors`` without a checkpoint: a finished run - refused;
        * only ``best.safetensors``/``history.json`` (killed before its first checkpoint was
          written): nothing to continue, so the run restarts from epoch 0 and says so.
        """
        stale = remove_stale_temps(self.out, self._lock.acquired_at)
        if stale:
            self.log(f"removed {stale} temporary file(s) left by an interrupted write in {self.out}")
        previous = [f for f in RUN_FILES if os.path.exists(os.path.join(self.out, f))]
        if not previous or self.resume:
            return
        ck = os.path.join(self.out, "checkpoint.safetensors")
        if os.path.exists(ck):
            raise ConfigError(f"--out {self.out} holds a previous run ({', '.join(previous)}) that "
                              f"can be continued: add --resume {ck}; or choose another --out "
                              "(or delete that folder)")
        if os.path.exists(os.path.join(self.out, "model.safetensors")):
            raise ConfigError(f"--out {self.out} holds a finished run ({', '.join(previous)}); "
                              "choose another --out (or delete that folder)")
        for f in previous:               # no checkpoint: the old run can only be restarted
            os.unlink(os.path.join(self.out, f))
        self.log(f"--out {self.out} held {', '.join(previous)} from a run stopped before its "
                 "first checkpoint; nothing to continue, so this run starts again from epoch 0")

    # -- the run ---------------------------------------------------------------------------------
    def run(self):
        """Train, evaluate on the test split and write the run folder.

        The folder is locked (:class:`RunFolderLock`) before anything is written and, when
        ``out`` is given, before the data is loaded, so a second run on it is refused at once.
        Returns ``{"out", "history", "report", "elapsed", "interrupted"}``; ``report`` is None
        for an interrupted run (its checkpoint continues it: :attr:`resume_command`).
        """
        early = self.trainer is None and self.out is not None
        if self.trainer is None and not early:
            self.prepare()
        created = not os.path.exists(self.out)
        check_writable_folder(self.out)          # a clear error before the lock makes the folder
        with RunFolderLock(self.out) as self._lock:
            self._check_folder_free()
            if early:
                try:
                    self.prepare()
                except BaseException:            # refused before writing: leave no folder behind
                    if created:
                        self._lock.discard()
                    raise
            return self._train()

    def _train(self):
        (xtr, ytr), (xte, yte) = self.dataset.splits
        trainer, log = self.trainer, self.log
        log(f"numcnn train: {self.model_spec} on {self.data} ({len(xtr):,} train / {len(xte):,} "
            f"test images of {'x'.join(map(str, xtr.shape[1:]))}), {self.epochs} epochs, batch "
            f"{self.batch_size}, {type(trainer.optimizer).__name__} lr {trainer.optimizer.lr:g}, "
            f"{self.schedule} schedule")
        log(f"output folder: {self.out}")
        t0 = time.perf_counter()
        self.history = trainer.fit((xtr, ytr), (xte, yte), resume=self.resume)
        elapsed = time.perf_counter() - t0
        self.interrupted = trainer.interrupted
        if self.interrupted:
            return {"out": self.out, "history": self.history, "report": None,
                    "elapsed": elapsed, "interrupted": True}
        self.report = evaluate(self.model, xte, yte)
        write_json(self.report, os.path.join(self.out, "evaluation.json"))
        write_training_plots(self.model, self.history, self.report, xte, self.out)
        return {"out": self.out, "history": self.history, "report": self.report,
                "elapsed": elapsed, "interrupted": False}

    def request_stop(self):
        """Stop after the current step with a checkpoint (from another thread: the web app)."""
        if self.trainer is not None:
            self.trainer.request_stop()

    @property
    def resume_command(self):
        """The command line that continues an interrupted run."""
        again = [a for a in self.argv if a != "--resume"]
        if self.resume and self.resume in again:
            again.remove(self.resume)
        return f"numcnn train {' '.join(again)} --resume {self.trainer.checkpoint_path}".replace("  ", " ")
