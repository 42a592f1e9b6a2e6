"""Hostile files: every reader either loads its input or raises a clear NumcnnError.

Each reader is fuzzed with Hypothesis (``derandomize=True``: the same examples every run) on
valid files damaged in every way we could think of - truncated, bytes flipped or inserted,
random bytes, forged headers claiming huge sizes, wrong magic numbers, wrong dtypes - and the only
acceptable outcomes are

* the file loads and the result is consistent with what it declares, or
* a :class:`numcnn.errors.NumcnnError` whose message is a sentence (naming the file);

never another exception type, never a ``MemoryError`` and never a hang (every call runs under a
SIGALRM deadline whose exception derives from BaseException, so no ``except Exception`` in a
reader can swallow it).  Headers that claim terabytes are checked with ``tracemalloc`` to be
refused *before* anything is allocated.  A last test greps ``src/`` for pickle/eval/exec.

Readers: IDX (raw and gzip), CIFAR binary, image folders (PNG/JPEG/BMP/GIF/TIFF/WebP, Pillow's
decompression-bomb guard), ``.npz``, ``.safetensors`` model files and checkpoints (and resuming
from forged checkpoints), JSON/TOML architecture files.
"""
from __future__ import annotations

import contextlib
import gzip
import itertools
import io as _io
import json
import math
import os
import re
import signal
import struct
import sys
import tokenize
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcnn import io as nio
from numcnn.architecture import load_architecture
from numcnn import data as F
from numcnn.architecture import MAX_ELEMENTS
from numcnn.errors import ConfigError, DataError, ModelFileError, NumcnnError
from numcnn.layers import (REGISTRY, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                           ReLU)
from numcnn.model import Sequential
from numcnn.training import Trainer

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import reliability_stats as stats  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src" / "numcnn"


def fuzz(n):
    """Hypothesis settings for one reader: ``n`` fixed examples, no time deadline (the SIGALRM
    deadline below catches hangs), no example database."""
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- the verdict on one hostile input --------------------------------------------------------------
class Hang(BaseException):
    """A reader did not answer in time (BaseException: no ``except Exception`` can hide it)."""


@contextlib.contextmanager
def deadline(seconds):
    def _alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def verdict(category, fn, *args, name=None, **kw):
    """``("ok", value)`` or ``("error", exc)`` for a NumcnnError with a real message; any other
    exception (MemoryError, ValueError from NumPy, KeyError...) propagates and fails the test."""
    try:
        with deadline(20):
            value = fn(*args, **kw)
    except NumcnnError as exc:
        msg = str(exc)
        assert len(msg) >= 20, f"{category}: unhelpful message {msg!r}"
        if name is not None:
            assert name in msg, f"{category}: the message does not name the file {name!r}: {msg}"
        stats.record(category, type(exc).__name__)
        return "error", exc
    stats.record(category, "loaded")
    return "ok", value


_EXAMPLE = itertools.count()


def fresh(tmp_path):
    """A new empty folder for one Hypothesis example (tmp_path is shared by all of them)."""
    d = tmp_path / f"ex{next(_EXAMPLE)}"
    d.mkdir()
    return d


@pytest.fixture(scope="module", autouse=True)
def _dump_stats():
    yield
    stats.dump("test_fuzz_readers")


@contextlib.contextmanager
def peak_allocation():
    """Yields a dict whose 'peak' is the most memory (bytes) Python/NumPy held above the start."""
    out = {}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        yield out
    finally:
        out["peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()


# -- byte-level damage ----------------------------------------------------------------------------
INTERESTING_U32 = [0, 1, 2, 3, 255, 256, 0x7FFF, 0xFFFF, 10 ** 6, 10 ** 9, 2 ** 31 - 1, 2 ** 31,
                   2 ** 32 - 1]
MUTATIONS = ("none", "truncate", "flip", "u32", "insert", "delete", "append", "random", "empty")


def mutate(data, blob: bytes, ops=MUTATIONS):
    """Damage ``blob`` in one of several ways (drawn from ``data``); returns (op, new bytes)."""
    op = data.draw(st.sampled_from(ops), label="mutation")
    n = len(blob)
    if op == "none":
        return op, blob
    if op == "empty":
        return op, b""
    if op == "random":
        return op, data.draw(st.binary(max_size=400), label="random bytes")
    if op == "truncate":
        return op, blob[:data.draw(st.integers(0, max(n - 1, 0)), label="cut")]
    if op == "append":
        return op, blob + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    if n == 0:
        return "empty", b""
    pos = data.draw(st.integers(0, n - 1), label="pos")
    if op == "flip":
        b = bytearray(blob)
        for k in range(data.draw(st.integers(1, 4), label="flips")):
            p = (pos + k * data.draw(st.integers(1, 97), label="stride")) % n
            b[p] ^= data.draw(st.integers(1, 255), label="xor")
        return op, bytes(b)
    if op == "u32":
        v = data.draw(st.sampled_from(INTERESTING_U32), label="u32")
        enc = struct.pack(data.draw(st.sampled_from([">I", "<I"]), label="endian"), v)
        return op, blob[:pos] + enc + blob[pos + 4:]
    if op == "insert":
        return op, blob[:pos] + data.draw(st.binary(min_size=1, max_size=32), label="ins") + blob[pos:]
    if op == "delete":
        k = data.draw(st.integers(1, 64), label="len")
        return op, blob[:pos] + blob[pos + k:]
    raise AssertionError(op)


# ================================================================================ IDX
IDX_CODES = sorted(F.IDX_DTYPES)


@st.composite
def idx_arrays(draw):
    code = draw(st.sampled_from(IDX_CODES))
    dt = F.IDX_DTYPES[code].newbyteorder("=") if F.IDX_DTYPES[code].itemsize > 1 else F.IDX_DTYPES[code]
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    raw = draw(st.binary(min_size=math.prod(shape) * dt.itemsize,
                         max_size=math.prod(shape) * dt.itemsize))
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


@fuzz(250)
@given(data=st.data(), a=idx_arrays(), gz=st.booleans())
def test_idx_reader_on_damaged_files(tmp_path, data, a, gz):
    p = tmp_path / ("data.idx.gz" if gz else "data.idx")
    F.write_idx(p, a)
    blob = p.read_bytes()
    # damage either the file bytes or (for gzip) the IDX payload inside a valid gzip stream
    inner = gz and data.draw(st.booleans(), label="damage inside gzip")
    if inner:
        op, body = mutate(data, gzip.decompress(blob))
        blob = gzip.compress(body, mtime=0)
    else:
        op, blob = mutate(data, blob)
    p.write_bytes(blob)
    kind, out = verdict("idx", F.read_idx, p, name=p.name)
    if op == "none":
        assert kind == "ok", out
        assert out.dtype == a.dtype and out.shape == a.shape
        assert np.array_equal(out, a, equal_nan=a.dtype.kind == "f")
    if kind == "ok":
        assert isinstance(out, np.ndarray) and out.flags.writeable
        if not gz:                          # what loads is exactly what the file holds
            assert out.nbytes == len(blob) - 4 - 4 * out.ndim


@fuzz(200)
@given(code=st.integers(0, 255), ndim=st.integers(0, 8),
       dims=st.lists(st.sampled_from(INTERESTING_U32 + [4, 5]), min_size=8, max_size=8),
       payload=st.binary(max_size=256), zero=st.binary(min_size=2, max_size=2), gz=st.booleans())
def test_idx_forged_headers(tmp_path, code, ndim, dims, payload, zero, gz):
    """Any type byte, dimension count and (possibly enormous) sizes: loads only when the data
    is exactly what the header declares."""
    head = zero + bytes([code, ndim]) + struct.pack(f">{ndim}I", *dims[:ndim])
    p = tmp_path / "forged.idx"
    p.write_bytes(gzip.compress(head + payload, mtime=0) if gz else head + payload)
    kind, out = verdict("idx-forged-header", F.read_idx, p, name=p.name)
    if kind == "ok":
        assert zero == b"\0\0" and code in F.IDX_DTYPES and ndim >= 1
        assert out.shape == tuple(dims[:ndim])
        assert out.nbytes == len(payload)


@fuzz(100)
@given(blob=st.binary(max_size=512), gz=st.booleans())
def test_idx_random_bytes(tmp_path, blob, gz):
    p = tmp_path / "random.idx"
    p.write_bytes((b"\x1f\x8b" if gz else b"") + blob)
    verdict("idx-random", F.read_idx, p, name=p.name)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dims", [(10 ** 6, 10 ** 3, 10 ** 3), (2 ** 32 - 1,) * 3, (60000, 28, 28)])
def test_idx_header_claiming_huge_sizes_is_refused_before_allocating(tmp_path, gz, dims):
    head = bytes([0, 0, 0x0E, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    p = tmp_path / "huge.idx"
    p.write_bytes(gzip.compress(head + bytes(1000), mtime=0) if gz else head + bytes(1000))
    with peak_allocation() as mem:
        kind, exc = verdict("idx-huge-header", F.read_idx, p, name=p.name)
    assert kind == "error" and isinstance(exc, DataError)
    assert "declares" in str(exc) and " x ".join(map(str, dims)) in str(exc)
    assert mem["peak"] < 4 << 20, f"allocated {mem['peak']} bytes before refusing"


# ================================================================================ CIFAR
@fuzz(150)
@given(data=st.data(), kind=st.sampled_from(["cifar10", "cifar100"]), n=st.integers(1, 3),
       name=st.sampled_from(["data_batch_1.bin", "test_batch.bin", "train.bin", "mystery.bin"]),
       explicit=st.booleans(), coarse=st.booleans())
def test_cifar_reader_on_damaged_files(tmp_path, data, kind, n, name, explicit, coarse):
    rec = 3073 if kind == "cifar10" else 3074
    rng = np.random.default_rng(n)
    recs = rng.integers(0, 256, size=(n, rec), dtype=np.uint8)
    if kind == "cifar10":
        recs[:, 0] %= 10
    else:
        recs[:, 0] %= 20
        recs[:, 1] %= 100
    if data.draw(st.booleans(), label="bad label"):
        recs[data.draw(st.integers(0, n - 1)), 0] = data.draw(st.integers(0, 255))
    op, blob = mutate(data, recs.tobytes())
    p = tmp_path / name
    p.write_bytes(blob)
    res, out = verdict("cifar", F.read_cifar_binary, p, coarse=coarse,
                       kind=kind if explicit else None, name=name)
    if res == "ok":
        x, y = out
        size = len(blob)
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64
        assert len(x) == len(y) and size in (len(x) * 3073, len(x) * 3074)
        assert y.min() >= 0 and y.max() < 100


def test_cifar_directory_with_one_truncated_batch_names_that_file(tmp_path):
    rec = np.zeros((2, 3073), np.uint8)
    for nme in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp_path / nme).write_bytes(rec.tobytes())
    (tmp_path / "data_batch_3.bin").write_bytes(rec.tobytes()[:-1])
    kind, exc = verdict("cifar-dir", F.read_cifar_binary, tmp_path, name="data_batch_3.bin")
    assert kind == "error" and isinstance(exc, DataError)


# ================================================================================ images
def _pil():
    from PIL import Image, features
    return Image, features


@st.composite
def encoded_images(draw):
    Image, features = _pil()
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"]))
    if fmt == "WEBP" and not features.check("webp"):
        fmt = "PNG"
    modes = {"JPEG": ["L", "RGB"], "PPM": ["L", "RGB"], "WEBP": ["RGB", "RGBA"],
             "BMP": ["1", "L", "P", "RGB"], "GIF": ["L", "P"]}.get(fmt, ["1", "L", "P", "RGB", "RGBA"])
    mode = draw(st.sampled_from(modes))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    arr = np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)),
                        np.uint8).reshape(h, w, 3)
    img = Image.fromarray(arr, "RGB").convert(mode)
    buf = _io.BytesIO()
    img.save(buf, format=fmt)
    return fmt, buf.getvalue()


def forge_dims(fmt, blob, w, h):
    """Rewrite the width/height an image header declares (keeping PNG's CRC valid)."""
    b = bytearray(blob)
    if fmt == "PNG" and len(b) >= 33:
        b[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    elif fmt == "JPEG":
        i = blob.find(b"\xff\xc0")
        if i >= 0 and i + 9 <= len(b):
            b[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif fmt == "BMP" and len(b) >= 26:
        b[18:26] = struct.pack("<ii", w & 0x7FFFFFFF, h & 0x7FFFFFFF)
    elif fmt == "GIF" and len(b) >= 10:
        b[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    return bytes(b)


def _image_folder(root, good, bad_name, bad_blob):
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "good.png").write_bytes(good)
    (root / "b" / bad_name).write_bytes(bad_blob)


def _good_png():
    Image, _ = _pil()
    buf = _io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L").save(buf, format="PNG")
    return buf.getvalue()


@fuzz(200)
@given(data=st.data(), img=encoded_images(), resize=st.booleans(),
       mode=st.sampled_from([None, "L", "RGB"]))
def test_image_folder_on_damaged_pictures(tmp_path, data, img, resize, mode):
    fmt, blob = img
    op, blob = mutate(data, blob)
    name = f"x.{fmt.lower()}"
    root = fresh(tmp_path) / "imgs"
    _image_folder(root, _good_png(), name, blob)
    kind, out = verdict("image-folder", F.read_image_folder, root, size=(8, 8) if resize else None,
                        mode=mode)
    if kind == "ok":
        x, y, classes = out
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[0] == 2 and x.shape[1] in (1, 3)
        assert classes == ["a", "b"] and list(y) == [0, 1]
    elif "differ in size" not in str(out):
        assert name in str(out) and "good.png" not in str(out)   # blames the damaged file
    kind1, out1 = verdict("load-image", F.load_image, root / "b" / name, name=name)
    if kind1 == "ok":
        assert out1.dtype == np.uint8 and out1.ndim == 3 and out1.shape[0] in (1, 3)


@fuzz(150)
@given(img=encoded_images(), w=st.sampled_from([0, 1, 7, 300, 65535, 2 ** 31 - 1, 2 ** 32 - 1]),
       h=st.sampled_from([0, 1, 7, 300, 65535, 2 ** 31 - 1, 2 ** 32 - 1]), resize=st.booleans())
def test_image_headers_declaring_huge_dimensions(tmp_path, img, w, h, resize):
    fmt, blob = img
    blob = forge_dims(fmt, blob, w, h)
    root = fresh(tmp_path) / "imgs"
    name = f"forged.{fmt.lower()}"
    (root / "c").mkdir(parents=True)
    (root / "c" / name).write_bytes(blob)
    kind, out = verdict("image-huge-dims", F.read_image_folder, root,
                        size=(8, 8) if resize else None, name=name)
    if kind == "ok":
        assert out[0].dtype == np.uint8 and out[0].shape[0] == 1


def test_zero_byte_and_non_image_files_are_named(tmp_path):
    for bad, content in (("empty.png", b""), ("notes.txt", b"just some text\n"),
                         ("half.png", _good_png()[:30])):
        root = tmp_path / bad.replace(".", "_")
        _image_folder(root, _good_png(), bad, content)
        kind, exc = verdict("image-folder-targeted", F.read_image_folder, root, name=bad)
        assert kind == "error" and isinstance(exc, DataError)


def test_decompression_bombs_surface_as_data_errors(tmp_path, monkeypatch):
    Image, _ = _pil()
    # a 100000 x 100000 PNG header (10**10 pixels, > 2 x Pillow's limit): refused at open
    root = tmp_path / "bomb"
    _image_folder(root, _good_png(), "bomb.png", forge_dims("PNG", _good_png(), 100000, 100000))
    kind, exc = verdict("decompression-bomb", F.read_image_folder, root, name="bomb.png")
    assert kind == "error" and isinstance(exc, DataError) and "decompression bomb" in str(exc)
    # real pictures just above Pillow's limit (a warning in Pillow) and 2x above (an error)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    for side, label in ((50, "warning-level"), (100, "error-level")):
        buf = _io.BytesIO()
        Image.new("L", (side, side), 7).save(buf, format="PNG")
        root = tmp_path / label
        (root / "a").mkdir(parents=True)
        (root / "a" / "big.png").write_bytes(buf.getvalue())
        kind, exc = verdict("decompression-bomb", F.read_image_folder, root, name="big.png")
        assert kind == "error" and "decompression bomb" in str(exc), label
        kind, exc = verdict("decompression-bomb", F.load_image, root / "a" / "big.png", name="big.png")
        assert kind == "error" and "decompression bomb" in str(exc), label
    # and below the limit the same kind of file loads
    buf = _io.BytesIO()
    Image.new("L", (30, 30), 7).save(buf, format="PNG")
    (tmp_path / "ok" / "a").mkdir(parents=True)
    (tmp_path / "ok" / "a" / "fine.png").write_bytes(buf.getvalue())
    x, y, _ = F.read_image_folder(tmp_path / "ok")
    assert x.shape == (1, 1, 30, 30) and int(x[0, 0, 0, 0]) == 7


# ================================================================================ npz
NPZ_DTYPES = ["u1", "i2", "<i4", ">i8", "f4", ">f8", "f2", "c8", "?", "U3", "S2", "O",
              [("a", "<i4"), ("b", "f4")], [("o", "O")]]


@st.composite
def npz_contents(draw):
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "meta"]),
                             min_size=1, max_size=3, unique=True)):
        dt = np.dtype(draw(st.sampled_from(NPZ_DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        n = math.prod(shape)
        if dt.hasobject:
            a = np.empty(shape, dtype=dt)
        elif dt.kind in "US":
            a = np.array(["ab"] * n, dtype=dt).reshape(shape)
        else:
            raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
            a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
        arrays[key] = a
    return arrays


@fuzz(200)
@given(data=st.data(), arrays=npz_contents(), compressed=st.booleans())
def test_npz_reader_on_damaged_archives(tmp_path, data, arrays, compressed):
    buf = _io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    op, blob = mutate(data, buf.getvalue())
    p = tmp_path / "d.npz"
    p.write_bytes(blob)
    kind, out = verdict("npz", F.read_npz, p, name=p.name)
    has_objects = any(a.dtype.hasobject for a in arrays.values())
    if has_objects:
        assert kind == "error", "an object array was loaded"
    if op == "none" and not has_objects:
        assert kind == "ok", out
        assert set(out) == set(arrays)
        for k, a in arrays.items():
            assert out[k].dtype == a.dtype and out[k].shape == a.shape
            assert out[k].tobytes() == a.tobytes()
    if kind == "ok":
        assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in out.values())


def _npy_bytes(shape, descr="<f4", payload=b""):
    h = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode("latin1") + payload


def _zip(members, method=zipfile.ZIP_STORED):
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


@fuzz(120)
@given(shape=st.lists(st.sampled_from([0, 1, 3, 1000, 10 ** 6, 2 ** 31, 10 ** 12]), max_size=3),
       descr=st.sampled_from(["<f4", "|u1", "<f8", "|O", "<U4", "zz", "<i8"]),
       payload=st.binary(max_size=64), deflate=st.booleans(),
       name=st.sampled_from(["x.npy", "x.txt", "x", "dir/x.npy"]))
def test_npz_forged_members(tmp_path, shape, descr, payload, deflate, name):
    blob = _zip({name: _npy_bytes(shape, descr, payload)},
                zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    p = tmp_path / "forged.npz"
    p.write_bytes(blob)
    with peak_allocation() as mem:
        kind, out = verdict("npz-forged", F.read_npz, p, name=p.name)
    assert mem["peak"] < 16 << 20, f"allocated {mem['peak']} bytes for a {len(blob)}-byte file"
    if kind == "ok":
        (a,) = out.values()
        assert a.shape == tuple(shape) and a.nbytes == len(payload)


@pytest.mark.parametrize("deflate", [False, True], ids=["stored", "deflated"])
def test_npz_header_claiming_huge_arrays_is_refused_before_allocating(tmp_path, deflate):
    # 2**33 bytes declared, 16 MiB present: NumPy alone would allocate the 8 GiB first
    blob = _zip({"x.npy": _npy_bytes((2 ** 33,), "|u1", bytes(1 << 24))},
                zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    p = tmp_path / "huge.npz"
    p.write_bytes(blob)
    with peak_allocation() as mem:
        kind, exc = verdict("npz-huge-header", F.read_npz, p, name=p.name)
    assert kind == "error" and "declares shape (8589934592,)" in str(exc)
    assert mem["peak"] < 64 << 20, f"allocated {mem['peak']} bytes before refusing"


@fuzz(60)
@given(blob=st.binary(max_size=300), pk=st.booleans())
def test_npz_random_bytes(tmp_path, blob, pk):
    p = tmp_path / "r.npz"
    p.write_bytes((b"PK\x03\x04" if pk else b"") + blob)
    verdict("npz-random", F.read_npz, p, name=p.name)


# ================================================================================ safetensors
def _tiny_model(seed=0):
    return Sequential([Conv2D(1, 2, 3, rng=seed), BatchNorm2D(2), ReLU(), MaxPool2D(2), Flatten(),
                       Dropout(0.25, rng=seed), Dense(8, 3, rng=seed)], input_shape=(1, 6, 6),
                      classes=["a", "b", "c"])


_X = np.random.default_rng(0).integers(0, 256, size=(12, 1, 6, 6), dtype=np.uint8)
_Y = np.arange(12) % 3


def _trainer(model, **kw):
    return Trainer(model, optimizer="adam", lr=1e-3, epochs=2, batch_size=4, seed=0,
                   progress=False, **kw)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Bytes of a valid model file and of a valid mid-epoch checkpoint (with optimizer state)."""
    d = tmp_path_factory.mktemp("model_files")
    m = _tiny_model()
    t = _trainer(m, out_dir=str(d))
    t.fit((_X, _Y))
    t.save_checkpoint(str(d / "mid.safetensors"), 1, 1,
                      {"seen": 4, "loss_sum": 4.0, "correct": 1, "time": 0.1})
    return {"model": (d / "model.safetensors").read_bytes(),
            "checkpoint": (d / "mid.safetensors").read_bytes()}


def _split(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, body, pad=True):
    h = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


def _check_loaded_model(m):
    assert isinstance(m, Sequential)
    n = 0
    for p in m.parameters():
        assert p.value.dtype in (np.float32, np.float64) and np.all(np.isfinite(p.value))
        n += p.value.size
    assert n <= MAX_ELEMENTS


@fuzz(200)
@given(data=st.data(), which=st.sampled_from(["model", "checkpoint"]))
def test_model_file_byte_damage(tmp_path, model_files, data, which):
    op, blob = mutate(data, model_files[which])
    p = tmp_path / "m.safetensors"
    p.write_bytes(blob)
    kind, out = verdict("safetensors-bytes", nio.load_model, p, name=p.name)
    if op == "none":
        assert kind == "ok"
    if kind == "ok":
        _check_loaded_model(out)
    if which == "checkpoint":
        kind, out = verdict("checkpoint-bytes", nio.load_checkpoint, p, name=p.name)
        if kind == "ok":
            _check_loaded_model(out[0])


JUNK = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 3, 2 ** 31, 2 ** 63, 10 ** 12, 10 ** 30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.sampled_from([0, 1, -1, 3, 10 ** 6, 10 ** 12, 2 ** 64, 1.5, "2"]), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(-2, 2), max_size=2))


@fuzz(250)
@given(data=st.data(), which=st.sampled_from(["model", "checkpoint"]),
       field=st.sampled_from(["dtype", "shape", "data_offsets", "entry", "drop", "extra",
                              "length", "huge-tensor"]))
def test_model_file_forged_headers(tmp_path, model_files, data, which, field):
    header, body = _split(model_files[which])
    names = sorted(k for k in header if k != "__metadata__")
    name = data.draw(st.sampled_from(names), label="tensor")
    blob = None
    if field == "dtype":
        header[name]["dtype"] = data.draw(st.one_of(
            st.sampled_from(["F16", "F64", "I8", "U8", "I64", "BOOL", "BF16", "F8_E4M3", "f32",
                             "F32 ", "", "O"]), JUNK), label="dtype")
    elif field == "shape":
        header[name]["shape"] = data.draw(st.one_of(
            st.lists(st.sampled_from([0, 1, 2, 3, -1, 10 ** 6, 2 ** 32, 10 ** 12, 2 ** 63]),
                     max_size=5), JUNK), label="shape")
    elif field == "data_offsets":
        header[name]["data_offsets"] = data.draw(st.one_of(
            st.lists(st.sampled_from([0, 4, 8, 16, -8, len(body), len(body) + 8, 2 ** 62,
                                      10 ** 12]), min_size=2, max_size=2), JUNK), label="offsets")
    elif field == "entry":
        header[name] = data.draw(JUNK, label="entry")
    elif field == "drop":
        del header[name]
    elif field == "extra":
        header["layers.9.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    elif field == "huge-tensor":
        header[name] = {"dtype": "F32", "shape": [10 ** 6, 10 ** 6], "data_offsets": [0, 4 * 10 ** 12]}
    blob = _join(header, body)
    if field == "length":
        n = data.draw(st.sampled_from([0, 1, 7, 2 ** 26, 2 ** 63, len(blob), len(blob) - 9]))
        blob = struct.pack("<Q", n) + blob[8:]
    p = tmp_path / "forged.safetensors"
    p.write_bytes(blob)
    with peak_allocation() as mem:
        kind, out = verdict("safetensors-header", nio.load_model, p, name=p.name)
    assert mem["peak"] < 16 << 20, f"allocated {mem['peak']} bytes for a {len(blob)}-byte file"
    if kind == "ok":
        _check_loaded_model(out)


# -- architecture descriptions: shared by metadata forgery and architecture files ---------------
LAYER_TYPES = sorted(k for k in REGISTRY if not k.startswith("_")) + ["Evil", "Layer", "__class__",
                                                                          "conv2d", ""]
SMALL = st.integers(-2, 16)
HUGE = st.sampled_from([2 ** 31, 10 ** 9, 10 ** 12, 2 ** 63, 10 ** 30])
ARG_VALUES = st.one_of(SMALL, SMALL, SMALL, HUGE, st.lists(st.one_of(SMALL, HUGE), max_size=3),
                       st.sampled_from([None, True, False, 0.5, 1e300, float("nan"), float("inf"),
                                        -0.0, "same", "float32", "float64", "float16", "object",
                                        "kaiming_normal", "bogus", [], {}]))
ARG_NAMES = ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "bias",
             "in_features", "out_features", "num_features", "eps", "momentum", "p",
             "negative_slope", "init", "dtype", "rng", "unknown", "groups", "output_padding",
             "ceil_mode", "count_include_pad", "scale_factor", "mode", "align_corners", "alpha",
             "approximate", "start_dim"]


@st.composite
def layer_specs(draw):
    spec = {"type": draw(st.one_of(st.sampled_from(LAYER_TYPES), st.sampled_from(LAYER_TYPES),
                                   JUNK))}
    for k in draw(st.lists(st.sampled_from(ARG_NAMES), max_size=5, unique=True)):
        spec[k] = draw(ARG_VALUES)
    if draw(st.booleans()):
        spec.pop("type")
        if draw(st.booleans()):
            return draw(JUNK)
        spec["type"] = draw(st.sampled_from(LAYER_TYPES))
    return spec


@st.composite
def valid_architectures(draw):
    """A small architecture that builds: conv/bn/relu/pool blocks, flatten, dense layers."""
    c, size = draw(st.integers(1, 3)), draw(st.integers(4, 10))
    layers, shape = [], (c, size, size)
    for _ in range(draw(st.integers(0, 2))):
        out, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        pad = draw(st.integers(0, k // 2))
        layers.append({"type": "Conv2D", "in_channels": shape[0], "out_channels": out,
                       "kernel_size": k, "padding": pad,
                       "init": draw(st.sampled_from(["kaiming_uniform", "xavier_normal"]))})
        shape = (out, shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1)
        if draw(st.booleans()):
            layers.append({"type": "BatchNorm2D", "num_features": out})
        layers.append({"type": draw(st.sampled_from(["ReLU", "LeakyReLU", "Tanh", "Sigmoid"]))})
        if min(shape[1:]) >= 2 and draw(st.booleans()):
            layers.append({"type": draw(st.sampled_from(["MaxPool2D", "AvgPool2D"])), "kernel_size": 2})
            shape = (shape[0], shape[1] // 2, shape[2] // 2)
    layers.append({"type": "Flatten"})
    feat = shape[0] * shape[1] * shape[2]
    if draw(st.booleans()):
        layers += [{"type": "Dense", "in_features": feat, "out_features": 8},
                   {"type": "Dropout", "p": 0.5}, {"type": "ReLU"}]
        feat = 8
    layers.append({"type": "Dense", "in_features": feat, "out_features": draw(st.integers(2, 5))})
    return {"input_shape": [c, size, size], "layers": layers}


@st.composite
def architectures(draw):
    """Valid architectures, the same with one to three fields corrupted, and pure junk."""
    style = draw(st.sampled_from(["valid", "corrupted", "corrupted", "corrupted", "junk"]))
    if style == "junk":
        arch = {"layers": draw(st.one_of(st.lists(layer_specs(), min_size=1, max_size=5), JUNK))}
        if draw(st.booleans()):
            arch["input_shape"] = draw(st.one_of(
                st.lists(st.one_of(SMALL, HUGE), min_size=1, max_size=4), JUNK))
        return arch if draw(st.integers(0, 9)) else draw(JUNK)
    arch = draw(valid_architectures())
    if style == "corrupted":
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.sampled_from(["arg", "arg", "arg", "type", "layer", "input_shape"]))
            i = draw(st.integers(0, len(arch["layers"]) - 1))
            if not isinstance(arch["layers"][i], dict):
                continue
            if where == "arg":
                arch["layers"][i][draw(st.sampled_from(ARG_NAMES))] = draw(ARG_VALUES)
            elif where == "type":
                arch["layers"][i]["type"] = draw(st.one_of(st.sampled_from(LAYER_TYPES), JUNK))
            elif where == "layer":
                arch["layers"][i] = draw(layer_specs())
            else:
                arch["input_shape"] = draw(st.one_of(
                    st.lists(st.one_of(SMALL, HUGE), min_size=1, max_size=4), JUNK))
    return arch


def _count_params(m):
    return sum(p.value.size for p in m.parameters())


@fuzz(200)
@given(data=st.data(), key=st.sampled_from(["format", "architecture", "architecture-text",
                                            "architecture-deep", "layer-arg", "normalization",
                                            "classes", "drop"]))
def test_model_file_forged_metadata(tmp_path, model_files, data, key):
    tensors, meta = nio.decode_safetensors(model_files["model"])
    arch = json.loads(meta["architecture"])
    if key == "format":
        meta["format"] = data.draw(st.sampled_from(["numcnn/2", "", "NUMCNN/1", "numcnn/1 "]))
    elif key == "architecture":
        meta["architecture"] = json.dumps(data.draw(architectures(), label="arch"))
    elif key == "architecture-text":
        meta["architecture"] = data.draw(st.text(max_size=64), label="text")
    elif key == "architecture-deep":
        depth = data.draw(st.sampled_from([10, 1000, 100000]), label="depth")
        meta["architecture"] = "[" * depth + "]" * depth
    elif key == "layer-arg":
        i = data.draw(st.integers(0, len(arch["layers"]) - 1), label="layer")
        arch["layers"][i][data.draw(st.sampled_from(ARG_NAMES))] = data.draw(ARG_VALUES)
        meta["architecture"] = json.dumps(arch)
    elif key == "normalization":
        meta["normalization"] = json.dumps(data.draw(st.one_of(
            st.fixed_dictionaries({"mean": JUNK, "std": JUNK}), JUNK)))
    elif key == "classes":
        meta["classes"] = json.dumps(data.draw(st.one_of(st.lists(JUNK, max_size=3), JUNK)))
    elif key == "drop":
        del meta[data.draw(st.sampled_from(sorted(meta)))]
    p = tmp_path / "meta.safetensors"
    p.write_bytes(nio.encode_safetensors(tensors, meta))
    with peak_allocation() as mem:
        kind, out = verdict("safetensors-metadata", nio.load_model, p, name=p.name)
    assert mem["peak"] < 64 << 20, f"allocated {mem['peak']} bytes while loading"
    if kind == "ok":
        _check_loaded_model(out)


def test_model_file_with_a_terabyte_architecture_is_refused_before_allocating(tmp_path, model_files):
    tensors, meta = nio.decode_safetensors(model_files["model"])
    for spec in ({"type": "Conv2D", "in_channels": 1, "out_channels": 10 ** 12, "kernel_size": 3},
                 {"type": "Dense", "in_features": 10 ** 6, "out_features": 10 ** 6},
                 {"type": "BatchNorm2D", "num_features": 10 ** 12},
                 {"type": "Conv2D", "in_channels": 1, "out_channels": 1, "kernel_size": 1,
                  "padding": 10 ** 9}):
        meta["architecture"] = json.dumps({"layers": [spec], "input_shape": [1, 6, 6]})
        p = tmp_path / "tera.safetensors"
        p.write_bytes(nio.encode_safetensors(tensors, meta))
        with peak_allocation() as mem:
            kind, exc = verdict("safetensors-huge-architecture", nio.load_model, p, name=p.name)
        assert kind == "error" and isinstance(exc, ModelFileError), spec
        assert mem["peak"] < 4 << 20, (spec, mem)


# -- checkpoints with forged training state, resumed --------------------------------------------
CK_PATHS = [("epoch",), ("batch",), ("partial",), ("partial", "seen"), ("partial", "loss_sum"),
            ("history",), ("history", "train_loss"), ("optimizer",), ("optimizer", "type"),
            ("optimizer", "steps"), ("optimizer", "lr"), ("batch_size",), ("seed",), ("rng",),
            ("rng", "5"), ("early_stopping",), ("early_stopping", "best"), ("early_stopping", "wait"),
            ("epochs",), ("schedule",)]


@fuzz(150)
@given(data=st.data(), path=st.sampled_from(CK_PATHS), drop=st.booleans())
def test_resume_from_checkpoint_with_forged_training_state(tmp_path, model_files, data, path, drop):
    tensors, meta = nio.decode_safetensors(model_files["checkpoint"])
    info = json.loads(meta["checkpoint"])
    node = info
    for k in path[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        if drop:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = data.draw(st.one_of(JUNK, st.sampled_from([-5, 10 ** 9, 2.5, "0"])),
                                       label="value")
    meta["checkpoint"] = json.dumps(info)
    p = tmp_path / "ck.safetensors"
    p.write_bytes(nio.encode_safetensors(tensors, meta))
    out_dir = fresh(tmp_path) / "run"
    kind, hist = verdict("resume-forged-checkpoint",
                         lambda: _trainer(_tiny_model(), out_dir=str(out_dir)).fit((_X, _Y), resume=str(p)),
                         name=p.name)
    if kind == "ok":
        assert isinstance(hist, dict) and all(isinstance(v, list) for v in hist.values())


# ================================================================================ architecture files
def _arch_file(tmp_path, text, ext):
    p = tmp_path / f"arch{ext}"
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


@fuzz(120)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)), ext=st.sampled_from([".json", ".toml"]))
def test_architecture_file_random_text(tmp_path, text, ext):
    p = _arch_file(tmp_path, text, ext)
    kind, out = verdict("architecture-random", load_architecture, p, name=os.path.basename(p))
    if kind == "ok":
        assert _count_params(out) <= MAX_ELEMENTS


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(u) for u in v if u is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(u)}" for k, u in v.items()
                               if u is not None) + "}"
    return '""'


def _to_toml(arch):
    if not isinstance(arch, dict):
        return f"value = {_toml_value(arch)}\n"
    lines = []
    if "input_shape" in arch:
        lines.append(f"input_shape = {_toml_value(arch['input_shape'])}")
    layers = arch.get("layers")
    if isinstance(layers, list):
        for spec in layers:
            lines.append("[[layers]]")
            if isinstance(spec, dict):
                lines += [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in spec.items()
                          if v is not None]
    else:
        lines.append(f"layers = {_toml_value(layers)}")
    return "\n".join(lines) + "\n"


@fuzz(350)
@given(arch=architectures(), ext=st.sampled_from([".json", ".json", ".toml"]))
def test_architecture_file_structured_fuzz(tmp_path, arch, ext):
    text = json.dumps(arch) if ext == ".json" else _to_toml(arch)
    p = _arch_file(tmp_path, text, ext)
    with peak_allocation() as mem:
        kind, out = verdict("architecture-structured", load_architecture, p, name=os.path.basename(p))
    assert mem["peak"] < 64 << 20, f"allocated {mem['peak']} bytes for {text[:200]}"
    if kind == "ok":
        assert isinstance(out, Sequential) and _count_params(out) <= MAX_ELEMENTS
        assert all(p.value.dtype in (np.float32, np.float64) for p in out.parameters())
        if out.input_shape and math.prod(out.input_shape) <= 4096:
            # what loads also runs (or refuses its input cleanly)
            x = np.random.default_rng(0).integers(0, 256, (2,) + out.input_shape, dtype=np.uint8)
            kind, probs = verdict("architecture-then-predict", out.predict, x)
            if kind == "ok":
                assert probs.shape[0] == 2 and np.all(np.isfinite(probs))


@pytest.mark.parametrize("text, ext", [
    ("[" * 100000 + "]" * 100000, ".json"),
    ('{"layers": ' + "[" * 50000 + "]" * 50000 + "}", ".json"),
    ("a = " + "[" * 100000 + "]" * 100000, ".toml"),
    ('{"layers": [{"type": "Dense", "in_features": ' + "9" * 5000 + ', "out_features": 2}]}', ".json"),
], ids=["deep-json", "deep-json-layers", "deep-toml", "5000-digit-int"])
def test_architecture_file_deep_nesting_and_giant_numbers(tmp_path, text, ext):
    kind, exc = verdict("architecture-deep", load_architecture, _arch_file(tmp_path, text, ext),
                        name=f"arch{ext}")
    assert kind == "error" and isinstance(exc, ConfigError)


@pytest.mark.parametrize("spec", [
    {"type": "Conv2D", "in_channels": 1, "out_channels": 10 ** 12, "kernel_size": 3},
    {"type": "Conv2D", "in_channels": 1, "out_channels": 1, "kernel_size": [10 ** 6, 10 ** 6]},
    {"type": "Dense", "in_features": 10 ** 6, "out_features": 10 ** 7},
    {"type": "Dense", "in_features": 2 ** 20, "out_features": 2 ** 9},      # 2**29: just over the cap
    {"type": "BatchNorm1D", "num_features": 10 ** 12},
    {"type": "Conv2D", "in_channels": 1, "out_channels": 1, "kernel_size": 1, "padding": 10 ** 9},
    {"type": "MaxPool2D", "kernel_size": 200000, "padding": 100000},
    {"type": "ConvTranspose2D", "in_channels": 1, "out_channels": 10 ** 12, "kernel_size": 3},
    {"type": "ConvTranspose2D", "in_channels": 1, "out_channels": 1, "kernel_size": 1,
     "stride": 10 ** 5},
    {"type": "Upsample", "scale_factor": 10 ** 5},
    {"type": "Conv2D", "in_channels": 1, "out_channels": 1, "kernel_size": 1,
     "padding": [[0, 10 ** 9], [0, 0]]},
], ids=["conv-out-1e12", "conv-kernel-1e6", "dense-1e13", "dense-2^29", "bn-1e12", "pad-1e9",
        "pool-pad-1e5", "convT-out-1e12", "convT-stride-1e5", "upsample-1e5", "asym-pad-1e9"])
@pytest.mark.parametrize("ext", [".json", ".toml"])
def test_architecture_file_asking_for_terabytes_is_refused_before_allocating(tmp_path, spec, ext):
    arch = {"input_shape": [1, 8, 8], "layers": [spec]}
    text = json.dumps(arch) if ext == ".json" else _to_toml(arch)
    with peak_allocation() as mem:
        kind, exc = verdict("architecture-huge", load_architecture, _arch_file(tmp_path, text, ext),
                            name=f"arch{ext}")
    assert kind == "error" and isinstance(exc, ConfigError)
    assert "numcnn refuses" in str(exc) or "limit" in str(exc)
    assert mem["peak"] < 4 << 20, f"allocated {mem['peak']} bytes before refusing"


def test_architecture_just_under_the_cap_still_loads(tmp_path):
    """The cap does not get in the way of real models (LeNet-sized and a 16M-parameter Dense)."""
    arch = {"input_shape": [1, 28, 28], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": 2}, {"type": "Flatten"},
        {"type": "Dense", "in_features": 6 * 14 * 14, "out_features": 10}]}
    m = load_architecture(_arch_file(tmp_path, json.dumps(arch), ".json"))
    assert m.predict(np.zeros((2, 1, 28, 28), np.uint8)).shape == (2, 10)
    big = {"layers": [{"type": "Dense", "in_features": 4096, "out_features": 4096}]}
    assert _count_params(load_architecture(_arch_file(tmp_path, json.dumps(big), ".json"))) == 4096 * 4097


# ================================================================================ no code from files
FORBIDDEN_NAMES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                   "eval", "exec", "__import__", "compile"}
# the builtins eval/exec, not a method of that name (Sequential.eval(), PyTorch's evaluation
# mode): a name right after "def " or "." is a method, and is allowed
FORBIDDEN_TEXT = [r"allow_pickle\s*=\s*True", r"torch\.load", r"(?<!def )(?<![.\w])eval\(",
                  r"(?<!def )(?<![.\w])exec\(",
                  r"pickle\.loads?\(", r"yaml\.load\(", r"import\s+pickle", r"from\s+pickle\s"]


def test_no_pickle_eval_or_exec_anywhere_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    offenders = []
    for f in files:
        text = f.read_text()
        for pat in FORBIDDEN_TEXT:                      # raw text, docstrings included
            for m in re.finditer(pat, text):
                offenders.append(f"{f.relative_to(SRC)}:{text[:m.start()].count(chr(10)) + 1}: {m.group()}")
        with open(f, "rb") as fh:                       # code tokens (comments/strings ignored)
            prev = None
            for tok in tokenize.tokenize(fh.readline):
                method = prev is not None and prev.string in ("def", ".") and tok.string in ("eval", "exec", "compile")
                if tok.type == tokenize.NAME and tok.string in FORBIDDEN_NAMES and not method:
                    offenders.append(f"{f.relative_to(SRC)}:{tok.start[0]}: {tok.string}")
                if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                    prev = tok
        for m in re.finditer(r"np\.load\(([^)]*)\)", text):      # every np.load refuses pickles
            if "allow_pickle=False" not in m.group(1):
                offenders.append(f"{f.relative_to(SRC)}: np.load without allow_pickle=False")
    stats.record("grep-src", "files", len(files))
    assert not offenders, "code from files could run: " + "; ".join(offenders)
