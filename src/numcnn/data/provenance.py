"""What a model was trained on, recorded in its file, and image files brought to match it.

A model file remembers its training data (``model.training_data``, metadata ``training_data``)::

    {"dataset": "digits",            # the name, or the absolute path of a folder / .npz
     "split": "test",                # the split evaluate and plot use by default
     "n_train": 1437, "n_test": 360,
     "value_range": [0, 16],         # smallest and largest raw value seen in training
     "dtype": "uint8",
     "classes": ["0", ..., "9"],
     "background": 0.0,              # median border pixel, 0 = the range's low end, 1 = its top
     "polarity": "light-on-dark"}    # "light-on-dark", "dark-on-light" or "mixed"

so that ``numcnn evaluate MODEL`` and ``numcnn plot MODEL`` find the data again, a dataset with
other classes is refused, and :func:`load_images_for` brings 8-bit picture files (0..255) to the
model's range (0..16 for ``digits``) and warns (:class:`numcnn.errors.PolarityWarning`) when a
picture is dark-on-light while the training images were light-on-dark, or the reverse.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, PolarityWarning
from .images import IMAGE_EXTENSIONS, load_image

#: a background this far from the middle of the range (0.5) is decisively dark or light
_DECISIVE = 0.3


def background_level(x, lo, hi):
    """Median of each image's border pixels, as a fraction of ``[lo, hi]`` (0 = lo, 1 = hi);
    ``x`` is ``(N, C, H, W)``; returns an ``(N,)`` float64 array."""
    x = np.asarray(x)
    if x.ndim != 4 or min(x.shape[2:]) < 1:
        return np.zeros(len(x))
    border = np.concatenate([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]],
                            axis=-1).reshape(len(x), -1).astype(np.float64)
    span = float(hi - lo) or 1.0
    return (np.median(border, axis=1) - lo) / span


def polarity(background):
    """``"light-on-dark"`` (a dark background: MNIST's white digits on black),
    ``"dark-on-light"``, or ``"mixed"`` when the background is not clearly either."""
    if background < 0.5 - _DECISIVE:
        return "light-on-dark"
    if background > 0.5 + _DECISIVE:
        return "dark-on-light"
    return "mixed"


def describe_training_data(x, dataset=None, classes=None, n_test=None, split="test"):
    """The ``training_data`` record of raw training images ``x`` (N, C, H, W): value range,
    dtype, background and polarity, plus the dataset's name/path, class names and sizes."""
    x = np.asarray(x)
    sample = x[:: max(1, len(x) // 2000)]            # a couple of thousand images say it all
    lo, hi = (float(sample.min()), float(sample.max())) if x.size else (0.0, 0.0)
    if x.dtype.kind in "ui":                      # a whole-number range for integer pixels
        lo, hi = int(x.min()), int(x.max())
    # one flat value says nothing about a background
    bg = float(np.median(background_level(sample, lo, hi))) if x.size and hi > lo else 0.5
    rec = {"dataset": None if dataset is None else str(dataset), "split": split,
           "n_train": int(len(x)), "n_test": None if n_test is None else int(n_test),
           "value_range": [lo, hi], "dtype": x.dtype.name,
           "classes": None if classes is None else [str(c) for c in classes],
           "background": round(bg, 4), "polarity": polarity(bg)}
    return rec


def image_files(paths):
    """Image files named by ``paths``: a folder means the image files directly inside it (sorted
    by name); returns a list of str.  A folder without images is a ConfigError."""
    out = []
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).iterdir()
                           if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ConfigError(f"{p} is a folder without image files "
                                  f"({', '.join(sorted(IMAGE_EXTENSIONS))}); give image files or "
                                  "a folder holding some")
            out.extend(found)
        else:
            out.append(p)
    return out


def to_training_range(images, rec):
    """An 8-bit picture (uint8, 0..255) brought to the model's training range: ``0..255 ->
    lo..hi`` (rounded; uint8 when the range is whole numbers within 0..255, as the training
    images were), e.g. 0..16 for ``digits``.  A picture whose values already lie within
    ``lo..hi`` (digits saved as they are stored, 0..16) is kept as it is.  Without a record it
    is returned unchanged."""
    if rec is None:
        return images
    lo, hi = rec["value_range"]
    if (lo, hi) == (0, 255) or hi <= lo or (images.min() >= lo and images.max() <= hi):
        return images
    scaled = images.astype(np.float64) * ((hi - lo) / 255.0) + lo
    if rec.get("dtype") == "uint8" and 0 <= lo and hi <= 255:
        return np.round(scaled).astype(np.uint8)
    return scaled.astype(np.float32)


def load_images_for(model, paths):
    """Load image files (or the images in folders) ready for ``model.predict``.

    Each is converted to the model's channels and size, and brought to the value range its
    training data had (:func:`to_training_range`; 0..255 pictures into a ``digits`` model
    become 0..16, as its training images were).  A picture whose background is the opposite
    of the training images' (a black digit on white paper for a model trained on MNIST's white
    digits on black) gets a :class:`numcnn.errors.PolarityWarning`.

    Returns ``(images, files, failed)``: ``images`` ``(N, C, H, W)`` for the ``files`` that
    could be read, ``failed`` a list of ``(path, message)`` for those that could not (the rest
    are still loaded).
    """
    shape = getattr(model, "input_shape", None)
    if not shape or len(shape) != 3:
        raise ConfigError("load_images_for: the model has no (C, H, W) input shape, so pictures "
                          "cannot be prepared for it")
    c, h, w = shape
    rec = getattr(model, "training_data", None)
    loaded, files, failed = [], [], []
    for p in image_files(paths):
        try:
            img = load_image(p, size=(h, w), channels=c)
        except (DataError, ConfigError, OSError) as exc:
            failed.append((p, str(exc)))
            continue
        loaded.append(img)
        files.append(p)
        want = None if rec is None else rec.get("polarity")
        if want in ("light-on-dark", "dark-on-light"):
            got = polarity(float(background_level(img[None], 0, 255)[0]))
            if got != "mixed" and got != want:
                warnings.warn(PolarityWarning(
                    f"{p}: the picture is {got.replace('-', ' ')} but the model was trained on "
                    f"{want.replace('-', ' ')} images ({rec.get('dataset')}); its predictions "
                    f"will be poor - invert it first (e.g. PIL.ImageOps.invert)"), stacklevel=2)
    images = np.stack([to_training_range(i, rec) for i in loaded]) if loaded else None
    return images, files, failed
