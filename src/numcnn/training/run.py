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

from .._version import __version__
from ..architecture import build_model
from ..data.augment import Augment
from ..data.datasets import DIGIT_CLASSES, is_named, load_dataset
from ..data.provenance import describe_training_data
from ..errors import ConfigError, NumcnnError
from ..io import load_checkpoint
from ..files import atomic_write, check_writable_folder, remove_stale_temps
from ..layers import Conv2D
from ..parallel import launch
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
        written.append(plots.plot_feature_maps(model, x[:1], os.path.join(out, "feature_maps.png"),
                                               image_name="test image 0"))
    return written


def _epochs(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _remove_if_empty(folder):
    """Remove a run folder this run made when it holds nothing but the lock file and run.json
    (an interrupted start must not leave an empty run behind)."""
    try:
        names = os.listdir(folder)
        if set(names) <= {".lock", "run.json"}:
            for n in names:
                os.remove(os.path.join(folder, n))
            os.rmdir(folder)
    except OSError:
        pass


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
        self.made_lock_file = not os.path.exists(path)
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
        """Release the lock and remove the ``.lock`` file if :meth:`acquire` made it (a run that
        turned out to have nothing to do leaves the folder as it found it)."""
        if self.made_lock_file:
            try:
                os.unlink(os.path.join(self.folder, ".lock"))
            except OSError:
                pass
        self.release()

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
    ``epochs`` and ``schedule`` left as None are the defaults (30, cosine) for a new run and
    the checkpoint's for a resumed one, so resuming continues the same run.
    """

    def __init__(self, data=DEFAULTS["data"], model=DEFAULTS["model"], epochs=None,
                 batch_size=DEFAULTS["batch_size"], optimizer=DEFAULTS["optimizer"], lr=None,
                 momentum=None, weight_decay=0.0, schedule=None, shift=None,
                 flip=False, image_size=None, seed=0, patience=None, out=None, resume=None,
                 threads=None, progress=True, callback=None, log=None, argv=None):
        self.data, self.model_spec = data, model
        self.epochs, self.batch_size = epochs, batch_size
        self.optimizer, self.lr, self.momentum = optimizer, lr, momentum
        self.weight_decay, self.schedule = weight_decay, schedule
        self.shift, self.flip, self.image_size = shift, flip, image_size
        self.seed, self.patience = seed, patience
        self.out, self.resume, self.threads = out, resume, threads
        self.progress, self.callback = progress, callback
        self.log = log or (lambda line: print(line, flush=True))
        self.argv = list(argv or [])
        self.model = self.trainer = self.dataset = self.world = None
        self.history = self.report = None
        self.interrupted = False
        self.resume_info = None         # the checkpoint's training state, when resuming
        self.complete = False           # resumed a run that had already finished

    # -- setting up (reads data, builds the model; writes nothing) ------------------------------
    def arguments(self) -> dict:
        """The run's settings, as ``run.json`` records them."""
        names = ("data", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                 "schedule", "shift", "flip", "image_size", "seed", "patience", "out", "resume",
                 "threads")
        return {"model": self.model_spec, **{n: getattr(self, n) for n in names}}

    def _join(self):
        """Set the thread count and, under ``mpiexec``, join the MPI job (once)."""
        if not getattr(self, "_joined", False):
            self.world = launch.setup(self.threads)
            self._joined = True

    def prepare(self):
        """Load the data, build the model and the trainer, and check that they fit together.
        Sets the thread count and, under ``mpiexec``, joins the MPI job (rank 0 prints and
        writes; every rank trains its rows of each batch)."""
        self._join()
        ck_data = None
        if self.resume is not None:
            ck_model, _, self.resume_info = load_checkpoint(self.resume)   # refused if not one
            ck_data = (ck_model.training_data or {}).get("dataset")
        ck = self.resume_info or {}
        if self.epochs is None:
            self.epochs = ck.get("epochs") or DEFAULTS["epochs"]
        if self.schedule is None:
            self.schedule = ck.get("schedule") or DEFAULTS["schedule"]
        ds = self.dataset = load_data(self.data, self.image_size)
        (xtr, _), _ = ds.splits
        classes = list(ds.classes)
        if self.flip and tuple(classes) == DIGIT_CLASSES:
            raise ConfigError(f"--flip mirrors images left to right; {self.data!r} holds digits, "
                              "and a mirrored 2 or 7 is no digit: drop --flip (it is for photos)")
        try:
            model = build_model(self.model_spec, xtr.shape[1:], len(classes), self.seed)
        except NumcnnError as exc:
            small = xtr.shape[-1] < 16 and self.model_spec in ("lenet5", "mnist-small", "cifar-vgg")
            if not small:
                raise
            raise ConfigError(f"{exc}. {self.data!r} has {xtr.shape[-2]}x{xtr.shape[-1]} images, "
                              f"too small for {self.model_spec!r}: use --model digits-cnn (made for "
                              "8x8 digits)") from None
        k = model.num_outputs()
        if k is not None and k != len(classes):
            raise ConfigError(f"model {self.model_spec!r} has {k} outputs but {self.data!r} has "
                              f"{len(classes)} classes; make its last layer output {len(classes)}")
        model.classes = classes
        model.training_data = describe_training_data(
            xtr, dataset=ds.name if is_named(str(self.data)) else os.path.abspath(str(self.data)),
            classes=classes, n_test=len(ds.y_test))
        if ck_data and ck_data != model.training_data["dataset"]:
            raise ConfigError(f"--resume {self.resume} was trained on {ck_data}, not on "
                              f"{self.data}; resume with --data {ck_data} (the same run), or "
                              "start a new run")
        if model.input_shape and tuple(xtr.shape[1:]) != model.input_shape:
            raise ConfigError(f"model {self.model_spec!r} takes images of shape {model.input_shape} "
                              f"but {self.data!r} has {tuple(xtr.shape[1:])}")
        if self.out is None:
            stem = os.path.basename(str(self.data)).replace(".", "_")
            arch = os.path.basename(str(self.model_spec)).split(".")[0]
            self.out = os.path.join("runs", f"{stem}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.out = launch.agree(self.world, self.out)   # every rank: rank 0's folder
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
        self._join()
        rank0 = self.world is None or self.world.root
        early = self.trainer is None and self.out is not None and rank0
        if self.trainer is None and not early:
            self.prepare()
        if not rank0:                            # only rank 0 owns (and writes) the folder
            return self._complete_result() if self._already_complete() else self._train()
        created = not os.path.exists(self.out)
        check_writable_folder(self.out)          # a clear error before the lock makes the folder
        try:
            with RunFolderLock(self.out) as self._lock:
                self._check_folder_free()
                if early:
                    self.prepare()
                if self._already_complete():
                    self._lock.discard()
                    return self._complete_result()
                launch.write_run_json(self.out, launch.run_record(
                    self.arguments(), self.argv, self.dataset, self.world, __version__))
                return self._train()
        except BaseException:       # refused before training, a second Ctrl-C, an error in the
            if created:             # first epoch: leave no empty run folder behind
                _remove_if_empty(self.out)
            raise

    def _complete_result(self):
        return {"out": self.out, "history": self.resume_info.get("history"), "report": None,
                "elapsed": 0.0, "interrupted": False, "complete": True}

    def _already_complete(self):
        """A resumed checkpoint that finished every epoch: nothing to do, nothing to change."""
        ck = self.resume_info
        # a run killed after its last epoch but before its report (evaluation.json beside the
        # checkpoint) is not complete: resuming it trains no further and writes what is missing
        self.complete = bool(ck) and ck.get("batch") == 0 and not ck.get("partial") \
            and ck.get("epoch") == self.epochs and os.path.exists(os.path.join(
                os.path.dirname(os.path.abspath(self.resume)), "evaluation.json"))
        if self.complete:
            self.log(f"this run is already complete ({_epochs(ck['epoch'])} of {self.epochs} done; "
                     f"nothing changed); to train longer, resume with --epochs {self.epochs + 10}, "
                     "say")
        return self.complete

    def _train(self):
        (xtr, ytr), (xte, yte) = self.dataset.splits
        trainer, log = self.trainer, self.log
        log(f"numcnn train: {self.model_spec} on {self.data} ({len(xtr):,} train / {len(xte):,} "
            f"test images of {'x'.join(map(str, xtr.shape[1:]))}), {_epochs(self.epochs)}, batch "
            f"{self.batch_size}, {type(trainer.optimizer).__name__} lr {trainer.optimizer.lr:g}, "
            f"{self.schedule} schedule")
        log(f"output folder: {self.out}" + (f"; {self.world.size} processes (MPI)" if self.world else ""))
        ck = self.resume_info
        if ck:
            at = ck["epoch"] + 1
            within = f", step {ck['batch'] + 1}" if ck.get("batch") else ""
            log(f"resuming at epoch {at}{within} of {self.epochs} (from {self.resume})")
        t0 = time.perf_counter()
        self.history = trainer.fit((xtr, ytr), (xte, yte), resume=self.resume)
        elapsed = time.perf_counter() - t0
        self.interrupted = trainer.interrupted
        if self.interrupted or (self.world is not None and not self.world.root):
            return {"out": self.out, "history": self.history, "report": None,
                    "elapsed": elapsed, "interrupted": self.interrupted}
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
