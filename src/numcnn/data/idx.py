"""IDX files (MNIST, Fashion-MNIST, EMNIST...): :func:`read_idx` and :func:`write_idx`.

Raw or gzip-compressed (detected from the content, not the name).  Every IDX element type is
supported; multi-byte types are big-endian in the file and returned in native byte order.  Sizes
declared in the header are checked against the file's real size before anything is allocated,
and gzip data is decompressed in bounded chunks, so a hostile header or a gzip bomb is a prompt
:class:`~numcnn.errors.DataError`, never a MemoryError.
"""
from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import atomic_write, open_regular
from ..validate import check_data_bytes

#: IDX type byte -> big-endian NumPy dtype of one element.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {(dt.newbyteorder("=") if dt.itemsize > 1 else dt): code
              for code, dt in IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
#: DEFLATE cannot expand data by more than about 1032:1; anything claiming more is a lie.
MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20



def _read_exact(stream, n, what, path):
    """Read exactly ``n`` bytes (n small: a header) or raise DataError naming the file."""
    data = stream.read(n)
    if len(data) != n:
        raise DataError(
            f"{path}: truncated IDX file: the {what} needs {n} bytes but only {len(data)} "
            f"remain; the file is incomplete - download or write it again")
    return data


def _read_capped(stream, limit):
    """Read at most ``limit`` bytes in 1 MiB chunks; memory grows only with real data."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    The IDX header is ``0x00 0x00 <type> <ndim>`` followed by ``ndim`` big-endian uint32
    sizes, then the elements in C order.  Supported type bytes: ``0x08`` uint8, ``0x09`` int8,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64 (so MNIST images have
    magic ``0x00000803``, labels ``0x00000801``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.  Gzip is detected from the first two bytes, whatever the name.

    Returns
    -------
    numpy.ndarray
        Shape = the declared sizes (e.g. ``(60000, 28, 28)``), dtype = the declared type in
        native byte order; writable.  The caller adds a channel axis if it wants one.

    Raises
    ------
    DataError
        Missing/unreadable file, bad magic, unknown type byte, declared sizes that do not
        match the amount of data (checked before allocating: a header that claims 10**12
        items in a small file fails at once), trailing data, corrupt gzip.
    """
    path = Path(path)
    try:
        with open_regular(path, "IDX file", DataError) as (raw, file_size):
            head = raw.read(2)
            raw.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return _read_idx_stream(gz, path, compressed_size=file_size)
            return _read_idx_stream(raw, path, file_size=file_size)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as exc:
        raise DataError(f"{path}: could not read IDX data ({type(exc).__name__}: {exc}); the "
                        f"file is corrupt or truncated - download it again") from exc


def _read_idx_stream(stream, path, file_size=None, compressed_size=None):
    magic = _read_exact(stream, 4, "4-byte magic number", path)
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file: magic number is 0x{magic.hex()}, expected 0x0000 "
            f"followed by a type byte and a dimension count (0x00000803 for uint8 images, "
            f"0x00000801 for uint8 labels)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({IDX_DTYPES[c].name})" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX element type byte 0x{code:02X} (magic "
                        f"0x{magic.hex()}); expected one of {known}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions (magic 0x{magic.hex()}); "
                        f"expected at least 1")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, f"{ndim} dimension sizes",
                                                  path))
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)                      # Python int: no overflow
    nbytes = count * dtype.itemsize
    header = 4 + 4 * ndim
    shape_txt = " x ".join(str(d) for d in dims)
    if ndim > 32:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions; numcnn reads at most 32 "
                        "(images have 3, labels 1) - the file is damaged")

    if file_size is not None:                    # raw file: compare with the real size first
        have = file_size - header
        if have != nbytes:
            what = "truncated" if have < nbytes else "has trailing data"
            raise DataError(
                f"{path}: IDX header declares {shape_txt} {dtype.name} elements = {nbytes} "
                f"bytes of data, but the file holds {have} bytes after the {header}-byte "
                f"header ({what}); the file is damaged or not IDX - download it again")
        check_data_bytes(nbytes, path, f"the IDX data ({shape_txt} {dtype.name})")
        data = np.fromfile(stream, dtype=dtype, count=count)
        if data.size != count:  # pragma: no cover - file changed under us
            raise DataError(f"{path}: file shrank while being read; try again")
    else:                                        # gzip: bounded, chunked decompression
        if nbytes > MAX_DEFLATE_RATIO * max(compressed_size, 1) + (1 << 16):
            raise DataError(
                f"{path}: IDX header declares {shape_txt} {dtype.name} elements = {nbytes} "
                f"bytes, which a {compressed_size}-byte gzip file cannot hold; the header is "
                f"corrupt - download the file again")
        check_data_bytes(nbytes, path, f"the IDX data ({shape_txt} {dtype.name})")
        buf = _read_capped(stream, nbytes + 1)   # +1 byte detects trailing data
        if len(buf) != nbytes:
            what = ("is truncated" if len(buf) < nbytes else
                    "has trailing data after the declared elements")
            got = f"{len(buf)}" if len(buf) < nbytes else f"more than {nbytes}"
            raise DataError(
                f"{path}: IDX header declares {shape_txt} {dtype.name} elements = {nbytes} "
                f"bytes, but the decompressed data holds {got} bytes: the file {what}; "
                f"download it again")
        stream.read(1)  # reach EOF so gzip checks its CRC and length trailer
        data = np.frombuffer(buf, dtype=dtype, count=count)
    data = data.reshape(dims)
    if dtype.itemsize > 1:
        data = data.astype(dtype.newbyteorder("="))
    return data


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file; gzip-compress it when ``path`` ends with ``.gz``.

    ``array`` must have 1..255 dimensions and dtype uint8, int8, int16, int32, float32 or
    float64 (written big-endian, as the format requires).  The gzip header carries no time
    stamp, so the same array always gives the same bytes.  Written atomically (its folder is
    made if needed).  Returns the path.
    """
    path = Path(path)
    a = np.asarray(array)
    dt = a.dtype.newbyteorder("=") if a.dtype.itemsize > 1 else a.dtype
    code = _IDX_CODES.get(dt)
    if code is None:
        raise ConfigError(f"write_idx: IDX cannot store dtype {a.dtype}; convert the array to "
                          f"one of uint8, int8, int16, int32, float32, float64")
    if not 1 <= a.ndim <= 255:
        raise ConfigError(f"write_idx: IDX needs 1..255 dimensions, got an array of shape "
                          f"{a.shape}")
    if any(d >= 2 ** 32 for d in a.shape):
        raise ConfigError(f"write_idx: dimension sizes must be < 2**32, got shape {a.shape}")
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    payload = np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()
    data = header + payload
    if path.name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    atomic_write(path, data)
    return path
