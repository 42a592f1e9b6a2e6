"""One training run started from the page, in a background thread: the adapter to the library.

This is the only module of the web app that knows how a training run is put together.  It does
what ``numcnn train`` does (load the dataset, build the preset, train with checkpoints under a
run folder, then write ``evaluation.json`` and the plots) so a run started here leaves the same
run folder as the command line, and can be resumed from the page or with
``numcnn train --data D --model M --out FOLDER --resume FOLDER/checkpoint.safetensors``.
When the library's training run (``numcnn.training.run``) lands, :meth:`TrainingJob._run` becomes
a call to it.

Watching and stopping go through the data loader, the one object the trainer takes from
outside: :class:`_WatchedLoader` counts batches and images per second, keeps the first conv
layer's filters at the start of every epoch, and raises :class:`_Stopped` at the next batch once
a stop is asked for.  The run folder then holds the checkpoint of the last finished epoch.

The thread survives a closed tab (nothing here depends on a connection), and one run at a time
is allowed.  During a run, BLAS is limited to all cores but one, so predictions keep a core.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from .. import models
from ..data.loader import DataLoader, compute_normalization
from ..errors import NumcnnError
from ..layers import Conv2D
from .lookinside import pack
from .security import ApiError

#: the datasets a run may use: embedded ones always, downloaded ones only if already fetched
EMBEDDED = ("digits", "mnist-5k")
OPTIMIZERS = ("adam", "sgd", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
LIMITS = {"epochs": (1, 200), "batch_size": (1, 1024)}
#: the most misclassified test images the page shows
MISCLASSIFIED = 24
#: files a run leaves in its folder (as ``numcnn train``)
RUN_FILES = ("model.safetensors", "best.safetensors", "checkpoint.safetensors", "history.json")


class _Stopped(Exception):
    """Raised inside the training loop (between two batches) when the page asks to stop."""


def known_datasets() -> list:
    from .. import datasets
    from ..data.download import is_fetched
    out = []
    for name in datasets.available():
        inf = datasets.info(name)
        if name in EMBEDDED or (not inf.get("embedded") and _fetched(is_fetched, name)):
            out.append({"name": name, "shape": list(inf["shape"]), "classes": list(inf["classes"]),
                        "n_train": inf["n_train"], "n_test": inf["n_test"],
                        "value_max": int(inf["value_range"][1]),
                        "description": inf.get("description", "")})
    return out


def _fetched(is_fetched, name):
    try:
        return is_fetched(name)
    except Exception:           # noqa: BLE001 - an unreadable cache means "not available"
        return False


def _first_conv(model):
    return next((l for l in model.layers if isinstance(l, Conv2D)), None)


class _WatchedLoader(DataLoader):
    """A DataLoader that reports progress to its job and stops the run when asked."""

    job = None

    def iter_from(self, epoch, batch_index=0):
        job = self.job
        job._epoch_started(epoch, batch_index, len(self))
        for xb, yb in super().iter_from(epoch, batch_index):
            if job.stop_requested.is_set():
                raise _Stopped()
            yield xb, yb
            job._batch_done(len(yb))


def check_config(params: dict) -> dict:
    """The run's settings from the page's JSON, checked; 400/422 with what to change."""
    if not isinstance(params, dict):
        raise ApiError(400, "expected a JSON object with the run's settings")
    allowed = {"dataset", "model", "epochs", "batch_size", "optimizer", "lr", "seed", "resume"}
    unknown = set(params) - allowed
    if unknown:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; a run takes {sorted(allowed)}")
    known = {d["name"]: d for d in known_datasets()}
    dataset = params.get("dataset", "mnist-5k")
    if dataset not in known:
        raise ApiError(400, f"unknown dataset {dataset!r}; this server knows {', '.join(known)} "
                       "(others must be downloaded first with the command line)")
    preset = params.get("model", "lenet5" if dataset != "digits" else "digits-cnn")
    if preset not in models.PRESETS:
        raise ApiError(400, f"unknown preset {preset!r}; choose one of {', '.join(models.PRESETS)}")
    cfg = {"dataset": dataset, "model": preset}
    for name, default in (("epochs", 5), ("batch_size", 32)):
        v = params.get(name, default)
        lo, hi = LIMITS[name]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}, got {v!r}")
        cfg[name] = v
    opt = params.get("optimizer", "adam")
    if opt not in OPTIMIZERS:
        raise ApiError(400, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {opt!r}")
    cfg["optimizer"] = opt
    lr = params.get("lr", DEFAULT_LR[opt])
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr <= 10) \
            or not math.isfinite(lr):
        raise ApiError(400, f"lr must be a number in (0, 10], got {lr!r}")
    cfg["lr"] = float(lr)
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise ApiError(400, f"seed must be a whole number from 0 to 2**32 - 1, got {seed!r}")
    cfg["seed"] = seed
    shape = known[dataset]["shape"]
    try:
        model = models.build(preset, in_channels=shape[0], num_classes=len(known[dataset]["classes"]),
                             image_size=shape[1], rng=seed)
    except NumcnnError as exc:
        raise ApiError(422, f"{preset} does not fit {dataset} ({'x'.join(map(str, shape))} "
                       f"images): {exc}") from None
    cfg["value_max"] = known[dataset]["value_max"]
    return cfg, model


class TrainingJob:
    """A training run in a background thread; :meth:`status` is what the page polls."""

    def __init__(self, cfg, model, root, store, resume_dir=None):
        self.cfg, self.model, self.store = cfg, model, store
        self.root = Path(root)
        if resume_dir is not None:
            self.out = Path(resume_dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = self.root / "runs" / f"{cfg['dataset'].replace('.', '_')}-{cfg['model']}-{stamp}"
            self.out, n = base, 1
            while self.out.exists():
                n += 1
                self.out = Path(f"{base}-{n}")
        self.resume = resume_dir is not None
        self.state = "starting"          # starting, running, finishing, done, stopped, failed
        self.error = None
        self.stop_requested = threading.Event()
        self.epoch = 0
        self.batch = 0
        self.batches = 0
        self.images = 0
        self.t_start = time.time()
        self.t_epoch = time.perf_counter()
        self.images_per_s = 0.0
        self.filters = []                # (epoch, packed weight) at the start of each epoch
        self.trainer = None
        self.result = None
        self.model_id = None
        self.thread = threading.Thread(target=self._run, name="numcnn-train", daemon=True)

    # -- from the page ------------------------------------------------------------------------
    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_requested.set()

    @property
    def active(self):
        return self.state in ("starting", "running", "finishing")

    def status(self) -> dict:
        h = self.trainer.history if self.trainer is not None else {}
        n = min((len(v) for v in h.values()), default=0)
        history = {k: list(v[:n]) for k, v in h.items()}
        return {"state": self.state, "error": self.error, "config": {k: v for k, v in self.cfg.items()},
                "run_folder": str(self.out.relative_to(self.root)) if self.out.is_relative_to(self.root)
                else self.out.name,
                "progress": {"epoch": self.epoch + 1, "epochs": self.cfg["epochs"], "batch": self.batch,
                             "batches": self.batches, "images_per_s": self.images_per_s,
                             "elapsed": time.time() - self.t_start},
                "history": history,
                "filters": [{"epoch": e, "data": d} for e, d in self.filters[-12:]],
                "result": self.result, "model_id": self.model_id,
                "can_resume": self.state == "stopped" and (self.out / "checkpoint.safetensors").exists()}

    # -- from the training thread ---------------------------------------------------------------
    def _snapshot_filters(self, epoch):
        conv = _first_conv(self.model)
        if conv is not None:
            w = conv.weight.value[:32]
            self.filters.append((epoch, pack(w)))

    def _epoch_started(self, epoch, batch_index, batches):
        self.epoch, self.batch, self.batches = epoch, batch_index, batches
        self.t_epoch, self.images = time.perf_counter(), 0
        self._snapshot_filters(epoch)
        self.state = "running"

    def _batch_done(self, n):
        self.batch += 1
        self.images += n
        self.images_per_s = self.images / max(time.perf_counter() - self.t_epoch, 1e-9)

    def _run(self):
        from threadpoolctl import threadpool_limits
        cores = os.cpu_count() or 1
        try:
            with threadpool_limits(limits=max(1, cores - 1)):
                self._train()
        except _Stopped:
            self.state = "stopped"
            self._publish("stopped")
        except NumcnnError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:        # noqa: BLE001 - shown on the page, logged here
            traceback.print_exc()
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"

    def _train(self):
        from .. import datasets
        from ..data.augment import Augment
        from ..training import Trainer, evaluate
        cfg = self.cfg
        ds = datasets.load_dataset(cfg["dataset"])
        (xtr, ytr), (xte, yte) = ds.splits
        model = self.model
        model.classes = list(ds.classes)
        self.x_test, self.y_test = xte, yte
        if not self.resume:
            previous = [f for f in RUN_FILES if (self.out / f).exists()]
            if previous:
                raise NumcnnError(f"{self.out} holds a previous run ({', '.join(previous)})")
        # the same defaults as `numcnn train`: cosine schedule, shifts of about 1/14 of the side
        shift = max(1, round(xtr.shape[-1] / 14))
        model.normalization = compute_normalization(xtr)
        loader = _WatchedLoader(xtr, ytr, cfg["batch_size"], shuffle=True, seed=cfg["seed"],
                                normalize=model.normalization, augment=Augment(shift=shift),
                                dtype=model.dtype)
        loader.job = self
        self.trainer = Trainer(model, optimizer=cfg["optimizer"], lr=cfg["lr"],
                               schedule="cosine", epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                               seed=cfg["seed"], augment=None, out_dir=str(self.out), progress=False)
        resume = str(self.out / "checkpoint.safetensors") if self.resume else None
        history = self.trainer.fit(loader, (xte, yte), resume=resume)
        self.state = "finishing"
        self._snapshot_filters(cfg["epochs"])
        report = evaluate(model, xte, yte)
        _write_json(report, self.out / "evaluation.json")
        self._plots(model, history, report, xte)
        self._publish("done", report)
        self.state = "done"

    def _plots(self, model, history, report, x):
        from ..viz import plots
        plots.plot_history(history, str(self.out / "history.png"))
        plots.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"],
                             str(self.out / "confusion.png"))
        conv = _first_conv(model)
        if conv is not None:
            plots.plot_filters(conv.weight.value, str(self.out / "filters.png"))
            plots.plot_feature_maps(model, x[:1], str(self.out / "feature_maps.png"))

    def _publish(self, how, report=None):
        """Results for the page, and the model for the model page."""
        model = self.model
        model.eval()
        if report is None:
            return self._register(how)
        probs = model.predict(self.x_test)
        pred = probs.argmax(axis=1)
        wrong = np.nonzero(pred != self.y_test)[0][:MISCLASSIFIED]
        self.result = {
            "accuracy": report["accuracy"], "loss": report["loss"], "classes": report["classes"],
            "confusion": np.asarray(report["confusion_matrix"]).tolist(),
            "misclassified": [{"index": int(i), "label": int(self.y_test[i]), "pred": int(pred[i]),
                               "prob": float(probs[i, pred[i]]),
                               "image": pack(self.x_test[i].astype(np.float32))} for i in wrong]}
        self._register(how)

    def _register(self, how):
        name = f"{self.out.name} ({'trained here' if how == 'done' else 'stopped, in memory'})"
        path = self.out / "model.safetensors"
        self.model_id = self.store.add_trained(self.model, path if path.exists() else None, name,
                                               self.cfg["dataset"], self.cfg["value_max"])


def _write_json(obj, path):
    from ..io import atomic_write
    atomic_write(str(path), json.dumps(obj, indent=1).encode())
