"""Which data a trained model is evaluated on: by default the data it was trained on.

A model file records its training data (``model.training_data``, see
:mod:`numcnn.data.provenance`): the dataset's name or path, its split, class names and value
range.  ``numcnn evaluate MODEL`` and ``numcnn plot MODEL`` use it when no ``--data`` is given,
and any dataset whose classes are not the model's is refused (evaluating a cats-and-dogs model
on MNIST under the names "cat" and "dog" gives a number that means nothing).
"""
from __future__ import annotations

import os

import numpy as np

from ..data.datasets import is_named, load_dataset
from ..data.provenance import to_training_range
from ..errors import ConfigError
from .run import DEFAULTS, load_data

SPLITS = ("test", "train", "all")


def default_data(model):
    """``(dataset, split)`` the model was trained on, or ``(None, None)`` when its file does not
    say (files written before numcnn recorded it)."""
    rec = getattr(model, "training_data", None) or {}
    return rec.get("dataset"), rec.get("split", "test")


def _names(classes, limit=6):
    classes = list(classes)
    shown = ", ".join(classes[:limit])
    return shown + (f", ... ({len(classes)} classes)" if len(classes) > limit else "")


def data_for_model(model, data=None, split=None, image_size=None):
    """Load the data to evaluate ``model`` on and check it fits the model.

    ``data``: a dataset name or path; None: the one recorded in the model file (the embedded
    ``mnist-5k`` for files without a record).  ``split``: ``"test"``, ``"train"`` or ``"all"``
    (both together); None: the recorded split.  Image folders are read with the model's class
    names (a folder holding only some of them is fine), its channels and its image size (unless
    ``image_size`` says otherwise), and brought to the model's training value range
    (:func:`numcnn.data.provenance.to_training_range`), as ``predict`` does with pictures.

    Returns ``(x, y, dataset, name, split)``.  ConfigError when the dataset's classes are not the
    model's, its images have another shape, or the recorded dataset is gone.
    """
    rec_data, rec_split = default_data(model)
    recorded = data is None
    if data is None:
        data = rec_data or DEFAULTS["data"]
    split = split or (rec_split if recorded else None) or "test"
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if recorded and rec_data and not is_named(rec_data) and not os.path.exists(rec_data):
        raise ConfigError(f"the model was trained on {rec_data}, which no longer exists; give the "
                          "data to evaluate on with --data")
    shape = getattr(model, "input_shape", None)
    if image_size is None and not is_named(str(data)) and os.path.isdir(str(data)) and shape \
            and len(shape) == 3:
        kw = {"classes": list(model.classes)} if model.classes else {}
        ds = load_dataset(data, size=tuple(shape[1:]), mode="L" if shape[0] == 1 else "RGB", **kw)
    else:
        ds = load_data(data, image_size, model.classes)
    if model.classes and is_named(str(data)) and tuple(model.classes) != tuple(ds.classes):
        raise ConfigError(f"the model's classes ({_names(model.classes)}) are not {data!r}'s "
                          f"({_names(ds.classes)}); evaluate it on the data it was trained on"
                          f"{f' ({rec_data})' if rec_data else ''} or on data with the same classes")
    if model.classes and not set(ds.classes) <= set(model.classes):
        extra = sorted(set(ds.classes) - set(model.classes))
        raise ConfigError(f"{data!r} has classes the model does not know ({_names(extra)}); the "
                          f"model's classes are {_names(model.classes)}")
    (xtr, ytr), (xte, yte) = ds.splits
    if split == "test":
        x, y = xte, yte
    elif split == "train":
        x, y = xtr, ytr
    else:
        x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
    if not is_named(str(data)) and x.dtype == np.uint8 and x.size:
        # a folder of 0..255 pictures for a model trained on 0..16 digits: its range, as predict
        x = to_training_range(x, getattr(model, "training_data", None))
    if shape and tuple(x.shape[1:]) != tuple(shape):
        raise ConfigError(f"the model takes images of shape {tuple(shape)} but {data!r} has "
                          f"{tuple(x.shape[1:])}")
    return x, y, ds, str(data), split
