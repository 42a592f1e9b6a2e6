"""Data parallel over processes and machines with MPI (mpi4py): Horovod's scheme.

    mpiexec -n 4 numcnn train --data cifar10 --model cifar-vgg --batch-size 256

Every rank holds the whole model and the whole dataset.  Per step, for a global batch of B
samples (the batch that one process would take, in the same order)::

    rank r computes only its rows  b_r = B[lo_r:hi_r]  (lo_r = r B / P)
    g_r = dL_r/dw, the mean gradient over its n_r rows (forward and backward of its shard)
    dL/dw = (sum over ranks of n_r g_r) / (sum over ranks of n_r)      one Allreduce, one buffer
    every rank: the same optimizer step with the same dL/dw -> the same weights everywhere

The sum over the global batch is split over processes, so the global batch and the learning
rate mean what they mean in one process, and the weights agree with one process to float32
rounding.  The flat buffer of that single Allreduce also carries the step's sample count, loss
and correct answers (the history is the global batch's), the batch-norm running statistics
(averaged, so every rank holds the same model), and the Ctrl-C flag (every rank stops at the
same step; rank 0 saves the checkpoint).

* Rank 0's initial weights are broadcast before training (``Trainer.fit``), and only rank 0
  writes files: checkpoints, models, history, plots.  A checkpoint holds nothing about the
  number of processes, so it resumes under MPI or in one process alike.
* Augmentation: every rank augments the whole global batch with the generator of (seed,
  epoch, batch) - the same draws on every rank and in one process - and keeps its rows.  Dropout
  masks come from a stream per rank and step (derived from the layer's generator, which advances
  identically on every rank), so a run is reproducible for a given number of processes.
* Batch norm normalises each rank's shard with that shard's statistics (as Horovod and
  PyTorch's DistributedDataParallel do by default): synchronising them would cost two more
  latency-bound Allreduces per batch-norm layer per step, on every step, which is what limits
  scaling across machines.  Only at a small per-rank batch does that change the maths
  noticeably; the running statistics are averaged over ranks each step.
* A rank that raises tells the others (each prints why it stops) and aborts the job
  (``MPI_Abort``): mpi4py's normal exit would wait in ``MPI_Finalize`` forever.  A rank killed by
  a signal is noticed by the launcher (MPICH's ``mpiexec`` kills the other ranks within a second
  and prints which process died); as a backstop for launchers that don't, a rank that gets no
  answer from the others for ``NUMCNN_MPI_TIMEOUT`` seconds (default 600) aborts the job.

Without mpi4py, or outside an MPI job, nothing here is imported and numcnn runs as one process.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..errors import ConfigError, NumcnnError

__all__ = ["world", "launched_size", "World"]

#: environment variables in which MPI launchers give the number of processes
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
_FAIL_TAG, _ACK_TAG = 0x6E63, 0x6E64        # point-to-point tags of the failure notice
_world = {"checked": False, "world": None}
_GRACE_S = 5.0          # how long a failing rank waits for the others to say they stop


def launched_size() -> int:
    """How many processes the MPI launcher started (1 outside ``mpiexec``), from its environment,
    without importing mpi4py."""
    for name in SIZE_VARIABLES:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def world():
    """The MPI job this process is part of, as a :class:`World`; None in a single process (no
    launcher, or ``mpiexec -n 1``).  Under ``mpiexec -n N`` (N > 1) without mpi4py: ConfigError."""
    if not _world["checked"]:
        _world["checked"] = True
        if launched_size() > 1:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError(f"numcnn runs under an MPI launcher with {launched_size()} "
                                  "processes but mpi4py is not installed: pip install "
                                  "'numcnn[mpi]' (mpi4py and MPICH), or run one process") from None
            if MPI.COMM_WORLD.Get_size() > 1:
                _world["world"] = World(MPI.COMM_WORLD, MPI)
    return _world["world"]


def _timeout():
    text = os.environ.get("NUMCNN_MPI_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"NUMCNN_MPI_TIMEOUT must be a number of seconds > 0, got {text!r}")
    return value


class World:
    """One MPI communicator and what numcnn's training does with it.

    ``rank`` (0..size-1), ``size`` (processes), ``local_size`` (processes on this machine).
    """

    def __init__(self, comm, mpi):
        self.comm, self.MPI = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(mpi.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()
        self.timeout = _timeout()
        self._hook_uncaught_exceptions()
        from . import threads
        if not threads.threads_chosen():       # share the machine's cores between its ranks
            threads.set_num_threads(max(1, threads.usable_cores() // self.local_size))

    @property
    def root(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_size={self.local_size})"

    # -- waiting, and stopping every rank when one fails -----------------------------------------
    def _wait(self, request, what):
        """Wait for a non-blocking collective, watching for another rank's failure notice (and
        for silence longer than the timeout), so no rank ever hangs in MPI."""
        start = time.monotonic()
        delay = 1e-5
        while not request.Test():
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_FAIL_TAG):
                self._stop_for_other()
            if time.monotonic() - start > self.timeout:
                self.fail(f"no answer from the other ranks in {what} for {self.timeout:g} s (a "
                          "rank died or hangs; NUMCNN_MPI_TIMEOUT sets this limit)")
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    def _stop_for_other(self):
        status = self.MPI.Status()
        self.comm.Probe(source=self.MPI.ANY_SOURCE, tag=_FAIL_TAG, status=status)
        buf = np.empty(status.Get_count(self.MPI.BYTE), dtype=np.uint8)
        self.comm.Recv([buf, self.MPI.BYTE], source=status.Get_source(), tag=_FAIL_TAG)
        print(f"numcnn: rank {self.rank} of {self.size}: stopping because "
              f"{buf.tobytes().decode('utf-8', 'replace')}", file=sys.stderr, flush=True)
        self.comm.Send([np.zeros(1, np.uint8), self.MPI.BYTE], dest=status.Get_source(), tag=_ACK_TAG)
        time.sleep(_GRACE_S + 1)     # the failing rank aborts the job (after its output is out)
        self._abort()

    def fail(self, why, grace_s=None):
        """Stop the whole job: print ``why`` with this rank's number, tell every other rank (each
        prints it as it stops), then ``MPI_Abort``.  Never returns."""
        text = f"rank {self.rank} of {self.size} failed: {why}"
        print(f"numcnn: {text}; stopping every rank", file=sys.stderr, flush=True)
        note = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
        requests = [self.comm.Isend([note, self.MPI.BYTE], dest=r, tag=_FAIL_TAG)
                    for r in range(self.size) if r != self.rank]
        acks, deadline = 0, time.monotonic() + (_GRACE_S if grace_s is None else grace_s)
        while acks < self.size - 1 and time.monotonic() < deadline:   # let them say why
            status = self.MPI.Status()
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_ACK_TAG, status=status) or \
                    self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_FAIL_TAG, status=status):
                # an answer, or the other rank failing too (the same bad input on every rank)
                buf = np.empty(max(1, status.Get_count(self.MPI.BYTE)), dtype=np.uint8)
                self.comm.Recv([buf, self.MPI.BYTE], source=status.Get_source(),
                               tag=status.Get_tag())
                acks += 1
            else:
                time.sleep(0.01)
        del requests
        time.sleep(0.3)              # let mpiexec pass on every rank's last words
        self._abort()

    def _abort(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(2)
        os._exit(2)                  # pragma: no cover - Abort does not return

    def _hook_uncaught_exceptions(self):
        """A script (the Python API in an MPI job) that dies of an exception stops every rank
        instead of leaving them waiting; mpi4py alone would hang in MPI_Finalize."""
        previous = sys.excepthook

        def hook(kind, value, tb):
            previous(kind, value, tb)
            self.fail(f"{kind.__name__}: {value}")
        sys.excepthook = hook

    def guard(self, fn):
        """``fn`` wrapped so that an exception in it stops every rank (see :meth:`fail`)."""
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, SystemExit) and not exc.code:
                    raise
                why = str(exc) if isinstance(exc, NumcnnError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, NumcnnError):
                    import traceback
                    traceback.print_exc()
                self.fail(why)
        guarded.__wrapped__ = fn
        return guarded

    # -- collectives ---------------------------------------------------------------------------
    def bcast_object(self, obj):
        """``obj`` (small, JSON-able) from rank 0 on every rank."""
        import json
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8) if self.root else None
        n = np.array([0 if data is None else data.size], dtype=np.int64)
        self._wait(self.comm.Ibcast(n, root=0), "a broadcast")
        buf = data.copy() if self.root else np.empty(int(n[0]), dtype=np.uint8)
        self._wait(self.comm.Ibcast(buf, root=0), "a broadcast")
        return json.loads(buf.tobytes().decode())

    def broadcast_model(self, model):
        """Rank 0's parameters and buffers, on every rank (Horovod's broadcast_parameters)."""
        arrays = [p.value for p in model.parameters()] + list(model.buffers().values())
        if not arrays:
            return
        flat = np.concatenate([np.ravel(a) for a in arrays]).astype(model.dtype, copy=False)
        self._wait(self.comm.Ibcast(flat, root=0), "the broadcast of the initial weights")
        if not self.root:
            _unflatten(flat, arrays)

    def shard(self, n):
        """This rank's rows ``[lo, hi)`` of a global batch of ``n``."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def shard_batches(self, loader, epoch, first):
        """What ``loader.iter_from(epoch, first)`` yields, cut to this rank's rows: the same
        global batches in the same order, augmented as one process would (the whole batch with
        the batch's generator), then this rank's rows scaled and normalised."""
        from ..data.loader import normalize, scale
        it = loader.iter_from(epoch, first)        # checks the arguments, sets loader.epoch
        it.close()
        idx = loader.order(epoch)
        b = loader.batch_size
        for k in range(first, len(loader)):
            sel = idx[k * b:(k + 1) * b]
            lo, hi = self.shard(len(sel))
            xb = loader.x[sel]
            if loader.augment is not None:
                xb = np.asarray(loader.augment(xb, loader.batch_rng(epoch, k)))
            xb = xb[lo:hi]
            if loader.normalize is not None:
                xb = normalize(xb, loader.normalize[0], loader.normalize[1], loader.dtype)
            else:
                xb = np.ascontiguousarray(scale(xb, loader.dtype))
            yield xb, loader.y[sel][lo:hi]

    def step(self, model, loss_fn, xb, yb, yb_dev, flag):
        """Forward and backward of this rank's rows, then ONE Allreduce of a flat buffer::

            [ n_r g_r for every parameter | running stats / P | n_r, n_r loss_r, correct_r, stop ]

        after which every rank sets each gradient to sum(n_r g_r) / sum(n_r), the mean over the
        global batch.  Returns the global batch's (samples, loss sum, correct)."""
        n = len(yb)
        dropouts = _per_rank_dropout(model, self.rank)
        try:
            if n:
                logits = model.forward(xb, training=True)
                loss = loss_fn.forward(logits, yb_dev)
                model.backward(loss_fn.backward())
                correct = int((np.asarray(logits.argmax(axis=1)) == yb).sum())
            else:                    # a last batch smaller than the number of ranks
                loss, correct = 0.0, 0
        finally:
            for layer, rng in dropouts:
                layer.rng = rng
        params = model.parameters()
        buffers = list(model.buffers().values())
        dt = model.dtype
        sizes = [p.value.size for p in params] + [b.size for b in buffers]
        flat = np.empty(sum(sizes) + 4, dtype=dt)
        at = 0
        for p in params:
            view = flat[at:at + p.value.size]
            if p.grad is None or n == 0:
                view[:] = 0
            else:
                np.multiply(np.ravel(p.grad), dt.type(n), out=view)
            at += p.value.size
        for b in buffers:
            np.multiply(np.ravel(b), dt.type(1.0 / self.size), out=flat[at:at + b.size])
            at += b.size
        flat[at:] = (n, loss * n, correct, 1.0 if flag.stop else 0.0)
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM),
                   "the gradient Allreduce")
        total = int(round(float(flat[at])))
        at = 0
        for p in params:
            g = flat[at:at + p.value.size].reshape(p.value.shape)
            g /= dt.type(total)
            p.grad = g
            at += p.value.size
        _unflatten(flat[at:at + sum(b.size for b in buffers)], buffers)
        if flat[-1] > 0:
            flag.stop = True         # Ctrl-C on any rank: every rank stops after this step
        return total, float(flat[-3]), int(round(float(flat[-2])))

    # -- the Trainer ---------------------------------------------------------------------------
    def attach(self, trainer):
        """Make ``trainer`` one rank of a data-parallel run: rank 0 alone writes files and shows
        progress; ``fit`` starts from rank 0's weights and stops every rank if it fails."""
        if not self.root:
            trainer.out_dir = None
            trainer.progress = False
        fit = trainer.fit

        def fit_from_rank0(*args, **kwargs):
            self.broadcast_model(trainer.model)
            return fit(*args, **kwargs)
        trainer.fit = self.guard(fit_from_rank0)
        return trainer


def _unflatten(flat, arrays):
    at = 0
    for a in arrays:
        a[...] = flat[at:at + a.size].reshape(a.shape)
        at += a.size


def _per_rank_dropout(model, rank):
    """Give each Dropout a generator for this rank and step: seeded from one draw of its own
    generator (the same draw on every rank, so the layer's stream and its checkpointed state
    stay identical everywhere) and the rank.  Returns [(layer, its own generator)] to restore."""
    from ..layers.dropout import Dropout
    from .threads import _walk
    swapped = []
    for layer in _walk(model):
        if isinstance(layer, Dropout) and layer.p > 0:
            seed = int(layer.rng.integers(2 ** 63))
            swapped.append((layer, layer.rng))
            layer.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(rank,)))
    return swapped
