"""The benchmark's networks, data and per-framework step functions (same weights everywhere).

* LeNet-5 on 1x28x28 (``numcnn.models.lenet5()``) and a CIFAR-style net on 3x32x32 (conv3x3 32 -
  conv3x3 32 - pool - conv3x3 64 - conv3x3 64 - pool - dense 256 - dense 10, ReLU after each
  conv/hidden dense, padding 1), built with ``numcnn.Sequential``.
* ResNet-20 (He et al. 2016, CIFAR) on 3x32x32 when ``numcnn.models`` has the ``resnet20``
  preset; PyTorch gets :func:`torch_resnet20`, written here, with numcnn's weights copied in
  parameter order.
* PyTorch and convnet get copies of numcnn's arrays (:func:`to_torch`, the convnet adapter), so
  every framework runs the same weights on the same data (:func:`make_data`).
"""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LR, MOMENTUM = 0.01, 0.9
NETS = {"lenet5": "LeNet-5, 1x28x28", "cifar": "CIFAR net, 3x32x32"}
RESNET = {"resnet20": "ResNet-20, 3x32x32"}


def has_resnet20():
    """Whether numcnn has the ``resnet20`` preset (another issue adds it): then it is benchmarked."""
    import numcnn
    return "resnet20" in getattr(numcnn.models, "PRESETS", {}) or hasattr(numcnn.models, "resnet20")


def available_nets():
    """{name: description} of the networks this numcnn can build."""
    return {**NETS, **(RESNET if has_resnet20() else {})}


def build_net(name):
    """``(numcnn model, input shape)``; the weights depend on nothing but the code (seed 0)."""
    import numcnn
    from numcnn.init import as_generator
    from numcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    if name == "lenet5":
        return numcnn.models.lenet5(), (1, 28, 28)
    if name == "cifar":
        rng = as_generator(0)
        return numcnn.Sequential([
            Conv2D(3, 32, 3, padding=1, rng=rng), ReLU(),
            Conv2D(32, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
            Conv2D(32, 64, 3, padding=1, rng=rng), ReLU(),
            Conv2D(64, 64, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
            Flatten(), Dense(64 * 8 * 8, 256, rng=rng), ReLU(), Dense(256, 10, rng=rng),
        ], input_shape=(3, 32, 32)), (3, 32, 32)
    if name == "resnet20" and has_resnet20():
        return numcnn.models.build("resnet20", in_channels=3, num_classes=10, image_size=32,
                                   rng=0), (3, 32, 32)
    raise SystemExit(f"unknown network {name!r}; choose from {', '.join(available_nets())}")


def forward_flops(model, input_shape):
    """Forward FLOPs of one image: the sum of every layer's flops() (multiply and add); None
    when a layer cannot say."""
    try:
        total, shape = 0, tuple(input_shape)
        for layer, out_shape in model.shapes(input_shape):
            total += layer.flops(shape)
            shape = out_shape
        return total
    except Exception:            # a layer type without flops()/output_shape()
        return None


def make_data(input_shape, batch, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((batch,) + tuple(input_shape), dtype=np.float32), rng.integers(0, 10, batch)


def numcnn_train_step(model, x, y, after=lambda: None):
    """A callable: one numcnn training step on ``(x, y)`` (cross-entropy, SGD with momentum, as
    every benchmark here), then ``after()`` (e.g. a GPU synchronisation)."""
    import numcnn
    loss = numcnn.losses.CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step():
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
        after()
    return step


# -- PyTorch copies ------------------------------------------------------------------------------
def to_torch(model):
    """An nn.Sequential with the same layers and a copy of numcnn's weights (a ResNet-20 preset:
    :func:`torch_resnet20` with the weights copied in parameter order)."""
    import torch
    from torch import nn

    from numcnn import layers as L
    simple = (L.Conv2D, L.Dense, L.ReLU, L.MaxPool2D, L.Flatten)
    if not all(isinstance(layer, simple) for layer in model.layers):
        return copy_into(torch_resnet20(model), model)
    mods = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, bias=layer.bias is not None)
        elif isinstance(layer, L.Dense):
            m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif isinstance(layer, L.ReLU):
            m = nn.ReLU()
        elif isinstance(layer, L.MaxPool2D):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        else:
            m = nn.Flatten()
        if isinstance(layer, (L.Conv2D, L.Dense)):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.weight.value))
                if layer.bias is not None:
                    m.bias.copy_(torch.from_numpy(layer.bias.value))
        mods.append(m)
    return nn.Sequential(*mods)


def torch_resnet20(model=None, num_classes=10):
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2): conv3x3 16 - BN - ReLU, three stages
    of 3 basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 has stride 2),
    global average pooling, dense.  A basic block: conv3x3 - BN - ReLU - conv3x3 - BN, plus the
    shortcut, then ReLU.  The shortcut of a block that changes the shape is a 1x1 convolution
    with BN (option B) when numcnn's model has such parameters, else option A (subsample and
    zero-pad the channels, no parameters)."""
    import torch
    from torch import nn

    option_b = model is not None and any(
        tuple(p.shape[2:]) == (1, 1) for p in model.parameters() if len(p.shape) == 4)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.change = stride != 1 or cin != cout
            self.pad = cout - cin
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout)) if self.change and option_b else None

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.shortcut is not None:
                short = self.shortcut(x)
            elif self.change:
                # numcnn's ChannelPadShortcut: every 2nd pixel, zero channels after the input's
                short = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.pad))
            else:
                short = x
            return torch.relu(out + short)        # the fork: both paths' gradients add

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def copy_into(tmodel, model):
    """Copy numcnn's parameters and buffers into ``tmodel`` in order; the shapes must match
    one for one (RuntimeError otherwise: the PyTorch equivalent is not the same network)."""
    import torch
    theirs = list(tmodel.parameters())
    mine = model.parameters()
    shapes = [tuple(p.shape) for p in mine], [tuple(p.shape) for p in theirs]
    if shapes[0] != shapes[1]:
        raise RuntimeError(f"the PyTorch equivalent has parameters {shapes[1][:6]}... but numcnn's "
                           f"model {shapes[0][:6]}...: not the same network")
    with torch.no_grad():
        for t, p in zip(theirs, mine):
            t.copy_(torch.from_numpy(np.ascontiguousarray(p.value)))
        bufs = [b for n, b in tmodel.named_buffers() if not n.endswith("num_batches_tracked")]
        mine_b = list(model.buffers().values())
        if len(bufs) == len(mine_b):
            for t, b in zip(bufs, mine_b):
                t.copy_(torch.from_numpy(np.ascontiguousarray(b)))
    return tmodel


def load_convnet():
    """The convnet adapter module, or None (never raises: the benchmark runs without convnet)."""
    try:
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
        import _convnet_adapter as cv
    except Exception:
        return None
    return cv


class Runner:
    """One framework's copy of one network: ``fn(prepare(x, y), mode)`` is a callable that runs
    one training step (``mode="train"``) or one inference pass (``"infer"``) on that batch."""

    def __init__(self, fw, net):
        self.fw, self.net = fw, net
        model, self.input_shape = build_net(net)
        if fw == "numcnn":
            import numcnn
            self.model = model
            self.loss = numcnn.losses.CrossEntropy()
            self.opt = numcnn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        elif fw == "torch":
            import torch
            self.model = to_torch(model)
            self.loss = torch.nn.CrossEntropyLoss()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        elif fw == "convnet":
            cv = load_convnet()
            if cv is None or not cv.available():
                raise RuntimeError("convnet is not installed")
            self.cv = cv
            self.model = cv.build(model, self.input_shape)   # may raise cv.NotExpressible
        else:
            raise SystemExit(f"unknown framework {fw!r}")

    def prepare(self, x, y):
        """The framework's natural input: NCHW arrays, torch tensors, NHWC for convnet."""
        if self.fw == "torch":
            import torch
            return torch.from_numpy(x), torch.from_numpy(y)
        if self.fw == "convnet":
            return self.cv.to_nhwc(x), y
        return x, y

    def fn(self, data, mode):
        x, y = data
        if self.fw == "numcnn":
            m, loss, opt = self.model, self.loss, self.opt
            if mode == "infer":
                return lambda: m.forward(x, training=False)

            def train():
                loss.forward(m.forward(x, training=True), y)
                m.backward(loss.backward())
                opt.step()
                opt.zero_grad()
            return train
        if self.fw == "torch":
            import torch
            m, loss, opt = self.model, self.loss, self.opt
            if mode == "infer":
                def infer():
                    m.eval()
                    with torch.inference_mode():
                        return m(x)
                return infer

            def train():
                m.train()
                opt.zero_grad()
                loss(m(x), y).backward()
                opt.step()
            return train
        cv, m = self.cv, self.model
        if mode == "infer":
            return lambda: cv.infer(m, x)
        return lambda: cv.train_step(m, x, y)

    def logits(self, x):
        if self.fw == "numcnn":
            return self.model.forward(x, training=False)
        if self.fw == "torch":
            import torch
            self.model.eval()
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).numpy()
        return np.asarray(self.cv.infer(self.model, self.cv.to_nhwc(x)))
