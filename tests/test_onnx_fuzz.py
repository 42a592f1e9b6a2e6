"""Hostile .onnx files: ``numcnn.from_onnx`` either loads a file or raises a clear NumcnnError.

Fuzzed as the other readers are (tests/test_fuzz_readers.py: Hypothesis with ``derandomize=True``,
a SIGALRM deadline per call, ``tracemalloc`` for forged sizes), on two valid graphs - one numcnn
exported (grouped Conv, BatchNormalization, GELU and SiLU subgraphs, residual Add, Concat,
Slice + Pad, pools, Dropout, Gemm, Softmax) and one ``torch.onnx.export`` wrote (with the Shape -> Gather -> Unsqueeze -> Concat ->
Reshape subgraph) - damaged byte by byte and field by field (dims, data types, raw data,
external-data paths, attributes, operator types, wiring, opsets, input shapes, metadata).

When a damaged file still loads, the model must be sane (finite float32 weights within numcnn's
size limit, a forward pass that runs) and, whenever onnxruntime also accepts and runs the file,
numcnn's output must equal onnxruntime's: a damaged file never becomes a *wrong* model.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import numcnn
from numcnn.errors import ModelFileError, NumcnnError
from numcnn.interop import onnx_import
from numcnn.architecture import MAX_ELEMENTS
from numcnn.layers import (GELU, AvgPool2D, BatchNorm2D, ChannelPadShortcut, Concat, Conv2D,
                           Dense, Dropout, GlobalAvgPool2D, Identity, LeakyReLU, MaxPool2D,
                           Residual, SiLU, Softmax)
from test_fuzz_readers import deadline, fresh, fuzz, mutate, peak_allocation

ort.set_default_logger_severity(4)          # damaged files make onnxruntime log; keep quiet


def _numcnn_graph():
    m = numcnn.Sequential([
        Conv2D(2, 4, 3, padding=1, groups=2, rng=0), BatchNorm2D(4), GELU(),
        Residual([Conv2D(4, 4, 3, padding=1, rng=1), BatchNorm2D(4)]), LeakyReLU(0.1),
        Concat([[Conv2D(4, 2, 1, rng=2)], [Identity()]]), MaxPool2D(2),
        Residual([Conv2D(6, 8, 3, stride=2, padding=1, rng=3)], ChannelPadShortcut(6, 8, 2)),
        SiLU(), AvgPool2D(3, stride=1, padding=1), GlobalAvgPool2D(), Dropout(0.2),
        Dense(8, 4, rng=0), Softmax()], input_shape=(2, 8, 8), classes=list("abcd"))
    m.layers[1].running_var = np.linspace(0.5, 2, 4).astype(np.float32)
    return m.eval()


@pytest.fixture(scope="module")
def base_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_base")
    _numcnn_graph().to_onnx(d / "numcnn.onnx")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.fc = net, torch.nn.Linear(3 * 3 * 3, 5)

        def forward(self, x):
            x = self.features(x)
            return self.fc(x.view(x.size(0), -1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(d / "torch.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return {k: (d / f"{k}.onnx").read_bytes() for k in ("numcnn", "torch")}


def _ort_output(path, x):
    """onnxruntime's output, or None when it refuses the file (then there is nothing to compare)."""
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception:  # noqa: BLE001 - any refusal by onnxruntime just means: no oracle
        return None


def check(path, name=None):
    """The verdict on one file: ("ok", model) after checking it, or ("error", exc)."""
    try:
        with deadline(20):
            model = numcnn.from_onnx(path)
    except NumcnnError as exc:
        msg = str(exc)
        assert len(msg) >= 20, f"unhelpful message {msg!r}"
        assert os.path.basename(str(path)) in msg or "onnx" in msg.lower(), msg
        return "error", exc
    n = 0
    for p in model.parameters():
        assert p.value.dtype == np.float32 and np.all(np.isfinite(p.value))
        n += p.value.size
    assert n <= MAX_ELEMENTS
    x = np.random.default_rng(0).standard_normal((3, *model.input_shape)).astype(np.float32)
    with deadline(20):
        got = model.forward(x)
    ref = _ort_output(path, x)
    if ref is not None:
        assert ref.shape == got.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max()))
    return "ok", model


# -- bytes ---------------------------------------------------------------------------------------------
@fuzz(150)
@given(data=st.data(), which=st.sampled_from(["numcnn", "torch"]))
def test_onnx_byte_damage(tmp_path, base_files, data, which):
    op, blob = mutate(data, base_files[which])
    p = tmp_path / "damaged.onnx"
    p.write_bytes(blob)
    kind, _ = check(p)
    if op == "none":
        assert kind == "ok"


@fuzz(60)
@given(blob=st.binary(max_size=400))
def test_onnx_random_bytes(tmp_path, blob):
    p = tmp_path / "random.onnx"
    p.write_bytes(blob)
    assert check(p)[0] == "error"          # nothing random is a whole CNN


# -- fields --------------------------------------------------------------------------------------------
BIG = [0, 1, 2, 3, -1, 7, 10 ** 6, 2 ** 31, 2 ** 40, 2 ** 62]
FIELDS = ["dims", "data_type", "raw_data", "typed", "external", "attr", "op_type", "input",
          "drop-node", "dup-output", "opset", "input-shape", "metadata", "domain"]
OPS = ["Conv", "Relu", "Gemm", "MatMul", "Add", "Reshape", "Flatten", "Softmax", "Identity",
       "Dropout", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
       "Shape", "Gather", "Unsqueeze", "Constant", "Cast", "Mul", "LeakyRelu", "Loop"]
JUNK_TEXT = st.sampled_from(["", "x", "[", "null", "[1, 2]", '["a"]', '{"mean": [0.5], "std": [0]}',
                             '{"mean": [0.5], "std": [2]}', '{"mean": "a"}', "1e999", '["a","b","c","d"]'])


def _forge(proto, field, data, folder):
    g = proto.graph
    pick = lambda seq, label: data.draw(st.integers(0, len(seq) - 1), label=label)
    if field in ("dims", "data_type", "raw_data", "typed", "external") and len(g.initializer):
        t = g.initializer[pick(g.initializer, "init")]
        if field == "dims":
            t.ClearField("dims")
            t.dims.extend(data.draw(st.lists(st.sampled_from(BIG), max_size=5), label="dims"))
        elif field == "data_type":
            t.data_type = data.draw(st.sampled_from([0, 1, 2, 3, 6, 7, 9, 10, 11, 16, 17, 999]))
        elif field == "raw_data":
            k = data.draw(st.integers(0, len(t.raw_data) + 8), label="cut")
            t.raw_data = (t.raw_data + b"\x7f\x80\x00\x00" * 3)[:k]
        elif field == "typed":
            n = data.draw(st.integers(0, 40), label="n")
            t.ClearField("raw_data")
            t.float_data.extend(data.draw(st.lists(st.floats(width=32), min_size=n, max_size=n)))
        else:
            (folder / "w.bin").write_bytes(b"\x00" * 64)
            loc = data.draw(st.sampled_from(["w.bin", "../w.bin", "/etc/passwd", "", "a/../w.bin",
                                             "missing.bin", "../../../../etc/hostname", "w\x00",
                                             "C:\\w.bin", "\\\\server\\w.bin"]))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", loc), ("offset", data.draw(st.sampled_from(["0", "8", "-4", "x", "99999"]))),
                               ("length", data.draw(st.sampled_from(["0", "4", "64", "10000000000"])))):
                e = t.external_data.add()
                e.key, e.value = key, value
    elif field in ("attr", "op_type", "input", "drop-node", "dup-output", "domain") and len(g.node):
        i = pick(g.node, "node")
        node = g.node[i]
        if field == "attr" and len(node.attribute):
            a = node.attribute[pick(node.attribute, "attr")]
            how = data.draw(st.sampled_from(["i", "ints", "f", "type", "name"]), label="how")
            if how == "i":
                a.i = data.draw(st.sampled_from(BIG + [-5]))
            elif how == "ints":
                a.ClearField("ints")
                a.ints.extend(data.draw(st.lists(st.sampled_from(BIG + [-5]), max_size=5)))
            elif how == "f":
                a.f = data.draw(st.floats(width=32))
            elif how == "type":
                a.type = data.draw(st.integers(0, 14))
            else:
                a.name = data.draw(st.sampled_from(["axis", "pads", "group", "alpha", "zzz"]))
        elif field == "op_type":
            node.op_type = data.draw(st.sampled_from(OPS))
        elif field == "input" and len(node.input):
            names = [v for n in g.node for v in n.output] + [t.name for t in g.initializer] + ["nope", ""]
            node.input[pick(node.input, "which")] = data.draw(st.sampled_from(names))
        elif field == "drop-node":
            del g.node[i]
        elif field == "dup-output" and i > 0:
            node.output[0] = g.node[i - 1].output[0]
        elif field == "domain":
            node.domain = data.draw(st.sampled_from(["ai.onnx", "com.microsoft", "x"]))
    elif field == "opset":
        proto.opset_import[0].version = data.draw(st.sampled_from([0, 1, 6, 7, 11, 13, 17, 99, 2 ** 62]))
    elif field == "input-shape":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[pick(dims, "dim")]
        d.dim_value = data.draw(st.sampled_from([v for v in BIG if v >= 0]))
    elif field == "metadata":
        del proto.metadata_props[:]
        for key in data.draw(st.lists(st.sampled_from(["classes", "normalization", "input_scaling"]),
                                      unique=True)):
            p = proto.metadata_props.add()
            p.key, p.value = key, data.draw(JUNK_TEXT)


@fuzz(300)
@given(data=st.data(), which=st.sampled_from(["numcnn", "torch"]), field=st.sampled_from(FIELDS))
def test_onnx_forged_fields(tmp_path, base_files, data, which, field):
    proto = onnx.ModelProto()
    proto.ParseFromString(base_files[which])
    folder = fresh(tmp_path) / "models"         # external data may point at its parent
    folder.mkdir()
    _forge(proto, field, data, folder)
    p = folder / "forged.onnx"
    p.write_bytes(proto.SerializeToString())
    with peak_allocation() as mem:
        check(p)
    assert mem["peak"] < 64 << 20, f"allocated {mem['peak']} bytes for a {p.stat().st_size}-byte file"


# -- targeted: forged sizes, external data, limits ------------------------------------------------
def _tiny_graph(initializer, folder, name="g.onnx"):
    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]),
                           helper.make_node("MatMul", ["f", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[initializer])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / name
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("dims", [[10 ** 6, 10 ** 6], [2 ** 31, 4], [4, 2 ** 62], [MAX_ELEMENTS + 1]])
def test_forged_dims_are_refused_before_allocating(tmp_path, dims):
    t = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    t.ClearField("dims")
    t.dims.extend(dims)
    path = _tiny_graph(t, tmp_path)
    with peak_allocation() as mem:
        with pytest.raises(ModelFileError, match="declares"):
            numcnn.from_onnx(path)
    assert mem["peak"] < 4 << 20


def _external(location, length=48):
    t = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    (folder / "link.bin").symlink_to(secret)
    for location in ("../secret.bin", str(secret), "link.bin", "sub/../../secret.bin",
                     "w\x00.bin", ""):
        with pytest.raises(ModelFileError, match="inside the model's folder"):
            numcnn.from_onnx(_tiny_graph(_external(location), folder))


def test_external_data_inside_the_folder_loads(tmp_path):
    folder = tmp_path / "models"
    (folder / "data").mkdir(parents=True)
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    (folder / "data" / "w.bin").write_bytes(w.tobytes())
    model = numcnn.from_onnx(_tiny_graph(_external("data/w.bin"), folder))
    np.testing.assert_array_equal(model.layers[1].weight.value, w.T)
    (folder / "data" / "w.bin").write_bytes(w.tobytes()[:40])         # truncated
    with pytest.raises(ModelFileError, match="does not hold"):
        numcnn.from_onnx(_tiny_graph(_external("data/w.bin"), folder))


def test_onnx_save_with_external_data_round_trips(tmp_path):
    m = numcnn.models.lenet5().eval()
    proto = onnx.load(str(m.to_onnx(tmp_path / "a.onnx")))
    onnx.save_model(proto, str(tmp_path / "b.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="b.weights", size_threshold=0)
    back = numcnn.from_onnx(tmp_path / "b.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(back.forward(x), m.forward(x))


def test_size_and_count_limits(tmp_path, monkeypatch):
    path = numcnn.models.lenet5().to_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(onnx_import, "MAX_FILE_BYTES", 10_000)
    with pytest.raises(ModelFileError, match="bytes is more than numcnn imports"):
        numcnn.from_onnx(path)
    monkeypatch.undo()
    monkeypatch.setattr(onnx_import, "MAX_INITIALIZERS", 5)
    with pytest.raises(ModelFileError, match="10 initializers; numcnn imports at most 5"):
        numcnn.from_onnx(path)
    monkeypatch.undo()
    monkeypatch.setattr(onnx_import, "MAX_NODES", 3)
    with pytest.raises(ModelFileError, match="12 nodes; numcnn imports graphs of at most 3"):
        numcnn.from_onnx(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.onnx"):
        numcnn.from_onnx(tmp_path / "empty.onnx")
    with pytest.raises(ModelFileError, match="does not exist"):
        numcnn.from_onnx(tmp_path / "none.onnx")
    with pytest.raises(ModelFileError, match="not a file"):
        numcnn.from_onnx(tmp_path)
