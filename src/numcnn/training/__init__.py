"""Training: the trainer (``fit``), ``evaluate``, and the training run that owns a run folder.

* :mod:`.trainer`: :class:`Trainer` runs epochs of mini-batch gradient descent, with checkpoints,
  early stopping and bit-identical resume.
* :mod:`.evaluate`: :func:`evaluate`, loss, accuracy, per-class metrics, confusion matrix.
* :mod:`.run`: :class:`TrainingRun`, what ``numcnn train`` does (data, model, trainer, and every
  file of the run folder); the command line and the web playground both call it.

Importing this package wires ``model.fit`` and ``model.evaluate`` (see
:func:`numcnn.model.register_entry_point`).
"""
from ..model import register_entry_point
from .evaluate import evaluate
from .run import RUN_FILES, TrainingRun
from .trainer import HISTORY_KEYS, Trainer, TrainingDiverged, fit, make_optimizer

register_entry_point("fit", fit)
register_entry_point("evaluate", evaluate)

__all__ = ["Trainer", "TrainingDiverged", "TrainingRun", "evaluate", "fit", "make_optimizer",
           "HISTORY_KEYS", "RUN_FILES"]
