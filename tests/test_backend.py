"""The array-module seam: NumPy by default, CuPy only when asked, never switched behind one's back."""
import importlib.util

import numpy as np
import pytest

import numcnn
from numcnn import backend
from numcnn.errors import ConfigError

HAVE_CUPY = importlib.util.find_spec("cupy") is not None


def test_default_backend_is_numpy_and_models_live_there():
    assert backend.current() is np
    m = numcnn.models.lenet5()
    assert all(type(p.value) is np.ndarray for p in m.parameters())
    assert backend.get_array_module(m.parameters()[0].value) is np


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ConfigError, match="numpy' or 'cupy"):
        numcnn.use("jax")


@pytest.mark.skipif(HAVE_CUPY, reason="checks the message shown when CuPy is missing")
def test_cupy_missing_says_how_to_install_and_leaves_the_default_alone():
    with pytest.raises(ConfigError, match="pip install"):
        numcnn.use("cupy")
    with pytest.raises(ConfigError):
        numcnn.models.lenet5().to("gpu")
    assert backend.current() is np
    with pytest.raises(ConfigError, match="unknown device"):
        numcnn.models.lenet5().to("tpu")


def test_to_numpy_is_a_no_op_for_numpy_arrays():
    a = np.arange(3.0)
    assert backend.to_numpy(a) is a
