"""CIFAR-10 / CIFAR-100, binary version: :func:`read_cifar_binary`.

Never the Python "pickle" version: numcnn unpickles nothing.  Images come as ``(N, 3, 32, 32)``
uint8, labels as int64; the record size (3073 or 3074 bytes) is checked against the file size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import open_regular
from ..validate import check_data_bytes


_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR10_TEST = "test_batch.bin"


def _cifar_kind_from_name(path: Path, size: int) -> str:
    name = path.name
    if name.startswith("data_batch") or name.startswith("test_batch"):
        return "cifar10"
    if name in ("train.bin", "test.bin"):
        return "cifar100"
    r10, r100 = size % (_CIFAR_PIXELS + 1) == 0, size % (_CIFAR_PIXELS + 2) == 0
    if r10 and not r100:
        return "cifar10"
    if r100 and not r10:
        return "cifar100"
    raise DataError(
        f"{path}: cannot tell whether this is CIFAR-10 (3073-byte records) or CIFAR-100 "
        f"(3074-byte records) from its name or its size ({size} bytes); pass "
        f"kind='cifar10' or kind='cifar100'")


def _read_cifar_file(path: Path, kind: str | None, coarse: bool):
    with open_regular(path, "CIFAR binary file", DataError) as (f, size):
        kind = kind or _cifar_kind_from_name(path, size)
        if kind not in ("cifar10", "cifar100"):
            raise ConfigError(f"read_cifar_binary: kind must be 'cifar10' or 'cifar100', got "
                              f"{kind!r}")
        nlab = 1 if kind == "cifar10" else 2
        record = nlab + _CIFAR_PIXELS
        if size == 0 or size % record:
            raise DataError(
                f"{path}: {size} bytes is not a whole number of {kind.upper()} records "
                f"({record} bytes each: {nlab} label byte(s) + 3072 pixel bytes); the file is "
                f"truncated or not the CIFAR binary version - download it again")
        # the records, then one copy of the images: about twice the file
        check_data_bytes(2 * size, path, f"{size // record:,} CIFAR records")
        try:
            raw = np.fromfile(f, dtype=np.uint8, count=size)
        except ValueError as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
    if raw.size != size:  # pragma: no cover - file changed under us
        raise DataError(f"{path}: file changed while being read; try again")
    rec = raw.reshape(-1, record)
    if kind == "cifar10":
        labels, nclass, which = rec[:, 0], 10, "label"
    else:
        labels, nclass, which = ((rec[:, 0], 20, "coarse label") if coarse else
                                 (rec[:, 1], 100, "fine label"))
    bad = np.flatnonzero(labels >= nclass)
    if bad.size:
        raise DataError(
            f"{path}: record {bad[0]} has {which} {labels[bad[0]]}, expected 0..{nclass - 1}; "
            f"is this really the {kind.upper()} binary version?")
    x = np.ascontiguousarray(rec[:, nlab:]).reshape(-1, 3, 32, 32)
    return x, labels.astype(np.int64)


def read_cifar_binary(path_or_dir, coarse: bool = False, kind: str | None = None):
    """Read the *binary* version of CIFAR-10 or CIFAR-100.

    Record layouts (the images are 32x32 RGB, stored as the red plane, then green, then blue,
    each row-major - which is exactly ``(3, 32, 32)`` channels-first):

    * CIFAR-10: 1 label byte (0..9) + 3072 pixel bytes = 3073 bytes a record;
    * CIFAR-100: 1 coarse label byte (0..19), 1 fine label byte (0..99) + 3072 pixel bytes.

    Parameters
    ----------
    path_or_dir :
        A single ``.bin`` file -> returns ``(x, y)``.  A directory -> returns
        ``((x_train, y_train), (x_test, y_test))``; it (or its sub-folder
        ``cifar-10-batches-bin`` / ``cifar-100-binary``) must hold either the CIFAR-10 files
        ``data_batch_1.bin`` .. ``data_batch_5.bin`` + ``test_batch.bin`` or the CIFAR-100
        files ``train.bin`` + ``test.bin``.
    coarse : bool
        CIFAR-100 only: return the 20 coarse labels instead of the 100 fine ones.
    kind : {'cifar10', 'cifar100'} or None
        Only for single files whose name and size do not say which they are.

    Returns
    -------
    x : uint8 array (N, 3, 32, 32); y : int64 array (N,).

    Raises
    ------
    DataError
        File length not a multiple of the record size, labels out of range, missing files.
    """
    p = Path(path_or_dir)
    if not p.is_dir():
        return _read_cifar_file(p, kind, coarse)
    for d in (p, p / "cifar-10-batches-bin", p / "cifar-100-binary"):
        if all((d / n).is_file() for n in _CIFAR10_TRAIN + (_CIFAR10_TEST,)):
            # the batches and their concatenation: about twice the files, from their sizes
            check_data_bytes(2 * sum((d / n).stat().st_size for n in _CIFAR10_TRAIN), d,
                             "the CIFAR-10 training batches")
            parts = [_read_cifar_file(d / n, "cifar10", coarse) for n in _CIFAR10_TRAIN]
            train = (np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts]))
            return train, _read_cifar_file(d / _CIFAR10_TEST, "cifar10", coarse)
        if (d / "train.bin").is_file() and (d / "test.bin").is_file():
            return (_read_cifar_file(d / "train.bin", "cifar100", coarse),
                    _read_cifar_file(d / "test.bin", "cifar100", coarse))
    raise DataError(
        f"{p}: not a CIFAR binary directory: expected data_batch_1.bin..data_batch_5.bin and "
        f"test_batch.bin (CIFAR-10) or train.bin and test.bin (CIFAR-100), directly or in "
        f"cifar-10-batches-bin/ or cifar-100-binary/")
