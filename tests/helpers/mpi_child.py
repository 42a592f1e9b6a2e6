"""A small training run for tests/test_mpi.py, under ``mpiexec -n N`` or in one process.

    python mpi_child.py OUT [--epochs E] [--resume CKPT] [--fail raise|kill --rank R --step K]

Trains digits-cnn on 96 fixed random 1x8x8 uint8 images (global batch 32, SGD, random shifts),
with checkpoints in OUT; rank 0 (or the only process) writes OUT/weights.npz.  ``--fail`` makes
rank R raise, or SIGKILL itself, at its K-th training step (counted from 1).
"""
import argparse
import os
import signal
import sys

import numpy as np

import numcnn
from numcnn.data.augment import Augment
from numcnn.training import Trainer

N, BATCH = 96, 32


def data():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (N, 1, 8, 8)).astype(np.uint8), rng.integers(0, 10, N)


def train(out, epochs=2, resume=None):
    model = numcnn.models.build("digits-cnn", image_size=8, rng=1)
    trainer = Trainer(model, optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs,
                      batch_size=BATCH, seed=7, augment=Augment(shift=1), out_dir=out,
                      progress=False)
    trainer.fit(data(), resume=resume)
    return model, trainer


def arrays(model):
    return [p.value for p in model.parameters()] + list(model.buffers().values())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--resume", default=None)
    p.add_argument("--fail", choices=["raise", "kill"], default=None)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--step", type=int, default=5)
    a = p.parse_args()
    rank = int(os.environ.get("PMI_RANK", "0"))
    if a.fail and rank == a.rank:
        steps = [0]
        step = Trainer._step

        def failing_step(self, *args):
            steps[0] += 1
            if steps[0] == a.step:
                if a.fail == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure at step {a.step}")
            return step(self, *args)
        Trainer._step = failing_step
    model, trainer = train(a.out, a.epochs, a.resume)
    if trainer.distributed is None or trainer.distributed.root:
        np.savez(os.path.join(a.out, "weights.npz"), *arrays(model))
    print(f"rank {rank}: done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
