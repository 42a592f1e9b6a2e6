"""ONNX export and import, checked in onnxruntime and against PyTorch.

* export: every preset and randomised architectures (every layer type, stride, padding,
  dilation, batch norm with non-trivial statistics) run in onnxruntime and give numcnn's
  eval-mode outputs to 1e-5 (relative to the largest output), at batch 1 and 7; with
  ``normalize=True`` the graph takes raw 0..255 images and gives what ``predict`` gives;
* round trip numcnn -> ONNX -> numcnn: the same layers, bit-identical weights and outputs;
* import of what ``torch.onnx.export`` writes (LeNet with ``x.view(x.size(0), -1)``, a VGG-style
  net with batch norm, a net with the other operators): outputs equal PyTorch's to 1e-5, with
  batch norm as separate layers or fused;
* hand-written graphs for the other patterns (MatMul + Add, SAME padding, Reshape to a constant
  shape...) equal onnxruntime's outputs; anything unsupported is refused with a list naming the
  operators, attributes and nodes;
* the CLI's ``export`` and ``import``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import numcnn
from numcnn import cli, models
from numcnn.errors import ConfigError, ModelFileError, NumcnnError
from numcnn.interop import onnx_export, onnx_import
from numcnn.interop.onnx_import import OnnxImportError
from numcnn.layers import (ELU, GELU, REGISTRY, AvgPool2D, BatchNorm1D, BatchNorm2D,
                           ChannelPadShortcut, Concat, Conv2D, ConvTranspose2D, Dense, Dropout,
                           Flatten, GlobalAvgPool2D, GlobalMaxPool2D, Identity, Layer, LeakyReLU,
                           MaxPool2D, ReLU, Residual, Sigmoid, SiLU, Softmax, Tanh, Upsample,
                           layer_to_config)

torch.manual_seed(0)


# -- helpers -----------------------------------------------------------------------------------------
def ort_run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_close_rel(got, ref, what=""):
    """Equal to 1e-5 relative to the largest output (element-wise rtol 1e-5 as well)."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    scale = max(float(np.abs(ref).max()), 1e-30)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def walk(layers):
    """Every layer, containers' inner layers too."""
    for layer in layers:
        yield layer
        if hasattr(layer, "children"):
            yield from walk(child for _, child in layer.children())


def randomise_batch_norm(model, seed=0):
    """Batch norm with statistics and affine parameters far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in walk(model.layers):
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            n = layer.num_features
            layer.running_mean = rng.normal(0, 0.5, n).astype(np.float32)
            layer.running_var = rng.uniform(0.3, 2.0, n).astype(np.float32)
            layer.weight.value = rng.uniform(0.5, 1.5, n).astype(np.float32)
            layer.bias.value = rng.normal(0, 0.3, n).astype(np.float32)
    return model


def random_model(seed):
    """A random Sequential: every layer type, strides, (asymmetric) padding, dilation, groups,
    ceil mode, batch norm with statistics, residual blocks and concatenated branches."""
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(2, 5)), int(rng.integers(12, 20)), int(rng.integers(12, 20))
    shape, layers = (c, h, w), []

    def add(layer, into=None):
        nonlocal shape
        try:
            new = layer.output_shape(shape)
        except NumcnnError:
            return False
        if min(new) < 2:
            return False
        (layers if into is None else into).append(layer)
        shape = new
        return True

    def r(lo, hi):
        return int(rng.integers(lo, hi))

    # float attributes are float32 in ONNX: decimals that read back as themselves
    activations = [lambda: ReLU(), lambda: LeakyReLU(round(float(rng.uniform(0.01, 0.3)), 3)),
                   lambda: Sigmoid(), lambda: Tanh(), lambda: ELU(round(float(rng.uniform(0.5, 1.5)), 2)),
                   lambda: SiLU(), lambda: GELU(str(rng.choice(["none", "tanh"]))), lambda: Identity()]
    act = lambda: activations[r(0, len(activations))]()
    for _ in range(r(1, 4)):
        kind = r(0, 4)
        cin = shape[0]
        if kind == 0:                     # a plain or grouped convolution
            groups = int(rng.choice([g for g in (1, 2) if cin % g == 0]))
            k = (r(1, 4), r(1, 4))
            pad = rng.choice(["int", "pair", "asym", "same"])
            padding = {"int": r(0, 3), "pair": (r(0, 3), r(0, 2)),
                       "asym": ((r(0, 2), r(0, 3)), (r(0, 3), r(0, 2))), "same": "same"}[pad]
            stride = 1 if pad == "same" else r(1, 3)
            add(Conv2D(cin, groups * r(1, 4), k, stride=stride, padding=padding,
                       dilation=r(1, 3), groups=groups, bias=bool(rng.random() < 0.7), rng=seed))
        elif kind == 1:                   # a residual block (identity, conv or option-A shortcut)
            cout = cin * r(1, 3)
            stride = r(1, 3)
            body = [Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, rng=seed),
                    BatchNorm2D(cout), act()]
            shortcut = None if cout == cin and stride == 1 else \
                [ChannelPadShortcut(cin, cout, stride)] if rng.random() < 0.5 else \
                [Conv2D(cin, cout, 1, stride=stride, bias=False, rng=seed), BatchNorm2D(cout)]
            add(Residual(body, shortcut))
        elif kind == 2:                   # concatenated branches (one may be the identity)
            add(Concat([[Conv2D(cin, r(1, 4), 1, rng=seed)],
                        [Conv2D(cin, r(1, 4), 3, padding=1, rng=seed), act()],
                        [Identity()] if rng.random() < 0.5 else [MaxPool2D(3, stride=1, padding=1)]]))
        else:                             # a transposed convolution, or nearest upsampling
            if rng.random() < 0.5:
                s_ = r(1, 3)
                add(ConvTranspose2D(cin, r(2, 5), r(2, 4), stride=s_, padding=r(0, 2),
                                    output_padding=r(0, s_), groups=1, rng=seed))
            elif max(shape[1:]) < 14:
                mode = str(rng.choice(["nearest", "bilinear"]))
                add(Upsample((r(1, 3), r(1, 3)), mode=mode,
                             align_corners=(True if rng.random() < 0.5 else None)
                             if mode == "bilinear" else None))
        if rng.random() < 0.6:
            add(BatchNorm2D(shape[0], eps=float(rng.choice([1e-5, 1e-3])),
                            momentum=float(rng.choice([0.1, 0.3]))))
        add(act())
        if rng.random() < 0.7:
            kp = r(2, 4)
            if rng.random() < 0.5:
                add(MaxPool2D(kp, stride=r(1, kp + 1), padding=r(0, kp // 2 + 1), dilation=r(1, 3),
                              ceil_mode=bool(rng.random() < 0.3)))
            else:
                add(AvgPool2D(kp, stride=r(1, kp + 1), padding=r(0, kp // 2 + 1),
                              ceil_mode=bool(rng.random() < 0.3),
                              count_include_pad=bool(rng.random() < 0.5)))
    head = r(0, 3)
    if head == 0:
        layers.append(Flatten())
    elif head == 1:
        layers.append(GlobalAvgPool2D() if rng.random() < 0.5 else GlobalMaxPool2D())
    else:
        layers += [Flatten(start_dim=2), Flatten()]
    n = int(np.prod(Sequential(list(layers), input_shape=(c, h, w)).shapes()[-1][1]))
    hidden = r(4, 12)
    layers += [Dropout(round(float(rng.uniform(0.1, 0.6)), 2), rng=seed), Dense(n, hidden, rng=seed)]
    if rng.random() < 0.5:
        layers.append(BatchNorm1D(hidden))
    layers += [act(), Dense(hidden, 5, bias=bool(rng.random() < 0.8), rng=seed)]
    if rng.random() < 0.4:
        layers.append(Softmax())
    return randomise_batch_norm(Sequential(layers, input_shape=(c, h, w)), seed).eval()


Sequential = numcnn.Sequential
RANDOM_SEEDS = range(20)


def test_random_architectures_cover_every_layer_type():
    seen = {type(l) for s in RANDOM_SEEDS for l in walk(random_model(s).layers)}
    public = {cls for name, cls in REGISTRY.items() if not name.startswith("_") and cls is not Layer}
    assert public - seen == set()
    # and every layer numcnn has can be exported
    assert public - set(onnx_export.CONVERTERS) == set()


def _x(shape, n, seed=1):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)


# -- export ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_every_preset_runs_in_onnxruntime_like_numcnn(tmp_path, name):
    model = randomise_batch_norm(models.PRESETS[name]()).eval()
    path = model.to_onnx(tmp_path / f"{name}.onnx")
    for n in (1, 7):
        x = _x(model.input_shape, n)
        assert_close_rel(ort_run(path, x), model.forward(x), f"{name} batch {n}")


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_architectures_run_in_onnxruntime_like_numcnn(tmp_path, seed):
    model = random_model(seed)
    path = model.to_onnx(tmp_path / "m.onnx")
    for n in (1, 7):
        x = _x(model.input_shape, n, seed)
        assert_close_rel(ort_run(path, x), model.forward(x), f"seed {seed} batch {n}: {model}")


@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", None), ("bilinear", True)])
def test_upsample_modes_run_in_onnxruntime_and_round_trip(tmp_path, mode, align):
    model = Sequential([Conv2D(2, 3, 3, padding=1, rng=0), Upsample((2, 3), mode=mode, align_corners=align),
                        GlobalMaxPool2D()], input_shape=(2, 5, 4)).eval()
    path = model.to_onnx(tmp_path / "m.onnx")
    x = _x((2, 5, 4), 7)
    assert_close_rel(ort_run(path, x), model.forward(x))
    assert structure(numcnn.from_onnx(path).layers) == structure(model.layers)


def test_float64_model_exports_float32_weights(tmp_path):
    model = models.lenet5().astype(np.float64).eval()
    path = model.to_onnx(tmp_path / "m.onnx")
    x = _x(model.input_shape, 3)
    proto = onnx.load(str(path))
    assert {t.data_type for t in proto.graph.initializer} == {TensorProto.FLOAT}
    assert_close_rel(ort_run(path, x), model.forward(x.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("with_stats", [True, False], ids=["mean-std", "only-255"])
def test_normalize_puts_the_input_scaling_into_the_graph(tmp_path, with_stats):
    model = models.cifar_vgg().eval()
    randomise_batch_norm(model)
    if with_stats:
        model.normalization = ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    path = model.to_onnx(tmp_path / "m.onnx", normalize=True)
    raw = np.random.default_rng(3).integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    got = ort_run(path, raw.astype(np.float32))
    assert_close_rel(got, model.forward(model.prepare_input(raw)))
    e = np.exp(got - got.max(axis=1, keepdims=True))
    assert_close_rel(e / e.sum(axis=1, keepdims=True), model.predict(raw))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops[:3] == (["Div", "Sub", "Div"] if with_stats else ["Div", "Conv", "BatchNormalization"])


def test_graph_names_opset_ir_dynamic_batch_and_metadata(tmp_path):
    model = models.digits_cnn()
    model.classes = [f"digit {i}" for i in range(10)]
    model.normalization = ([0.5], [0.25])
    path = model.to_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "output"
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert dims(inp) == ["batch", 1, 8, 8] and dims(out) == ["batch", 10]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == model.classes
    assert json.loads(meta["normalization"]) == {"mean": [0.5], "std": [0.25]}
    assert meta["input_scaling"] == "none" and meta["numcnn_version"]
    assert proto.producer_name == "numcnn"
    # initializers carry the state_dict names
    assert sorted(t.name for t in proto.graph.initializer) == sorted(model.state_dict())


def test_custom_layer_is_refused_by_name_and_nothing_is_written(tmp_path):
    class Doubler(Layer):
        def forward(self, x, training=True, layout="NCHW"):
            return 2 * x

    model = Sequential([Conv2D(1, 2, 3), Doubler(), Flatten()], input_shape=(1, 5, 5))
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the previous file")
    with pytest.raises(ConfigError, match=r"layer 1 .*Doubler.* cannot be exported"):
        model.to_onnx(target)
    assert target.read_bytes() == b"the previous file"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]          # no temporary file left behind


def test_model_without_input_shape_needs_one(tmp_path):
    model = Sequential([Dense(4, 3), ReLU()])
    with pytest.raises(ConfigError, match="input_shape"):
        model.to_onnx(tmp_path / "m.onnx")
    path = model.to_onnx(tmp_path / "m.onnx", input_shape=(4,))
    x = _x((4,), 7)
    assert_close_rel(ort_run(path, x), model.forward(x))


def test_missing_onnx_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r'pip install "numcnn\[onnx\]"'):
        models.lenet5().to_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r'pip install "numcnn\[onnx\]"'):
        numcnn.from_onnx(tmp_path / "m.onnx")


def test_importing_numcnn_does_not_import_onnx():
    code = "import sys, numcnn; numcnn.models.lenet5().state_dict(); print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- round trip -----------------------------------------------------------------------------------------
def structure(layers):
    """Every layer's config, containers as their paths' lengths (their layers follow), padding
    as the pads it means ("same" and [1, 1] can be the same thing)."""
    out = []
    for layer in walk(layers):
        cfg = layer_to_config(layer)
        if hasattr(layer, "_paths"):
            cfg = {"type": cfg["type"], "paths": [(n, len(c)) for n, c in layer._paths()]}
        if hasattr(layer, "pads") and "padding" in cfg:
            cfg["padding"] = [list(p) for p in layer.pads]
        out.append(cfg)
    return out


def _same_model(a, b):
    assert structure(a.layers) == structure(b.layers)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


@pytest.mark.parametrize("source", [*sorted(models.PRESETS), "random-3", "random-7", "random-11"])
def test_round_trip_gives_identical_weights_and_predictions(tmp_path, source):
    model = random_model(int(source[7:])) if source.startswith("random") else \
        randomise_batch_norm(models.PRESETS[source]()).eval()
    model.classes = [f"c{i}" for i in range(model.num_outputs())]
    path = model.to_onnx(tmp_path / "m.onnx")
    back = numcnn.from_onnx(path)
    _same_model(model, back)
    assert back.classes == model.classes and back.input_shape == model.input_shape
    assert not back.training
    x = _x(model.input_shape, 7)
    assert np.array_equal(back.forward(x), model.forward(x))


def test_round_trip_keeps_normalization(tmp_path):
    model = models.lenet5()
    model.normalization = ([0.1307], [0.3081])
    back = numcnn.from_onnx(model.to_onnx(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(back.normalization[0], model.normalization[0])
    np.testing.assert_array_equal(back.normalization[1], model.normalization[1])
    raw = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(back.predict(raw), model.predict(raw))


def test_graph_exported_with_normalize_is_refused_with_advice(tmp_path):
    path = models.lenet5().to_onnx(tmp_path / "m.onnx", normalize=True)
    with pytest.raises(OnnxImportError, match="normalize=False") as info:
        numcnn.from_onnx(path)
    assert "'Div' (node 'normalize/Div')" in str(info.value)


# -- import of what torch.onnx.export writes -------------------------------------------------------------
class TorchLeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.fc1 = torch.nn.Linear(400, 120)
        self.fc2 = torch.nn.Linear(120, 84)
        self.fc3 = torch.nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)                  # Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def torch_vgg():
    nn = torch.nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32),
                         *block(32, 32), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 64),
                         nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))


def torch_zoo():
    """The other operators: stride, dilation, asymmetric kernels, average pooling with padding,
    global pooling, LeakyReLU, Sigmoid, Tanh, Softmax."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 8, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2)),
                         nn.BatchNorm2d(8), nn.LeakyReLU(0.2), nn.AvgPool2d(3, stride=1, padding=1),
                         nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.Tanh(),
                         nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(8, 12, 1), nn.Sigmoid(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 7), nn.Softmax(dim=1))


def _warm_batch_norm(net, shape):
    """A few training-mode passes so the running statistics are not the identity."""
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.randn(8, *shape) * (i + 1) + 0.5)
    return net.eval()


def torch_export(net, shape, path, mode=torch.onnx.TrainingMode.EVAL):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # the TorchScript exporter is deprecated
        torch.onnx.export(net, (torch.zeros(1, *shape),), str(path), dynamo=False, training=mode,
                          input_names=["x"], output_names=["y"], opset_version=17,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


class TorchSubsample(torch.nn.Module):
    """x[:, :, ::2, ::3] (Slice nodes) before a convolution."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4 * 3 * 3, 6)

    def forward(self, x):
        x = torch.relu(self.conv(x[:, :, ::2, ::3]))
        return self.fc(x.reshape(x.shape[0], -1))


class TorchModern(torch.nn.Module):
    """The issue-12 layers as PyTorch writes them: grouped and 'same' convolutions, GELU (both),
    SiLU, ELU, a transposed convolution, nearest upsampling, pools with dilation, ceil mode and
    count_include_pad=False, branches joined by torch.cat, a global average pool."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(4, 8, 3, padding="same", groups=2), nn.BatchNorm2d(8),
                                  nn.GELU())
        self.a = nn.Sequential(nn.Conv2d(8, 4, 1), nn.SiLU())
        self.b = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.GELU(approximate="tanh"))
        self.down = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
                                  nn.ELU(0.5), nn.AvgPool2d(2, stride=1, padding=1, ceil_mode=True,
                                                            count_include_pad=False))
        self.up = nn.Sequential(nn.ConvTranspose2d(16, 6, 3, stride=2, padding=1, output_padding=1),
                                nn.Upsample(scale_factor=2, mode="nearest"), nn.ReLU(),
                                nn.Upsample(scale_factor=(2, 3), mode="bilinear"),
                                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x), x], dim=1)          # 4 + 4 + 8 channels
        return self.head(self.up(self.down(x)))


TORCH_NETS = {"lenet": (TorchLeNet, (1, 28, 28)), "vgg": (torch_vgg, (3, 32, 32)),
              "zoo": (torch_zoo, (2, 19, 23)), "subsample": (TorchSubsample, (3, 10, 13)),
              "modern": (TorchModern, (4, 11, 9))}


@pytest.mark.parametrize("batch_norm", ["as-exported", "kept", "fused"])
@pytest.mark.parametrize("net_name", sorted(TORCH_NETS))
def test_import_of_torch_onnx_export_equals_pytorch(tmp_path, net_name, batch_norm):
    make, shape = TORCH_NETS[net_name]
    net = _warm_batch_norm(make(), shape)
    # torch fuses Conv+BN itself in EVAL mode; PRESERVE keeps them apart in the graph
    mode = torch.onnx.TrainingMode.EVAL if batch_norm == "as-exported" else \
        torch.onnx.TrainingMode.PRESERVE
    path = torch_export(net, shape, tmp_path / "net.onnx", mode)
    model = numcnn.from_onnx(path, fuse_bn=batch_norm == "fused")
    n_bn = sum(isinstance(l, (BatchNorm1D, BatchNorm2D)) for l in model.layers)
    torch_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if batch_norm == "kept":
        assert n_bn == torch_bn
    elif batch_norm == "fused":
        assert n_bn == torch_bn - sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for n in (1, 7):
        x = _x(shape, n, seed=n)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        assert_close_rel(model.forward(x), ref, f"{net_name} {batch_norm} batch {n}")


class TorchBasicBlock(torch.nn.Module):
    """ResNet's basic block as CIFAR ResNets write it in PyTorch; shortcut option A keeps every
    second pixel and appends zero channels (numcnn's ChannelPadShortcut, fb.resnet.torch's)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.extra = cout - cin
        self.stride = stride

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.extra:
            short = torch.nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                            (0, 0, 0, 0, 0, self.extra))
        return torch.relu(out + short)


class TorchResNet20(torch.nn.Module):
    """He et al.'s ResNet-20 for CIFAR-10, written the usual PyTorch way (conv1, bn1,
    layer1..layer3 of three blocks, avg_pool2d over the whole map, view, linear)."""

    def __init__(self, num_classes=10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(3):
                blocks.append(TorchBasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.nn.functional.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


@pytest.mark.parametrize("fuse_bn", [False, True], ids=["bn-kept", "bn-fused"])
def test_torch_resnet20_imports_equal_to_pytorch_and_as_numcnn_s_preset(tmp_path, fuse_bn):
    net = _warm_batch_norm(TorchResNet20(), (3, 32, 32))
    path = torch_export(net, (3, 32, 32), tmp_path / "resnet20.onnx", torch.onnx.TrainingMode.PRESERVE)
    model = numcnn.from_onnx(path, fuse_bn=fuse_bn)
    for n in (1, 7):
        x = _x((3, 32, 32), n, seed=n)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        assert_close_rel(model.forward(x), ref, f"resnet20 batch {n}")
    if not fuse_bn:       # the very layers of numcnn's preset, weights and statistics PyTorch's
        assert structure(model.layers) == structure(models.resnet20().layers)
        assert sum(p.value.size for p in model.parameters()) == 269_722
        theirs = {k: v.numpy() for k, v in net.state_dict().items()}
        ours = models.resnet20(rng=1)
        ours.load_state_dict(theirs)               # named conv1, layer2.0.bn1...: matched by shapes
        for (k, a), (k2, b) in zip(model.state_dict().items(), ours.state_dict().items()):
            assert k == k2 and np.array_equal(a, b), k


def test_torch_lenet_imports_as_the_lenet5_preset(tmp_path):
    model = numcnn.from_onnx(torch_export(TorchLeNet(), (1, 28, 28), tmp_path / "l.onnx"))
    assert structure(model.layers) == structure(models.lenet5().layers)


# -- hand-written graphs: numcnn's import equals onnxruntime ------------------------------------------
def _graph(nodes, inits, in_shape, out_shape, path, opset=17, **meta):
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if meta:
        helper.set_model_props(m, meta)
    onnx.save(m, str(path))
    return path


R = np.random.default_rng(5)
W3 = R.standard_normal((4, 2, 3, 3)).astype(np.float32)
B4 = R.standard_normal(4).astype(np.float32)


HAND_GRAPHS = {
    "matmul+add": ([helper.make_node("Flatten", ["x"], ["f"]),
                    helper.make_node("MatMul", ["f", "w"], ["m"]),
                    helper.make_node("Add", ["m", "b"], ["y"])],
                   {"w": R.standard_normal((18, 5)).astype(np.float32),
                    "b": R.standard_normal((1, 5)).astype(np.float32)}, (2, 3, 3)),
    "gemm-transB0-alpha-beta": ([helper.make_node("Flatten", ["x"], ["f"]),
                                 helper.make_node("Gemm", ["f", "w", "b"], ["y"], alpha=0.5, beta=2.0)],
                                {"w": R.standard_normal((18, 5)).astype(np.float32),
                                 "b": R.standard_normal(5).astype(np.float32)}, (2, 3, 3)),
    "conv-same-upper+channel-add": ([helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER"),
                                     helper.make_node("Add", ["c", "b"], ["r"]),
                                     helper.make_node("Relu", ["r"], ["y"])],
                                    {"w": W3, "b": B4.reshape(1, 4, 1, 1)}, (2, 7, 6)),
    "reshape-constant-shape": ([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                                                 strides=[2, 2]),
                                helper.make_node("Reshape", ["c", "s"], ["y"])],
                               {"w": W3, "b": B4, "s": np.array([-1, 4 * 4 * 3], np.int64)}, (2, 7, 6)),
    "ceil-mode-equal-to-floor+global-max": ([
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalMaxPool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"])], {}, (3, 8, 6)),
    "folded-shape-arithmetic": ([
        helper.make_node("Constant", [], ["nine"], value_ints=[9]),
        helper.make_node("Constant", [], ["two"], value_ints=[2]),
        helper.make_node("Mul", ["nine", "two"], ["eighteen"]),
        helper.make_node("ConstantOfShape", ["one"], ["minus1"],
                         value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["minus1", "eighteen"], ["t"], axis=0),
        helper.make_node("Unsqueeze", ["t", "zero"], ["t2"]),
        helper.make_node("Transpose", ["t2"], ["t2t"], perm=[1, 0]),
        helper.make_node("Reshape", ["t2t", "len2"], ["t3"]),
        helper.make_node("Slice", ["t3", "zero", "big"], ["t4"]),
        helper.make_node("Cast", ["t4"], ["t5"], to=7),
        helper.make_node("Reshape", ["x", "t5"], ["y"])],
        {"one": np.array([1], np.int64),
         "len2": np.array([2], np.int64), "zero": np.array([0], np.int64),
         "big": np.array([10], np.int64)}, (2, 3, 3)),
    "grouped-asymmetric-same-lower": ([
        helper.make_node("Conv", ["x", "wg"], ["g"], group=2, pads=[0, 1, 2, 1]),
        helper.make_node("Conv", ["g", "w4"], ["y"], auto_pad="SAME_LOWER", strides=[2, 1])],
        {"wg": R.standard_normal((4, 1, 3, 2)).astype(np.float32),
         "w4": R.standard_normal((3, 4, 2, 3)).astype(np.float32)}, (2, 7, 6)),
    "resize-default-modes+channel-pad+flatten-start-dim-2": ([
        helper.make_node("Resize", ["x", "", "sc"], ["r"]),
        helper.make_node("Pad", ["r", "p"], ["pd"]),
        helper.make_node("Reshape", ["pd", "s"], ["y"])],
        {"sc": np.array([1, 1, 2, 3], np.float32), "p": np.array([0, 0, 0, 0, 0, 3, 0, 0], np.int64),
         "s": np.array([0, 0, -1], np.int64)}, (2, 3, 4)),
    "identity-dropout-constant": ([
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Constant", [], ["r"], value=numpy_helper.from_array(np.array(0.25, np.float32))),
        helper.make_node("Dropout", ["i", "r"], ["d"]),
        helper.make_node("Flatten", ["d"], ["y"])], {}, (2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(HAND_GRAPHS))
def test_hand_written_graphs_import_equal_to_onnxruntime(tmp_path, name):
    nodes, inits, shape = HAND_GRAPHS[name]
    path = _graph(nodes, inits, shape, None, tmp_path / "g.onnx")
    model = numcnn.from_onnx(path)
    for n in (1, 7):
        x = _x(shape, n)
        assert_close_rel(model.forward(x), ort_run(path, x), name)


UNSUPPORTED = {
    "asymmetric-pads": ([helper.make_node("ConvTranspose", ["x", "w"], ["y"], pads=[0, 0, 1, 1],
                                          name="c0")],
                        {"w": W3.transpose(1, 0, 2, 3).copy()},
                        ["ConvTranspose", "c0", "asymmetric pads [0, 0, 1, 1]"]),
    "unknown-attribute": ([helper.make_node("Relu", ["x"], ["y"], name="r0", flavour=3)], {},
                          ["Relu", "r0", "attribute 'flavour'"]),
    "unknown-op+attribute": ([helper.make_node("ConvTranspose", ["x", "w"], ["c"], name="up",
                                               auto_pad="SAME_UPPER"),
                              helper.make_node("Mul", ["c", "c"], ["m"], name="times"),
                              helper.make_node("Erf", ["m"], ["y"], name="erf")],
                             {"w": R.standard_normal((2, 4, 3, 3)).astype(np.float32)},
                             ["'ConvTranspose' (node 'up')", "auto_pad 'SAME_UPPER'",
                              "'Mul' (node 'times')", "operator 'Mul' is not supported",
                              "'Erf' (node 'erf')"]),
    "reshape-not-flatten": ([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                            {"s": np.array([0, -1, 2], np.int64)},
                            ["Reshape", "rs", "only flattens"]),
    "pad-not-channels": ([helper.make_node("Pad", ["x", "p"], ["y"], name="pd")],
                         {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
                         ["Pad", "pd", "only zero channels appended"]),
    "resize-linear-asymmetric": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rz",
                                                   mode="linear",
                                                   coordinate_transformation_mode="asymmetric")],
                                 {"sc": np.array([1, 1, 2, 2], np.float32)},
                                 ["Resize", "rz", "mode 'linear' with 'asymmetric'"]),
    "other-domain": ([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")], {},
                     ["domain 'com.example'"]),
    "softmax-over-channels-of-maps": ([helper.make_node("Softmax", ["x"], ["y"], axis=1, name="sm")],
                                      {}, ["Softmax", "sm", "softmax over the classes"]),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_graphs_are_refused_with_operators_attributes_and_nodes(tmp_path, name):
    nodes, inits, expected = UNSUPPORTED[name]
    path = tmp_path / "g.onnx"
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    with pytest.raises(OnnxImportError) as info:
        numcnn.from_onnx(path)
    for text in expected:
        assert text in str(info.value), (text, str(info.value))
    assert all(p in str(info.value) for p in info.value.problems)       # one line per problem


def test_graph_with_dynamic_height_and_width_needs_input_shape(tmp_path):
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                           helper.make_node("Flatten", ["p"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(W3, "w")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(OnnxImportError, match=r"not fixed after the batch.*input_shape"):
        numcnn.from_onnx(path)
    with pytest.raises(OnnxImportError, match="does not fit"):
        numcnn.from_onnx(path, input_shape=(3, 6, 5))
    with pytest.raises(ConfigError, match="input_shape must be"):
        numcnn.from_onnx(path, input_shape="2,6,5")
    model = numcnn.from_onnx(path, input_shape=(2, 6, 5))
    assert model.input_shape == (2, 6, 5)
    x = _x((2, 6, 5), 7)
    assert_close_rel(model.forward(x), ort_run(path, x))


def test_declared_output_shape_must_match_what_the_graph_computes(tmp_path):
    path = _graph([helper.make_node("Flatten", ["x"], ["y"])], {}, (2, 3, 3), ["N", 99],
                  tmp_path / "g.onnx")
    with pytest.raises(ModelFileError, match=r"declares its output as \[None, 99\]"):
        numcnn.from_onnx(path)


def test_bad_classes_metadata_is_refused(tmp_path):
    path = _graph([helper.make_node("Flatten", ["x"], ["y"])], {}, (2, 3, 3), None,
                  tmp_path / "g.onnx", classes='["only one"]')
    with pytest.raises(ModelFileError, match="class names"):
        numcnn.from_onnx(path)


# -- the CLI ----------------------------------------------------------------------------------------------
def main_capture(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def one_error_line(rc, err, command):
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"numcnn {command}: error: "), err
    return lines[0]


def test_cli_export_and_import_round_trip(tmp_path):
    model = randomise_batch_norm(models.cifar_vgg())
    model.classes = list("abcdefghij")
    model.normalization = ([0.5, 0.4, 0.3], [0.2, 0.2, 0.3])
    model.save(tmp_path / "m.safetensors")
    rc, out, err = main_capture("export", tmp_path / "m.safetensors", "--format", "onnx")
    assert rc == 0, err
    assert f"wrote {tmp_path / 'm.onnx'}" in out
    rc, out, err = main_capture("export", tmp_path / "m.safetensors", "--out", tmp_path / "raw.onnx",
                                "--normalize")
    assert rc == 0 and "raw 0..255" in out, err
    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    model.eval()
    assert_close_rel(ort_run(tmp_path / "raw.onnx", raw.astype(np.float32)),
                     model.forward(model.prepare_input(raw)))
    rc, out, err = main_capture("import", tmp_path / "m.onnx", "--out", tmp_path / "back.safetensors")
    assert rc == 0 and f"imported {len(model.layers)} layers" in out, err
    back = numcnn.load(tmp_path / "back.safetensors")
    _same_model(model, back)
    assert back.classes == model.classes
    assert np.array_equal(back.predict(raw), model.predict(raw))


def test_cli_export_of_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = main_capture("export", "lenet5")
    assert rc == 0 and (tmp_path / "lenet5.onnx").is_file(), err
    x = _x((1, 28, 28), 2)
    assert_close_rel(ort_run(tmp_path / "lenet5.onnx", x), models.lenet5().forward(x, training=False))


def test_cli_bad_files_give_one_clear_line(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    line = one_error_line(*main_capture("import", tmp_path / "junk.onnx", "--out",
                                        tmp_path / "o.safetensors")[::2], "import")
    assert "junk.onnx" in line and "not an ONNX model" in line
    line = one_error_line(*main_capture("import", tmp_path / "none.onnx", "--out",
                                        tmp_path / "o.safetensors")[::2], "import")
    assert "does not exist" in line
    path = models.lenet5().to_onnx(tmp_path / "n.onnx", normalize=True)
    line = one_error_line(*main_capture("import", path, "--out", tmp_path / "o.safetensors")[::2],
                          "import")
    assert "'Div' (node 'normalize/Div')" in line and "normalize=False" in line
    line = one_error_line(*main_capture("import", path, "--out", tmp_path / "o.onnx")[::2], "import")
    assert ".safetensors" in line
    line = one_error_line(*main_capture("export", tmp_path / "junk.onnx")[::2], "export")
    assert "junk.onnx" in line
    assert not (tmp_path / "o.safetensors").exists()


def test_readme_deploy_snippet_runs_and_equals_numcnn(tmp_path, monkeypatch):
    """The three lines under "Deploy with onnxruntime" in README.md, run as written."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Deploy with onnxruntime", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) == 3
    model = models.digits_cnn()
    model.normalization = ([0.3], [0.4])
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    monkeypatch.chdir(tmp_path)
    scope = {"model": model, "images": images, "onnxruntime": ort}
    exec(compile(code, "README.md", "exec"), scope)       # noqa: S102 - the README's own lines
    assert_close_rel(scope["logits"], model.eval().forward(model.prepare_input(images)))
