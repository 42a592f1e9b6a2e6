"""Readers of numcnn.data.formats and path loading in numcnn.datasets, on files written here."""
from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest
from PIL import Image

from numcnn import datasets
from numcnn import data as formats
from numcnn.data import (load_image, read_cifar_binary, read_idx, read_image_folder,
                                 read_npz, write_idx)
from numcnn.errors import ConfigError, DataError, NumcnnError

RNG = np.random.default_rng(1234)

IDX_CASES = [
    (np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
    (np.float32, 0x0D), (np.float64, 0x0E),
]


def _sample(dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


# ------------------------------------------------------------------------------------ IDX

@pytest.mark.parametrize("dtype,code", IDX_CASES)
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (5, 4, 3), (2, 3, 4, 5)])
def test_idx_roundtrip_all_dtypes(tmp_path, dtype, code, gz, shape):
    a = _sample(dtype, shape)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    assert raw[:4] == bytes([0, 0, code, len(shape)])
    assert struct.unpack(f">{len(shape)}I", raw[4:4 + 4 * len(shape)]) == shape
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable and b.flags.c_contiguous


def test_idx_hand_written_mnist_header_and_big_endian(tmp_path):
    # an MNIST-style image file: magic 0x00000803, 2 images of 2x3
    pix = bytes(range(12))
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(struct.pack(">IIII", 0x803, 2, 2, 3) + pix)
    x = read_idx(p)
    assert x.shape == (2, 2, 3) and x.dtype == np.uint8
    assert x[1, 1, 2] == 11
    lab = tmp_path / "labels"
    lab.write_bytes(struct.pack(">II", 0x801, 3) + bytes([7, 0, 9]))
    np.testing.assert_array_equal(read_idx(lab), [7, 0, 9])
    # int16 stored big-endian: 0x0102 = 258, -2 = 0xFFFE
    p16 = tmp_path / "i16"
    p16.write_bytes(bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + b"\x01\x02\xff\xfe")
    np.testing.assert_array_equal(read_idx(p16), np.array([258, -2], dtype=np.int16))
    # gzip is detected from the content, not the name
    pg = tmp_path / "no_suffix"
    pg.write_bytes(gzip.compress(p.read_bytes()))
    np.testing.assert_array_equal(read_idx(pg), x)


def _idx_bytes(dims, payload, code=0x08):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    data = _idx_bytes((10, 4, 4), bytes(100))           # 160 declared, 100 present
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="t.gz.*truncated|t.gz.*160"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_trailing_data(tmp_path, gz):
    data = _idx_bytes((3,), bytes(5))
    p = tmp_path / "t"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="trailing"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_header(tmp_path, gz):
    data = bytes([0, 0, 8, 3, 0, 0])                   # dims cut short
    p = tmp_path / "h"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("head,msg", [
    (b"\x01\x00\x08\x01", "magic"),
    (b"PK\x03\x04", "magic"),
    (b"\x00\x00\x0a\x01", "type byte 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
])
def test_idx_bad_magic(tmp_path, head, msg):
    p = tmp_path / "bad"
    p.write_bytes(head + struct.pack(">I", 4) + bytes(4))
    with pytest.raises(DataError, match=msg) as ei:
        read_idx(p)
    assert "bad" in str(ei.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_huge_dims_fail_fast(tmp_path, gz):
    data = _idx_bytes((1_000_000, 1_000_000), bytes(64), code=0x0E)   # 8 TB claimed
    p = tmp_path / "huge"
    p.write_bytes(gzip.compress(data) if gz else data)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="huge.*declares"):
        read_idx(p)
    assert time.perf_counter() - t0 < 1.0


def test_idx_gzip_bomb_is_read_only_up_to_the_declared_size(tmp_path):
    payload = _idx_bytes((10,), bytes(10)) + bytes(40 * 1024 * 1024)   # 40 MB of trailing zeros
    p = tmp_path / "bomb.gz"
    p.write_bytes(gzip.compress(payload, compresslevel=1))
    assert p.stat().st_size < 1_000_000
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="trailing"):
        read_idx(p)
    assert time.perf_counter() - t0 < 1.0


def test_idx_corrupt_gzip_and_missing_file(tmp_path):
    good = gzip.compress(_idx_bytes((50, 50), RNG.integers(0, 255, 2500, dtype=np.uint8)
                                    .tobytes()))
    bad = bytearray(good)
    for i in range(20, len(bad) - 10, 7):
        bad[i] ^= 0x5A
    p = tmp_path / "corrupt.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="corrupt.gz"):
        read_idx(p)
    # damaged CRC trailer only
    crc = bytearray(good)
    crc[-8] ^= 0xFF
    p.write_bytes(bytes(crc))
    with pytest.raises(DataError, match="corrupt.gz"):
        read_idx(p)
    with pytest.raises(DataError, match="no such"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_write_idx_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(ConfigError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ConfigError):
        write_idx(tmp_path / "x", np.float32(1.0))


def test_errors_are_value_errors():
    assert issubclass(DataError, NumcnnError) and issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------- CIFAR

def _cifar10_records(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = r.integers(0, 10, size=n).astype(np.uint8)
    raw = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).tobytes()
    return x, y, raw


def _cifar100_records(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    coarse = r.integers(0, 20, size=n).astype(np.uint8)
    fine = r.integers(0, 100, size=n).astype(np.uint8)
    raw = np.concatenate([coarse[:, None], fine[:, None], x.reshape(n, -1)], axis=1).tobytes()
    return x, coarse, fine, raw


def test_cifar10_file_layout(tmp_path):
    x, y, raw = _cifar10_records(3)
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(raw)
    xr, yr = read_cifar_binary(p)
    assert xr.shape == (3, 3, 32, 32) and xr.dtype == np.uint8 and yr.dtype == np.int64
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)
    # layout: after the label byte come 1024 red, 1024 green, 1024 blue bytes, row-major
    assert xr[1, 2, 0, 5] == raw[3073 + 1 + 2048 + 5]
    assert xr[2, 0, 31, 31] == raw[2 * 3073 + 1 + 1023]


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar10_directory(tmp_path, sub):
    d = tmp_path / sub if sub else tmp_path
    d.mkdir(exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y, raw = _cifar10_records(2, seed=i)
        (d / f"data_batch_{i}.bin").write_bytes(raw)
        xs.append(x)
        ys.append(y)
    xt, yt, raw = _cifar10_records(3, seed=9)
    (d / "test_batch.bin").write_bytes(raw)
    (xtr, ytr), (xte, yte) = read_cifar_binary(tmp_path)
    np.testing.assert_array_equal(xtr, np.concatenate(xs))
    np.testing.assert_array_equal(ytr, np.concatenate(ys))
    np.testing.assert_array_equal(xte, xt)
    np.testing.assert_array_equal(yte, yt)
    (a, b), (c, e) = datasets.load(tmp_path)
    assert a.shape == (10, 3, 32, 32) and c.shape == (3, 3, 32, 32)
    ds = datasets.load_dataset(tmp_path)
    assert ds.classes == datasets.CIFAR10_CLASSES


def test_cifar100_directory_fine_and_coarse(tmp_path):
    x, co, fi, raw = _cifar100_records(4, seed=1)
    xt, cot, fit, rawt = _cifar100_records(2, seed=2)
    (tmp_path / "train.bin").write_bytes(raw)
    (tmp_path / "test.bin").write_bytes(rawt)
    (xtr, ytr), (xte, yte) = read_cifar_binary(tmp_path)
    np.testing.assert_array_equal(xtr, x)
    np.testing.assert_array_equal(ytr, fi)
    np.testing.assert_array_equal(yte, fit)
    (_, ytr_c), (_, yte_c) = read_cifar_binary(tmp_path, coarse=True)
    np.testing.assert_array_equal(ytr_c, co)
    np.testing.assert_array_equal(yte_c, cot)
    xf, yf = read_cifar_binary(tmp_path / "train.bin")
    np.testing.assert_array_equal(xf, x)
    (_, ytr_l), _ = datasets.load(tmp_path, coarse=True)
    np.testing.assert_array_equal(ytr_l, co)


@pytest.mark.parametrize("layout", [("cifar-10-batches-py", "data_batch_1"), ("", "data_batch_1"),
                                    ("cifar-100-python", "train", "meta")])
def test_cifar_python_version_is_refused_with_the_way_to_the_binary_one(layout, tmp_path):
    """The pickled 'python version' is never unpickled: the error says what to get instead."""
    sub, *names = layout
    d = tmp_path / sub if sub else tmp_path
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"\x80\x04 a pickle: must never be loaded")
    with pytest.raises(DataError, match=r"CIFAR 'python version', stored as pickles.*binary version"):
        datasets.load(tmp_path)


def test_cifar_errors(tmp_path):
    _, _, raw = _cifar10_records(2)
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(raw + b"\x00" * 5)
    with pytest.raises(DataError, match=r"data_batch_1.bin.*3073"):
        read_cifar_binary(p)
    p.write_bytes(raw[:-1])
    with pytest.raises(DataError, match="whole number"):
        read_cifar_binary(p)
    bad = bytearray(raw)
    bad[3073] = 12                                     # label 12 in record 1
    p.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="record 1 has label 12"):
        read_cifar_binary(p)
    amb = tmp_path / "x.bin"
    amb.write_bytes(bytes(3073 * 3074))                # multiple of both record sizes
    with pytest.raises(DataError, match="kind="):
        read_cifar_binary(amb)
    assert read_cifar_binary(amb, kind="cifar100")[0].shape == (3073, 3, 32, 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="data_batch_1.bin"):
        read_cifar_binary(empty)
    with pytest.raises(DataError, match="no such"):
        read_cifar_binary(tmp_path / "nope.bin")


# ---------------------------------------------------------------------------- image folders

def _save(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def _grey(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_image_folder_grey_png(tmp_path):
    imgs = {("b", "1.png"): _grey(seed=1), ("a", "2.png"): _grey(seed=2),
            ("a", "1.png"): _grey(seed=3), ("c", "x.bmp"): _grey(seed=4)}
    for (c, f), a in imgs.items():
        _save(tmp_path / c / f, a)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")      # hidden files are skipped
    (tmp_path / "README.txt").write_text("top-level files are ignored")
    x, y, classes = read_image_folder(tmp_path)
    assert classes == ["a", "b", "c"]
    assert x.shape == (4, 1, 6, 5) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 1, 2])
    np.testing.assert_array_equal(x[0, 0], imgs[("a", "1.png")])   # sorted within a class
    np.testing.assert_array_equal(x[1, 0], imgs[("a", "2.png")])
    np.testing.assert_array_equal(x[3, 0], imgs[("c", "x.bmp")])


def test_image_folder_mixed_modes_become_rgb(tmp_path):
    g, c = _grey(seed=5), _rgb(seed=6)
    _save(tmp_path / "cat" / "g.png", g)
    _save(tmp_path / "dog" / "c.bmp", c)
    _save(tmp_path / "dog" / "j.jpg", _rgb(seed=7), "JPEG")
    x, y, classes = read_image_folder(tmp_path)
    assert x.shape == (3, 3, 6, 5)
    np.testing.assert_array_equal(x[0], np.stack([g, g, g]))   # grey replicated
    np.testing.assert_array_equal(x[1], c.transpose(2, 0, 1))  # BMP is lossless
    jpg = np.asarray(Image.open(tmp_path / "dog" / "j.jpg").convert("RGB"))
    np.testing.assert_array_equal(x[2], jpg.transpose(2, 0, 1))
    # forcing grey
    xl, _, _ = read_image_folder(tmp_path, mode="L")
    assert xl.shape == (3, 1, 6, 5)
    np.testing.assert_array_equal(xl[0, 0], g)
    ref = np.asarray(Image.fromarray(c).convert("L"))
    np.testing.assert_array_equal(xl[1, 0], ref)
    with pytest.raises(ConfigError, match="mode"):
        read_image_folder(tmp_path, mode="CMYK")


def test_image_folder_sizes(tmp_path):
    _save(tmp_path / "a" / "1.png", _rgb(6, 5, 1))
    _save(tmp_path / "a" / "2.png", _rgb(6, 5, 2))
    odd = _rgb(9, 7, 3)
    _save(tmp_path / "b" / "odd.png", odd)
    with pytest.raises(DataError, match=r"odd\.png.*9x7.*size=") as ei:
        read_image_folder(tmp_path)
    assert "6x5" in str(ei.value)
    x, y, _ = read_image_folder(tmp_path, size=(4, 3))
    assert x.shape == (3, 3, 4, 3)
    ref = np.asarray(Image.fromarray(odd).resize((3, 4), Image.BILINEAR))
    np.testing.assert_array_equal(x[2], ref.transpose(2, 0, 1))
    with pytest.raises(ConfigError, match="size"):
        read_image_folder(tmp_path, size=(0, 3))


def test_image_folder_non_image_and_empty(tmp_path):
    _save(tmp_path / "a" / "1.png", _grey())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt"):
        read_image_folder(tmp_path)
    (tmp_path / "b" / "notes.txt").unlink()
    trunc = tmp_path / "b" / "trunc.png"
    full = tmp_path / "full.png"
    Image.fromarray(_grey(40, 40)).save(full)
    trunc.write_bytes(full.read_bytes()[:60])
    with pytest.raises(DataError, match=r"trunc\.png"):
        read_image_folder(tmp_path)
    with pytest.raises(DataError, match="no class sub-folders"):
        read_image_folder(tmp_path / "a")
    with pytest.raises(DataError, match="not a directory"):
        read_image_folder(tmp_path / "none")


def test_load_image(tmp_path):
    g, c = _grey(seed=8), _rgb(seed=9)
    _save(tmp_path / "g.png", g)
    _save(tmp_path / "c.png", c)
    a = load_image(tmp_path / "g.png")
    assert a.shape == (1, 6, 5) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0], g)
    np.testing.assert_array_equal(load_image(tmp_path / "g.png", channels=3), np.stack([g] * 3))
    np.testing.assert_array_equal(load_image(tmp_path / "c.png"), c.transpose(2, 0, 1))
    np.testing.assert_array_equal(load_image(tmp_path / "c.png", channels=1)[0],
                                  np.asarray(Image.fromarray(c).convert("L")))
    r = load_image(tmp_path / "c.png", size=(28, 28), channels=1)
    assert r.shape == (1, 28, 28)
    with pytest.raises(ConfigError):
        load_image(tmp_path / "c.png", channels=2)
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(DataError, match=r"t\.txt"):
        load_image(tmp_path / "t.txt")


# ------------------------------------------------------------------ 16-bit and float images
# Pillow's convert("L") clips these modes to 0..255; numcnn rescales them instead.

def _save_deep(path, arr):
    """Write a 16-bit (uint16 -> PNG/TIFF 'I;16') or float32 (-> TIFF 'F') grey picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        return im.mode


def test_load_image_16bit_png_is_scaled_not_clipped(tmp_path):
    # x 255/65535 = / 257, rounded to nearest: 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1,
    # 32768/257 = 127.502 -> 128; the old clipping path gave 255 for everything but 0
    a = np.array([[0, 128, 129, 257], [1000, 32768, 65534, 65535]], dtype=np.uint16)
    assert _save_deep(tmp_path / "d.png", a) == "I;16"
    want = np.array([[0, 0, 1, 1], [4, 128, 255, 255]], dtype=np.uint8)   # 1000/257 = 3.89
    x = load_image(tmp_path / "d.png")
    assert x.shape == (1, 2, 4) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[0], want)
    np.testing.assert_array_equal(load_image(tmp_path / "d.png", channels=1)[0], want)
    np.testing.assert_array_equal(load_image(tmp_path / "d.png", channels=3),
                                  np.stack([want] * 3))                  # grey replicated
    # big-endian 16-bit TIFF ('I;16B') and 16-bit PGM (Pillow gives mode 'I') scale the same
    Image.frombytes("I;16B", (4, 2), a.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    (tmp_path / "p.pgm").write_bytes(b"P5 4 2 65535\n" + a.astype(">u2").tobytes())
    for name, mode in (("b.tif", "I;16B"), ("p.pgm", "I")):
        with Image.open(tmp_path / name) as im:
            assert im.mode == mode
        np.testing.assert_array_equal(load_image(tmp_path / name)[0], want)


def test_load_image_float_tiff_is_scaled_not_clipped(tmp_path):
    # values within 0..1 are x 255 (0.5 -> 127.5 -> 128, halves round up; 0.25 -> 63.75 -> 64);
    # the old clipping path gave 0 for everything below 1.0
    f = np.array([[0.0, 0.25, 0.5], [0.75, 0.999, 1.0]], dtype=np.float32)
    assert _save_deep(tmp_path / "f.tif", f) == "F"
    x = load_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(x, [[[0, 64, 128], [191, 255, 255]]])   # 191.25, 254.745
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif", channels=3)[2],
                                  [[0, 64, 128], [191, 255, 255]])
    # values within 0..255 (and some above 1) are kept, rounded to nearest
    g = np.array([[0.0, 1.5, 12.4], [12.5, 200.0, 255.0]], dtype=np.float32)
    _save_deep(tmp_path / "g.tif", g)
    np.testing.assert_array_equal(load_image(tmp_path / "g.tif")[0], [[0, 2, 12], [13, 200, 255]])


@pytest.mark.parametrize("values,msg", [
    ([0.0, 0.5, -0.25], r"-0\.25 to 0\.5"),
    ([0.0, 10.0, 300.0], r"0 to 300"),
    ([0.0, float("nan"), 1.0], r"1 NaN or infinite"),
    ([0.0, float("inf"), 1.0], r"1 NaN or infinite"),
])
def test_float_image_out_of_range_is_refused(tmp_path, values, msg):
    _save_deep(tmp_path / "a" / "bad.tif", np.array([values], dtype=np.float32))
    with pytest.raises(DataError, match=rf"bad\.tif: float image .*{msg}"):
        load_image(tmp_path / "a" / "bad.tif")
    with pytest.raises(DataError, match=rf"bad\.tif: float image .*{msg}"):
        read_image_folder(tmp_path)


def test_int32_image_beyond_16_bits_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as im:
        assert im.mode == "I"
    with pytest.raises(DataError, match=r"i\.tif: integer image \(Pillow mode 'I'\) holds "
                                        r"values from 0 to 70000.*0\.\.65535"):
        load_image(tmp_path / "i.tif")
    Image.fromarray(np.array([[-1, 5]], dtype=np.int32)).save(tmp_path / "n.tif")
    with pytest.raises(DataError, match=r"n\.tif.*from -1 to 5"):
        load_image(tmp_path / "n.tif")


def test_int32_tiff_holding_8_bit_values_is_kept_but_a_16_bit_pgm_is_scaled(tmp_path):
    Image.fromarray(np.array([[0, 7], [128, 252]], dtype=np.int32)).save(tmp_path / "i8.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "i8.tif")[0], [[0, 7], [128, 252]])
    # a 16-bit PGM (maxval 65535) whose pixels happen to be small is still 16-bit: 252 -> 1
    (tmp_path / "p.pgm").write_bytes(b"P5 2 1 65535\n" + np.array([252, 65535], ">u2").tobytes())
    with Image.open(tmp_path / "p.pgm") as im:
        assert im.mode in ("I", "I;16", "I;16B")
    np.testing.assert_array_equal(load_image(tmp_path / "p.pgm")[0], [[1, 255]])


@pytest.mark.parametrize("orientation,turn", [(6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
                                               (3, lambda a: np.rot90(a, 2)), (1, lambda a: a)])
def test_photos_are_read_the_way_their_exif_orientation_says(orientation, turn, tmp_path):
    """A phone stores a portrait photo sideways plus an EXIF tag; numcnn shows it upright, and
    an image folder sizes it by its upright shape."""
    a = (np.arange(24, dtype=np.uint8).reshape(4, 6) * 10)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "photo.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.png")[0], turn(a))
    (tmp_path / "f" / "x").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "f" / "x" / "0.png", exif=exif)
    Image.fromarray(np.ascontiguousarray(turn(a))).save(tmp_path / "f" / "x" / "1.png")
    x, _, _ = read_image_folder(tmp_path / "f")
    np.testing.assert_array_equal(x[0], x[1])


def test_image_folder_of_16bit_and_float_images(tmp_path):
    _save_deep(tmp_path / "a" / "d16.png", np.array([[0, 32768], [65535, 257]], dtype=np.uint16))
    _save_deep(tmp_path / "b" / "f.tif", np.array([[0.5, 1.0], [0.0, 0.25]], dtype=np.float32))
    x, y, classes = read_image_folder(tmp_path)
    assert classes == ["a", "b"] and x.shape == (2, 1, 2, 2) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(x[0, 0], [[0, 128], [255, 1]])
    np.testing.assert_array_equal(x[1, 0], [[128, 255], [0, 64]])
    xr, _, _ = read_image_folder(tmp_path, mode="RGB")                  # grey replicated
    np.testing.assert_array_equal(xr, np.repeat(x, 3, axis=1))
    # a colour picture in the folder makes it RGB; the 16-bit one is still scaled, not clipped
    _save(tmp_path / "b" / "c.png", _rgb(2, 2, seed=3))
    xc, _, _ = read_image_folder(tmp_path)
    np.testing.assert_array_equal(xc[0], np.stack([[[0, 128], [255, 1]]] * 3))
    # resizing happens after the rescale: a constant 32768 picture becomes a constant 128
    _save_deep(tmp_path / "c" / "flat.png", np.full((4, 6), 32768, dtype=np.uint16))
    xs, ys, _ = read_image_folder(tmp_path, size=(3, 2), mode="L")
    assert xs.shape == (4, 1, 3, 2)
    np.testing.assert_array_equal(xs[ys == 2][0, 0], np.full((3, 2), 128))


# ------------------------------------------------------------------------------------- npz

def test_read_npz_and_refusals(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, a=np.arange(3), b=np.ones((2, 2), np.float32))
    d = read_npz(p)
    assert set(d) == {"a", "b"}
    np.testing.assert_array_equal(d["a"], [0, 1, 2])
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"evil": 1}, None], dtype=object))
    with pytest.raises(DataError, match="object array"):
        read_npz(obj)
    txt = tmp_path / "t.npz"
    txt.write_bytes(b"hello world")
    with pytest.raises(DataError, match="not a .npz"):
        read_npz(txt)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match="broken.npz"):
        read_npz(broken)
    with pytest.raises(DataError, match="no such"):
        read_npz(tmp_path / "missing.npz")


def test_no_pickle_anywhere():
    import inspect

    import numcnn.data.augment
    import numcnn.data.download
    import numcnn.data.embedded
    import numcnn.data.loader
    import numcnn.data.cifar
    import numcnn.data.idx
    import numcnn.data.images
    import numcnn.data.npz
    import numcnn.data.sources
    for mod in (numcnn.data.idx, numcnn.data.cifar, numcnn.data.images, numcnn.data.npz,
                numcnn.data.sources, numcnn.data.download, numcnn.data.embedded, numcnn.data.loader,
                numcnn.data.augment, datasets):
        src = inspect.getsource(mod)
        assert "import pickle" not in src and "allow_pickle=True" not in src


# -------------------------------------------------------------------------- datasets by path

def _write_idx_dir(d, n_train=20, n_test=10, gz=True):
    d.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": r.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": r.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(d / (name + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_directory(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path, gz=gz)
    (xtr, ytr), (xte, yte) = datasets.load(str(tmp_path))
    assert xtr.shape == (20, 1, 28, 28) and xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and yte.shape == (10,)
    np.testing.assert_array_equal(xtr[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])
    ds = datasets.load_dataset(tmp_path)
    assert ds.classes == tuple("0123456789") and ds.num_classes == 10   # unnamed: ids
    assert ds.shape == (1, 28, 28)
    (a, _), _ = ds.splits
    np.testing.assert_array_equal(a, xtr)
    (tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))).unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        datasets.load(tmp_path)


def test_write_idx_makes_its_folder_and_leaves_no_temporary_file(tmp_path):
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    for name in ("a.idx", "a.idx.gz"):
        p = write_idx(tmp_path / "new" / "sub" / name, a)
        np.testing.assert_array_equal(read_idx(p), a)
    assert sorted(f.name for f in (tmp_path / "new" / "sub").iterdir()) == ["a.idx", "a.idx.gz"]


def test_idx_directory_with_train_and_test_images_of_different_sizes_is_refused(tmp_path):
    _write_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 27), np.uint8))
    with pytest.raises(DataError, match=r"training images are \(1, 28, 28\) but the test images "
                                        r"are \(1, 28, 27\)"):
        datasets.load(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((9, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"\(test files\): 9 images but 10 labels"):
        datasets.load(tmp_path)


@pytest.mark.parametrize("train,test", [("train", "val"), ("Train", "Test"), ("training", "validation")])
def test_image_folder_split_names_are_splits_not_classes(train, test, tmp_path):
    for split, n in ((train, 3), (test, 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                _save(tmp_path / split / c / f"{i}.png", _grey(seed=i))
    ds = datasets.load_dataset(tmp_path)
    assert ds.classes == ("cat", "dog")
    assert ds.x_train.shape[0] == 6 and ds.x_test.shape[0] == 4
    np.testing.assert_array_equal(ds.y_test, [0, 0, 1, 1])


@pytest.mark.parametrize("folders", [("train",), ("train", "test", "Test"), ("train", "cat"),
                                     ("val", "test")])
def test_image_folder_with_split_folders_that_do_not_pair_up_is_refused(folders, tmp_path):
    for f in folders:
        _save(tmp_path / f / "cat" / "0.png", _grey())
    with pytest.raises(DataError, match="one training folder .* and one test folder"):
        datasets.load(tmp_path)


def test_image_folder_with_train_val_and_test_uses_train_and_test(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                _save(tmp_path / split / c / f"{i}.png", _grey(seed=i))
    ds = datasets.load_dataset(tmp_path)
    assert ds.classes == ("cat", "dog")
    assert len(ds.x_train) == 6 and len(ds.x_test) == 4


def test_load_image_folder_with_and_without_split(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                _save(tmp_path / "tt" / split / c / f"{i}.png", _grey(seed=i))
    ds = datasets.load_dataset(tmp_path / "tt")
    assert ds.classes == ("cat", "dog")
    assert ds.x_train.shape == (8, 1, 6, 5) and ds.x_test.shape == (4, 1, 6, 5)
    np.testing.assert_array_equal(ds.y_test, [0, 0, 1, 1])
    # a test class unknown to train is an error
    _save(tmp_path / "tt" / "test" / "emu" / "0.png", _grey())
    with pytest.raises(DataError, match="emu"):
        datasets.load(tmp_path / "tt")

    for c in ("a", "b"):
        for i in range(10):
            _save(tmp_path / "flat" / c / f"{i}.png", _grey(seed=i))
    (xtr, ytr), (xte, yte) = datasets.load(tmp_path / "flat")
    assert len(xtr) == 16 and len(xte) == 4
    assert np.bincount(yte).tolist() == [2, 2]          # stratified
    (xtr2, _), _ = datasets.load(tmp_path / "flat")
    np.testing.assert_array_equal(xtr, xtr2)            # seeded: same every call
    (xtr3, _), _ = datasets.load(tmp_path / "flat", seed=5)
    assert not np.array_equal(xtr, xtr3)


def test_load_npz_variants(tmp_path):
    r = np.random.default_rng(0)
    x = r.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = np.arange(30) % 3
    p = tmp_path / "full.npz"
    np.savez(p, x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:].reshape(-1, 1))
    (xtr, ytr), (xte, yte) = datasets.load(p)
    assert xtr.shape == (20, 1, 8, 8) and yte.shape == (10,) and yte.dtype == np.int64
    np.testing.assert_array_equal(xte[:, 0], x[20:])
    # NHWC colour images are moved to channels-first
    xc = r.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    p2 = tmp_path / "xy.npz"
    np.savez(p2, x=xc, y=y)
    (xtr, ytr), (xte, yte) = datasets.load(p2)
    assert xtr.shape == (24, 3, 8, 8) and xte.shape == (6, 3, 8, 8)
    assert np.bincount(yte).tolist() == [2, 2, 2]
    k = int(np.flatnonzero((xc.transpose(0, 3, 1, 2) == xte[0]).all(axis=(1, 2, 3)))[0])
    assert yte[0] == y[k]
    named = tmp_path / "named.npz"
    np.savez(named, x=x, y=y, classes=np.array(["r", "g", "b"]))
    assert datasets.load_dataset(named).classes == ("r", "g", "b")
    np.savez(named, x=x, y=y, classes=np.array(["r", "g"]))
    with pytest.raises(DataError, match="labels go up to 2"):
        datasets.load_dataset(named)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=x)
    with pytest.raises(DataError, match="x_train"):
        datasets.load(bad)
    mism = tmp_path / "mism.npz"
    np.savez(mism, x=x, y=y[:5])
    with pytest.raises(DataError, match="30 images but 5 labels"):
        datasets.load(mism)


def test_load_unknown_things(tmp_path):
    with pytest.raises(ConfigError) as ei:
        datasets.load("imagenet")
    for name in datasets.available():
        assert name in str(ei.value)
    f = tmp_path / "x.csv"
    f.write_text("1,2")
    with pytest.raises(DataError, match="unsupported"):
        datasets.load(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell"):
        datasets.load(tmp_path / "empty")
