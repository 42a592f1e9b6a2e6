"""Ready-made architectures (presets), each a plain :class:`numcnn.Sequential`."""
from __future__ import annotations

import math
import numbers

from .errors import ConfigError
from .init import as_generator
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, ChannelPadShortcut, Conv2D, Dense,
                     Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual)
from .model import Sequential


def _flat_features(layers, input_shape):
    """Values per image after ``layers`` (the ``in_features`` of the Dense layer after Flatten),
    or 0 when the image is too small for them."""
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
        if min(shape) < 1:
            return 0
    return math.prod(shape)


def _check_sizes(name, in_channels, num_classes, image_size, smallest):
    """The preset's arguments: positive ints, and images big enough for its pooling layers."""
    for arg, value, least in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1),
                              ("image_size", image_size, smallest)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            what = f"an int >= {smallest} (its pooling layers need images of at least " \
                f"{smallest}x{smallest})" if arg == "image_size" else "an int >= 1"
            raise ConfigError(f"{name}: {arg} must be {what}, got {value!r}")


def lenet5(in_channels=1, num_classes=10, image_size=28, rng=0, dtype="float32"):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28x28 (padded) or 32x32 input.

    conv5x5 6 - pool - conv5x5 16 - pool - dense 120 - dense 84 - dense classes.
    """
    _check_sizes("lenet5", in_channels, num_classes, image_size, 16)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)
    pad = 2 if image_size == 28 else 0
    features = [Conv2D(in_channels, 6, 5, padding=pad, rng=rng, dtype=dtype), ReLU(), MaxPool2D(2),
                Conv2D(6, 16, 5, rng=rng, dtype=dtype), ReLU(), MaxPool2D(2)]
    n = _flat_features(features, input_shape)
    return Sequential(features + [
        Flatten(),
        Dense(n, 120, rng=rng, dtype=dtype), ReLU(),
        Dense(120, 84, rng=rng, dtype=dtype), ReLU(),
        Dense(84, num_classes, rng=rng, dtype=dtype),
    ], input_shape=input_shape)


def mnist_small(in_channels=1, num_classes=10, image_size=28, rng=0, dtype="float32"):
    """A fast small CNN: conv3x3 16 - pool - conv3x3 32 - pool - dense 64 - dense classes."""
    _check_sizes("mnist-small", in_channels, num_classes, image_size, 4)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)
    features = [Conv2D(in_channels, 16, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2D(2),
                Conv2D(16, 32, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2D(2)]
    n = _flat_features(features, input_shape)
    return Sequential(features + [
        Flatten(),
        Dense(n, 64, rng=rng, dtype=dtype), ReLU(),
        Dense(64, num_classes, rng=rng, dtype=dtype),
    ], input_shape=input_shape)


def digits_cnn(in_channels=1, num_classes=10, image_size=8, rng=0, dtype="float32"):
    """A small CNN for 8x8 digits: conv3x3 16 - conv3x3 32 - pool - dense 64 - dense classes."""
    _check_sizes("digits-cnn", in_channels, num_classes, image_size, 2)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)
    features = [Conv2D(in_channels, 16, 3, padding=1, rng=rng, dtype=dtype), ReLU(),
                Conv2D(16, 32, 3, padding=1, rng=rng, dtype=dtype), ReLU(), MaxPool2D(2)]
    return Sequential(features + [
        Flatten(),
        Dense(_flat_features(features, input_shape), 64, rng=rng, dtype=dtype), ReLU(),
        Dense(64, num_classes, rng=rng, dtype=dtype),
    ], input_shape=input_shape)


def cifar_vgg(in_channels=3, num_classes=10, image_size=32, rng=0, dtype="float32"):
    """A small VGG-style net with batch norm for 32x32 RGB:
    [conv3x3 32, BN, ReLU] x2 - pool - [conv3x3 64, BN, ReLU] x2 - pool - dense 256 - dropout - dense.
    """
    _check_sizes("cifar-vgg", in_channels, num_classes, image_size, 4)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)

    def block(cin, cout):
        return [Conv2D(cin, cout, 3, padding=1, bias=False, rng=rng, dtype=dtype),
                BatchNorm2D(cout, dtype=dtype), ReLU()]

    features = (block(in_channels, 32) + block(32, 32) + [MaxPool2D(2)] +
                block(32, 64) + block(64, 64) + [MaxPool2D(2)])
    return Sequential(features + [
        Flatten(),
        Dense(_flat_features(features, input_shape), 256, rng=rng, dtype=dtype),
        BatchNorm1D(256, dtype=dtype), ReLU(),
        Dropout(0.3, rng=rng), Dense(256, num_classes, rng=rng, dtype=dtype),
    ], input_shape=input_shape)


def basic_block(in_channels, out_channels, stride=1, shortcut="A", rng=0, dtype="float32"):
    """He et al. 2016's basic block, then its ReLU: ``[Residual(body, shortcut), ReLU()]``.

    body: conv3x3 (stride) - BN - ReLU - conv3x3 - BN (convolutions without bias: BN's beta
    is the bias).  Where the block keeps its size the shortcut is the identity; where it
    changes (stride or channels) it is option ``"A"``, :class:`~numcnn.layers.ChannelPadShortcut`
    (parameter-free, the paper's CIFAR choice), or ``"B"``, conv1x1 (stride) - BN.
    """
    rng = as_generator(rng)
    body = [Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, rng=rng,
                   dtype=dtype),
            BatchNorm2D(out_channels, dtype=dtype), ReLU(),
            Conv2D(out_channels, out_channels, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2D(out_channels, dtype=dtype)]
    if stride == 1 and in_channels == out_channels:
        short = None
    elif shortcut == "A":
        short = ChannelPadShortcut(in_channels, out_channels, stride)
    elif shortcut == "B":
        short = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, rng=rng,
                        dtype=dtype), BatchNorm2D(out_channels, dtype=dtype)]
    else:
        raise ConfigError(f"basic_block: shortcut must be 'A' (zero-padded identity) or 'B' "
                          f"(1x1 convolution), got {shortcut!r}")
    return [Residual(body, short), ReLU()]


def _cifar_resnet(name, blocks, widths, in_channels, num_classes, image_size, rng, dtype,
                  shortcut):
    """conv3x3 - stages of basic blocks (the first of each later stage halves the image and
    doubles the channels) - global average pool - dense classes."""
    _check_sizes(name, in_channels, num_classes, image_size, 1)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)
    layers = [Conv2D(in_channels, widths[0], 3, padding=1, bias=False, rng=rng, dtype=dtype),
              BatchNorm2D(widths[0], dtype=dtype), ReLU()]
    cin, size = widths[0], image_size
    for stage, width in enumerate(widths):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            layers += basic_block(cin, width, stride, shortcut, rng, dtype)
            size = -(-size // stride)
            cin = width
    # the global average pool: one window over the whole final map
    layers += [AvgPool2D(size), Flatten(), Dense(cin, num_classes, rng=rng, dtype=dtype)]
    return Sequential(layers, input_shape=input_shape)


def resnet20(in_channels=3, num_classes=10, image_size=32, rng=0, dtype="float32", shortcut="A"):
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): conv3x3 16, then 3 stages of 3
    basic blocks with 16, 32 and 64 channels (32x32, 16x16, 8x8 maps), global average pool,
    dense classes.  With the paper's shortcut option A (zero-padded identity) it has 269,722
    parameters for 3x32x32 input and 10 classes: the paper's "0.27M".  ``shortcut="B"``
    (1x1 conv + BN where the size changes, see :func:`basic_block`) has 2,752 more: 272,474.
    """
    return _cifar_resnet("resnet20", 3, (16, 32, 64), in_channels, num_classes, image_size, rng,
                         dtype, shortcut)


def resnet_digits(in_channels=1, num_classes=10, image_size=28, rng=0, dtype="float32"):
    """A small, cheap residual net for 28x28 grey digits, about LeNet-5's cost per image:
    conv3x3 8 - BN - ReLU - pool - basic block 8 - basic block 16 (stride 2, shortcut option
    A) - dense classes on the 16x7x7 maps (12,642 parameters, 0.98 MFLOPs per image against
    LeNet-5's 61,706 and 0.85 MFLOPs)."""
    _check_sizes("resnet-digits", in_channels, num_classes, image_size, 2)
    rng = as_generator(rng)
    input_shape = (in_channels, image_size, image_size)
    features = [Conv2D(in_channels, 8, 3, padding=1, bias=False, rng=rng, dtype=dtype),
                BatchNorm2D(8, dtype=dtype), ReLU(), MaxPool2D(2)]
    features += basic_block(8, 8, 1, "A", rng, dtype) + basic_block(8, 16, 2, "A", rng, dtype)
    return Sequential(features + [
        Flatten(), Dense(_flat_features(features, input_shape), num_classes, rng=rng, dtype=dtype),
    ], input_shape=input_shape)


def separable_block(in_channels, out_channels, stride=1, rng=0, dtype="float32"):
    """MobileNet's depthwise-separable block (Howard et al. 2017): a depthwise conv3x3 (one
    filter per channel: ``groups=in_channels``) - BN - ReLU, then a pointwise conv1x1 that mixes
    the channels - BN - ReLU.  It costs ``C*9 + C*O`` weights where a full conv3x3 costs
    ``C*O*9``."""
    rng = as_generator(rng)
    return [Conv2D(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels,
                   bias=False, rng=rng, dtype=dtype),
            BatchNorm2D(in_channels, dtype=dtype), ReLU(),
            Conv2D(in_channels, out_channels, 1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2D(out_channels, dtype=dtype), ReLU()]


def mobilenet(in_channels=3, num_classes=10, image_size=32, rng=0, dtype="float32"):
    """A small MobileNet-style net: conv3x3 16 (stride 2) - BN - ReLU, then depthwise-separable
    blocks 16->32, 32->64 (stride 2), 64->64, 64->128 (stride 2), global average pool, dense
    classes.  For 3x32x32 and 10 classes: 19,114 parameters, of which the separable blocks'
    convolutions hold 16,432 (full 3x3 convolutions of the same widths would hold 133,632)."""
    _check_sizes("mobilenet", in_channels, num_classes, image_size, 1)
    rng = as_generator(rng)
    layers = [Conv2D(in_channels, 16, 3, stride=2, padding=1, bias=False, rng=rng, dtype=dtype),
              BatchNorm2D(16, dtype=dtype), ReLU()]
    for cin, cout, stride in ((16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)):
        layers += separable_block(cin, cout, stride, rng, dtype)
    layers += [GlobalAvgPool2D(), Dense(128, num_classes, rng=rng, dtype=dtype)]
    return Sequential(layers, input_shape=(in_channels, image_size, image_size))


PRESETS = {"lenet5": lenet5, "mnist-small": mnist_small, "digits-cnn": digits_cnn, "cifar-vgg": cifar_vgg,
           "resnet20": resnet20, "resnet-digits": resnet_digits, "mobilenet": mobilenet}


def build(name, in_channels=1, num_classes=10, image_size=28, rng=0):
    """Build preset ``name`` for the given input."""
    fn = PRESETS.get(name)
    if fn is None:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)} "
                          "or give a .json/.toml architecture file")
    return fn(in_channels=in_channels, num_classes=num_classes, image_size=image_size, rng=rng)
