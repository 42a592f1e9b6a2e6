"""Graph models: Residual, Concat, Identity and ChannelPadShortcut, alone and nested in
Sequential and in each other.

The PyTorch oracle is the same network built from ``nn.Sequential``/``nn.ModuleList`` modules;
its parameter names are numcnn's (``3.body.0.weight``), so weights are copied by name and every
gradient is compared by name.
"""
from __future__ import annotations

import copy

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF

import numcnn
from numcnn import io as nio
from numcnn import models
from numcnn.errors import ConfigError, ModelFileError, ShapeError, StateError
from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, ChannelPadShortcut, Concat,
                           Conv2D, Dense, Dropout, Flatten, Identity, MaxPool2D, ReLU, Residual,
                           layer_from_config, layer_to_config)
from numcnn.losses import CrossEntropy
from numcnn.model import Sequential
from conftest import DTYPE_IDS, DTYPES, assert_close, tt


# -- the PyTorch twin of a numcnn network ---------------------------------------------------------
class TResidual(nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = None if shortcut is None else nn.Sequential(*shortcut)

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TConcat(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*b) for b in branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


class TChannelPad(nn.Module):
    """Option A written the PyTorch way: strided slice, then zero channels appended."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x):
        return TF.pad(x[:, :, ::self.stride[0], ::self.stride[1]], (0, 0, 0, 0, 0, self.extra))


def to_torch(layer):
    """The torch module that computes what numcnn ``layer`` computes (nested)."""
    if isinstance(layer, Sequential):
        return nn.Sequential(*[to_torch(l) for l in layer.layers])
    if isinstance(layer, Residual):
        return TResidual([to_torch(l) for l in layer.body],
                         None if layer.shortcut is None else [to_torch(l) for l in layer.shortcut])
    if isinstance(layer, Concat):
        return TConcat([[to_torch(l) for l in chain] for chain in layer.branches])
    if isinstance(layer, ChannelPadShortcut):
        return TChannelPad(layer.in_channels, layer.out_channels, layer.stride)
    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, layer.dilation, bias=layer.bias is not None)
    if isinstance(layer, (BatchNorm2D, BatchNorm1D)):
        cls = nn.BatchNorm2d if isinstance(layer, BatchNorm2D) else nn.BatchNorm1d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, AvgPool2D):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    simple = {ReLU: nn.ReLU, Flatten: nn.Flatten, Identity: nn.Identity}
    return simple[type(layer)]()


def torch_twin(model, dtype):
    """The torch network with numcnn's weights and buffers, copied by name: the names must be
    the same set (that is the PyTorch naming the container docs promise)."""
    tm = to_torch(model).to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    params = model.named_parameters()
    assert set(params) == {n for n, _ in tm.named_parameters()}
    bufs = {n: b for n, b in tm.named_buffers() if not n.endswith("num_batches_tracked")}
    assert set(model.buffers()) == set(bufs)
    with torch.no_grad():
        for n, p in tm.named_parameters():
            p.copy_(torch.from_numpy(np.array(params[n].value)))
        for n, b in bufs.items():
            b.copy_(torch.from_numpy(np.array(model.buffers()[n])))
    return tm


def compare_with_torch(model, x, labels, dtype, training=True):
    """One forward + backward (CrossEntropy) in both; compares output, dL/dx, every parameter's
    gradient and every buffer by name."""
    tm = torch_twin(model, dtype)
    tm.train(training)
    model.train(training)
    loss = CrossEntropy()
    y = model.forward(x)
    loss.forward(y, labels)
    model.zero_grad()
    dx = model.backward(loss.backward(), input_grad=True)
    xt = tt(x, True)
    yt = tm(xt)
    TF.cross_entropy(yt, torch.from_numpy(labels)).backward()
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, yt, dtype, what="output")
    assert_close(dx, xt.grad, dtype, what="dL/dx")
    grads = dict(tm.named_parameters())
    for n, p in model.named_parameters().items():
        assert p.grad is not None and p.grad.dtype == dtype, n
        assert_close(p.grad, grads[n].grad, dtype, what=f"d{n}")
    tbufs = dict(tm.named_buffers())
    for n, b in model.buffers().items():
        assert_close(b, tbufs[n], dtype, what=n)


def _cast(model, dtype):
    return model.astype(np.float64) if np.dtype(dtype) == np.float64 else model


def block(cin, cout, stride, shortcut, rng):
    body = [Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, rng=rng),
            BatchNorm2D(cout), ReLU(), Conv2D(cout, cout, 3, padding=1, bias=False, rng=rng),
            BatchNorm2D(cout)]
    if shortcut == "A":
        short = ChannelPadShortcut(cin, cout, stride)
    elif shortcut == "B":
        short = Sequential([Conv2D(cin, cout, 1, stride=stride, bias=False, rng=rng),
                            BatchNorm2D(cout)])
    else:
        short = None
    return [Residual(body, short), ReLU()]


def residual_net(rng=0, shortcut="B", hw=9):
    """stem - identity block - downsampling block (shortcut A or B) - pool - dense."""
    r = np.random.default_rng(rng)
    size = -(-hw // 2)
    return Sequential([Conv2D(2, 4, 3, padding=1, rng=r), ReLU()] + block(4, 4, 1, None, r)
                      + block(4, 6, 2, shortcut, r)
                      + [AvgPool2D(size), Flatten(), Dense(6, 5, rng=r)], input_shape=(2, hw, hw))


def concat_net(rng=0, hw=8):
    """Inception-like: 1x1 | 1x1 -> 3x3 | 3x3 dilated | max pool -> 1x1 | identity, concatenated."""
    r = np.random.default_rng(rng)
    inception = Concat([
        Conv2D(3, 2, 1, rng=r),
        [Conv2D(3, 2, 1, rng=r), ReLU(), Conv2D(2, 3, 3, padding=1, rng=r)],
        Conv2D(3, 2, 3, padding=2, dilation=2, rng=r),
        Sequential([MaxPool2D(3, stride=1, padding=1), Conv2D(3, 1, 1, rng=r)]),
        Identity(),
    ])
    return Sequential([Conv2D(1, 3, 3, padding=1, rng=r), ReLU(), inception, ReLU(),
                       MaxPool2D(2), Flatten(), Dense(11 * (hw // 2) ** 2, 4, rng=r)],
                      input_shape=(1, hw, hw))


def nested_net(rng=0):
    """A Residual whose body holds a Concat whose branch holds a Residual (both layouts' axes)."""
    r = np.random.default_rng(rng)
    inner = Residual([Conv2D(3, 3, 3, padding=1, rng=r), BatchNorm2D(3), ReLU()])
    body = [Concat([[inner, Conv2D(3, 2, 1, rng=r)], [Conv2D(3, 2, 3, padding=1, rng=r)]]),
            BatchNorm2D(4)]
    return Sequential([Conv2D(1, 3, 3, padding=1, rng=r),
                       Residual(body, Conv2D(3, 4, 1, rng=r)), ReLU(), Flatten(),
                       Dense(4 * 6 * 6, 3, rng=r)], input_shape=(1, 6, 6))


def _batch(model, n=4, classes=5, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n,) + model.input_shape).astype(model.dtype)
    return x, r.integers(0, classes, size=n)


NETS = {"residual-B": lambda: residual_net(shortcut="B"),
        "residual-A": lambda: residual_net(shortcut="A"),
        "residual-A-odd": lambda: residual_net(shortcut="A", hw=7),
        "concat": concat_net, "nested": nested_net}
CLASSES = {"concat": 4, "nested": 3}


# -- against PyTorch ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["CNHW", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(NETS))
def test_graph_net_output_and_all_gradients_match_torch(name, dtype, layout):
    model = _cast(NETS[name](), dtype)
    model.internal_layout = layout
    x, labels = _batch(model, classes=CLASSES.get(name, 5))
    compare_with_torch(model, x, labels, dtype)


@pytest.mark.parametrize("name", ["residual-B", "nested"])
def test_graph_net_with_batch_norm_inside_blocks_matches_torch_in_eval_mode(name):
    model = _cast(NETS[name](), np.float64)
    for seed in range(3):                              # move the running statistics off 0/1
        model.forward(_batch(model, seed=seed)[0] * 2 + 0.5, training=True)
    x, labels = _batch(model, classes=CLASSES.get(name, 5), seed=9)
    compare_with_torch(model, x, labels, np.float64, training=False)
    y1 = model.forward(x[:1])                          # eval: a sample does not see its batch
    np.testing.assert_allclose(y1, model.forward(x)[:1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_containers_alone_match_torch_in_both_layouts(dtype):
    r = np.random.default_rng(3)
    x = r.standard_normal((3, 4, 5, 6)).astype(dtype)
    for layer in (Residual([Conv2D(4, 4, 3, padding=1, rng=1), ReLU()]),
                  Residual(Conv2D(4, 6, 3, stride=2, padding=1, rng=1), ChannelPadShortcut(4, 6)),
                  Concat([Identity(), Conv2D(4, 2, 1, rng=2)])):
        layer = layer.astype(dtype)
        tm = to_torch(layer).to(torch.float64 if dtype == np.float64 else torch.float32)
        with torch.no_grad():
            for n, p in tm.named_parameters():
                p.copy_(torch.from_numpy(np.array(layer.named_parameters()[n].value)))
        xt = tt(x, True)
        yt = tm(xt)
        g = r.standard_normal(tuple(yt.shape)).astype(dtype)
        yt.backward(tt(g))
        for layout in ("NCHW", "CNHW"):
            layer.zero_grad()
            xin = x.transpose(1, 0, 2, 3).copy() if layout == "CNHW" else x
            gin = g.transpose(1, 0, 2, 3).copy() if layout == "CNHW" else g
            y = layer.forward(xin, layout=layout)
            dx = layer.backward(gin)
            if layout == "CNHW":
                y, dx = y.transpose(1, 0, 2, 3), dx.transpose(1, 0, 2, 3)
            assert_close(np.ascontiguousarray(y), yt, dtype, what=f"{layer!r} {layout}")
            assert_close(np.ascontiguousarray(dx), xt.grad, dtype, what=f"{layer!r} dx {layout}")
            for n, p in layer.named_parameters().items():
                assert_close(p.grad, dict(tm.named_parameters())[n].grad, dtype, what=n)


def test_residual_of_dense_layers_on_features_matches_torch():
    model = _cast(Sequential([Dense(6, 8, rng=0), Residual([Dense(8, 8, rng=1), ReLU(),
                                                            Dense(8, 8, rng=2)]),
                              BatchNorm1D(8), Concat([Identity(), Dense(8, 3, rng=3)]),
                              Dense(11, 4, rng=4)], input_shape=(6,)), np.float64)
    x, labels = _batch(model, classes=4)
    compare_with_torch(model, x, labels, np.float64)


# -- gradcheck ------------------------------------------------------------------------------------
def _nonzero_biases(model):
    """Biases off 0: with numcnn's zero-initialised biases, a pixel where the previous ReLU
    gave 0 on every channel makes a conv output exactly 0, a ReLU kink where central
    differences measure 1/2 instead of the gradient (0 or 1)."""
    r = np.random.default_rng(1)
    for name, p in model.named_parameters().items():
        if name.endswith("bias"):
            p.value = r.uniform(0.05, 0.2, p.value.shape).astype(p.value.dtype)
    return model


@pytest.mark.parametrize("name", ["residual-B", "residual-A", "concat", "nested"])
def test_gradcheck_passes_end_to_end_for_graph_nets_with_their_loss(name):
    model = _nonzero_biases(NETS[name]())
    r = np.random.default_rng(5)
    x = r.uniform(0.05, 1.0, size=(2,) + model.input_shape)
    labels = r.integers(0, CLASSES.get(name, 5), size=2)
    report = numcnn.gradcheck(model, x, labels, CrossEntropy(), max_entries=12, eps=1e-5)
    assert set(model.named_parameters()) <= set(report.errors) and "input" in report.errors
    assert any(".body." in k or ".branches." in k for k in report.errors)
    assert report.max_rel_error < 1e-6, str(report)


def test_gradcheck_catches_a_fork_that_forgets_one_path(monkeypatch):
    """The check can fail: a Residual whose backward drops the shortcut's gradient."""
    model = _nonzero_biases(residual_net(shortcut="A"))
    x, labels = _batch(model, n=2)
    monkeypatch.setattr(Residual, "backward",
                        lambda self, g: (self._need_cache(), self._run_backward(self.body, g))[1])
    report = numcnn.gradcheck(model, x.astype(np.float64), labels, CrossEntropy(), max_entries=8,
                              eps=1e-5)
    assert not report.ok(), str(report)


def test_gradcheck_with_dropout_inside_a_block_replays_its_masks():
    r = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 3, 3, padding=1, rng=r),
                        Residual([Conv2D(3, 3, 3, padding=1, rng=r), Dropout(0.4), ReLU()]),
                        Flatten(), Dense(3 * 25, 3, rng=r)], input_shape=(1, 5, 5))
    x = r.uniform(0.05, 1, size=(2, 1, 5, 5))
    report = numcnn.gradcheck(model, x, r.integers(0, 3, 2), CrossEntropy(), max_entries=10,
                              eps=1e-5)
    assert report.max_rel_error < 1e-6, str(report)


# -- the first layer, nested dropout seeds --------------------------------------------------------
def test_a_block_first_in_the_model_skips_dl_dx_unless_asked():
    model = _cast(Sequential([Residual([Conv2D(2, 2, 3, padding=1, rng=0), ReLU()],
                                       Conv2D(2, 2, 1, rng=1)), Flatten(), Dense(18, 3, rng=2)],
                             input_shape=(2, 3, 3)), np.float64)
    assert model.layers[0].needs_input_grad is False
    assert model.layers[0].body[0].needs_input_grad is False
    assert model.layers[0].shortcut[0].needs_input_grad is False
    x, labels = _batch(model, classes=3)
    loss = CrossEntropy()
    loss.forward(model.forward(x), labels)
    assert model.backward(loss.backward()) is None
    w_grad = model.named_parameters()["0.body.0.weight"].grad.copy()
    compare_with_torch(model, x, labels, np.float64)   # with input_grad=True: dL/dx matches torch
    assert_close(model.named_parameters()["0.body.0.weight"].grad, w_grad, np.float64)
    assert model.layers[0].body[0].needs_input_grad is False


def test_a_sequential_given_as_a_path_gets_its_input_gradient_back():
    body = Sequential([Conv2D(2, 2, 3, padding=1, rng=0), ReLU()], input_shape=(2, 4, 4))
    assert body.layers[0].needs_input_grad is False
    block_ = Residual(body)
    assert block_.body[0].needs_input_grad is True
    assert all(layer.check_finite is False for layer in block_.body)


def test_nested_unseeded_dropout_layers_draw_different_masks_reproducibly():
    def make():
        return Sequential([Residual([Dropout(0.5)]), Concat([Dropout(0.5), Dropout(0.5)])],
                          input_shape=(4, 8, 8))
    x = np.ones((2, 4, 8, 8), np.float32)
    m = make()
    both = m.layers[1].forward(x)
    masks = [m.layers[0].forward(x) - x, both[:, :4], both[:, 4:]]
    assert all(0.2 < (mk == 0).mean() < 0.8 for mk in masks)
    for a in range(3):
        for b in range(a):
            assert not np.array_equal(masks[a], masks[b])
    m2 = make()
    np.testing.assert_array_equal(m2.layers[1].forward(x), both)


# -- summary and shapes ---------------------------------------------------------------------------
def test_summary_shows_shapes_through_body_shortcut_and_branches():
    text = concat_net().summary()
    lines = {line.split()[0]: line for line in text.splitlines()[3:-2]}
    assert lines["2"].split()[1] == "Concat(5"
    assert "11x8x8" in lines["2"]
    assert "2.branches.1.2" in lines and "3x8x8" in lines["2.branches.1.2"]
    assert "2.branches.4.0" in lines and "Identity()" in lines["2.branches.4.0"]
    text = residual_net(shortcut="B").summary()
    lines = {line.split()[0]: line for line in text.splitlines()[3:-2]}
    assert "6x5x5" in lines["4.body.0"] and "6x5x5" in lines["4.shortcut.0"]
    # the block's row counts its layers' parameters once; the total is the model's
    p = sum(int(np.prod(p.shape)) for n, p in residual_net(shortcut="B").named_parameters().items()
            if n.startswith("4."))
    assert f"{p:,}" in lines["4"]
    total = sum(p.value.size for p in residual_net(shortcut="B").parameters())
    assert text.splitlines()[-1].startswith(f"total: {total:,} parameters")


def test_resnet20_has_the_papers_0_27m_parameters():
    model = models.resnet20()
    assert sum(p.value.size for p in model.parameters()) == 269_722
    assert "total: 269,722 parameters" in model.summary()
    assert model.shapes()[-1][1] == (10,)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("Residual") == 9
    assert sum(isinstance(l, Residual) and isinstance(l.shortcut and l.shortcut[0],
                                                      ChannelPadShortcut) for l in model.layers) == 2
    # option B: two 1x1 conv + BN shortcuts, 16*32 + 2*32 + 32*64 + 2*64 parameters more
    assert sum(p.value.size for p in models.resnet20(shortcut="B").parameters()) == 269_722 + 2_752


def test_numcnn_summary_resnet20_prints_the_parameter_count(capsys):
    from numcnn import cli
    cli.main(["summary", "resnet20"])
    out = capsys.readouterr().out
    assert "269,722 parameters" in out and "shortcut.0" in out


@pytest.mark.parametrize("name", ["resnet20", "resnet-digits"])
def test_residual_presets_train_a_step(name):
    model = models.build(name, in_channels=3 if name == "resnet20" else 1,
                         image_size=32 if name == "resnet20" else 28)
    x, labels = _batch(model, n=2, classes=10)
    loss = CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=0.01)
    first = loss.forward(model.forward(x), labels)
    for _ in range(3):
        model.zero_grad()
        model.backward(loss.backward())
        opt.step()
        last = loss.forward(model.forward(x), labels)
    assert last < first


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, fragment", [
    (lambda: Sequential([Concat([Conv2D(3, 2, 3), Conv2D(3, 2, 3, padding=1)])],
                        input_shape=(3, 8, 8)),
     ShapeError, r"Concat\(2 branches\): branch 1 outputs shape \(2, 8, 8\) but branch 0 outputs "
                 r"\(2, 6, 6\).*same stride"),
    (lambda: Sequential([Residual(Conv2D(3, 4, 3, padding=1))], input_shape=(3, 8, 8)),
     ShapeError, r"Residual.*body outputs shape \(4, 8, 8\) but the identity shortcut passes "
                 r"\(3, 8, 8\).*ChannelPadShortcut"),
    (lambda: Sequential([Residual(Conv2D(3, 4, 3, stride=2, padding=1), Conv2D(3, 4, 1))],
                        input_shape=(3, 8, 8)),
     ShapeError, r"body outputs shape \(4, 4, 4\) but the shortcut outputs \(4, 8, 8\)"),
    (lambda: Sequential([Residual([Conv2D(3, 4, 3), Conv2D(3, 4, 3)])], input_shape=(3, 8, 8)),
     ShapeError, r"body\.1 Conv2D\(3, 4, kernel_size=3\) expects 3 input channels.*\(4, 6, 6\)"),
    (lambda: Residual("conv"), ConfigError, "body must be a layer, a list of layers or a Sequential"),
    (lambda: Residual([Conv2D(1, 1, 1), 3]), ConfigError, "body item 1 is int, not a numcnn layer"),
    (lambda: Residual([]), ConfigError, "body is empty"),
    (lambda: Residual(ReLU(), shortcut=nn.Identity()), ConfigError, "shortcut must be a layer"),
    (lambda: Concat(Conv2D(1, 1, 1)), ConfigError, "branches must be a list of branches"),
    (lambda: Concat([]), ConfigError, "at least one branch"),
    (lambda: ChannelPadShortcut(8, 4), ConfigError, "out_channels must be >= in_channels"),
    (lambda: Residual([ReLU(), (r := ReLU()), r]), ConfigError,
     r"body\.2 \(ReLU\(\)\) is the same layer object as body\.1"),
    (lambda: (lambda c: Sequential([c, Residual(c)]))(Conv2D(1, 1, 1)), ConfigError,
     r"Sequential: 1\.body\.0 \(Conv2D.* is the same layer object as 0;"),
    (lambda: layer_from_config({"type": "Residual", "body": [{"type": "Nope"}]}), ConfigError,
     r"Residual: body item 0: unknown layer type 'Nope'"),
])
def test_bad_graph_configurations_are_clear_errors(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


def test_shape_mismatches_found_at_run_time_name_the_block_with_user_shapes():
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ShapeError, match=r"branch 1 outputs shape \(2, 2, 8, 8\) but branch 0 "
                                         r"outputs \(2, 2, 6, 6\)"):
        Sequential([Concat([Conv2D(3, 2, 3), Conv2D(3, 2, 3, padding=1)])]).forward(x)
    # a (N, C, 1, 1) shortcut would broadcast against the body: refused, not added
    blk = Residual(Conv2D(3, 3, 3, padding=1), AvgPool2D(8))
    for layout in ("NCHW", "CNHW"):
        with pytest.raises(ShapeError, match=r"body outputs shape \(2, 3, 8, 8\) but the shortcut "
                                             r"outputs \(2, 3, 1, 1\)"):
            blk.forward(x if layout == "NCHW" else x.transpose(1, 0, 2, 3), layout=layout)
    with pytest.raises(StateError, match="before forward"):
        Residual(ReLU()).backward(x)


# -- model files and the architecture format ------------------------------------------------------
@pytest.mark.parametrize("name", ["residual-A", "concat", "nested"])
def test_graph_model_save_load_round_trip_is_bit_identical(name, tmp_path):
    model = NETS[name]()
    for seed in range(2):
        model.forward(_batch(model, seed=seed)[0], training=True)
    model.save(tmp_path / "m.safetensors")
    back = numcnn.load(tmp_path / "m.safetensors")
    assert back.config() == model.config()
    assert set(back.named_parameters()) == set(model.named_parameters())
    for n, p in model.named_parameters().items():
        np.testing.assert_array_equal(back.named_parameters()[n].value, p.value)
    for n, b in model.buffers().items():
        np.testing.assert_array_equal(back.buffers()[n], b)
    x, _ = _batch(model, n=5, seed=7)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    tensors, _ = nio.decode_safetensors((tmp_path / "m.safetensors").read_bytes())
    assert {k[len("layers."):] for k in tensors} == set(model.named_parameters()) | set(model.buffers())


def test_nested_dropout_generators_continue_after_loading(tmp_path):
    r = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 2, 3, padding=1, rng=r), Residual([Dropout(0.5), ReLU()]),
                        Concat([Dropout(0.3), Identity()]), Flatten(), Dense(64, 2, rng=r)],
                       input_shape=(1, 4, 4))
    x = np.ones((3, 1, 4, 4), np.float32)
    model.forward(x)                                           # advance the generators
    model.save(tmp_path / "m.safetensors")
    back = numcnn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(back.forward(x, training=True), model.forward(x, training=True))


def test_a_model_file_in_the_format_before_graph_models_still_loads(tmp_path):
    """The bytes an older numcnn wrote for LeNet-5, assembled here by hand from its format
    (tensors ``layers.{i}.{name}``, metadata format/architecture/normalization/classes/rng)."""
    model = models.lenet5(rng=3)
    specs = [{"type": "Conv2D", "in_channels": 1, "out_channels": 6, "kernel_size": [5, 5],
              "stride": [1, 1], "padding": [2, 2], "dilation": [1, 1], "bias": True},
             {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2],
                                "padding": [0, 0]},
             {"type": "Conv2D", "in_channels": 6, "out_channels": 16, "kernel_size": [5, 5],
              "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "bias": True},
             {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2],
                                "padding": [0, 0]}, {"type": "Flatten"},
             {"type": "Dense", "in_features": 400, "out_features": 120, "bias": True},
             {"type": "ReLU"}, {"type": "Dense", "in_features": 120, "out_features": 84,
                                "bias": True},
             {"type": "ReLU"}, {"type": "Dense", "in_features": 84, "out_features": 10,
                                "bias": True}]
    tensors = {f"layers.{i}.{n}": np.array(p.value) for i, l in enumerate(model.layers)
               for n, p in l.named_parameters().items()}
    header, blobs, offset = {"__metadata__": {
        "format": "numcnn/1", "architecture": json.dumps({"layers": specs,
                                                          "input_shape": [1, 28, 28]}),
        "normalization": "null", "classes": json.dumps([str(i) for i in range(10)]),
        "rng": "{}"}}, [], 0
    for name in sorted(tensors):
        b = tensors[name].astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (tmp_path / "old.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    back = numcnn.load(tmp_path / "old.safetensors")
    assert back.config() == model.config()
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def _arch(layers):
    return {"input_shape": [3, 8, 8], "layers": layers}


def test_architecture_checks_reach_nested_layers_before_building():
    huge = {"type": "Conv2D", "in_channels": 3, "out_channels": 10 ** 9, "kernel_size": 3}
    with pytest.raises(ModelFileError, match=r"layer 0\.body\.1 \('Conv2D'\) needs"):
        nio.check_architecture(_arch([{"type": "Residual", "body": [{"type": "ReLU"}, huge]}]), "f")
    with pytest.raises(ModelFileError, match=r"layer 0\.branches\.1\.0 .*'padding' is nan"):
        nio.check_architecture(_arch([{"type": "Concat", "branches": [
            [{"type": "ReLU"}],
            [{"type": "MaxPool2D", "kernel_size": 2, "padding": float("nan")}]]}]), "f")
    with pytest.raises(ModelFileError, match=r"dtype must be float32"):
        nio.check_architecture(_arch([{"type": "Residual",
                                       "body": {"type": "Conv2D", "dtype": "int8"}}]), "f")
    deep = {"type": "ReLU"}
    for _ in range(40):
        deep = {"type": "Residual", "body": [deep]}
    with pytest.raises(ModelFileError, match="nests containers more than 32 deep"):
        nio.check_architecture(_arch([deep]), "f")
    layer = ReLU()
    with pytest.raises(ConfigError, match="Residual: containers nested 33 deep"):
        for _ in range(40):
            layer = Residual(layer)


def test_a_model_file_with_a_huge_nested_padding_is_refused_before_running(tmp_path):
    """The conv's output is small (3x3x3) but its padded input would be 3 x 200006**2."""
    model = Sequential([Concat([Conv2D(3, 3, 3, padding=1, rng=0)])], input_shape=(3, 8, 8))
    meta = nio.model_metadata(model)
    arch = json.loads(meta["architecture"])
    arch["layers"][0]["branches"][0][0].update(padding=[99999, 99999], stride=[99999, 99999])
    meta["architecture"] = json.dumps(arch)
    (tmp_path / "bad.safetensors").write_bytes(nio.encode_safetensors(nio.model_tensors(model), meta))
    with pytest.raises(ModelFileError, match=r"layer 0\.branches\.0\.0 Conv2D.*would need"):
        numcnn.load(tmp_path / "bad.safetensors")


def test_json_architecture_with_blocks_builds_seeds_and_names_errors(tmp_path):
    from numcnn.cli import load_architecture
    conv = {"type": "Conv2D", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}
    spec = {"input_shape": [1, 8, 8], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "Residual", "body": [conv, {"type": "BatchNorm2D", "num_features": 4},
                                      {"type": "ReLU"}, conv]},
        {"type": "Concat", "branches": [[{"type": "Identity"}], [dict(conv)]]},
        {"type": "Flatten"}, {"type": "Dense", "in_features": 512, "out_features": 10}]}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(spec))
    model = load_architecture(str(path), seed=1)
    w = model.named_parameters()
    assert not np.array_equal(w["1.body.0.weight"].value, w["1.body.3.weight"].value)
    assert not np.array_equal(w["1.body.0.weight"].value, w["2.branches.1.0.weight"].value)
    again = load_architecture(str(path), seed=1).named_parameters()
    np.testing.assert_array_equal(again["1.body.3.weight"].value, w["1.body.3.weight"].value)
    assert Sequential.from_config(model.config()).config() == model.config()
    spec["layers"][2]["branches"][1][0]["padding"] = 0
    path.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"arch\.json: .*branch 1 outputs shape \(4, 6, 6\)"):
        load_architecture(str(path))


def test_config_round_trip_rebuilds_the_same_structure():
    model = nested_net()
    for layer in model.layers:
        again = layer_from_config(layer_to_config(layer))
        assert layer_to_config(again) == layer_to_config(layer)
        assert set(again.named_parameters()) == set(layer.named_parameters())


# -- dtype, device, plots -------------------------------------------------------------------------
def test_astype_reaches_nested_parameters_and_buffers():
    model = nested_net().astype(np.float64)
    assert all(p.value.dtype == np.float64 for p in model.parameters())
    assert all(b.dtype == np.float64 for b in model.buffers().values())
    assert len(model.buffers()) == 4


def test_feature_maps_of_convs_inside_blocks_are_labelled_by_their_nested_name(tmp_path):
    from numcnn.viz import plots
    model = concat_net()
    x = model.prepare_input(_batch(model, n=1)[0])
    blocks, _ = plots._conv_activations(model.layers, x, 32)      # (maps, the model's output)
    labels = [label for label, _ in blocks]
    assert [label.split(":")[0] for label in labels] == [
        "layer 0", "layer 2.branches.0.0", "layer 2.branches.1.0", "layer 2.branches.1.2",
        "layer 2.branches.2.0", "layer 2.branches.3.1"]
    maps = dict(blocks)
    model.eval()
    inner = model.layers[2].branches[1]
    h = model.layers[1].forward(model.layers[0].forward(x))
    for layer in inner:
        h = layer.forward(h)
    label = next(k for k in maps if k.startswith("layer 2.branches.1.2"))
    np.testing.assert_allclose(maps[label], h[0], rtol=1e-6)
    assert model.layers[2]._hook is None                 # the hooks are removed afterwards
    path = plots.plot_feature_maps(model, x[0], tmp_path / "fm.png", dpi=30)
    assert (tmp_path / "fm.png").stat().st_size > 0 and str(path).endswith("fm.png")


def test_the_graph_models_doc_example_runs_and_prints_what_it_says(capsys):
    from pathlib import Path
    import re
    doc = (Path(__file__).resolve().parents[1] / "docs" / "graph-models.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    ns: dict = {}
    exec(compile(code, "docs/graph-models.md", "exec"), ns)
    out = capsys.readouterr().out
    assert re.search(r"\n3\.body\.0 +  Conv2D\(8, 8, kernel_size=3", out) and "7.branches.1.0" in out
    assert "['0.weight', '0.bias', '3.body.0.weight']" in out
    assert ns["model"].shapes()[-1][1] == (10,)


# -- training: an interrupted run of a graph model resumes bit-identically ------------------------
def _small_graph_model():
    r = np.random.default_rng(0)
    return Sequential([
        Conv2D(1, 4, 3, padding=1, bias=False, rng=r), BatchNorm2D(4), ReLU(),
        Residual([Conv2D(4, 4, 3, padding=1, bias=False, rng=r), BatchNorm2D(4), ReLU(),
                  Dropout(0.2), Conv2D(4, 4, 3, padding=1, bias=False, rng=r), BatchNorm2D(4)]),
        ReLU(), Concat([MaxPool2D(2), [Conv2D(4, 4, 3, stride=2, padding=1, rng=r), Dropout(0.1)]]),
        Flatten(), Dense(8 * 4 * 4, 10, rng=r)], input_shape=(1, 8, 8))


def test_an_interrupted_graph_model_run_resumes_bit_identically(tmp_path):
    import os
    import signal
    import sys
    import threading
    from numcnn.training import Trainer
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        pytest.skip("needs POSIX signals delivered to the main thread")
    (xtr, ytr), (xte, yte) = numcnn.datasets.load("digits")
    train, val = (xtr[:128], ytr[:128]), (xte[:50], yte[:50])

    def trainer(out):
        return Trainer(_small_graph_model(), optimizer="adam", lr=2e-3, schedule="cosine",
                       epochs=3, batch_size=32, seed=3, out_dir=str(out), progress=False)

    ref = trainer(tmp_path / "ref")
    ref.fit(train, val)
    first = trainer(tmp_path / "run")
    real_step, count = first.optimizer.step, [0]

    def step():                          # Ctrl-C in the middle of epoch 2
        real_step()
        count[0] += 1
        if count[0] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    first.optimizer.step = step
    first.fit(train, val)
    assert first.interrupted
    second = trainer(tmp_path / "run")
    second.fit(train, val, resume=str(tmp_path / "run" / "checkpoint.safetensors"))
    for n, p in ref.model.named_parameters().items():
        np.testing.assert_array_equal(second.model.named_parameters()[n].value, p.value, err_msg=n)
    for n, b in ref.model.buffers().items():
        np.testing.assert_array_equal(second.model.buffers()[n], b, err_msg=n)
    assert [l._rng_state() for l in second.model.layers] == [l._rng_state() for l in ref.model.layers]
    assert second.history["val_acc"] == ref.history["val_acc"]


# -- hostile nested descriptions ------------------------------------------------------------------
def _nested_spec():
    conv = {"type": "Conv2D", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1}
    return {"input_shape": [1, 8, 8], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "Residual", "body": [dict(conv), {"type": "BatchNorm2D", "num_features": 4},
                                      {"type": "ReLU"}, dict(conv)],
         "shortcut": [{"type": "Identity"}]},
        {"type": "Concat", "branches": [[{"type": "Identity"}],
                                        [dict(conv), {"type": "Dropout", "p": 0.5}],
                                        [{"type": "Residual", "body": [dict(conv)]}]]},
        {"type": "Flatten"}, {"type": "Dense", "in_features": 768, "out_features": 10}]}


def _nested_dicts(spec, out):
    """Every layer dict of a description, nested ones too."""
    out.append(spec)
    for key in ("body", "shortcut", "branches"):
        v = spec.get(key)
        for item in (v if isinstance(v, list) else [v] if isinstance(v, dict) else []):
            for inner in (item if isinstance(item, list) else [item]):
                if isinstance(inner, dict):
                    _nested_dicts(inner, out)
    return out


def test_nested_descriptions_with_forged_fields_build_or_say_what_is_wrong(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from numcnn.cli import load_architecture
    values = st.one_of(st.integers(-2, 16), st.sampled_from(
        [2 ** 31, 10 ** 12, None, True, 0.5, float("nan"), "same", "bogus", [], {}, [[]], [{}],
         {"type": "Conv2D"}, [{"type": "Residual"}], {"type": "Residual", "body": 3},
         [[{"type": "Concat", "branches": [[{"type": "Conv2D", "in_channels": 4,
                                             "out_channels": 10 ** 9, "kernel_size": 3}]]}]]]))
    keys = st.sampled_from(["body", "shortcut", "branches", "type", "in_channels",
                            "out_channels", "kernel_size", "padding", "stride", "num_features",
                            "p", "rng", "dtype"])

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data())
    def run(data):
        spec = _nested_spec()
        for _ in range(data.draw(st.integers(1, 3))):
            target = data.draw(st.sampled_from(_nested_dicts(
                spec["layers"][data.draw(st.integers(0, 4))], [])))
            # a copy: sampled values are shared objects, and nesting one in itself loops forever
            target[data.draw(keys)] = copy.deepcopy(data.draw(values))
        text = json.dumps(spec, allow_nan=True)
        path = tmp_path / "arch.json"
        path.write_text(text)
        try:
            model = load_architecture(str(path))
        except ConfigError:
            return
        model.forward(np.zeros((2, 1, 8, 8), np.float32))     # what builds also runs
        meta = nio.model_metadata(model)
        meta["architecture"] = text
        blob = nio.encode_safetensors(nio.model_tensors(model), meta)
        (tmp_path / "m.safetensors").write_bytes(blob)
        try:
            numcnn.load(tmp_path / "m.safetensors")
        except ModelFileError:
            pass

    run()


@pytest.mark.parametrize("branches", [2, "ab", None, 1.5])
def test_a_concat_whose_branches_are_not_a_list_is_a_config_error(tmp_path, branches):
    """Found by the forged-fields fuzz: the size check walked ``enumerate(2)``."""
    from numcnn.architecture import load_architecture
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"input_shape": [1, 8, 8], "layers": [
        {"type": "Concat", "branches": branches}]}))
    with pytest.raises(ConfigError):
        load_architecture(str(path))
