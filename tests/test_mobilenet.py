"""The MobileNet-style preset: depthwise-separable blocks, against the same net in PyTorch."""
from __future__ import annotations

import numpy as np
import torch

import numcnn
from numcnn.layers import BatchNorm2D, Conv2D, Dense, GlobalAvgPool2D, ReLU


def _torch_twin(model):
    """The same layers in torch.nn, with numcnn's weights and batch-norm statistics copied."""
    mods = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                stride=layer.stride, padding=layer.pads[0][0],
                                groups=layer.groups, bias=layer.bias is not None)
            m.weight.data = torch.from_numpy(layer.weight.value.astype(np.float64))
        elif isinstance(layer, BatchNorm2D):
            m = torch.nn.BatchNorm2d(layer.num_features)
            m.weight.data = torch.from_numpy(layer.weight.value.astype(np.float64))
            m.bias.data = torch.from_numpy(layer.bias.value.astype(np.float64))
            m.running_mean = torch.from_numpy(layer.running_mean.astype(np.float64))
            m.running_var = torch.from_numpy(layer.running_var.astype(np.float64))
        elif isinstance(layer, ReLU):
            m = torch.nn.ReLU()
        elif isinstance(layer, GlobalAvgPool2D):
            m = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        elif isinstance(layer, Dense):
            m = torch.nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(layer.weight.value.astype(np.float64))
            m.bias.data = torch.from_numpy(layer.bias.value.astype(np.float64))
        else:
            raise AssertionError(f"unexpected layer {layer!r}")
        mods.append(m)
    return torch.nn.Sequential(*mods).double().eval()


def test_mobilenet_parameter_count_is_the_hand_sum():
    model = numcnn.models.mobilenet()
    stem = 3 * 16 * 9 + 2 * 16
    blocks = sum(c * 9 + 2 * c + c * o + 2 * o for c, o in ((16, 32), (32, 64), (64, 64), (64, 128)))
    head = 128 * 10 + 10
    assert sum(p.value.size for p in model.parameters()) == stem + blocks + head == 19_114
    assert "19,114 parameters" in model.summary()


def test_mobilenet_matches_pytorch_in_eval_mode_with_trained_statistics():
    rng = np.random.default_rng(3)
    model = numcnn.models.mobilenet(rng=1).astype("float64")
    for layer in model.layers:                    # non-trivial running statistics
        if isinstance(layer, BatchNorm2D):
            n = layer.num_features
            layer.set_buffer("running_mean", rng.normal(0, 0.3, n))
            layer.set_buffer("running_var", rng.uniform(0.5, 2.0, n))
    x = rng.normal(size=(4, 3, 32, 32))
    ours = model.eval().forward(x)
    theirs = _torch_twin(model)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_mobilenet_learns_digits():
    (xtr, ytr), (xte, yte) = numcnn.datasets.load("digits")
    model = numcnn.models.build("mobilenet", in_channels=1, num_classes=10, image_size=8)
    model.fit((xtr, ytr), epochs=6, batch_size=32, optimizer="adam", lr=3e-3, progress=False)
    assert model.evaluate(xte, yte)["accuracy"] > 0.85
