"""Model files: safetensors round trips, interoperability, atomic writes and refusal of bad files."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numcnn
import numcnn.files
from numcnn import io as nio
from numcnn import models
from numcnn.errors import ConfigError, ModelFileError
from numcnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from numcnn.model import Sequential
from numcnn.training import evaluate

safetensors_numpy = pytest.importorskip("safetensors.numpy")
# these tests feed random normal numbers to models that carry normalisation statistics: not
# images, so the "input off the expected scale" warning (tests/test_first_hour.py) is expected
pytestmark = pytest.mark.filterwarnings("ignore::numcnn.errors.InputRangeWarning")


def _warm_up(model, batches=3, seed=0):
    """A few training-mode forwards so batch-norm running statistics move off 0/1."""
    rng = np.random.default_rng(seed)
    shape = model.input_shape
    for _ in range(batches):
        x = (rng.standard_normal((4,) + shape) * 2 + 0.5).astype(model.dtype)
        model.forward(x, training=True)
    return model


def _decorate(model):
    c = model.input_shape[0]
    model.normalization = (np.linspace(0.1, 0.3, c).astype(np.float32),
                           np.linspace(0.5, 0.7, c).astype(np.float32))
    model.classes = [f"class-{i}" for i in range(10)]
    return model


@pytest.fixture(scope="module")
def lenet():
    return _decorate(models.lenet5())


@pytest.fixture(scope="module")
def vgg():
    return _decorate(_warm_up(models.cifar_vgg()))


def tiny_model(dtype="float32"):
    """Conv + BN + pooling + dense + BN1D + dropout on 1x8x8: every kind of tensor, few bytes."""
    rng = np.random.default_rng(3)
    m = Sequential([Conv2D(1, 2, 3, padding=1, bias=False, rng=rng, dtype=dtype), BatchNorm2D(2, dtype=dtype),
                    ReLU(), MaxPool2D(2), Flatten(), Dense(2 * 4 * 4, 4, rng=rng, dtype=dtype),
                    BatchNorm1D(4, dtype=dtype), Dropout(0.25, rng=1), Dense(4, 3, rng=rng, dtype=dtype)],
                   input_shape=(1, 8, 8), normalization=(np.array([0.25], np.float32), np.array([0.5], np.float32)),
                   classes=["a", "b", "c"])
    return _warm_up(m)


def _images(model, n=6, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n,) + model.input_shape).astype(np.uint8)


# -- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lenet", "vgg"])
def test_round_trip_predicts_identically(name, request, tmp_path):
    model = request.getfixturevalue(name)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = numcnn.load(path)
    x = _images(model)
    p0, p1 = model.predict(x), loaded.predict(x)
    assert p0.shape == (len(x), 10)
    assert np.array_equal(p0, p1)
    # the same layers, weights, buffers, normalization and class names
    assert loaded.config() == model.config()
    assert loaded.input_shape == model.input_shape
    assert loaded.classes == model.classes
    for a, b in zip(model.normalization, loaded.normalization):
        assert np.array_equal(np.asarray(a, np.float32), b)
    for (k, a), (k2, b) in zip(nio.model_tensors(model).items(), nio.model_tensors(loaded).items()):
        assert k == k2 and a.dtype == b.dtype and np.array_equal(a, b), k
    if name == "vgg":
        bufs = model.buffers()
        assert len(bufs) == 10        # 5 batch norms x (running_mean, running_var)
        for k, b in bufs.items():
            assert not np.all(b == (0 if "mean" in k else 1)), f"{k} was never updated"
            assert np.array_equal(loaded.buffers()[k], b)
        # training-mode outputs (batch statistics) match too
        xf = np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32)
        assert np.array_equal(model.layers[1].running_var, loaded.layers[1].running_var)
        assert np.array_equal(model.forward(xf, training=False), loaded.forward(xf, training=False))


def test_float64_round_trip_keeps_float64(tmp_path):
    model = tiny_model("float64")
    assert model.dtype == np.float64
    model.save(tmp_path / "m64.safetensors")
    loaded = nio.load_model(tmp_path / "m64.safetensors")
    assert loaded.dtype == np.float64
    assert all(p.value.dtype == np.float64 for p in loaded.parameters())
    assert all(b.dtype == np.float64 for b in loaded.buffers().values())
    x = _images(model)
    assert np.array_equal(model.predict(x), loaded.predict(x))
    raw = safetensors_numpy.load_file(str(tmp_path / "m64.safetensors"))
    assert {a.dtype for a in raw.values()} == {np.dtype(np.float64)}


def test_safetensors_library_reads_numcnn_files(vgg, tmp_path):
    from safetensors import safe_open
    path = tmp_path / "m.safetensors"
    vgg.save(path)
    theirs = safetensors_numpy.load_file(str(path))
    ours = nio.model_tensors(vgg)
    assert sorted(theirs) == sorted(ours)
    assert len(ours) == 28
    for k in ours:
        assert theirs[k].dtype == ours[k].dtype and np.array_equal(theirs[k], ours[k]), k
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "numcnn/1"
    assert json.loads(meta["architecture"]) == vgg.config()
    assert json.loads(meta["classes"]) == vgg.classes
    norm = json.loads(meta["normalization"])
    np.testing.assert_array_equal(np.float32(norm["mean"]), vgg.normalization[0])


def test_numcnn_reads_files_written_by_safetensors(vgg, tmp_path):
    path = tmp_path / "st.safetensors"
    tensors = {k: np.ascontiguousarray(v) for k, v in nio.model_tensors(vgg).items()}
    safetensors_numpy.save_file(tensors, str(path), metadata=nio.model_metadata(vgg))
    loaded = nio.load_model(path)
    x = _images(vgg)
    assert np.array_equal(vgg.predict(x), loaded.predict(x))
    assert loaded.classes == vgg.classes


def test_checkpoint_extras_and_plain_model_refused_as_checkpoint(tmp_path):
    model = tiny_model()
    extra = {"optim.0.momentum": np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)}
    model.save(tmp_path / "ck.safetensors", extra_tensors=extra,
               extra_metadata={"checkpoint": json.dumps({"epoch": 3})})
    m2, optim, info = nio.load_checkpoint(tmp_path / "ck.safetensors")
    assert info == {"epoch": 3}
    assert list(optim) == ["0.momentum"] and np.array_equal(optim["0.momentum"], extra["optim.0.momentum"])
    assert np.array_equal(m2.predict(_images(model)), model.predict(_images(model)))
    model.save(tmp_path / "plain.safetensors")
    with pytest.raises(ModelFileError, match="not a checkpoint"):
        nio.load_checkpoint(tmp_path / "plain.safetensors")


# -- atomic writes ------------------------------------------------------------------------------------
def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n != "m.safetensors")


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failed_write_keeps_the_old_file(where, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    old = tiny_model()
    old.save(path)
    before = path.read_bytes()
    new = models.digits_cnn()

    def boom(*a, **k):
        raise OSError(28, "No space left on device (simulated)")

    if where == "replace":
        monkeypatch.setattr(numcnn.files.os, "replace", boom)
    elif where == "fsync":
        monkeypatch.setattr(numcnn.files.os, "fsync", boom)
    else:
        real_write = os.write

        def half_write(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))   # half the bytes reach the disk...
            raise OSError(28, "No space left on device (simulated)")   # ...then it fails

        monkeypatch.setattr(numcnn.files.os, "write", half_write)
    with pytest.raises(OSError, match="simulated"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []            # no .tmp-*.part left behind
    assert np.array_equal(nio.load_model(path).predict(_images(old)), old.predict(_images(old)))


def test_interrupt_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    tiny_model().save(path)
    before = path.read_bytes()

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(numcnn.files.os, "replace", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        models.digits_cnn().save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_successful_write_replaces_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "m.safetensors"
    tiny_model().save(path)
    new = models.digits_cnn()
    new.save(path)
    assert _leftovers(tmp_path) == []
    assert nio.load_model(path).config() == new.config()
    # a new sub-folder is created
    new.save(tmp_path / "a" / "b" / "m.safetensors")
    assert (tmp_path / "a" / "b" / "m.safetensors").is_file()


# -- refusing bad files --------------------------------------------------------------------------------
def _parts():
    m = tiny_model()
    return dict(nio.model_tensors(m)), nio.model_metadata(m)


def _arch_with(mutate):
    tensors, meta = _parts()
    arch = json.loads(meta["architecture"])
    mutate(arch)
    meta["architecture"] = json.dumps(arch)
    return nio.encode_safetensors(tensors, meta)


def _tensors_with(mutate):
    tensors, meta = _parts()
    mutate(tensors)
    return nio.encode_safetensors(tensors, meta)


def _meta_with(**changes):
    tensors, meta = _parts()
    meta.update(changes)
    for k, v in changes.items():
        if v is None:
            del meta[k]
    return nio.encode_safetensors(tensors, meta)


def _valid():
    tensors, meta = _parts()
    return nio.encode_safetensors(tensors, meta)


def _header_of(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(data, mutate):
    header, body = _header_of(data)
    mutate(header)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


def _set(d, key, value):
    d[key] = value


BAD_FILES = {
    "wrong-shape tensor": (lambda: _tensors_with(lambda t: _set(t, "layers.0.weight", np.zeros((2, 1, 5, 5), np.float32))),
                           r"layers\.0\.weight has shape \(2, 1, 5, 5\).*needs \(2, 1, 3, 3\)"),
    "missing tensor": (lambda: _tensors_with(lambda t: t.pop("layers.5.bias")),
                       r"missing tensor\(s\) layers\.5\.bias"),
    "extra tensor": (lambda: _tensors_with(lambda t: _set(t, "layers.2.weight", np.ones(3, np.float32))),
                     r"unexpected tensor\(s\) layers\.2\.weight"),
    "NaN in a weight": (lambda: _tensors_with(lambda t: t["layers.5.weight"].__setitem__((0, 0), np.nan)),
                        r"layers\.5\.weight holds NaN or inf"),
    "float16 tensors": (lambda: _tensors_with(lambda t: t.update({k: v.astype(np.float16) for k, v in t.items()})),
                        "float32 or all float64"),
    "mixed float32/float64": (lambda: _tensors_with(lambda t: _set(t, "layers.0.weight", t["layers.0.weight"].astype(np.float64))),
                              "float32 or all float64"),
    "bad architecture JSON": (lambda: _meta_with(architecture='{"layers": [{"type": "Conv2D",'),
                              "metadata 'architecture' is not valid JSON"),
    "architecture not a model": (lambda: _meta_with(architecture='[1, 2, 3]'), "bad architecture"),
    "no architecture": (lambda: _meta_with(architecture=None), "no 'architecture'"),
    "unknown layer type": (lambda: _arch_with(lambda a: a["layers"][2].update(type="Swish")),
                           "unknown layer type 'Swish'"),
    "bad layer arguments": (lambda: _arch_with(lambda a: a["layers"][0].update(kernel_size=-3)),
                            "bad architecture"),
    "layers that don't fit": (lambda: _arch_with(lambda a: a["layers"][5].update(in_features=33)),
                              "bad architecture"),
    "infinite input shape": (lambda: _arch_with(lambda a: _set(a, "input_shape", [1, 8, float("inf")])),
                             r"bad architecture|input_shape must be"),
    "not numcnn format": (lambda: _meta_with(format="other/2"), "not a numcnn model file"),
    "no metadata at all": (lambda: nio.encode_safetensors(_parts()[0], {}), "not a numcnn model file"),
    "bad normalization": (lambda: _meta_with(normalization='{"mean": [0.5], "std": [0.0]}'), "bad normalization"),
    "normalization std beyond float32": (lambda: _meta_with(normalization='{"mean": [0.5], "std": [1e300]}'),
                                         "bad normalization"),
    "normalization of wrong size": (lambda: _meta_with(normalization='{"mean": [1, 2, 3], "std": [1, 2, 3]}'),
                                    "bad normalization"),
    "classes not names": (lambda: _meta_with(classes='{"a": 1}'), "'classes' must be a list"),
    "fewer class names than outputs": (lambda: _meta_with(classes='["a"]'),
                                       "the file stores 1 class names for a model with 3 outputs"),
    "more class names than outputs": (lambda: _meta_with(classes='["a", "b", "c", "d"]'),
                                      "the file stores 4 class names for a model with 3 outputs"),
    "truncated file": (lambda: _valid()[:-100], "truncated"),
    "truncated in the header": (lambda: _valid()[:100], "truncated or not a model file"),
    "random bytes": (lambda: np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8).tobytes(),
                     "not a model file"),
    "header length larger than the file": (lambda: struct.pack("<Q", 4096) + b'{"__metadata__": {}}',
                                           r"header claims 4096 bytes but the file has 20"),
    "header not JSON": (lambda: struct.pack("<Q", 8) + b"\xff\xfe{{{{{{", "not valid JSON"),
    "header not an object": (lambda: struct.pack("<Q", 8) + b"[1,2,3] ", "not a JSON object"),
    "deeply nested header": (lambda: struct.pack("<Q", 200000) + b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    "metadata not strings": (lambda: _with_header(_valid(), lambda h: _set(h, "__metadata__", {"format": 1})),
                             "must map names to strings"),
    "tensor entry without dtype": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].pop("dtype")),
                                   r"tensor 'layers\.0\.weight' has a bad header entry"),
    "unknown dtype": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].update(dtype="F128")),
                      "bad header entry"),
    "infinite shape": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].update(shape=[2, 1, 3, float("inf")])),
                       "bad header entry"),
    "infinite offset": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].update(data_offsets=[0, float("inf")])),
                        "bad header entry"),
    "negative dimension": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].update(shape=[-2, 1, 3, 3])),
                           "negative dimension"),
    "offsets past the end": (lambda: _with_header(_valid(), lambda h: h["layers.0.weight"].update(data_offsets=[0, 10 ** 9])),
                             r"does not fit its data offsets \[0, 1000000000\)"),
    "empty file": (lambda: b"", r"too short to be a safetensors file \(0 bytes\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_clearly(case, tmp_path):
    make, pattern = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make())
    with pytest.raises(ModelFileError, match=pattern) as info:
        nio.load_model(path)
    msg = str(info.value)
    assert str(path) in msg                       # it names the file
    assert "\n" not in msg and len(msg) < 2000    # one readable line
    with pytest.raises(ModelFileError):
        nio.load_checkpoint(path)


def test_class_names_must_name_each_output_to_build_save_or_evaluate(tmp_path):
    m = tiny_model()
    with pytest.raises(ConfigError, match="Sequential: got 2 class names for a model with 3 outputs"):
        Sequential(m.layers, input_shape=(1, 8, 8), classes=["a", "b"])
    m.classes = ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="model.classes has 4 class names for a model with 3 outputs"):
        m.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    m.classes = None
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 0])
    with pytest.raises(ConfigError, match="evaluate: 2 class names for a model with 3 outputs"):
        evaluate(m, x, y, class_names=["a", "b"])
    assert evaluate(m, x, y, class_names=["x", "y", "z"])["classes"] == ["x", "y", "z"]


def test_model_files_get_the_usual_permissions_and_keep_existing_ones(tmp_path):
    old = os.umask(0o022)
    try:
        m = tiny_model()
        m.save(tmp_path / "m.safetensors")
        assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o644   # like open(): 0666 - umask
        os.chmod(tmp_path / "m.safetensors", 0o600)
        m.save(tmp_path / "m.safetensors")
        assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o600   # a replaced file keeps its own
        os.umask(0o077)
        m.save(tmp_path / "private.safetensors")
        assert os.stat(tmp_path / "private.safetensors").st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_saving_works_where_the_file_system_refuses_chmod(tmp_path, monkeypatch):
    """vfat or CIFS mounts refuse chmod; keeping a replaced file's mode is best effort there."""
    m = tiny_model()
    m.save(tmp_path / "m.safetensors")

    def refuse(*a, **k):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.delattr(os, "fchmod", raising=False)       # as on Windows before Python 3.13
    m.save(tmp_path / "m.safetensors")
    assert nio.load_model(tmp_path / "m.safetensors").config() == m.config()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("path", [None, 3, "folder"])
def test_saving_or_loading_something_that_is_not_a_file_path_is_a_clear_error(path, tmp_path):
    m = tiny_model()
    if path == "folder":
        path = tmp_path
        with pytest.raises(ConfigError, match="it is a folder; give a file name inside it"):
            m.save(path)
        with pytest.raises(ModelFileError, match="is a folder"):
            numcnn.load(path)
        return
    with pytest.raises(ConfigError, match=f"save: expected a file path, got {type(path).__name__}"):
        m.save(path)
    with pytest.raises(ConfigError, match="expected a file path"):
        numcnn.load(path)
    with pytest.raises(ConfigError, match="expected a file path"):
        nio.load_checkpoint(path)


def test_valid_helpers_really_are_valid(tmp_path):
    """The bad files above differ from a loadable file only by the named defect."""
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_valid())
    assert nio.load_model(path).config() == tiny_model().config()
    path.write_bytes(_with_header(_valid(), lambda h: None))
    nio.load_model(path)
    path.write_bytes(_tensors_with(lambda t: None))
    nio.load_model(path)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"model file '.*nope\.safetensors' does not exist"):
        nio.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="is a folder"):
        nio.load_model(tmp_path)
    with pytest.raises(ModelFileError, match=r"checkpoint '.*nope' does not exist"):
        nio.load_checkpoint(tmp_path / "nope")
    assert issubclass(ModelFileError, ValueError)


# -- fuzzing -------------------------------------------------------------------------------------------
_FUZZ_BYTES = _valid()
_FUZZ_DIR = {}
_FUZZ_HEADER_END = 8 + struct.unpack("<Q", _FUZZ_BYTES[:8])[0]


edits = st.one_of(
    # overwrite 1-4 bytes, mostly inside the header (where the structure is)
    st.tuples(st.just("set"), st.integers(0, _FUZZ_HEADER_END - 1), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("set"), st.integers(0, len(_FUZZ_BYTES) - 1), st.binary(min_size=1, max_size=4)),
    # a printable character in the header (keeps the JSON readable more often)
    st.tuples(st.just("set"), st.integers(8, _FUZZ_HEADER_END - 1),
              st.sampled_from([c.encode() for c in '0123456789-.e,:[]{}"\\ aZ'])),
    st.tuples(st.just("delete"), st.integers(0, len(_FUZZ_BYTES) - 1), st.integers(1, 16)),
    st.tuples(st.just("insert"), st.integers(0, len(_FUZZ_BYTES)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, len(_FUZZ_BYTES) - 1), st.just(0)),
)

# Structured edits keep the outer file well-formed so the inner checks are reached: change one
# character of a metadata string (architecture JSON, normalization, classes), or replace one number
# of the architecture or of a tensor's header entry by an odd value.
_ODD = [0, -1, 1, 2, 3, 5, 9, 17, 64, 1.5, -0.0, 1e-30, 1e300, float("inf"), float("nan"), None, True,
        "3", [], [3, 3], {}]
_META_KEYS = ["architecture", "normalization", "classes", "format"]
structured = st.one_of(
    st.tuples(st.just("meta-char"), st.sampled_from(_META_KEYS),
              st.tuples(st.integers(0, 10 ** 6), st.sampled_from(list('0123456789-.e,:[]{}" aZnul')))),
    st.tuples(st.just("arch-number"), st.integers(0, 10 ** 6), st.sampled_from(_ODD)),
    st.tuples(st.just("header-number"), st.integers(0, 10 ** 6), st.sampled_from(_ODD)),
)


def _replace_nth_number(obj, n, value):
    """Replace the (n mod count)-th number (not bool) inside nested lists/dicts; returns obj."""
    slots = []

    def walk(o):
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                slots.append((o, k))
            else:
                walk(v)

    walk(obj)
    if slots:
        o, k = slots[n % len(slots)]
        o[k] = value
    return obj


def _apply(data, edit):
    kind, pos, arg = edit
    if kind == "set":
        return data[:pos] + arg + data[pos + len(arg):]
    if kind == "delete":
        return data[:pos] + data[pos + arg:]
    if kind == "insert":
        return data[:pos] + arg + data[pos:]
    return data[:pos]


def _apply_structured(data, edit):
    kind, a, b = edit
    header, body = _header_of(data)
    meta = header["__metadata__"]
    if kind == "meta-char":
        text = meta.get(a, "")
        pos, ch = b
        pos = pos % (len(text) + 1)
        meta[a] = text[:pos] + ch + text[pos + 1:]
    elif kind == "arch-number":
        try:
            arch = json.loads(meta["architecture"])
        except ValueError:          # an earlier edit broke it already
            return data
        meta["architecture"] = json.dumps(_replace_nth_number(arch, a, b))
    else:
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        _replace_nth_number(entries, a, b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(structured, max_size=2), st.lists(edits, max_size=2))
def test_fuzzed_files_load_or_raise_model_file_error(tmp_path_factory, structured_edits, byte_edits):
    data = _FUZZ_BYTES
    for m in structured_edits:
        data = _apply_structured(data, m)
    for m in byte_edits:
        data = _apply(data, m)
    if "dir" not in _FUZZ_DIR:
        _FUZZ_DIR["dir"] = tmp_path_factory.mktemp("fuzz")
    path = _FUZZ_DIR["dir"] / "m.safetensors"
    path.write_bytes(data)
    try:
        model = nio.load_model(path)
    except ModelFileError:
        return
    # whatever loaded is a usable model
    assert isinstance(model, Sequential)
    assert len(model.layers) >= 1
