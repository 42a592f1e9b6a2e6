"""One training run started from the page, in a background thread.

The run itself is the library's :class:`numcnn.training.TrainingRun`, the object ``numcnn train``
uses, so a run started here writes the same run folder (checkpoints, model, history,
``evaluation.json``, plots) and can be resumed from the page or with
``numcnn train --data D --model M --out FOLDER --resume FOLDER/checkpoint.safetensors``.
This module only checks the page's settings, follows the run's events (``callback``: every
step, every epoch) for the page, and publishes the finished model to the model list.

Stopping is ``TrainingRun.request_stop()``: the run ends after the current step and saves a
checkpoint, as Ctrl-C does on the command line.  The thread survives a closed tab (nothing here
depends on a connection); one run at a time.  During a run, BLAS is limited to all cores but
one, so predictions keep a core.
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
from ..errors import NumcnnError
from ..files import atomic_write
from ..training.run import TrainingRun, first_conv
from .lookinside import pack
from .security import ApiError

#: the datasets a run may use: embedded ones always, downloaded ones only if already fetched
EMBEDDED = ("digits", "mnist-5k")
OPTIMIZERS = ("adam", "sgd", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
LIMITS = {"epochs": (1, 200), "batch_size": (1, 1024)}
#: the most misclassified test images the page shows
MISCLASSIFIED = 24
#: the last lines of the run's log kept for the page
LOG_LINES = 20
#: ``model`` for a run of the person's own architecture (JSON, written into the run folder)
ARCHITECTURE = "architecture"
MAX_ARCHITECTURE_BYTES = 256 << 10


def known_datasets() -> list:
    from ..data import datasets
    from ..data.sources import is_fetched
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


def check_config(params: dict) -> dict:
    """The run's settings from the page's JSON, checked; 400/422 with what to change."""
    if not isinstance(params, dict):
        raise ApiError(400, "expected a JSON object with the run's settings")
    allowed = {"dataset", "model", "architecture", "epochs", "batch_size", "optimizer", "lr",
               "seed", "resume"}
    unknown = set(params) - allowed
    if unknown:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; a run takes {sorted(allowed)}")
    known = {d["name"]: d for d in known_datasets()}
    dataset = params.get("dataset", "mnist-5k")
    if dataset not in known:
        raise ApiError(400, f"unknown dataset {dataset!r}; this server knows {', '.join(known)} "
                       "(others must be downloaded first with the command line)")
    preset = params.get("model", "lenet5" if dataset != "digits" else "digits-cnn")
    cfg = {"dataset": dataset, "model": preset}
    if preset == ARCHITECTURE:
        arch = params.get("architecture")
        if not isinstance(arch, dict):
            raise ApiError(400, "model 'architecture' needs architecture: a JSON object "
                           "{\"input_shape\": [C, H, W], \"layers\": [...]} (docs/architecture-format.md)")
        if len(json.dumps(arch)) > MAX_ARCHITECTURE_BYTES:
            raise ApiError(413, f"the architecture is over {MAX_ARCHITECTURE_BYTES:,} bytes of JSON")
        cfg["architecture"] = arch
    elif preset not in models.PRESETS:
        raise ApiError(400, f"unknown preset {preset!r}; choose one of {', '.join(models.PRESETS)} "
                       f"or {ARCHITECTURE!r} with an architecture")
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
    cfg["value_max"] = known[dataset]["value_max"]
    return cfg


class TrainingJob:
    """A :class:`TrainingRun` in a background thread; :meth:`status` is what the page polls."""

    def __init__(self, cfg, root, store, resume_dir=None):
        self.cfg, self.store = cfg, store
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
        self.epoch, self.batch, self.batches = 1, 0, 0
        self.images_per_s = 0.0
        self.t_start = time.time()
        self.filters = []                # (epoch, packed weights of the first conv layer)
        self.history = {}
        self.log = []
        self.result = None
        self.model_id = None
        spec, written = cfg["model"], None
        if spec == ARCHITECTURE:         # the description goes into the run folder, by our name
            written = self.out / "architecture.json"
            made = not self.out.exists()
            atomic_write(str(written), json.dumps(cfg["architecture"], indent=1).encode())
            spec = str(written)
        self.run = TrainingRun(data=cfg["dataset"], model=spec, epochs=cfg["epochs"],
                               batch_size=cfg["batch_size"], optimizer=cfg["optimizer"],
                               lr=cfg["lr"], seed=cfg["seed"], out=str(self.out),
                               resume=str(self.out / "checkpoint.safetensors") if self.resume else None,
                               progress=False, callback=self._event, log=self._log)
        try:                             # data and model now: a bad combination is a 422 at once
            self.run.prepare()
        except NumcnnError as exc:
            if written is not None and not self.resume:
                written.unlink(missing_ok=True)
                if made:
                    self.out.rmdir()
            msg = str(exc).replace(str(written), "architecture.json") if written else str(exc)
            raise ApiError(422, f"{cfg['model']} on {cfg['dataset']}: {msg}") from None
        if not self.resume:              # a resumed run's weights come from its checkpoint later
            self._snapshot_filters(0)
        self.thread = threading.Thread(target=self._run, name="numcnn-train", daemon=True)

    # -- from the page ------------------------------------------------------------------------
    def start(self):
        self.thread.start()

    def stop(self):
        self.run.request_stop()

    @property
    def active(self):
        return self.state in ("starting", "running", "finishing")

    def status(self) -> dict:
        h = self.history
        n = min((len(v) for v in h.values()), default=0)
        return {"state": self.state, "error": self.error,
                "config": {k: v for k, v in self.cfg.items()},
                "run_folder": os.path.relpath(self.out, self.root),
                "progress": {"epoch": self.epoch, "epochs": self.cfg["epochs"], "batch": self.batch,
                             "batches": self.batches, "images_per_s": self.images_per_s,
                             "elapsed": time.time() - self.t_start},
                "history": {k: list(v[:n]) for k, v in h.items()},
                "filters": [{"epoch": e, "data": d} for e, d in self.filters[-12:]],
                "log": self.log[-LOG_LINES:],
                "result": self.result, "model_id": self.model_id,
                "can_resume": self.state == "stopped" and (self.out / "checkpoint.safetensors").exists()}

    # -- from the training thread ---------------------------------------------------------------
    def _log(self, line):
        self.log.append(str(line))
        del self.log[:-LOG_LINES]

    def _snapshot_filters(self, epoch):
        conv = first_conv(self.run.model)
        if conv is not None:
            self.filters.append((epoch, pack(conv.weight.value[:32])))

    def _event(self, event, info):
        self.state = "running"
        if event == "batch":
            self.epoch, self.batch, self.batches = info["epoch"], info["batch"], info["batches"]
            self.images_per_s = info["images_per_s"]
        elif event == "epoch":
            self.history = {k: list(v) for k, v in info["history"].items()}
            self._snapshot_filters(info["epoch"])

    def _run(self):
        from threadpoolctl import threadpool_limits
        try:
            with threadpool_limits(limits=max(1, (os.cpu_count() or 1) - 1)):
                result = self.run.run()
            self.history = {k: list(v) for k, v in result["history"].items()}
            self._publish(result["report"])
            self.state = "stopped" if result["interrupted"] else "done"
        except NumcnnError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:        # noqa: BLE001 - shown on the page, logged here
            traceback.print_exc()
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"

    def _publish(self, report):
        """Results for the page, and the model for the model page."""
        model = self.run.model
        model.eval()
        if report is not None:
            _, (xte, yte) = self.run.dataset.splits
            probs = model.predict(xte)
            pred = probs.argmax(axis=1)
            wrong = np.nonzero(pred != yte)[0][:MISCLASSIFIED]
            self.result = {
                "accuracy": report["accuracy"], "loss": report["loss"], "classes": report["classes"],
                "confusion": np.asarray(report["confusion_matrix"]).tolist(),
                "misclassified": [{"index": int(i), "label": int(yte[i]), "pred": int(pred[i]),
                                   "prob": float(probs[i, pred[i]]),
                                   "image": pack(xte[i].astype(np.float32))} for i in wrong]}
        done = report is not None
        name = f"{self.out.name} ({'trained here' if done else 'stopped, in memory'})"
        path = self.out / "model.safetensors"
        self.model_id = self.store.add_trained(model, path if done and path.exists() else None,
                                               name, self.cfg["dataset"], self.cfg["value_max"])
