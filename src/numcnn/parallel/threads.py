"""Every core for the whole step: each batch split into shards, run at once by a thread pool.

NumPy's BLAS is multi-threaded only inside a GEMM; im2col copies, padding, pooling and the
element-wise layers run on one core (about half of a CIFAR step on 2 cores).  So numcnn splits a
batch of N samples into k shards instead (k = the thread count, each shard >= ``MIN_SHARD``)::

    x (N, ...)  ->  x[n_0:n_1], x[n_1:n_2], ..., x[n_{k-1}:n_k]      (sizes differ by at most 1)
    shard s: forward and backward on replica s of the model, in thread s, with a one-thread BLAS
    dL/dw = dL/dw(shard 0) + dL/dw(shard 1) + ... + dL/dw(shard k-1)     (always in this order)

A replica has its own layer objects (caches, gradients) around the *same* parameter arrays, so
nothing is copied per step and an optimizer step is seen by every replica.  The loss is the mean
over the whole batch (computed once on the gathered logits), so dL/dlogits already carries the
1/N and the shards' gradients add up to the full batch's gradient: the same sum, split.

Batch norm in training uses the statistics of the **whole batch**, not of each shard (the
shards meet at a barrier, add their per-channel sums in shard order and go on), so the maths is
that of one thread; its backward adds the shards' sum(g) and sum(g x_hat) the same way.
Dropout draws one mask for the whole batch from the layer's own generator, exactly as one
thread draws it, and each shard takes its rows: the same masks at any thread count.

Determinism: the same inputs and thread count give bit-identical results, run after run (the
shards are fixed by N and k, and every sum runs in shard order).  Across thread counts results
agree to float32 rounding, not bit for bit: a weight gradient added from k shards rounds
differently from one GEMM over the batch (docs/parallel.md gives the measured bound).

``set_num_threads(n)`` / ``NUMCNN_NUM_THREADS`` choose n; the default is the cores this process
may use (``os.sched_getaffinity``).  :class:`~numcnn.Sequential` sends ``forward`` and
``backward`` here (registered at import), so training, ``predict``, ``evaluate`` and the
playground all use the pool.  How much arithmetic a batch holds decides how many shards it
gets: one per ``MIN_SHARD_FLOPS``, and a batch with less than two shards' worth runs on the
calling thread, as does a model on the GPU or one with a layer whose state the shards could
not share.
"""
from __future__ import annotations

import concurrent.futures
import contextvars
import copy
import os
import threading
import weakref

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.conv import block_share
from ..functional.dropout import dropout_mask
from ..functional.norm import channel_axes, channel_dot, channel_sum, input_grad, normalize
from ..layers.base import Layer
from ..layers.dropout import Dropout
from ..layers.norm import _BatchNorm
from ..model import Sequential, register_entry_point

__all__ = ["set_num_threads", "get_num_threads", "usable_cores", "MIN_SHARD"]

#: a shard needs at least this many samples: below it a thread costs more than it saves
MIN_SHARD = 4
#: ... and at least this much arithmetic (forward FLOPs; a training step counts 3x: forward,
#: dL/dinput, dL/dweights): a batch gets at most work / MIN_SHARD_FLOPS shards, and one with
#: less than two shards' worth runs on the calling thread with the multi-threaded BLAS.
#: Measured on the 2-core VM, each setting in its own process, alternating (docs/parallel.md):
#: LeNet-5 inference at batch 64 (53 MFLOPs) ran 0.8x as fast in two shards as on one thread;
#: at batch 256 (213 MFLOPs, two shards of 106) 1.5x faster in shards; LeNet-5 training at
#: batch 64 (160, two shards of 80) ran as fast either way; LeNet-5 training at batch 256 and
#: every CIFAR-net and ResNet-20 case ran faster in shards.  (A one-thread BLAS for the smallest
#: batches was tried and dropped: 0.92-1.11x for LeNet-5 inference at batch 1-64, 0.89x for
#: training at batch 32.)
MIN_SHARD_FLOPS = 1e8
#: a shard waits this long at a batch-norm barrier for the others before giving up
BARRIER_TIMEOUT_S = 600.0

_settings = {"threads": None, "explicit": False}
_pool = {"executor": None, "size": 0}
_region = threading.Lock()          # one sharded forward/backward at a time (the pool is shared)
_inside = threading.local()         # .shard: this thread is running a shard
_plans: "weakref.WeakKeyDictionary[Sequential, dict]" = weakref.WeakKeyDictionary()
_blas = {"controller": None}


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:           # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _check_count(n, where):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{where}: the number of threads must be an int >= 1, got {n!r}")
    return int(n)


def _from_env():
    text = os.environ.get("NUMCNN_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"NUMCNN_NUM_THREADS must be a whole number >= 1, got {text!r}; unset "
                          "it to use every usable core")
    return n


def set_num_threads(n) -> None:
    """Use ``n`` threads per process (n >= 1): ``n`` shards per batch, and an n-thread BLAS
    outside them (like ``torch.set_num_threads``, this sets NumPy's BLAS for the process)."""
    n = _check_count(n, "set_num_threads")
    _settings["threads"], _settings["explicit"] = n, True
    _set_blas_threads(n)


def get_num_threads() -> int:
    """The thread count: ``set_num_threads``, else ``NUMCNN_NUM_THREADS``, else the usable cores."""
    if _settings["threads"] is None:
        env = _from_env()
        _settings["threads"] = env or usable_cores()
        if env is not None:
            _settings["explicit"] = True
            _set_blas_threads(env)
    return _settings["threads"]


def threads_chosen() -> bool:
    """Whether the thread count was set (call or environment) rather than defaulted."""
    get_num_threads()
    return _settings["explicit"]


# -- BLAS threads (threadpoolctl) ----------------------------------------------------------------
def _controller():
    if _blas["controller"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas["controller"] = ThreadpoolController().select(user_api="blas")
        except ImportError:          # pragma: no cover - threadpoolctl comes with scikit-learn
            _blas["controller"] = False
    return _blas["controller"]


def _set_blas_threads(n):
    ctl = _controller()
    if ctl:
        ctl.limit(limits=n)          # not used as a context: the setting stays


class _OneThreadBlas:
    """BLAS at one thread while the shards run (each shard is one thread's work), then back.
    (The libraries' own setters: a threadpoolctl ``limit`` context costs ~50 us, these ~2.)"""

    def __enter__(self):
        ctl = _controller()
        libs = ctl.lib_controllers if ctl else []
        self._before = [(lib, lib.get_num_threads()) for lib in libs]
        for lib, n in self._before:
            if n != 1:
                lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for lib, n in self._before:
            if n != 1:
                lib.set_num_threads(n)


def _executor(workers):
    """The persistent pool of ``workers`` threads (made again after a fork: a child process
    has none of its parent's threads)."""
    if _pool["size"] != workers or _pool.get("pid") != os.getpid():
        if _pool["executor"] is not None and _pool.get("pid") == os.getpid():
            _pool["executor"].shutdown(wait=True)
        _pool["executor"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="numcnn-shard")
        _pool["size"], _pool["pid"] = workers, os.getpid()
    return _pool["executor"]


# -- replicas ------------------------------------------------------------------------------------
def _walk(model):
    """Every layer reachable from ``model.layers``, containers' inner layers included, in a fixed
    order (attributes in definition order, lists in order)."""
    out, seen = [], set()

    def visit(obj):
        if isinstance(obj, Layer):
            if id(obj) in seen:
                return
            seen.add(id(obj))
            out.append(obj)
            for v in vars(obj).values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
    visit(model.layers)
    return out


def _shardable(layers):
    """Layers whose state the shards can share: buffers only in batch norm (handled below) and
    randomness only in Dropout (one mask, drawn once).  A container's buffers and random states
    are its inner layers', which are checked themselves."""
    for layer in layers:
        if _is_container(layer):
            continue
        if layer.buffers() and not isinstance(layer, _BatchNorm):
            return False
        if layer._rng_state() is not None and not isinstance(layer, Dropout):
            return False
    return True


def _is_container(layer):
    def holds_layers(v):
        return isinstance(v, Layer) or (isinstance(v, (list, tuple)) and any(
            holds_layers(u) for u in v)) or (isinstance(v, dict) and any(
            holds_layers(u) for u in v.values()))
    return any(holds_layers(v) for k, v in vars(layer).items() if k != "_cache")


class _Shared:
    """What the k replicas of one batch-norm or dropout layer exchange during a step."""

    def __init__(self, k):
        self.barrier = threading.Barrier(k, timeout=BARRIER_TIMEOUT_S)
        self.slots = [None] * k
        self.slots2 = [None] * k
        self.lock = threading.Lock()
        self.mask = None

    def ordered_sum(self, slots):
        total = slots[0].copy()
        for part in slots[1:]:       # shard order: the same bits in every shard and every run
            total += part
        return total


class _Plan:
    """k replicas of a model and the rendezvous objects of their batch-norm/dropout layers."""

    def __init__(self, model, layers, k):
        self.k = k
        self.key = self.key_of(layers, k)
        self.layers = layers
        self.replicas, self.replica_layers, self.shared = [], [], []
        shared = {i: _Shared(k) for i, l in enumerate(layers) if isinstance(l, (_BatchNorm, Dropout))}
        self.shared = list(shared.values())
        old = model.__dict__.pop("_numcnn_shards", None)     # never copy an older plan
        for s in range(k):
            memo = {}
            for layer in layers:     # parameter arrays and buffers are shared, not copied;
                for p in layer.parameters():     # last step's caches and gradients are not
                    memo[id(p.value)] = p.value  # taken along at all
                    if p.grad is not None:
                        memo[id(p.grad)] = None
                for b in layer.buffers().values():
                    memo[id(b)] = b
                cache = getattr(layer, "_cache", None)
                if cache is not None and not isinstance(cache, (int, float, str, bytes)):
                    memo[id(cache)] = None       # (never a shared constant such as the int 1)
            rep = copy.deepcopy(model, memo)
            rep._numcnn_replica = True
            for name in ("forward", "backward", "__call__"):     # e.g. a test's recording wrapper
                rep.__dict__.pop(name, None)
            rl = _walk(rep)
            if [type(l) for l in rl] != [type(l) for l in layers]:     # pragma: no cover
                raise RuntimeError("numcnn.parallel: a replica's layers differ from the model's")
            for i, (orig, r) in enumerate(zip(layers, rl)):
                if isinstance(orig, _BatchNorm):
                    r.forward = _bn_forward(shared[i], s, orig, r)
                    r.backward = _bn_backward(shared[i], s, r)
                elif isinstance(orig, Dropout):
                    r.forward = _dropout_forward(shared[i], s, orig, r)
            self.replicas.append(rep)
            self.replica_layers.append(rl)
        model._numcnn_shards = old
        self.bounds = None

    @staticmethod
    def key_of(layers, k):
        return (k, tuple(map(id, layers)))

    def sync(self, n):
        """Point every replica at the model's current arrays (an optimizer, ``astype`` or a
        restored checkpoint may have replaced them) and forget last step's state."""
        for rl in self.replica_layers:
            for orig, r in zip(self.layers, rl):
                for name in orig.param_names:
                    po, pr = getattr(orig, name), getattr(r, name)
                    if po is not None and pr is not None:
                        pr.value, pr.grad = po.value, None
                for name in orig.buffer_names:
                    setattr(r, name, getattr(orig, name))
                for flag in ("needs_input_grad", "check_finite"):
                    if flag in vars(orig):
                        setattr(r, flag, getattr(orig, flag))
        for sh in self.shared:
            sh.mask = None
            if sh.barrier.broken:
                sh.barrier.reset()
        self.bounds = [(s * n // self.k, (s + 1) * n // self.k) for s in range(self.k)]
        for sh in self.shared:
            sh.bounds = self.bounds

    def abort(self):
        for sh in self.shared:
            sh.barrier.abort()


def _plan_for(model, k):
    """The model's plan for k shards (kept per model and k: an epoch's short last batch may
    need fewer shards than the others), or None when the model cannot run in shards."""
    layers = _walk(model)
    plans = _plans.setdefault(model, {})
    plan = plans.get(k)
    if plan is not None and plan.key == _Plan.key_of(layers, k):
        return plan
    if not _shardable(layers):
        return None
    plan = plans[k] = _Plan(model, layers, k)
    return plan


# -- batch norm over the whole batch, and dropout's one mask -------------------------------------
def _bn_forward(sh, s, orig, rep):
    """Shard ``s`` of a batch-norm layer in training: mu and var of the whole batch,
    mu = (sum over shards of sum x) / m, var = (sum over shards of sum (x - mu)^2) / m, then the
    formulas of :mod:`numcnn.functional.norm`; shard 0 updates the running statistics once."""
    cls_forward = type(rep).forward

    def forward(x, training=True, layout="NCHW"):
        if not training:
            return cls_forward(rep, x, training, layout)
        rep._check_input(x, rep._ndim, rep._shape_text.replace("C", str(rep.num_features)),
                         rep.num_features, layout)
        bshape = channel_axes(x, layout)[1]
        sh.slots[s] = (channel_sum(x, layout), x.size // rep.num_features)
        sh.barrier.wait()
        m = sum(c for _, c in sh.slots)
        if m < 2:
            raise ConfigError(f"{rep!r}: training needs more than one value per channel to "
                              "compute batch statistics; use a batch size > 1")
        mu = sh.ordered_sum([t for t, _ in sh.slots]) / x.dtype.type(m)
        xc = x - mu.reshape(bshape)
        sh.slots2[s] = channel_dot(xc, xc, layout)
        sh.barrier.wait()
        var = sh.ordered_sum(sh.slots2) / x.dtype.type(m)
        if s == 0:                   # once per step, in place, as numcnn.functional.norm does
            orig.running_mean *= 1 - orig.momentum
            orig.running_mean += orig.momentum * mu
            orig.running_var *= 1 - orig.momentum
            orig.running_var += orig.momentum * var * (m / max(m - 1, 1))
        inv_std = (x.dtype.type(1) / np.sqrt(var + x.dtype.type(rep.eps))).reshape(bshape)
        gamma = rep.weight.value.reshape(bshape)
        y, x_hat = normalize(xc, inv_std, gamma, rep.bias.value.reshape(bshape))
        rep._cache = (x_hat, inv_std, gamma, layout, m)
        rep._out_shape, rep._out_dtype = tuple(y.shape), y.dtype
        return y
    return forward


def _bn_backward(sh, s, rep):
    """dL/dx = gamma / sqrt(var + eps) (g - sum(g)/m - x_hat sum(g x_hat)/m) with both sums over
    the whole batch (added over the shards); this shard's sum(g x_hat) and sum(g) are its part of
    dL/dgamma and dL/dbeta (added over the shards with the other gradients)."""
    cls_backward = type(rep).backward

    def backward(grad_out):
        cache = rep._cache
        if not isinstance(cache, tuple):
            return cls_backward(rep, grad_out)        # evaluation mode, or no forward yet
        rep._cache = None
        x_hat, inv_std, gamma, layout, m = cache
        dbeta = channel_sum(grad_out, layout)
        dgamma = channel_dot(grad_out, x_hat, layout)
        rep.weight.accumulate(dgamma)
        rep.bias.accumulate(dbeta)
        sh.slots[s] = (dbeta, dgamma)
        sh.barrier.wait()
        mean_g = (sh.ordered_sum([b for b, _ in sh.slots]) / x_hat.dtype.type(m)).reshape(gamma.shape)
        mean_gx = (sh.ordered_sum([g for _, g in sh.slots]) / x_hat.dtype.type(m)).reshape(gamma.shape)
        return input_grad(grad_out, x_hat, gamma * inv_std, mean_g, mean_gx)
    return backward


def _dropout_forward(sh, s, orig, rep):
    """Shard ``s`` of a Dropout layer: the first shard to arrive draws the whole batch's mask from
    the model's generator (as one thread would), every shard multiplies by its rows of it."""
    def forward(x, training=True, layout="NCHW"):
        rep._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        if not training or rep.p == 0.0:
            rep._cache = 1
            out = x
        else:
            axis = 1 if layout == "CNHW" and x.ndim == 4 else 0
            lo, hi = sh.bounds[s]
            with sh.lock:
                if sh.mask is None:
                    full = list(x.shape)
                    full[axis] = sh.bounds[-1][1]
                    sh.mask = dropout_mask(tuple(full), orig.p, orig.rng, x.dtype)
            rows = [slice(None)] * x.ndim
            rows[axis] = slice(lo, hi)
            rep._cache = sh.mask[tuple(rows)]
            out = x * rep._cache
        rep._out_shape, rep._out_dtype = tuple(out.shape), out.dtype
        return out
    return forward


# -- running the shards ----------------------------------------------------------------------------
def _run_shards(plan, fn):
    """``fn(s)`` for every shard at once: shard 0 on this thread, the others on the pool, each
    in a copy of this thread's context (NumPy's errstate).  Returns the results in shard order;
    the first shard's error (not a barrier broken because of it) is raised."""
    k = plan.k
    contexts = [contextvars.copy_context() for _ in range(k)]

    def in_shard(s):
        block_share.set(k)           # the shards share one thread's column budget
        return fn(s)

    def guarded(s):
        _inside.shard = True
        try:
            return contexts[s].run(in_shard, s)
        except BaseException:
            plan.abort()             # the others must not wait for this shard at a barrier
            raise
        finally:
            _inside.shard = False

    pool = _executor(get_num_threads() - 1)
    futures = [pool.submit(guarded, s) for s in range(1, k)]
    results, errors = [None] * k, [None] * k
    try:
        results[0] = guarded(0)
    except BaseException as exc:     # noqa: BLE001 - re-raised below, after the others stop
        errors[0] = exc
    for s, f in enumerate(futures, start=1):
        try:
            results[s] = f.result()
        except BaseException as exc:     # noqa: BLE001
            errors[s] = exc
    real = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if real or any(errors):
        raise (real or [e for e in errors if e is not None])[0]
    return results


def _shards_for(model, x, training=False):
    """The plan to run ``x`` in shards, or None to run it on this thread (also from inside a
    shard, e.g. a model called by a layer: the pool is busy with this batch)."""
    if getattr(model, "_numcnn_replica", False) or getattr(_inside, "shard", False) \
            or type(x) is not np.ndarray or x.ndim < 2:
        return None
    n = get_num_threads()
    if n < 2 or model.xp is not np:
        return None
    k = min(n, x.shape[0] // MIN_SHARD)
    flops = _image_flops(model, tuple(x.shape[1:]))
    if flops is not None and MIN_SHARD_FLOPS > 0:      # too little work per shard: fewer shards
        k = min(k, int(flops * (3 if training else 1) * x.shape[0] // MIN_SHARD_FLOPS))
    if k < 2:
        return None
    return _plan_for(model, k)


def _image_flops(model, shape):
    """Forward FLOPs of one sample of ``shape`` (cached on the model per shape), or None when
    a layer cannot say (then the batch is sharded by size alone)."""
    cached = getattr(model, "_numcnn_image_flops", None)
    if cached is not None and cached[0] == shape:
        return cached[1]
    try:
        total, s = 0, shape
        for layer in model.layers:
            total += int(layer.flops(s))
            s = tuple(layer.output_shape(s))
    except Exception:  # noqa: BLE001 - a layer without flops/output_shape: shard by size
        total = None
    model._numcnn_image_flops = (shape, total)
    return total


def parallel_forward(model, x, training):
    """``model.forward(x)`` in shards (called by :meth:`Sequential.forward`); None when the batch
    runs on the calling thread."""
    plan = _shards_for(model, x, training)
    if plan is None:
        return None
    with _region, _OneThreadBlas():
        plan.sync(x.shape[0])
        outs = _run_shards(plan, lambda s: plan.replicas[s].forward(
            x[plan.bounds[s][0]:plan.bounds[s][1]], training=training))
    model._numcnn_shards = plan
    return np.concatenate(outs, axis=0)


def parallel_backward(model, grad, input_grad):
    """``model.backward(grad)`` after a sharded forward: each shard's backward on its rows, then
    each parameter's gradient is the shards' gradients added in shard order."""
    plan = getattr(model, "_numcnn_shards", None)
    n = plan.bounds[-1][1]
    if getattr(grad, "ndim", 0) < 1 or grad.shape[0] != n:
        raise ShapeError(f"Sequential.backward: expected dL/d(output) for the batch of {n} of the "
                         f"last forward pass, got shape {tuple(grad.shape)}")
    with _region, _OneThreadBlas():
        dxs = _run_shards(plan, lambda s: plan.replicas[s].backward(
            grad[plan.bounds[s][0]:plan.bounds[s][1]], input_grad=input_grad))
        originals = model.parameters()       # a container's layers' parameters, once each
        per_shard = [rep.parameters() for rep in plan.replicas]
        for i, p in enumerate(originals):
            total = None
            for params in per_shard:          # shard 0 + shard 1 + ... : a fixed order
                g = params[i].grad
                if g is not None:
                    if total is None:
                        total = g.copy()
                    else:
                        total += g
                params[i].grad = None
            if total is not None:
                p.accumulate(total)
    if dxs[0] is None:
        return None
    return np.concatenate(dxs, axis=0)


register_entry_point("parallel_forward", parallel_forward)
register_entry_point("parallel_backward", parallel_backward)
