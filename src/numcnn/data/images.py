"""Pictures: :func:`load_image` for one file, :func:`read_image_folder` for a folder of classes.

Decoded with Pillow, bounded against decompression bombs, read upright by their EXIF orientation;
16-bit and float pictures are scaled to 0..255 (never clipped).  Images come as ``(N, C, H, W)``
uint8 (C = 1 for grey, 3 for colour); every Pillow or OS error is a
:class:`~numcnn.errors.DataError` naming the file.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import open_regular
from ..validate import check_data_bytes

#: File name extensions :func:`read_image_folder` documents support for (Pillow may read more).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")

# Pillow modes that hold one grey level per pixel.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Grey modes deeper than 8 bits: rescaled to 0..255 by _deep_to_uint8, never clipped.
_DEEP_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})




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
    with _pillow_errors(path, "open", "damaged, too large or not an image"), \
            open_regular(path, "image file", DataError) as (f, _size), Image.open(f) as img:
        h, w = img.height, img.width
        if _orientation(img) in _SIDEWAYS:            # stored sideways: shown w x h
            h, w = w, h
        return img.mode, (h, w)


def image_size(path) -> tuple:
    """``(H, W)`` of a picture as it is shown (EXIF orientation applied), from its header only."""
    return _open_image(Path(path))[1]


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
    with _pillow_errors(path, "decode", "damaged, truncated or too large"), \
            open_regular(path, "image file", DataError) as (f, _size), Image.open(f) as img:
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
    mode0, _ = _open_image(path)          # a regular file, or DataError saying what it is
    if channels is None:
        channels = 1 if mode0 in _GREY_MODES else 3
    arr = _decode_image(path, size, "L" if channels == 1 else "RGB")
    if arr.ndim == 2:
        return arr[None].copy()
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def class_name(folder_name: str) -> str:
    """A class folder's name as text: names that are not valid UTF-8 (``os.fsdecode`` gives
    surrogates for their bytes) get ``\\xe9``-style escapes, so they can be printed, plotted and
    stored; the same folder always gives the same name."""
    return folder_name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _walk_error(exc):
    raise DataError(f"{exc.filename}: cannot read this folder ({exc.strerror or exc}); an "
                    "unreadable class folder would silently become a class without images - "
                    "fix its permissions or remove it")


def _scan_image_folder(root: Path, classes=None):
    """List (files, labels, class_names) of a class-per-sub-folder tree (sorted, no decoding).

    Hidden files and folders (name starting with '.') are skipped; files directly inside
    ``root`` are ignored; class folders are searched recursively.  A folder that cannot be read
    is a DataError (never an empty class); class names that are not UTF-8 are escapes
    (:func:`class_name`).
    """
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; an image folder has one sub-folder per "
                        f"class")
    try:
        raw = {class_name(e.name): e.name for e in os.scandir(root)
               if e.is_dir() and not e.name.startswith(".")}
    except OSError as exc:
        _walk_error(exc)
    found = sorted(raw)
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
        for dirpath, dirnames, filenames in os.walk(root / raw[c], onerror=_walk_error):
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
    # from the headers, before decoding: many small images can still be too many
    check_data_bytes(n * size[0] * size[1] * c, os.path.commonpath([str(f) for f in files])
                     if n > 1 else str(files[0]), f"{n:,} images of {size[0]}x{size[1]}x{c}")
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
