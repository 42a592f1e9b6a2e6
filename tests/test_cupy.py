"""The CuPy backend: same layer code on an NVIDIA GPU. Skipped where CuPy or a GPU is absent."""
import numpy as np
import pytest

import numcnn

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception:  # pragma: no cover - no driver
    pytest.skip("no CUDA device", allow_module_level=True)

pytestmark = pytest.mark.cupy


def _pair(seed=0):
    cpu = numcnn.models.lenet5(rng=seed)
    gpu = numcnn.models.lenet5(rng=seed).to("gpu")
    return cpu, gpu


def test_lenet5_forward_backward_on_cupy_matches_numpy():
    cpu, gpu = _pair()
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    lc, lg = numcnn.losses.CrossEntropy(), numcnn.losses.CrossEntropy()
    out_c = cpu.forward(x)
    out_g = gpu.forward(cupy.asarray(x))
    assert isinstance(out_g, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out_g), out_c, rtol=1e-4, atol=1e-5)
    assert abs(lc.forward(out_c, y) - lg.forward(out_g, cupy.asarray(y))) < 1e-5
    cpu.backward(lc.backward())
    gpu.backward(lg.backward())
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.grad), pc.grad, rtol=1e-3, atol=1e-5)


def test_sgd_step_and_predict_on_cupy():
    cpu, gpu = _pair(1)
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    for m, xx in ((cpu, x), (gpu, cupy.asarray(x))):
        opt = numcnn.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        loss = numcnn.losses.CrossEntropy()
        loss.forward(m.forward(xx), (np.arange(4) if m is cpu else cupy.arange(4)))
        m.backward(loss.backward())
        opt.step()
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.value), pc.value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-6)


def test_use_cupy_puts_new_models_on_the_gpu():
    numcnn.use("cupy")
    try:
        m = numcnn.models.lenet5()
        assert isinstance(m.parameters()[0].value, cupy.ndarray)
    finally:
        numcnn.use("numpy")


def test_fit_on_cupy_learns_digits():
    (xtr, ytr), (xte, yte) = numcnn.datasets.load("digits")
    m = numcnn.models.digits_cnn().to("gpu")
    m.fit((xtr, ytr), epochs=3, optimizer="adam", lr=2e-3, progress=False)
    assert m.evaluate(xte, yte)["accuracy"] > 0.9


def test_padded_3x3_stack_on_cupy_matches_numpy(monkeypatch):
    """The CIFAR-style path: the full-convolution dL/dI route (O <= 2C, stride 1), several
    column blocks, and max-pooling over tiling windows, on CuPy arrays."""
    monkeypatch.setattr(numcnn.functional.conv, "GPU_BLOCK_BYTES", 4 * 1024 * 1024)  # blocks
    from numcnn.functional.conv import _input_grad_route, _geometry
    from numcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    def make():
        return numcnn.Sequential([Conv2D(3, 16, 3, padding=1, rng=1), ReLU(),
                                  Conv2D(16, 16, 3, padding=1, rng=2), ReLU(), MaxPool2D(2),
                                  Conv2D(16, 32, 3, padding=1, rng=3), ReLU(), MaxPool2D(2),
                                  Flatten(), Dense(32 * 4 * 4, 10, rng=4)])
    assert _input_grad_route(_geometry((16, 48, 16, 16), (16, 16, 3, 3), (1, 1), (1, 1),
                                       (1, 1), "CNHW", 4), (16, 16, 3, 3), (1, 1),
                             (1, 1)) == "conv"
    cpu, gpu = make(), make().to("gpu")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((48, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    lc, lg = numcnn.losses.CrossEntropy(), numcnn.losses.CrossEntropy()
    out_c, out_g = cpu.forward(x), gpu.forward(cupy.asarray(x))
    np.testing.assert_allclose(cupy.asnumpy(out_g), out_c, rtol=1e-4, atol=1e-5)
    lc.forward(out_c, y)
    lg.forward(out_g, cupy.asarray(y))
    cpu.backward(lc.backward())
    gpu.backward(lg.backward())
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.grad), pc.grad, rtol=1e-3, atol=1e-5)


def test_a_gpu_model_comes_back_to_the_cpu_as_numpy():
    cpu = numcnn.models.digits_cnn(rng=3)
    back = numcnn.models.digits_cnn(rng=3).to("gpu").to("cpu")
    for p, q in zip(cpu.parameters(), back.parameters()):
        assert type(q.value) is np.ndarray
        np.testing.assert_array_equal(p.value, q.value)


def test_use_cupy_reaches_loaded_models_and_bare_layers(tmp_path):
    numcnn.models.digits_cnn().save(tmp_path / "m.safetensors")
    numcnn.use("cupy")
    try:
        loaded = numcnn.load(tmp_path / "m.safetensors")
        dense = numcnn.layers.Dense(3, 2)
        bn = numcnn.layers.BatchNorm2D(4)
    finally:
        numcnn.use("numpy")
    assert all(isinstance(p.value, cupy.ndarray) for p in loaded.parameters())
    assert isinstance(dense.weight.value, cupy.ndarray)
    assert all(isinstance(b, cupy.ndarray) for b in bn.buffers().values())
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x), numcnn.load(tmp_path / "m.safetensors").predict(x),
                               rtol=1e-5, atol=1e-6)


def test_mixing_devices_is_a_device_error_naming_the_fix():
    cpu, gpu = numcnn.models.digits_cnn(), numcnn.models.digits_cnn().to("gpu")
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(numcnn.errors.DeviceError, match=r"input is on the cpu .* on the gpu; move "
                                                        r"the input \(cupy.asarray\(x\)\) or "
                                                        r"the model \(model.to\('cpu'\)\)"):
        gpu.forward(x)
    with pytest.raises(numcnn.errors.DeviceError, match=r"input is on the gpu .* on the cpu"):
        cpu.forward(cupy.asarray(x))
    # evaluate and fit take data from either device (batches go to the model's device)
    y = np.array([0, 1])
    assert gpu.evaluate(cupy.asarray(x), cupy.asarray(y))["samples"] == 2


def test_batch_norm_dropout_avg_pool_and_strided_convs_on_cupy_match_numpy():
    from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout,
                               Flatten, MaxPool2D, ReLU)

    def make():
        return numcnn.Sequential([
            Conv2D(3, 8, 3, stride=2, padding=1, bias=False, rng=1), BatchNorm2D(8), ReLU(),
            Conv2D(8, 8, 3, dilation=2, padding=2, rng=2), ReLU(), AvgPool2D(2),
            MaxPool2D(3, stride=1, padding=1), Flatten(), Dense(8 * 4 * 4, 16, rng=3),
            BatchNorm1D(16), ReLU(), Dropout(0.3, rng=4), Dense(16, 5, rng=5)],
            input_shape=(3, 16, 16))
    cpu, gpu = make(), make().to("gpu")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    for m, xx, yy in ((cpu, x, y), (gpu, cupy.asarray(x), cupy.asarray(y))):
        # SGD, not Adam: the dense bias before BatchNorm1D has a true gradient of 0, and Adam
        # would turn its round-off (different on the two devices) into full-size steps
        opt = numcnn.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        loss = numcnn.losses.CrossEntropy()
        for _ in range(2):                       # the same dropout masks: drawn on the host
            loss.forward(m.forward(xx), yy)
            m.backward(loss.backward())
            opt.step()
            opt.zero_grad()
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.value), pc.value, rtol=1e-3, atol=1e-5)
    for (k, bc), bg in zip(cpu.buffers().items(), gpu.buffers().values()):
        np.testing.assert_allclose(cupy.asnumpy(bg), bc, rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-6)


def _layer_cases():
    from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout,
                               Flatten, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Tanh)
    return {
        "conv stride 2 pad 1 no bias": (lambda: Conv2D(3, 8, 3, stride=2, padding=1, bias=False, rng=1), (6, 3, 16, 16)),
        "conv dilation 2": (lambda: Conv2D(8, 8, 3, dilation=2, padding=2, rng=2), (6, 8, 8, 8)),
        "conv 5x5 6->16": (lambda: Conv2D(6, 16, 5, rng=3), (6, 6, 14, 14)),
        "conv 3x3 16->16 pad 1": (lambda: Conv2D(16, 16, 3, padding=1, rng=4), (6, 16, 8, 8)),
        "batch norm 2d": (lambda: BatchNorm2D(8), (6, 8, 8, 8)),
        "batch norm 1d": (lambda: BatchNorm1D(16), (6, 16)),
        "avg pool 2": (lambda: AvgPool2D(2), (6, 8, 8, 8)),
        "avg pool 3 stride 2 pad 1": (lambda: AvgPool2D(3, stride=2, padding=1), (6, 8, 9, 9)),
        "max pool 2": (lambda: MaxPool2D(2), (6, 8, 8, 8)),
        "max pool 3 stride 1 pad 1": (lambda: MaxPool2D(3, stride=1, padding=1), (6, 8, 4, 4)),
        "max pool 3 stride 2": (lambda: MaxPool2D(3, stride=2), (6, 8, 9, 9)),
        "dropout": (lambda: Dropout(0.3, rng=4), (6, 16)),
        "dense": (lambda: Dense(16, 5, rng=5), (6, 16)),
        "flatten": (lambda: Flatten(), (6, 8, 2, 2)),
        "relu": (lambda: ReLU(), (6, 8, 4, 4)),
        "leaky relu": (lambda: LeakyReLU(0.1), (6, 8, 4, 4)),
        "sigmoid": (lambda: Sigmoid(), (6, 16)),
        "tanh": (lambda: Tanh(), (6, 16)),
        **_modern_layer_cases(),
    }


def _modern_layer_cases():
    from numcnn.layers import (ELU, GELU, AvgPool2D, Conv2D, ConvTranspose2D, Flatten,
                               GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D, SiLU, Upsample)
    return {
        "conv groups 2 same": (lambda: Conv2D(8, 8, 3, padding="same", groups=2, rng=6), (6, 8, 8, 8)),
        "conv depthwise stride 2 asym": (lambda: Conv2D(8, 8, 3, stride=2, groups=8,
                                                        padding=((0, 1), (1, 0)), rng=7), (6, 8, 9, 9)),
        "conv grouped no bias dilated": (lambda: Conv2D(6, 9, (3, 2), dilation=2, groups=3,
                                                        bias=False, rng=8), (6, 6, 9, 8)),
        "conv transpose stride 2": (lambda: ConvTranspose2D(8, 4, 3, stride=2, padding=1,
                                                           output_padding=1, rng=9), (6, 8, 5, 5)),
        "conv transpose grouped": (lambda: ConvTranspose2D(6, 4, 2, groups=2, dilation=2,
                                                          rng=10), (6, 6, 4, 4)),
        "max pool ceil dilation": (lambda: MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True), (6, 8, 9, 9)),
        "avg pool ceil exclude pad": (lambda: AvgPool2D(3, 2, 1, ceil_mode=True,
                                                        count_include_pad=False), (6, 8, 8, 8)),
        "global avg pool": (lambda: GlobalAvgPool2D(), (6, 8, 5, 3)),
        "global max pool": (lambda: GlobalMaxPool2D(), (6, 8, 5, 3)),
        "upsample (2, 3)": (lambda: Upsample((2, 3)), (6, 8, 4, 4)),
        "upsample bilinear": (lambda: Upsample(2, "bilinear"), (6, 8, 4, 5)),
        "elu": (lambda: ELU(0.7), (6, 8, 4, 4)),
        "gelu": (lambda: GELU(), (6, 8, 4, 4)),
        "gelu tanh": (lambda: GELU("tanh"), (6, 16)),
        "silu": (lambda: SiLU(), (6, 8, 4, 4)),
        "flatten start_dim 2": (lambda: Flatten(2), (6, 8, 4, 4)),
    }


@pytest.mark.parametrize("options", [dict(), dict(weight=[1.0, 2.0, 0.5, 1.0, 3.0]),
                                     dict(ignore_index=1, label_smoothing=0.1),
                                     dict(reduction="sum"), dict(reduction="none")])
def test_cross_entropy_options_on_cupy_match_numpy(options):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((7, 5)).astype(np.float32)
    y = rng.integers(0, 5, 7)
    lc, lg = numcnn.losses.CrossEntropy(**options), numcnn.losses.CrossEntropy(**options)
    vc, vg = lc.forward(z, y), lg.forward(cupy.asarray(z), cupy.asarray(y))
    if options.get("reduction") == "none":
        np.testing.assert_allclose(cupy.asnumpy(vg), vc, rtol=1e-5, atol=1e-6)
        gc, gg = lc.backward(np.ones(7, np.float32)), lg.backward(cupy.ones(7, dtype=cupy.float32))
    else:
        assert abs(vc - vg) < 1e-5
        gc, gg = lc.backward(), lg.backward()
    assert isinstance(gg, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gg), gc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(_layer_cases()))
@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
def test_each_layer_on_cupy_matches_numpy(case, layout):
    """Forward (training), input and parameter gradients and buffers, layer by layer, in both
    layouts: where a whole network disagrees, this names the layer."""
    make, shape = _layer_cases()[case]
    cpu, gpu = make(), make().to(cupy)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    lay = layout if len(shape) == 4 else "NCHW"
    xin = x.transpose(1, 0, 2, 3).copy() if lay == "CNHW" else x
    yc = cpu.forward(xin, training=True, layout=lay)
    yg = gpu.forward(cupy.asarray(xin), training=True, layout=lay)
    np.testing.assert_allclose(cupy.asnumpy(yg), yc, rtol=1e-4, atol=1e-5, err_msg="forward")
    g = rng.standard_normal(yc.shape).astype(np.float32)
    dc, dg = cpu.backward(g), gpu.backward(cupy.asarray(g))
    if dc is not None:
        np.testing.assert_allclose(cupy.asnumpy(dg), dc, rtol=1e-4, atol=1e-5, err_msg="dL/dx")
    for (name, pc), pg in zip(cpu.named_parameters().items(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.grad), pc.grad, rtol=1e-4, atol=1e-5, err_msg=name)
    for (name, bc), bg in zip(cpu.buffers().items(), gpu.buffers().values()):
        np.testing.assert_allclose(cupy.asnumpy(bg), bc, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("make", [
    lambda ps: numcnn.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda ps: numcnn.optim.Adam(ps, lr=0.01, weight_decay=1e-2),
    lambda ps: numcnn.optim.AdamW(ps, lr=0.01)], ids=["sgd-nesterov", "adam", "adamw"])
def test_optimizers_on_cupy_match_numpy(make):
    from numcnn.layers import Parameter
    rng = np.random.default_rng(3)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3,))]
    cpu = [Parameter(v.copy()) for v in values]
    gpu = [Parameter(cupy.asarray(v)) for v in values]
    oc, og = make(cpu), make(gpu)
    for step in range(3):
        grads = [rng.standard_normal(v.shape).astype(np.float32) for v in values]
        for pc, pg, g in zip(cpu, gpu, grads):
            pc.grad, pg.grad = g.copy(), cupy.asarray(g)
        oc.step()
        og.step()
    for pc, pg in zip(cpu, gpu):
        np.testing.assert_allclose(cupy.asnumpy(pg.value), pc.value, rtol=1e-5, atol=1e-6)


# -- graph models: Residual, Concat, Identity, ChannelPadShortcut ---------------------------------
def _graph_cases():
    from numcnn.layers import (BatchNorm2D, ChannelPadShortcut, Concat, Conv2D, Dropout, Identity,
                               MaxPool2D, ReLU, Residual)
    return {
        "residual identity": (lambda: Residual([Conv2D(8, 8, 3, padding=1, bias=False, rng=1),
                                                BatchNorm2D(8), ReLU(),
                                                Conv2D(8, 8, 3, padding=1, rng=2)]), (6, 8, 8, 8)),
        "residual conv shortcut": (lambda: Residual(
            [Conv2D(8, 16, 3, stride=2, padding=1, rng=1), BatchNorm2D(16)],
            [Conv2D(8, 16, 1, stride=2, bias=False, rng=2), BatchNorm2D(16)]), (6, 8, 9, 9)),
        "residual option A": (lambda: Residual(Conv2D(8, 16, 3, stride=2, padding=1, rng=1),
                                               ChannelPadShortcut(8, 16)), (6, 8, 9, 9)),
        "concat nested": (lambda: Concat([
            Identity(), [Conv2D(8, 4, 1, rng=1), ReLU(), Conv2D(4, 4, 3, padding=1, rng=2)],
            [MaxPool2D(3, stride=1, padding=1), Dropout(0.3, rng=3)],
            Residual([Conv2D(8, 8, 3, padding=1, rng=4), ReLU()])]), (6, 8, 8, 8)),
    }


@pytest.mark.parametrize("case", list(_graph_cases()))
@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
def test_each_graph_block_on_cupy_matches_numpy(case, layout):
    make, shape = _graph_cases()[case]
    cpu, gpu = make(), make().to(cupy)
    assert all(isinstance(p.value, cupy.ndarray) for p in gpu.parameters())
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    xin = x.transpose(1, 0, 2, 3).copy() if layout == "CNHW" else x
    yc = cpu.forward(xin, training=True, layout=layout)
    yg = gpu.forward(cupy.asarray(xin), training=True, layout=layout)
    assert isinstance(yg, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(yg), yc, rtol=1e-4, atol=1e-5, err_msg="forward")
    g = rng.standard_normal(yc.shape).astype(np.float32)
    dc, dg = cpu.backward(g), gpu.backward(cupy.asarray(g))
    np.testing.assert_allclose(cupy.asnumpy(dg), dc, rtol=1e-4, atol=1e-5, err_msg="dL/dx")
    for (name, pc), pg in zip(cpu.named_parameters().items(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.grad), pc.grad, rtol=1e-4, atol=1e-5, err_msg=name)
    for (name, bc), bg in zip(cpu.buffers().items(), gpu.buffers().values()):
        assert isinstance(bg, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(bg), bc, rtol=1e-5, atol=1e-6, err_msg=name)


def test_resnet_digits_on_cupy_trains_like_numpy_and_round_trips(tmp_path):
    cpu, gpu = numcnn.models.resnet_digits(rng=2), numcnn.models.resnet_digits(rng=2).to("gpu")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    for m, xx, yy in ((cpu, x, y), (gpu, cupy.asarray(x), cupy.asarray(y))):
        opt = numcnn.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        loss = numcnn.losses.CrossEntropy()
        for _ in range(2):
            loss.forward(m.forward(xx), yy)
            m.backward(loss.backward())
            opt.step()
            opt.zero_grad()
    for (k, pc), pg in zip(cpu.named_parameters().items(), gpu.parameters()):
        np.testing.assert_allclose(cupy.asnumpy(pg.value), pc.value, rtol=1e-3, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-6)
    gpu.save(tmp_path / "r.safetensors")
    numcnn.use("cupy")
    try:
        back = numcnn.load(tmp_path / "r.safetensors")
        block = numcnn.layers.Residual([numcnn.layers.BatchNorm2D(2)])
    finally:
        numcnn.use("numpy")
    assert all(isinstance(p.value, cupy.ndarray) for p in back.parameters())
    assert all(isinstance(b, cupy.ndarray) for b in block.buffers().values())
    np.testing.assert_array_equal(back.predict(x), gpu.predict(x))
    assert all(type(p.value) is np.ndarray for p in back.to("cpu").parameters())


def test_onnx_export_import_and_state_dict_on_cupy(tmp_path):
    """A model on the GPU exports (weights fetched to the host), imports back onto the GPU under
    numcnn.use("cupy"), and its state_dict (NumPy) loads into another GPU model."""
    ort = pytest.importorskip("onnxruntime")
    gpu = numcnn.models.resnet_digits().to("gpu").eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    ref = cupy.asnumpy(gpu.forward(cupy.asarray(x)))
    path = gpu.to_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, rtol=1e-4, atol=1e-5)
    numcnn.use("cupy")
    try:
        back = numcnn.from_onnx(path)
    finally:
        numcnn.use("numpy")
    assert isinstance(back.parameters()[0].value, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(back.forward(cupy.asarray(x))), ref, rtol=1e-5, atol=1e-6)
    sd = gpu.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    other = numcnn.models.resnet_digits(rng=5).to("gpu").eval()
    other.load_state_dict(sd)
    assert isinstance(other.layers[1].running_var, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(other.forward(cupy.asarray(x))), ref, rtol=1e-5, atol=1e-6)
