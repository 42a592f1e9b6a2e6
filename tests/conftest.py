"""Shared helpers for the numcnn test-suite.

PyTorch (CPU) is the oracle: numcnn's numbers are compared with ``torch``'s for the same inputs
and weights.  ``torch`` is imported only by the tests, never by numcnn itself.

Test modules import the helpers directly (``from conftest import assert_close, ...``); pytest puts
this directory on ``sys.path`` (rootdir/prepend import mode, no ``tests/__init__.py``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

# One BLAS thread for the whole suite: these are small matrices, and on a busy 2-core machine
# multi-threaded OpenBLAS spins and runs them many times slower (measured up to 25x), which would
# make the suite's time depend on whatever else runs.  Results don't depend on it.
try:
    from threadpoolctl import threadpool_limits
    _BLAS_LIMIT = threadpool_limits(1)
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    _BLAS_LIMIT = None

#: the two dtypes numcnn computes in
DTYPES = (np.float32, np.float64)
DTYPE_IDS = ("float32", "float64")

#: (rtol, atol) per dtype; atol is scaled by the magnitude of the expected values
TOLERANCES = {
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-10, 1e-12),
}


def to_numpy(a):
    """A NumPy array from a NumPy array, a torch tensor (detached) or a Python scalar."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def tt(a, requires_grad=False):
    """A torch tensor holding a copy of NumPy array ``a`` (same dtype)."""
    t = torch.from_numpy(np.array(a, copy=True))
    if requires_grad:
        t.requires_grad_(True)
    return t


def assert_close(actual, expected, dtype=None, rtol=None, atol=None, what=""):
    """Assert ``actual`` (numcnn) matches ``expected`` (usually torch) element-wise.

    * ``actual`` must be a NumPy array of ``dtype`` (when given) and of ``expected``'s shape.
    * tolerance: rtol 1e-4 / atol 1e-5 for float32, rtol 1e-10 / atol 1e-12 for float64, where
      atol is multiplied by ``max(1, max|expected|)`` so large sums are judged relative to their
      scale (cancellation near zero is otherwise unfair to either library).
    """
    assert isinstance(actual, np.ndarray), f"{what}: expected a numpy array, got {type(actual)}"
    exp = to_numpy(expected)
    if dtype is not None:
        dtype = np.dtype(dtype)
        assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    dt = np.dtype(dtype) if dtype is not None else actual.dtype
    d_rtol, d_atol = TOLERANCES.get(dt, TOLERANCES[np.dtype(np.float64)])
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    assert actual.shape == exp.shape, f"{what}: shape {actual.shape}, expected {exp.shape}"
    scale = max(1.0, float(np.max(np.abs(exp)))) if exp.size else 1.0
    np.testing.assert_allclose(actual, exp.astype(actual.dtype, copy=False), rtol=rtol,
                               atol=atol * scale, err_msg=what)


def torch_conv(x, w, b=None, stride=1, padding=0, dilation=1, grad_out=None):
    """PyTorch's conv2d of NumPy arrays; returns ``out`` or, with ``grad_out``,
    ``(out, dx, dw, db)`` (db None without bias), all NumPy."""
    xt, wt = tt(x, True), tt(w, True)
    bt = tt(b, True) if b is not None else None
    out = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    if grad_out is None:
        return to_numpy(out)
    out.backward(tt(grad_out))
    return (to_numpy(out), to_numpy(xt.grad), to_numpy(wt.grad),
            None if bt is None else to_numpy(bt.grad))


def torch_pool(kind, x, kernel, stride, padding, grad_out=None):
    """PyTorch max/avg pooling (``kind`` 'max' or 'avg'); ``(out, dx)`` with ``grad_out``."""
    xt = tt(x, True)
    f = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    out = f(xt, kernel, stride, padding)
    if grad_out is None:
        return to_numpy(out)
    out.backward(tt(grad_out))
    return to_numpy(out), to_numpy(xt.grad)


def copy_params_to_torch(numcnn_layers, torch_modules):
    """Copy weights/biases of numcnn Conv2D/Dense/BatchNorm layers into matching torch modules
    (same layouts: conv (out, in, kh, kw), dense (out, in))."""
    for layer, mod in zip(numcnn_layers, torch_modules):
        with torch.no_grad():
            for name, p in layer.named_parameters().items():
                getattr(mod, name).copy_(torch.from_numpy(np.array(p.value)))
            for name, b in layer.buffers().items():
                getattr(mod, name).copy_(torch.from_numpy(np.array(b)))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global seeds (numcnn itself uses explicit generators)."""
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng():
    """A fresh seeded NumPy generator for a test's random data."""
    return np.random.default_rng(12345)
