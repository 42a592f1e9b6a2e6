"""The thread pool (numcnn.parallel.threads): batches split into shards, one thread each.

Every comparison is 2 threads (2 shards, each on its own thread with a one-thread BLAS) against
1 thread (the whole batch through the model as before).
"""
import json
import os
import select

import numpy as np
import pytest

import numcnn
from numcnn import losses, optim
from numcnn.errors import ConfigError, NonFiniteError
from numcnn.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU)
from numcnn.parallel import threads

#: measured: after 3 SGD steps, 2 threads and 1 thread differ by at most 1.6e-7 (LeNet-5,
#: weights up to 0.52), 0.9e-7 for the batch-norm/residual net and 1.2e-7 with dropout (weights
#: and running statistics up to 1.3): float32 rounding of the gradient sums.  The bound allows a
#: few more roundings (another BLAS build, another machine).
BOUND = 3e-6
SHIPPED_MIN_SHARD_FLOPS = threads.MIN_SHARD_FLOPS


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = dict(threads._settings)
    monkeypatch.setattr(threads, "MIN_SHARD_FLOPS", 0)    # the small test nets run in shards too
    yield
    threads._settings.update(before)
    threads._set_blas_threads(threads.usable_cores())


class _ShardTestResidual(Layer):
    """A container layer (as graph layers are; the leading _ keeps it out of the public layer
    registry): y = x + dropout(relu(conv(x))); the fork adds its two
    paths' gradients in backward."""

    def __init__(self, channels, rng):
        self.conv = Conv2D(channels, channels, 3, padding=1, rng=rng)
        self.relu = ReLU()
        self.drop = Dropout(0.2, rng=5)

    def buffers(self):                  # as a container reports its inner layers' state
        return {f"conv.{k}": v for k, v in self.conv.buffers().items()}

    def _rng_state(self):
        return {"drop": self.drop._rng_state()}

    def _set_rng_state(self, state):
        self.drop._set_rng_state(state["drop"])

    def parameters(self):
        return self.conv.parameters()

    def named_parameters(self):
        return {f"conv.{k}": v for k, v in self.conv.named_parameters().items()}

    def forward(self, x, training=True, layout="NCHW"):
        body = self.relu.forward(self.conv.forward(x, training, layout), training, layout)
        return x + self.drop.forward(body, training, layout)

    def backward(self, grad_out):
        # the fork: dL/dx = dL/dy (the identity path) + what comes back through the body
        return grad_out + self.conv.backward(self.relu.backward(self.drop.backward(grad_out)))


def bn_net(dropout=0.0):
    rng = np.random.default_rng(3)
    return numcnn.Sequential([
        Conv2D(3, 8, 3, padding=1, rng=rng), BatchNorm2D(8), ReLU(), _ShardTestResidual(8, rng),
        MaxPool2D(2), Flatten(), Dense(8 * 8 * 8, 32, rng=rng), ReLU(), Dropout(dropout),
        Dense(32, 10, rng=rng)], input_shape=(3, 16, 16))


def lenet():
    return numcnn.models.lenet5()


def batch(model, n=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n,) + model.input_shape).astype(np.float32),
            rng.integers(0, 10, n))


def train(make, n_threads, steps=3, n=24):
    numcnn.set_num_threads(n_threads)
    model = make()
    x, y = batch(model, n)
    loss = losses.CrossEntropy()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
    sharded = getattr(model, "_numcnn_shards", None)
    return ([p.value.copy() for p in model.parameters()] + [b.copy() for b in model.buffers().values()],
            None if sharded is None else sharded.k)


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


@pytest.mark.parametrize("make", [lenet, bn_net, lambda: bn_net(0.4)],
                         ids=["lenet5", "batchnorm-residual", "batchnorm-residual-dropout"])
def test_two_threads_train_the_weights_of_one_thread(make):
    one, k1 = train(make, 1)
    two, k2 = train(make, 2)
    assert (k1, k2) == (None, 2)              # 1 thread: no shards; 2 threads: 2 shards
    assert max_diff(one, two) <= BOUND
    assert max_diff(one, train(make, 1)[0]) == 0


def test_batch_norm_uses_the_whole_batch_not_each_shard():
    """Per-shard statistics would normalise each half by its own mean: far from one thread."""
    numcnn.set_num_threads(1)
    model = bn_net()
    x, _ = batch(model)
    x[12:] += 3.0                              # the second shard's images are much brighter
    expected = model.forward(x)
    numcnn.set_num_threads(2)
    model = bn_net()                           # the same weights and dropout seeds, afresh
    got = model.forward(x)
    assert model._numcnn_shards.k == 2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_two_threads_are_bit_identical_run_to_run():
    a, _ = train(lambda: bn_net(0.3), 2)
    b, _ = train(lambda: bn_net(0.3), 2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_predict_and_input_gradient_in_shards_match_one_thread():
    model = lenet()
    x, y = batch(model, 40)
    numcnn.set_num_threads(1)
    p1 = model.predict(x)
    loss = losses.CrossEntropy()
    loss.forward(model.forward(x), y)
    g1 = model.backward(loss.backward(), input_grad=True)
    model.zero_grad()
    numcnn.set_num_threads(2)
    p2 = model.predict(x)
    assert model._numcnn_shards.k == 2
    loss.forward(model.forward(x), y)
    g2 = model.backward(loss.backward(), input_grad=True)
    np.testing.assert_allclose(p2, p1, rtol=1e-5, atol=1e-7)
    assert g2.shape == x.shape
    np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-5 * float(np.abs(g1).max()))


def test_a_small_batch_runs_on_the_calling_thread():
    numcnn.set_num_threads(2)
    model = lenet()
    model.forward(batch(model, threads.MIN_SHARD * 2 - 1)[0])
    assert model._numcnn_shards is None


def test_an_error_in_one_shard_is_raised_not_a_hang():
    numcnn.set_num_threads(2)
    model = bn_net()
    x, _ = batch(model)
    x[20, 0, 3, 3] = np.nan                   # in the second shard, before a batch-norm barrier
    with pytest.raises(NonFiniteError, match="NaN"):
        model.forward(x)
    x[20, 0, 3, 3] = 0.0
    model.forward(x)                          # the pool and its barriers work again
    assert model._numcnn_shards.k == 2


def test_trainer_fit_with_two_threads_matches_one_thread():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (64, 1, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 64)
    out = []
    for n in (1, 2):
        numcnn.set_num_threads(n)
        model = lenet()
        model.fit((x, y), epochs=1, batch_size=32, optimizer="sgd", progress=False)
        out.append([p.value for p in model.parameters()])
    assert max_diff(*out) <= BOUND


def test_thread_count_settings_are_checked(monkeypatch):
    with pytest.raises(ConfigError, match="int >= 1"):
        numcnn.set_num_threads(0)
    monkeypatch.setattr(threads, "_settings", {"threads": None, "explicit": False})
    monkeypatch.setenv("NUMCNN_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match="NUMCNN_NUM_THREADS"):
        numcnn.get_num_threads()
    monkeypatch.setattr(threads, "_settings", {"threads": None, "explicit": False})
    monkeypatch.setenv("NUMCNN_NUM_THREADS", "3")
    assert numcnn.get_num_threads() == 3
    monkeypatch.setattr(threads, "_settings", {"threads": None, "explicit": False})
    monkeypatch.delenv("NUMCNN_NUM_THREADS")
    assert numcnn.get_num_threads() == len(os.sched_getaffinity(0))


def test_cli_train_threads_is_recorded_in_run_json(tmp_path):
    from numcnn.cli import main
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "digits-cnn", "--epochs", "1",
                 "--threads", "2", "--out", str(out), "--no-progress"]) == 0
    assert numcnn.get_num_threads() == 2
    with open(out / "run.json") as f:
        run = json.load(f)
    assert run["threads"] == 2 and run["processes"] == 1
    assert run["arguments"]["threads"] == 2 and run["data"]["source"]


def test_a_forked_child_makes_its_own_pool():
    """A child process has none of its parent's threads: its first sharded batch must not wait
    for them forever."""
    numcnn.set_num_threads(2)
    model = lenet()
    x, _ = batch(model, 16)
    expected = model.forward(x, training=False)               # the parent's pool exists now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                              # the child
        try:
            ok = np.array_equal(model.forward(x, training=False), expected) \
                and model._numcnn_shards.k == 2
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 60)
    got = os.read(r, 1) if ready else b"timeout"
    os.waitpid(pid, 0) if ready else os.kill(pid, 9)
    assert got == b"1"


def test_shards_together_use_the_memory_of_one_thread():
    """Each shard builds its im2col columns in its share of the block budget, so two shards in
    flight keep no more than one thread does (without it: 27.7 -> 39.6 MiB of peak RSS growth
    for a LeNet-5 batch-256 step)."""
    import gc
    import tracemalloc

    def peak(n_threads):
        numcnn.set_num_threads(n_threads)
        model = lenet()
        x, y = batch(model, 256)
        loss = losses.CrossEntropy()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step()
            opt.zero_grad()
        step()                                   # warm-up: momentum buffers, the shard plan
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            step()
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    one, two = peak(1), peak(2)
    assert one > 10 * 2 ** 20                     # a real working set (activations, columns)
    assert two <= 1.1 * one, f"2 threads {two / 2**20:.1f} MiB, 1 thread {one / 2**20:.1f} MiB"


def test_how_much_work_a_batch_holds_decides_how_many_shards_it_gets(monkeypatch):
    """MIN_SHARD_FLOPS (1e8) decides: one shard per 1e8 FLOPs of work, none below two shards'
    worth.  LeNet-5 is 0.85 MFLOPs an image and a training step counts three forward passes:
    * inference at batch 64, 54 MFLOPs: the calling thread (with the multi-threaded BLAS);
    * training at batch 64, 163 (82 a shard for two): the calling thread;
    * inference at batch 256, 218: two shards, even with four threads;
    * training at batch 256, 653: four shards with four threads."""
    from threadpoolctl import threadpool_info

    def numpy_blas_threads():     # NumPy's own BLAS (other libraries an earlier test loaded aside)
        counts = [i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas" and "numpy" in i["filepath"]]
        assert counts, threadpool_info()
        return max(counts)
    assert SHIPPED_MIN_SHARD_FLOPS == 1e8
    monkeypatch.setattr(threads, "MIN_SHARD_FLOPS", SHIPPED_MIN_SHARD_FLOPS)   # (the fixture's 0)
    numcnn.set_num_threads(2)
    model = numcnn.models.lenet5()
    blas_seen = []
    conv = model.layers[3]
    forward = type(conv).forward

    def spy(self, x, training=True, layout="NCHW"):
        if self.in_channels == 6:                   # the second conv, or a shard's copy of it
            blas_seen.append(numpy_blas_threads())
        return forward(self, x, training, layout)
    monkeypatch.setattr(type(conv), "forward", spy)
    x = np.random.default_rng(0).normal(size=(256, 1, 28, 28)).astype(np.float32)

    model.forward(x[:64], training=False)
    assert model._numcnn_shards is None and blas_seen[-1] == 2
    model.forward(x[:64], training=True)
    assert model._numcnn_shards is None and blas_seen[-1] == 2
    model.forward(x, training=False)
    assert isinstance(model._numcnn_shards, threads._Plan) and model._numcnn_shards.k == 2
    assert blas_seen[-1] == 1                       # each shard: a one-thread BLAS
    numcnn.set_num_threads(4)
    model.forward(x, training=False)
    assert model._numcnn_shards.k == 2              # 218 MFLOPs: two shards, not four
    model.forward(x, training=True)
    assert model._numcnn_shards.k == 4
    assert numpy_blas_threads() == 4                # and the BLAS back at the thread count
