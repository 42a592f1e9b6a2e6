"""Stateful layers: each owns its parameters, validates its input and caches for backward."""
from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .base import REGISTRY, Layer, Parameter, layer_from_config, layer_to_config
from .container import ChannelPadShortcut, Concat, Identity, Residual
from .conv import Conv2D
from .conv_transpose import ConvTranspose2D
from .dropout import Dropout
from .linear import Dense, Flatten
from .norm import BatchNorm1D, BatchNorm2D
from .pool import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D
from .upsample import Upsample

__all__ = ["Layer", "Parameter", "Conv2D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D",
           "GlobalAvgPool2D", "GlobalMaxPool2D", "Upsample", "ReLU", "LeakyReLU", "ELU", "GELU",
           "SiLU", "Sigmoid", "Tanh", "Softmax", "Flatten", "Dense", "Dropout", "BatchNorm1D",
           "BatchNorm2D", "Residual", "Concat", "Identity", "ChannelPadShortcut",
           "layer_from_config", "layer_to_config", "REGISTRY"]
