"""Misuse raises a numcnn error that says what went wrong, never a raw NumPy error.

Every error numcnn raises on purpose is a ``NumcnnError`` (a ``ValueError`` subclass); messages
name the layer (its repr, e.g. ``Conv2D(3, 4, kernel_size=3)``) and the shapes involved.
"""
from __future__ import annotations

import numpy as np
import pytest

import numcnn
from numcnn.errors import (ConfigError, DTypeError, NonFiniteError, NumcnnError, ShapeError,
                           StateError)
from numcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                           LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh, layer_from_config)
from numcnn.losses import CrossEntropy


def raises(exc_type, fn, *substrings):
    """``fn()`` raises ``exc_type`` (a NumcnnError and ValueError) whose message contains every
    substring; returns the message."""
    with pytest.raises(exc_type) as info:
        fn()
    err = info.value
    assert isinstance(err, NumcnnError) and isinstance(err, ValueError)
    msg = str(err)
    for s in substrings:
        assert s in msg, f"{s!r} not in {msg!r}"
    return msg


def f32(*shape):
    return np.zeros(shape, dtype=np.float32)


def test_error_hierarchy_is_value_error_based():
    for cls in (ShapeError, DTypeError, NonFiniteError, ConfigError, StateError):
        assert issubclass(cls, NumcnnError) and issubclass(cls, ValueError)
    assert numcnn.NumcnnError is NumcnnError


# -- wrong ranks and shapes -----------------------------------------------------------------------
def test_conv2d_given_3d_input_raises_shape_error_naming_layer_and_shape():
    raises(ShapeError, lambda: Conv2D(3, 4, 3).forward(f32(3, 8, 8)),
           "Conv2D(3, 4, kernel_size=3)", "(3, 8, 8)", "(N, 3, H, W)")


def test_conv2d_given_wrong_channel_count_raises_shape_error():
    raises(ShapeError, lambda: Conv2D(3, 4, 3).forward(f32(2, 1, 8, 8)),
           "Conv2D(3, 4, kernel_size=3)", "(2, 1, 8, 8)", "3 channels")


def test_dense_given_wrong_in_features_raises_shape_error():
    raises(ShapeError, lambda: Dense(10, 5).forward(f32(4, 7)),
           "Dense(10, 5)", "(4, 7)", "(N, 10)")


def test_dense_given_4d_input_raises_shape_error():
    raises(ShapeError, lambda: Dense(10, 5).forward(f32(2, 10, 1, 1)), "Dense(10, 5)", "(2, 10, 1, 1)")


@pytest.mark.parametrize("layer,shape,name", [
    (MaxPool2D(2), (2, 3, 8), "MaxPool2D"),
    (AvgPool2D(2), (4, 8), "AvgPool2D"),
    (Softmax(), (2, 3, 4), "Softmax"),
    (Flatten(), (7,), "Flatten"),
    (ReLU(), (7,), "ReLU"),
    (BatchNorm1D(3), (2, 3, 4, 4), "BatchNorm1D"),
    (BatchNorm2D(3), (2, 3), "BatchNorm2D"),
])
def test_wrong_rank_raises_shape_error_for_every_layer(layer, shape, name):
    raises(ShapeError, lambda: layer.forward(f32(*shape)), name, str(shape))


def test_batchnorm2d_wrong_channels_raises_shape_error():
    raises(ShapeError, lambda: BatchNorm2D(3).forward(f32(2, 2, 3, 3)),
           "BatchNorm2D(3)", "(2, 2, 3, 3)")


def test_kernel_larger_than_padded_input_raises_shape_error():
    raises(ShapeError, lambda: Conv2D(1, 2, 5).forward(f32(1, 1, 3, 3)),
           "Conv2D(1, 2, kernel_size=5)", "(1, 1, 3, 3)", "larger than the padded input")
    # the dilated kernel counts: 3x3 with dilation 3 spans 7x7 > 4 + 2*1
    raises(ShapeError, lambda: Conv2D(1, 2, 3, padding=1, dilation=3).forward(f32(1, 1, 4, 4)),
           "Conv2D", "(1, 1, 4, 4)", "7x7", "6x6")
    raises(ShapeError, lambda: MaxPool2D(4).forward(f32(2, 3, 3, 3)),
           "MaxPool2D(kernel_size=4)", "(2, 3, 3, 3)")


def test_kernel_exactly_the_padded_input_size_is_fine():
    assert Conv2D(1, 2, 5, padding=1).forward(f32(1, 1, 3, 3)).shape == (1, 2, 1, 1)


def test_non_array_input_raises_shape_error():
    raises(ShapeError, lambda: ReLU().forward([[1.0, 2.0]]), "ReLU()", "list", "numpy.asarray")


def test_empty_batch_raises_shape_error():
    raises(ShapeError, lambda: Dense(3, 2).forward(f32(0, 3)), "Dense(3, 2)", "(0, 3)", "empty")


# -- non-finite input -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layer,shape,name", [
    (Conv2D(3, 4, 3), (2, 3, 8, 8), "Conv2D(3, 4, kernel_size=3)"),
    (Dense(5, 2), (3, 5), "Dense(5, 2)"),
    (ReLU(), (3, 5), "ReLU()"),
    (MaxPool2D(2), (1, 1, 4, 4), "MaxPool2D"),
    (BatchNorm1D(5), (3, 5), "BatchNorm1D(5)"),
])
def test_non_finite_input_to_a_layer_raises_non_finite_error(layer, shape, name, bad):
    x = f32(*shape)
    x.flat[x.size // 2] = bad
    raises(NonFiniteError, lambda: layer.forward(x), name, "NaN/inf", str(shape), "1 ")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_to_a_sequential_raises_at_the_first_layer(bad):
    model = numcnn.models.lenet5()
    x = f32(2, 1, 28, 28)
    x[1, 0, 3, 3] = bad
    raises(NonFiniteError, lambda: model.forward(x), "Conv2D(1, 6", "(2, 1, 28, 28)", "NaN/inf")


def test_non_finite_input_to_predict_raises():
    model = numcnn.models.lenet5()
    x = f32(1, 1, 28, 28)
    x[0, 0, 0, 0] = np.nan
    raises(NonFiniteError, lambda: model.predict(x), "NaN/inf")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_huge_but_finite_input_is_not_mistaken_for_inf():
    x = np.full((2, 4), 3e38, dtype=np.float32)       # the sum overflows; no entry is inf
    assert np.array_equal(ReLU().forward(x), x)


# -- dtypes ---------------------------------------------------------------------------------------
def test_float32_input_to_float64_layer_raises_dtype_error():
    layer = Conv2D(1, 2, 3).astype(np.float64)
    raises(DTypeError, lambda: layer.forward(f32(1, 1, 5, 5)),
           "Conv2D(1, 2, kernel_size=3)", "float32", "float64", "(1, 1, 5, 5)")


def test_float64_input_to_float32_model_raises_dtype_error():
    model = numcnn.models.lenet5()
    raises(DTypeError, lambda: model.forward(np.zeros((2, 1, 28, 28))),
           "Conv2D(1, 6", "float64", "float32", "(2, 1, 28, 28)")


def test_float64_input_to_float32_dense_raises_dtype_error():
    raises(DTypeError, lambda: Dense(3, 2).forward(np.zeros((2, 3))), "Dense(3, 2)", "(2, 3)")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16])
def test_integer_or_half_input_raises_dtype_error(dtype):
    x = np.zeros((1, 1, 5, 5), dtype=dtype)
    raises(DTypeError, lambda: Conv2D(1, 2, 3).forward(x), "Conv2D(1, 2, kernel_size=3)",
           str(np.dtype(dtype)), "(1, 1, 5, 5)")
    raises(DTypeError, lambda: ReLU().forward(x), "ReLU()", str(np.dtype(dtype)))


# -- wrong order ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [Conv2D(1, 2, 3), MaxPool2D(2), AvgPool2D(2), ReLU(), LeakyReLU(),
                                   Sigmoid(), Tanh(), Softmax(), Flatten(), Dense(3, 2),
                                   Dropout(0.5), BatchNorm1D(3), BatchNorm2D(2)],
                         ids=lambda l: type(l).__name__)
def test_backward_before_forward_raises_state_error(layer):
    raises(StateError, lambda: layer.backward(f32(2, 3)), type(layer).__name__, "before forward")


def test_backward_twice_for_one_forward_raises_state_error():
    layer = Dense(3, 2)
    y = layer.forward(f32(4, 3))
    layer.backward(np.ones_like(y))
    raises(StateError, lambda: layer.backward(np.ones_like(y)), "Dense(3, 2)")


def test_cross_entropy_backward_before_forward_raises_state_error():
    raises(StateError, lambda: CrossEntropy().backward(), "CrossEntropy", "before forward")


@pytest.mark.parametrize("layer,x_shape,g_shape", [
    (Dense(3, 2), (4, 3), (4, 5)),
    (Conv2D(1, 2, 3), (1, 1, 5, 5), (1, 2, 4, 4)),
], ids=["Dense", "Conv2D"])
def test_backward_with_wrong_gradient_shape_raises_shape_error(layer, x_shape, g_shape):
    layer.forward(f32(*x_shape))
    with pytest.raises(ShapeError):
        layer.backward(f32(*g_shape))


# -- CrossEntropy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("labels,low,high", [([0, 10], 0, 10), ([-1, 3], -1, 3), ([11, 12], 11, 12)])
def test_cross_entropy_labels_out_of_range_raise(labels, low, high):
    logits = np.zeros((2, 10), dtype=np.float32)
    raises(NumcnnError, lambda: CrossEntropy().forward(logits, np.array(labels)),
           "CrossEntropy", "[0, 9]", f"from {low} to {high}")


def test_cross_entropy_shape_and_type_errors():
    z = np.zeros((2, 3))
    raises(ShapeError, lambda: CrossEntropy().forward(z, [0]), "CrossEntropy", "(2,)", "(2, 3)", "(1,)")
    raises(ShapeError, lambda: CrossEntropy().forward(z[..., None], [0, 1]), "CrossEntropy", "(2, 3, 1)")
    raises(DTypeError, lambda: CrossEntropy().forward(z, [0.5, 1.0]), "integer class ids")
    raises(ShapeError, lambda: CrossEntropy().forward(z, [[0, 1]]), "CrossEntropy")


def test_cross_entropy_non_finite_logits_raise():
    z = np.zeros((2, 3))
    z[0, 1] = np.nan
    raises(NonFiniteError, lambda: CrossEntropy().forward(z, [0, 1]), "CrossEntropy", "nan")


# -- configuration ----------------------------------------------------------------------------------
def test_unknown_layer_type_in_layer_from_config_raises_config_error():
    raises(ConfigError, lambda: layer_from_config({"type": "Conv3D", "in_channels": 1}),
           "unknown layer type 'Conv3D'", "Conv2D")
    raises(ConfigError, lambda: layer_from_config({"type": "Layer"}), "unknown layer type")
    raises(ConfigError, lambda: layer_from_config({"type": "_Pool2D", "kernel_size": 2}))
    raises(ConfigError, lambda: layer_from_config({"kind": "Conv2D"}), "'type'")
    raises(ConfigError, lambda: layer_from_config({"type": "Conv2D", "in_channels": 1}),
           "bad arguments for Conv2D")
    raises(ConfigError, lambda: layer_from_config({"type": "Dense", "in_features": 2,
                                                   "out_features": 3, "colour": "red"}))


def test_layer_from_config_round_trips_a_known_layer():
    layer = layer_from_config({"type": "MaxPool2D", "kernel_size": [3, 2], "stride": [1, 1]})
    assert isinstance(layer, MaxPool2D) and layer.kernel_size == (3, 2)


@pytest.mark.parametrize("make,text", [
    (lambda: Conv2D(0, 2, 3), "in_channels"),
    (lambda: Conv2D(1, 2, 0), "kernel_size"),
    (lambda: Conv2D(1, 2, 3, stride=0), "stride"),
    (lambda: Conv2D(1, 2, 3, padding=-1), "padding"),
    (lambda: Conv2D(1, 2, 3, dilation=0), "dilation"),
    (lambda: Conv2D(1, 2, (1, 2, 3)), "kernel_size"),
    (lambda: Conv2D(1, 2, 3, init="foo"), "init"),
    (lambda: Dense(0, 2), "in_features"),
    (lambda: Dense(2.5, 2), "in_features"),
    (lambda: Dropout(1.5), "p must be"),
    (lambda: Dropout(True), "p must be"),
    (lambda: MaxPool2D(2, padding=2), "padding"),
    (lambda: AvgPool2D(0), "kernel_size"),
    (lambda: LeakyReLU("a"), "negative_slope"),
    (lambda: BatchNorm1D(0), "num_features"),
    (lambda: BatchNorm2D(3, momentum=2.0), "momentum"),
    (lambda: CrossEntropy(label_smoothing=1.0), "label_smoothing"),
    (lambda: Conv2D(1, 2, 3, rng="seed"), "rng"),
])
def test_bad_constructor_arguments_raise_config_error(make, text):
    raises(ConfigError, make, text)


def test_batchnorm_training_with_one_value_per_channel_raises():
    raises(NumcnnError, lambda: BatchNorm1D(3).forward(f32(1, 3)), "BatchNorm1D(3)", "(1, 3)")
    # evaluation with one sample is fine
    assert BatchNorm1D(3).forward(f32(1, 3), training=False).shape == (1, 3)


# -- Sequential ----------------------------------------------------------------------------------
def test_sequential_that_does_not_fit_together_raises_at_construction():
    raises(ShapeError, lambda: numcnn.Sequential([Conv2D(1, 2, 3), Flatten(), Dense(10, 2)],
                                                 input_shape=(1, 5, 5)),
           "Dense(10, 2)", "(18,)")
    raises(ShapeError, lambda: numcnn.Sequential([Conv2D(1, 2, 3), Conv2D(3, 2, 3)],
                                                 input_shape=(1, 8, 8)), "Conv2D(3, 2")
    raises(ShapeError, lambda: numcnn.Sequential([Conv2D(1, 2, 5), MaxPool2D(2), Conv2D(2, 2, 5)],
                                                 input_shape=(1, 8, 8)))


def test_sequential_forward_names_the_layer_where_shapes_break():
    model = numcnn.Sequential([Conv2D(1, 2, 3), Flatten(), Dense(10, 2)])
    raises(ShapeError, lambda: model.forward(f32(1, 1, 5, 5)), "Dense(10, 2)", "(1, 18)")
    model = numcnn.models.lenet5()
    raises(ShapeError, lambda: model.forward(f32(2, 3, 28, 28)), "Conv2D(1, 6", "(2, 3, 28, 28)")
    raises(ShapeError, lambda: model.forward(f32(2, 1, 20, 20)), "Dense(400, 120)", "(2, 144)")


def test_sequential_rejects_non_layers_and_empty_lists():
    raises(ConfigError, lambda: numcnn.Sequential([Conv2D(1, 2, 3), "relu"]), "item 1", "str")
    raises(ConfigError, lambda: numcnn.Sequential([]), "at least one layer")


def test_predict_with_wrong_image_shape_raises():
    model = numcnn.models.lenet5()
    raises(ShapeError, lambda: model.predict(np.zeros((2, 1, 32, 32), dtype=np.uint8)),
           "(1, 28, 28)", "(2, 1, 32, 32)")


def test_no_error_path_leaks_a_raw_numpy_error():
    """A sweep of bad inputs through a small model: each is refused by numcnn itself."""
    model = numcnn.Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 3)])
    bad_inputs = [f32(1, 6, 6), f32(1, 2, 6, 6), f32(1, 1, 2, 2), np.zeros((1, 1, 6, 6)),
                  np.zeros((1, 1, 6, 6), dtype=np.int32), f32(1, 1, 9, 9), f32(0, 1, 6, 6)]
    for x in bad_inputs:
        with pytest.raises(NumcnnError):
            model.forward(x)
    assert model.forward(f32(2, 1, 6, 6)).shape == (2, 3)
