"""Child process for tests/test_interrupt.py and tests/test_memory.py: trains a tiny CNN.

    python train_child.py OUT_DIR [--epochs E] [--samples N] [--batch-size B] [--seed S]
                                  [--resume] [--rss-log FILE] [--dataset digits|mnist-5k]

* trains a small CNN (conv - relu - pool - dense - dropout - dense) on the first N images of
  ``numcnn.datasets.load(dataset)`` with SGD + momentum, writing ``OUT_DIR/checkpoint.safetensors``
  after every epoch (the Trainer does that whenever ``out_dir`` is set);
* ``--resume``: continue from ``OUT_DIR/checkpoint.safetensors`` when it exists;
* prints ``READY`` (flushed) once imports and data loading are done, just before training, and
  ``SAVING <epoch>`` just before each checkpoint write (a Trainer subclass overriding
  ``save_checkpoint``), so the parent can aim its SIGKILLs at the start of training or at writes;
* ``--rss-log FILE``: after every epoch append one JSON line ``{"epoch", "maxrss_kb", "hwm_kb",
  "rss_kb"}`` (peak RSS from ``resource.getrusage`` and from ``/proc/self/status`` VmHWM, current
  RSS VmRSS; with
  ``--tracemalloc`` also ``traced_kb``, what Python and NumPy hold), recorded by a Trainer
  subclass that wraps ``Trainer._run_epoch``.

The parent pins BLAS to one thread (``OMP_NUM_THREADS=1`` ...) so runs are bit-reproducible.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys


def proc_status_kb(field):
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in KiB, from /proc (None elsewhere).

    (``ru_maxrss`` survives ``exec``, so in a child of a big pytest process it reports the
    parent's peak; ``VmHWM`` belongs to this process image alone.)
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def build_model(shape, seed):
    from numcnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
    from numcnn.model import Sequential
    c, h, w = shape
    return Sequential([
        Conv2D(c, 8, 3, padding=1, rng=seed), ReLU(), MaxPool2D(2), Flatten(),
        Dense(8 * (h // 2) * (w // 2), 128, rng=seed + 1), ReLU(), Dropout(0.2, rng=seed + 2),
        Dense(128, 10, rng=seed + 3),
    ], input_shape=shape)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--validate", action="store_true", help="evaluate on the test split each epoch")
    p.add_argument("--rss-log", default=None)
    p.add_argument("--tracemalloc", action="store_true",
                   help="also log the bytes Python/NumPy hold (tracemalloc) after every epoch")
    a = p.parse_args(argv)
    if a.tracemalloc:
        import tracemalloc
        tracemalloc.start()

    from numcnn import datasets
    from numcnn.training import Trainer

    (x, y), (xt, yt) = datasets.load(a.dataset)
    x, y = x[:a.samples], y[:a.samples]
    val = (xt[:a.samples], yt[:a.samples]) if a.validate else None
    model = build_model(tuple(x.shape[1:]), a.seed)

    class RecordingTrainer(Trainer):
        def _run_epoch(self, loader, val, epoch, first_batch, partial, flag):
            stopped = super()._run_epoch(loader, val, epoch, first_batch, partial, flag)
            if a.rss_log:
                rec = {"epoch": epoch + 1,
                       "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                       "hwm_kb": proc_status_kb("VmHWM"), "rss_kb": proc_status_kb("VmRSS")}
                if a.tracemalloc:
                    import tracemalloc
                    rec["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
                with open(a.rss_log, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            return stopped

        def save_checkpoint(self, path, epoch, batch, partial):
            # tell the parent a checkpoint write starts now, so it can aim SIGKILLs at writes
            print(f"SAVING {epoch}", flush=True)
            super().save_checkpoint(path, epoch, batch, partial)

    trainer = RecordingTrainer(model, optimizer="sgd", lr=0.05, momentum=0.9, epochs=a.epochs,
                               batch_size=a.batch_size, seed=a.seed, out_dir=a.out_dir,
                               progress=False)
    ck = os.path.join(a.out_dir, "checkpoint.safetensors")
    resume = ck if a.resume and os.path.exists(ck) else None
    print("READY", flush=True)
    trainer.fit((x, y), val, resume=resume)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
