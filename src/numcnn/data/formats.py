"""Readers (and one writer) for the on-disk formats image datasets come in.

Every reader returns plain NumPy arrays in the layout numcnn uses everywhere:

* images ``x``: shape ``(N, C, H, W)`` (channels first), in the dtype stored in the file
  (``uint8`` for every image format here), C-contiguous and writable;
* labels ``y``: shape ``(N,)``, ``int64`` class ids.

Formats
-------
IDX (MNIST, Fashion-MNIST, EMNIST...)
    :func:`read_idx` / :func:`write_idx`.  Raw or gzip-compressed (detected from the content,
    not the name).  Every IDX element type is supported; multi-byte types are big-endian in
    the file and returned in native byte order.
CIFAR-10 / CIFAR-100 binary version
    :func:`read_cifar_binary`.  Never the Python "pickle" version: numcnn unpickles nothing.
A folder of images, one sub-folder per class
    :func:`read_image_folder` (Pillow), and :func:`load_image` for one picture.
NumPy ``.npz``
    :func:`read_npz`, always with ``allow_pickle=False``.

Robustness
----------
A reader never lets a raw ``struct``/``zlib``/``gzip``/NumPy/Pillow/OS exception escape: bad
input raises :class:`numcnn.errors.DataError` naming the file, what was expected and what was
found.  Sizes declared in headers are checked against the real file size *before* any memory
is allocated, and gzip data is decompressed in bounded chunks, so a hostile header or a gzip
bomb gives a prompt ``DataError`` rather than a ``MemoryError``.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

__all__ = [
    "IDX_DTYPES", "read_idx", "write_idx", "read_cifar_binary", "read_image_folder",
    "load_image", "read_npz", "IMAGE_EXTENSIONS",
]

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
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20

#: File name extensions :func:`read_image_folder` documents support for (Pillow may read more).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")

# Pillow modes that hold one grey level per pixel.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Grey modes deeper than 8 bits: rescaled to 0..255 by _deep_to_uint8, never clipped.
_DEEP_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# --------------------------------------------------------------------------------------- IDX

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
        with open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            if head == _GZIP_MAGIC:
                compressed_size = os.fstat(raw.fileno()).st_size
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return _read_idx_stream(gz, path, compressed_size=compressed_size)
            file_size = os.fstat(raw.fileno()).st_size
            return _read_idx_stream(raw, path, file_size=file_size)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such IDX file; check the path or download the dataset "
                        f"again") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, expected an IDX file such as "
                        f"train-images-idx3-ubyte.gz") from exc
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

    if file_size is not None:                    # raw file: compare with the real size first
        have = file_size - header
        if have != nbytes:
            what = "truncated" if have < nbytes else "has trailing data"
            raise DataError(
                f"{path}: IDX header declares {shape_txt} {dtype.name} elements = {nbytes} "
                f"bytes of data, but the file holds {have} bytes after the {header}-byte "
                f"header ({what}); the file is damaged or not IDX - download it again")
        data = np.fromfile(stream, dtype=dtype, count=count)
        if data.size != count:  # pragma: no cover - file changed under us
            raise DataError(f"{path}: file shrank while being read; try again")
    else:                                        # gzip: bounded, chunked decompression
        if nbytes > _MAX_DEFLATE_RATIO * max(compressed_size, 1) + (1 << 16):
            raise DataError(
                f"{path}: IDX header declares {shape_txt} {dtype.name} elements = {nbytes} "
                f"bytes, which a {compressed_size}-byte gzip file cannot hold; the header is "
                f"corrupt - download the file again")
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
    from ..io import atomic_write          # folder made as needed; never a half-written file
    atomic_write(path, data)
    return path


# ------------------------------------------------------------------------------------ CIFAR

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
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such CIFAR binary file; check the path") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if path.is_dir():
        raise DataError(f"{path}: is a directory where a CIFAR .bin file was expected")
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
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as exc:
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


# ------------------------------------------------------------------------------ images

def _pil():
    try:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - keep import light
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise DataError("reading images needs Pillow: pip install pillow") from exc
    return Image, UnidentifiedImageError


def _check_size(size, where):
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: size must be (height, width), got {size!r}") from exc
    if h <= 0 or w <= 0:
        raise ConfigError(f"{where}: size must be positive (height, width), got {size!r}")
    return h, w


@contextlib.contextmanager
def _pillow_errors(path: Path, action: str, damage: str):
    """Turn whatever Pillow raises while it ``action``s (opens, decodes) ``path`` into a
    DataError naming the file; its decompression-bomb *warning* counts as an error too."""
    Image, Unidentified = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DataError:
        raise                   # already names the file and says what to do
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a possible decompression bomb: {exc} (Pillow's "
                        f"limit is Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels; "
                        f"raise it only if you trust the file)") from exc
    except Unidentified as exc:
        raise DataError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP...): check the "
                        f"path, or remove it from the image folder") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DataError(f"{path}: cannot {action} image ({type(exc).__name__}: {exc}); the file "
                        f"is {damage} - remove or replace it") from exc


def _open_image(path: Path):
    """Open lazily (header only) and return (mode, (H, W)); DataError if not an image.

    Pillow's decompression-bomb *warning* (more than ``Image.MAX_IMAGE_PIXELS`` pixels) is an
    error here, like its DecompressionBombError (more than twice that): the header is all
    that has been read, so nothing big has been allocated yet.
    """
    Image, _ = _pil()
    with _pillow_errors(path, "open", "damaged, too large or not an image"):
        with Image.open(path) as img:
            h, w = img.height, img.width
            if _orientation(img) in _SIDEWAYS:            # stored sideways: shown w x h
                h, w = w, h
            return img.mode, (h, w)


#: EXIF orientations (tag 0x0112) whose picture is stored rotated by 90 degrees
_SIDEWAYS = (5, 6, 7, 8)


def _orientation(img):
    """The EXIF orientation a camera stored (1 = upright), or 1 when there is none."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (AttributeError, TypeError, ValueError, OSError, SyntaxError):
        return 1


def _deep_to_uint8(img, path: Path) -> np.ndarray:
    """Rescale a 16/32-bit integer or float grey image to the 0..255 uint8 numcnn uses.

    Pillow's ``convert("L")`` *clips* these modes to 0..255 instead of scaling them, which turns
    a 16-bit picture almost white and a 0..1 float picture black.  Integer images ('I;16*', and
    'I' when its values fit 16 bits, as Pillow gives 16-bit PGM) are scaled by 255/65535, except
    an 'I' picture other than PGM whose values all fit 0..255, which is kept as it is.  Float
    images ('F') are scaled by 255 when every value is within 0..1 and kept when within 0..255
    (decided per image); anything else is refused rather than guessed.  Rounds to nearest,
    halves up.
    """
    a = np.asarray(img, dtype=np.float64)
    floats = img.mode == "F"
    if floats and not np.isfinite(a).all():
        raise DataError(f"{path}: float image (Pillow mode 'F') has "
                        f"{int(np.count_nonzero(~np.isfinite(a)))} NaN or infinite pixel(s); "
                        "fix or remove the file")
    lo, hi = float(a.min()), float(a.max())
    top, reads, fix = ((255, "float images holding 0..1 (scaled by 255) or 0..255 (kept)",
                        "one of those ranges or save it as an 8-bit image") if floats else
                       (65535, "deep integer images as 16-bit (0..65535, scaled to 0..255)",
                        "0..65535 or save it as an 8- or 16-bit image"))
    if lo < 0 or hi > top:
        raise DataError(f"{path}: {'float' if floats else 'integer'} image (Pillow mode "
                        f"{img.mode!r}) holds values from {lo:g} to {hi:g}; numcnn reads "
                        f"{reads} - rescale the file to {fix}")
    if floats:
        scaled = a * 255.0 if hi <= 1.0 else a
    else:
        # 'I' (32-bit) from a TIFF holding 0..255 is an 8-bit picture in a wide container; a
        # 16-bit PGM also opens as 'I' (Pillow scales its maxval to 16 bits): always 16-bit
        eight_bit = img.mode == "I" and img.format != "PPM" and hi <= 255
        scaled = a if eight_bit else a * 255.0 / 65535.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def _decode_image(path: Path, size, mode: str) -> np.ndarray:
    """Decode one image to a (H, W) or (H, W, 3) uint8 array in ``mode`` ('L' or 'RGB')."""
    Image, _ = _pil()
    with _pillow_errors(path, "decode", "damaged, truncated or too large"):
        with Image.open(path) as img:
            img.load()
            if _orientation(img) != 1:      # a phone photo: shown the way its camera said
                from PIL import ImageOps
                img = ImageOps.exif_transpose(img)
            if img.mode in _DEEP_MODES:     # scale to 'L' first: convert() would clip
                img = Image.fromarray(_deep_to_uint8(img, path))
            if img.mode != mode:
                img = img.convert(mode)     # 'L' -> 'RGB' replicates the grey level
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)


def load_image(path, size=None, channels: int | None = None) -> np.ndarray:
    """Load one picture as a uint8 array of shape ``(C, H, W)``.

    Parameters
    ----------
    path : the image file (anything Pillow reads: PNG, JPEG, BMP, GIF...).
    size : (H, W) or None
        Resize with bilinear filtering to this size; None keeps the file's size.
    channels : 1, 3 or None
        1 converts to grey (Pillow's ITU-R 601-2 luma), 3 to RGB (grey is replicated, alpha
        dropped); None keeps grey pictures grey (C = 1) and makes everything else RGB.

    16-bit grey pictures are scaled to 0..255 (x 255/65535), float ones holding 0..1 by 255
    (0..255 is kept); other float or deeper integer ranges are a DataError.
    """
    path = Path(path)
    size = _check_size(size, "load_image")
    if channels not in (None, 1, 3):
        raise ConfigError(f"load_image: channels must be 1, 3 or None, got {channels!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    mode0, _ = _open_image(path)
    if channels is None:
        channels = 1 if mode0 in _GREY_MODES else 3
    arr = _decode_image(path, size, "L" if channels == 1 else "RGB")
    if arr.ndim == 2:
        return arr[None].copy()
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _scan_image_folder(root: Path, classes=None):
    """List (files, labels, class_names) of a class-per-sub-folder tree (sorted, no decoding).

    Hidden files and folders (name starting with '.') are skipped; files directly inside
    ``root`` are ignored; class folders are searched recursively.
    """
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; an image folder has one sub-folder per "
                        f"class")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = found
    else:
        classes = list(classes)
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(f"{root}: class folder(s) {extra} are not among the training "
                            f"classes {classes}; rename or remove them")
    if not classes:
        raise DataError(f"{root}: no class sub-folders; put each class's images in its own "
                        f"sub-folder, e.g. {root}/cat/1.png, {root}/dog/2.png")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in found:
        for dirpath, dirnames, filenames in os.walk(root / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith("."):
                    files.append(Path(dirpath) / fn)
                    labels.append(index[c])
    return files, np.asarray(labels, dtype=np.int64), list(classes)


def _folder_mode(infos, mode):
    if mode is not None:
        if mode not in ("L", "RGB"):
            raise ConfigError(f"read_image_folder: mode must be 'L', 'RGB' or None, got "
                              f"{mode!r}")
        return mode
    return "L" if all(m in _GREY_MODES for m, _ in infos) else "RGB"


def _folder_size(files, infos, size, root):
    if size is not None:
        return size
    sizes = np.asarray([s for _, s in infos], dtype=np.int64).reshape(-1, 2)
    uniq, inverse, counts = np.unique(sizes, axis=0, return_inverse=True, return_counts=True)
    if len(uniq) > 1:
        common = int(np.argmax(counts))
        odd = int(np.flatnonzero(inverse.ravel() != common)[0])
        h, w = uniq[common]
        raise DataError(
            f"{root}: images differ in size: most are {h}x{w} (HxW) but {files[odd]} is "
            f"{sizes[odd][0]}x{sizes[odd][1]}; pass size=(H, W) to resize them all")
    return tuple(int(v) for v in uniq[0])


def _decode_all(files, size, mode):
    n = len(files)
    c = 1 if mode == "L" else 3
    out = np.empty((n, size[0], size[1], c), dtype=np.uint8)
    for i, f in enumerate(files):   # one decode per file: I/O cannot be vectorised
        arr = _decode_image(f, size, mode)
        out[i] = arr.reshape(size[0], size[1], c)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def read_image_folder(path, size=None, mode: str | None = None, classes=None):
    """Read a folder with one sub-folder of pictures per class.

    ``path/cat/001.png, path/dog/xyz.jpg, ...``: class names are the sorted sub-folder names
    and class id ``k`` is ``classes[k]``.  Class folders are searched recursively; hidden
    files (``.DS_Store``...) are skipped; any other file must be an image Pillow reads (PNG,
    JPEG, BMP...), else a DataError names it.

    Parameters
    ----------
    size : (H, W) or None
        Resize every image with bilinear filtering.  None: all images must share one size,
        else a DataError names the first odd file.
    mode : 'L', 'RGB' or None
        Convert to grey (C = 1) or RGB (C = 3).  None: grey if every image is grey, RGB if
        any image is colour (grey ones are then replicated to 3 channels).  16-bit and float
        grey images are rescaled to 0..255 as :func:`load_image` says.
    classes : list of str or None
        Use this class list (and ids) instead of the folder's own - used to read a test folder
        with the training classes; a sub-folder not in the list is a DataError.

    Returns
    -------
    x : uint8 (N, C, H, W); y : int64 (N,); classes : list[str]
    """
    root = Path(path)
    size = _check_size(size, "read_image_folder")
    files, y, classes = _scan_image_folder(root, classes)
    if not files:
        raise DataError(f"{root}: the class folders {classes} hold no image files")
    infos = [_open_image(f) for f in files]
    mode = _folder_mode(infos, mode)
    size = _folder_size(files, infos, size, root)
    return _decode_all(files, size, mode), y, classes


# -------------------------------------------------------------------------------------- npz

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


def _check_npz_members(path: Path):
    """Check every member of a .npz against the archive before NumPy allocates anything.

    Each member must be a ``NAME.npy`` array (what ``numpy.savez`` writes) without Python
    objects, and the bytes its header declares (shape x itemsize) must be exactly the bytes
    the member holds - which itself may not exceed what its compressed size can expand to
    (DEFLATE's ~1032:1).  So a forged header claiming 10**12 elements is a DataError before
    any allocation.
    """
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
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
            limit = _MAX_DEFLATE_RATIO * max(info.compress_size, 1) + (1 << 16)
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


def read_npz(path) -> dict:
    """Read every array of a NumPy ``.npz`` archive into a ``{name: ndarray}`` dict.

    Always ``allow_pickle=False``: an archive holding an object array (which would need
    unpickling, i.e. running code from the file) is refused with a DataError.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such .npz file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if head[:2] != b"PK":
        raise DataError(f"{path}: not a .npz archive (a .npz is a zip file starting with 'PK', "
                        f"this starts with {head!r}); save it with numpy.savez")
    out = {}
    try:
        _check_npz_members(path)
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as exc:
                    if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                        raise DataError(
                            f"{path}: array {key!r} is an object array, which could only be "
                            f"loaded by unpickling (running code from the file); numcnn "
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
