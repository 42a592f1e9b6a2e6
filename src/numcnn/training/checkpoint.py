"""Checkpoints: what the trainer stores to continue a run, and how it is checked and restored.

A checkpoint is a model file (:mod:`numcnn.io`) with two additions: tensors ``optim.{i}.{name}``
(the optimizer's state) and the metadata ``checkpoint``, a JSON object holding the epoch and
batch reached, the partial-epoch totals, the optimizer's type, config, step counts and learning
rate, the schedule, epochs, batch size and seed, the history, every random generator's state
and the early-stopping state.  :func:`check_checkpoint_info` refuses anything else before the
model being trained is touched.
"""
from __future__ import annotations

import json
import math

from ..errors import ModelFileError, StateError
from ..io import load_checkpoint
from ..layers.container import check_rng_state
from ..validate import MAX_COUNT, file_index

HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "images_per_s")


def check_checkpoint_info(info, path, n_layers):
    """The training state of a checkpoint must be what the Trainer writes; ModelFileError naming
    the file otherwise (never a KeyError halfway through resuming)."""
    def bad(what):
        return ModelFileError(f"resume: {path!r} has incomplete or corrupt checkpoint metadata "
                              f"({what}); it was "
                              "not written by numcnn's Trainer or is damaged - use another "
                              "checkpoint or start fresh")

    def count(v):           # a counter read from the file: 0..2**53 (10**400 is refused)
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT

    def number(v, positive=False):  # math.isfinite(10**400) itself raises OverflowError
        if isinstance(v, bool) or not isinstance(v, (int, float)) \
                or (isinstance(v, int) and abs(v) > MAX_COUNT):
            return False
        return math.isfinite(v) and (v > 0 if positive else True)

    opt = info.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("type"), str) \
            or not count(opt.get("steps")) or not number(opt.get("lr"), positive=True):
        raise bad("optimizer type, steps and lr")
    ps = opt.get("param_steps")            # absent in checkpoints written before it existed
    if ps is not None and not (isinstance(ps, list) and all(count(t) for t in ps)):
        raise bad("optimizer step counts per parameter")
    if not count(info.get("epoch")) or not count(info.get("batch")):
        def short(v):
            text = repr(v)
            return text if len(text) <= 30 else f"{text[:12]}...({len(text)} characters)"
        raise bad(f"epoch {short(info.get('epoch'))}, batch {short(info.get('batch'))}")
    partial = info.get("partial")
    if partial is not None and not (
            isinstance(partial, dict) and count(partial.get("seen")) and count(partial.get("correct"))
            and number(partial.get("loss_sum")) and number(partial.get("time"))):
        raise bad("the partial-epoch totals")
    # the position and the partial-epoch state must agree: the Trainer writes batch 0 without
    # partial totals at an epoch's end, and batch k > 0 with the totals of k batches mid-epoch
    if info["batch"] > 0 and (partial is None or partial["seen"] < 1
                              or partial["correct"] > partial["seen"]):
        raise bad(f"batch {info['batch']} of an unfinished epoch without its partial totals")
    if info["batch"] == 0 and partial is not None:
        raise bad("partial-epoch totals at the start of an epoch")
    hist = info.get("history")
    if not isinstance(hist, dict) or not all(isinstance(hist.get(k, []), list) for k in HISTORY_KEYS):
        raise bad("history")
    for k in HISTORY_KEYS:
        if not all(v is None or isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool)
                                                         and abs(v) <= MAX_COUNT)
                   for v in hist.get(k, [])):
            raise bad(f"history {k!r}")
    rng = info.get("rng", {})
    if not isinstance(rng, dict):
        raise bad("random states")
    for i, st in rng.items():
        if file_index(i, n_layers) is None:
            raise bad(f"random state for layer {i!r}")
        try:
            check_rng_state(st)                  # a generator's, or a block's by nested name
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            raise bad(f"random state for layer {i}") from None
    es = info.get("early_stopping", {})
    if not isinstance(es, dict) or not (es.get("best") is None or number(es.get("best"))) \
            or not count(es.get("wait", 0)):
        raise bad("early-stopping state")


def restore_checkpoint(trainer, path, raw_images=None):
    """Load checkpoint ``path`` into ``trainer``'s model and optimizer after checking that it
    belongs to the same run (architecture, dtype, optimizer, batch size, seed, settings);
    returns ``(epoch, batch, partial)``.  ``raw_images``: whether the data to continue with is
    uint8 (None: not known, not checked)."""
    ck_model, optim_arrays, info = load_checkpoint(path)
    check_checkpoint_info(info, path, len(trainer.model.layers))
    if raw_images is False and ck_model.normalization is not None:
        raise StateError(f"resume: checkpoint {path!r} was trained on raw uint8 images (it "
                         "normalises them with stored statistics), or by an older numcnn that "
                         "normalised float images too; this data is float, taken as prepared, "
                         "so the run would change its inputs: resume with the same uint8 "
                         "images, or start fresh")
    if ck_model.config()["layers"] != trainer.model.config()["layers"]:
        raise StateError(f"resume: checkpoint {path!r} holds a different architecture than the "
                         "model being trained; resume with the same model (or start fresh)")
    if ck_model.dtype != trainer.model.dtype:
        raise StateError(f"resume: checkpoint {path!r} holds {ck_model.dtype} weights but the "
                         f"model being trained is {trainer.model.dtype}; resume with the same "
                         "dtype (or start fresh)")
    if info["optimizer"]["type"] != type(trainer.optimizer).__name__:
        raise StateError(f"resume: checkpoint {path!r} was trained with "
                         f"{info['optimizer']['type']} but this run uses "
                         f"{type(trainer.optimizer).__name__}")
    if info.get("batch_size") != trainer.batch_size or info.get("seed") != trainer.seed:
        raise StateError(f"resume: checkpoint {path!r} used batch_size={info.get('batch_size')}, "
                         f"seed={info.get('seed')}; this run has batch_size={trainer.batch_size}, "
                         f"seed={trainer.seed}: resume with the same settings")
    ck_opt = info["optimizer"].get("config")
    mine = json.loads(json.dumps(trainer.optimizer.config()))        # lists, as stored
    changed = [f"{k}={ck_opt[k]!r} -> {mine[k]!r}" for k in mine
               if k != "lr" and isinstance(ck_opt, dict) and k in ck_opt and ck_opt[k] != mine[k]]
    if info.get("schedule") not in (None, trainer.schedule_name):
        changed.append(f"schedule={info['schedule']!r} -> {trainer.schedule_name!r}")
    if changed:           # the learning rate may change (e.g. lowered after a divergence)
        raise StateError(f"resume: checkpoint {path!r} was trained with other settings "
                         f"({', '.join(changed)}); resume with the same ones (only the "
                         "learning rate and the number of epochs may change)")
    if info["epoch"] > trainer.epochs or (info["batch"] > 0 and info["epoch"] >= trainer.epochs):
        # equal at an epoch's end: a finished run, resumed, changes nothing
        need = info["epoch"] + (info["batch"] > 0)
        raise StateError(f"resume: checkpoint {path!r} has already finished {info['epoch']} "
                         f"epoch(s){' and part of the next' if info['batch'] else ''}, more than "
                         f"the {trainer.epochs} this run asks for: ask for at least {need} epochs")
    # everything that can refuse the checkpoint runs before the model is touched
    trainer.optimizer.params = trainer.model.parameters()
    trainer.optimizer.load_state_arrays(optim_arrays, info["optimizer"]["steps"], info["optimizer"]["lr"],
                                     info["optimizer"].get("param_steps"))
    xp = trainer.model.xp
    for mine, theirs in zip(trainer.model.layers, ck_model.layers):
        for p, q in zip(mine.parameters(), theirs.parameters()):
            p.value = xp.asarray(q.value)
            p.grad = None
        for name, b in theirs.buffers().items():
            mine.set_buffer(name, xp.asarray(b))
    trainer.model.normalization = ck_model.normalization
    trainer.model.training_data = ck_model.training_data or trainer.model.training_data
    for i, st in info.get("rng", {}).items():
        trainer.model.layers[file_index(i, len(trainer.model.layers))]._set_rng_state(st)
    trainer.history = {k: list(info["history"].get(k, [])) for k in HISTORY_KEYS}
    es = info.get("early_stopping", {})
    trainer.best = math.inf if es.get("best") is None else es["best"]
    trainer.wait = es.get("wait", 0)
    return int(info["epoch"]), int(info["batch"]), info.get("partial")
