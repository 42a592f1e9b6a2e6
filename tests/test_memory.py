"""Load: long runs do not grow memory, and prediction streams in batches.

* 30 epochs of training (all 1,437 ``digits`` training images, validation every epoch, a checkpoint,
  best model and history written every epoch) in a child process that logs its peak RSS
  (``ru_maxrss``), current RSS (``VmRSS``) and the bytes Python/NumPy hold (``tracemalloc``) after
  every epoch: from epoch 2 to epoch 30 peak RSS (VmHWM) stays within 5 %, and the traced bytes grow by
  less than 2 MiB (a leak of one batch of activations per step would be ~80 MiB).
* ``model.predict`` on 100,000 28x28 images (a broadcast view: no 78 MB input array) holds far less
  extra memory than materialising them as float32 would (100,000 x 784 x 4 = 313.6 MB): the
  peak, measured with tracemalloc, is the 4 MB of probabilities plus one batch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from numcnn.model import Sequential

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import reliability_stats as stats  # noqa: E402

CHILD = Path(__file__).parent / "helpers" / "train_child.py"
EPOCHS = 30


@pytest.fixture(scope="module", autouse=True)
def _dump_stats():
    yield
    stats.dump("test_memory")


def test_thirty_epochs_of_training_do_not_grow_memory(tmp_path):
    log = tmp_path / "rss.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(numcnn.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(CHILD), str(tmp_path / "run"), "--epochs", str(EPOCHS),
           "--samples", "1437", "--batch-size", "32", "--validate", "--rss-log", str(log),
           "--tracemalloc"]
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in recs] == list(range(1, EPOCHS + 1))
    # VmHWM: this process's own peak (ru_maxrss would include the pytest parent's, see the child)
    peak = [r["hwm_kb"] if r["hwm_kb"] is not None else r["maxrss_kb"] for r in recs]
    rss = [r["rss_kb"] for r in recs]
    traced = [r["traced_kb"] for r in recs]
    growth = peak[-1] / peak[1] - 1
    stats.record("memory", f"peak RSS after epoch 2 (KiB): {peak[1]}")
    stats.record("memory", f"peak RSS after epoch {EPOCHS} (KiB): {peak[-1]}")
    stats.record("memory", f"traced KiB epoch 2 -> {EPOCHS}: {traced[1]} -> {traced[-1]}")
    print(f"\npeak RSS KiB by epoch: {peak}\ncurrent RSS KiB: {rss}\ntraced KiB: {traced}")
    assert growth <= 0.05, f"peak RSS grew {growth:.1%} from epoch 2 to {EPOCHS}: {peak}"
    assert rss[-1] <= 1.05 * rss[1], f"RSS grew from {rss[1]} to {rss[-1]} KiB: {rss}"
    assert traced[-1] - traced[1] < 2048, f"Python/NumPy memory grew {traced[-1] - traced[1]} KiB"


def test_predicting_100k_images_streams_in_batches():
    model = Sequential([Conv2D(1, 4, 3, stride=2, rng=0), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(4 * 6 * 6, 10, rng=1)], input_shape=(1, 28, 28))
    model.normalization = (np.array([0.13], np.float32), np.array([0.31], np.float32))
    image = (np.arange(784) % 251).astype(np.uint8).reshape(1, 1, 28, 28)
    n = 100_000
    x = np.broadcast_to(image, (n, 1, 28, 28))          # 100,000 images, 784 bytes of storage
    materialised = n * 784 * 4                          # what float32 inputs would take
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        probs = model.predict(x, batch_size=256)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert probs.shape == (n, 10) and np.all(np.isfinite(probs))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the same picture everywhere (the last, shorter batch may differ in the last bit: BLAS)
    assert np.allclose(probs, probs[0], rtol=1e-5, atol=1e-7)
    out_bytes = probs.nbytes
    stats.record("memory", f"predict 100k peak extra MiB: {peak / 2 ** 20:.1f}")
    stats.record("memory", f"predict 100k output MiB: {out_bytes / 2 ** 20:.1f}")
    print(f"\npredict(100,000 images): peak extra memory {peak / 2 ** 20:.1f} MiB (output "
          f"{out_bytes / 2 ** 20:.1f} MiB; float32 inputs would be {materialised / 2 ** 20:.1f} MiB)")
    assert peak < materialised / 10, f"peak {peak} bytes: predict does not stream"
    assert peak < 2 * out_bytes + (16 << 20)
