"""The array-module seam: NumPy by default, CuPy only when asked, never switched behind one's back."""
import importlib.util
import sys

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


_FAULTS_SCRIPT = r"""
import resource, sys
import numpy as np
import numcnn
from numcnn.losses import CrossEntropy
from numcnn.optim import SGD
m = numcnn.models.lenet5()
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
y = rng.integers(0, 10, 64)
loss, opt = CrossEntropy(), SGD(m.parameters(), lr=0.01, momentum=0.9)
def step():
    loss.forward(m.forward(x), y); m.backward(loss.backward()); opt.step(); opt.zero_grad()
step(); step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
from numcnn.backend import keep_freed_memory
print(keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_steps_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    """A training step frees and reallocates the same few-MB arrays; with glibc's defaults each
    step faulted ~2,000 fresh pages in (40% of a LeNet-5 step on the project's VM).  After the
    first forward pass numcnn keeps freed blocks for reuse, so steady-state steps fault (almost)
    none; NUMCNN_MALLOC=system leaves malloc alone."""
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "NUMCNN_MALLOC"}

    def faults_per_step(**extra):
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout.split()
        return out[0] == "True", float(out[1])

    tuned, kept = faults_per_step()
    untuned, system = faults_per_step(NUMCNN_MALLOC="system")
    assert tuned and not untuned
    # A few pages still fault per step (Python objects, BLAS buffers): ~20 against ~2,000.
    assert system > 500, f"untuned malloc faulted only {system} pages per step"
    assert kept < system / 20, f"{kept} page faults per step kept against {system} untuned"


def test_the_cupy_tests_pass_against_a_stand_in_cupy_on_this_cpu():
    """tests/test_cupy.py needs CuPy and a GPU; here it runs against tests/helpers/fakecupy, a
    stand-in that computes with NumPy but refuses, as CuPy does, any silent mix of host and
    device arrays.  That proves the array-module seam (every array on the model's module, no
    numpy.asarray of a device array), not GPU numerics."""
    import os
    import subprocess
    from pathlib import Path
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here / "helpers" / "fakecupy")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    p = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p",
                        "no:cacheprovider", str(here / "test_cupy.py")], capture_output=True,
                       text=True, env=env, cwd=here.parent, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    import re
    summary = p.stdout.strip().splitlines()[-1]
    assert re.match(r"^\d+ passed in ", summary), summary       # none skipped, none failed
    assert int(summary.split()[0]) >= 9
