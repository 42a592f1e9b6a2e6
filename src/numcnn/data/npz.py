"""NumPy ``.npz`` archives: :func:`read_npz`, always with ``allow_pickle=False``.

Every member's header is checked against the archive (declared bytes = stored bytes, within
DEFLATE's expansion limit) before NumPy allocates anything.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import open_regular
from ..validate import check_data_bytes
from .idx import MAX_DEFLATE_RATIO


def _npy_header(f, version):
    fmt = np.lib.format
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    reader = getattr(fmt, "_read_array_header", None)   # version 3.0 (utf-8 field names)
    if reader is None:  # pragma: no cover - depends on the NumPy version
        raise ValueError(f"unsupported .npy format version {version}")
    return reader(f, version)


def _check_npz_members(path: Path, f, size):
    """Check every member of a .npz against the archive before NumPy allocates anything.

    Each member must be a ``NAME.npy`` array (what ``numpy.savez`` writes) without Python
    objects, and the bytes its header declares (shape x itemsize) must be exactly the bytes
    the member holds - which itself may not exceed what its compressed size can expand to
    (DEFLATE's ~1032:1).  So a forged header claiming 10**12 elements is a DataError before
    any allocation.
    """
    total = 0
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        packed = sum(i.compress_size for i in infos)
        if packed > size:
            raise DataError(f"{path}: the zip directory lists {packed} compressed bytes but the "
                            f"file has only {size}; the archive is truncated or corrupt")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise DataError(f"{path}: member {name!r} is not a .npy array (numpy.savez "
                                f"writes only NAME.npy members); not a dataset .npz")
            limit = MAX_DEFLATE_RATIO * max(info.compress_size, 1) + (1 << 16)
            if info.file_size > limit:
                raise DataError(f"{path}: member {name!r} claims {info.file_size} bytes from "
                                f"{info.compress_size} compressed bytes, more than compression "
                                f"can produce; the archive is corrupt")
            try:
                with zf.open(info) as f:
                    shape, _, dtype = _npy_header(f, np.lib.format.read_magic(f))
                    header = f.tell()
            except Exception as exc:  # noqa: BLE001 - ValueError, EOFError, TokenError...
                raise DataError(f"{path}: member {name!r} is not a valid .npy array "
                                f"({type(exc).__name__}: {exc}); save the file again with "
                                f"numpy.savez") from exc
            if dtype.hasobject:
                raise DataError(f"{path}: array {name[:-4]!r} is an object array, which could "
                                f"only be loaded by unpickling (running code from the file); "
                                f"numcnn refuses - save plain numeric arrays instead")
            need = math.prod(shape) * dtype.itemsize
            have = info.file_size - header
            if need != have:
                raise DataError(f"{path}: array {name[:-4]!r} declares shape {tuple(shape)} of "
                                f"{dtype} = {need} bytes but its archive member holds {have} "
                                f"bytes after the header; the file is truncated or corrupt")
            total += need
    check_data_bytes(total, path, "the arrays of this .npz")


def read_npz(path) -> dict:
    """Read every array of a NumPy ``.npz`` archive into a ``{name: ndarray}`` dict.

    Always ``allow_pickle=False``: an archive holding an object array (which would need
    unpickling, i.e. running code from the file) is refused with a DataError.
    """
    path = Path(path)
    out = {}
    with open_regular(path, ".npz file", DataError) as (f, size):
        head = f.read(4)
        if head[:2] != b"PK":
            raise DataError(f"{path}: not a .npz archive (a .npz is a zip file starting with "
                            f"'PK', this starts with {head!r}); save it with numpy.savez")
        try:
            f.seek(0)
            _check_npz_members(path, f, size)
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                for key in z.files:
                    try:
                        out[key] = z[key]
                    except ValueError as exc:
                        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                            raise DataError(
                                f"{path}: array {key!r} is an object array, which could only "
                                f"be loaded by unpickling (running code from the file); numcnn "
                                f"refuses - save plain numeric arrays instead") from exc
                        raise
        except DataError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError
            raise DataError(f"{path}: damaged .npz archive ({type(exc).__name__}: {exc}); save "
                            f"it again with numpy.savez") from exc
    if not out:
        raise DataError(f"{path}: the .npz archive holds no arrays")
    return out
