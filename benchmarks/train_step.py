"""LeNet-5 training step and inference: numcnn vs PyTorch, side by side in one process.

    python benchmarks/train_step.py [--steps 30] [--threads N]

Times a training step (batch 64, 1x28x28: forward + backward + SGD step) and an inference pass
(batch 256) for numcnn and for the same network (same weights) in PyTorch with
``torch.set_num_threads`` equal to the threads numcnn's BLAS uses.  Medians after warm-up.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import numcnn


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except Exception:
        return os.cpu_count() or 1


def median_time(fn, steps, warmup=5):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def torch_lenet(model):
    import torch
    from torch import nn
    t = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    ours = [l for l in model.layers if l.parameters()]
    theirs = [m for m in t if list(m.parameters())]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(a.weight.value))
            b.bias.copy_(torch.from_numpy(a.bias.value))
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch
    threads = args.threads or _blas_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    xb = rng.random((64, 1, 28, 28), dtype=np.float32)
    yb = rng.integers(0, 10, 64)
    xi = rng.random((256, 1, 28, 28), dtype=np.float32)

    model = numcnn.models.lenet5()
    tmodel = torch_lenet(model)
    loss = numcnn.losses.CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def ours_train():
        l = loss.forward(model.forward(xb), yb)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
        return l

    def ours_infer():
        return model.forward(xi, training=False)

    tx, ty, txi = torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(xi)
    tloss = torch.nn.CrossEntropyLoss()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)

    def torch_train():
        topt.zero_grad()
        l = tloss(tmodel(tx), ty)
        l.backward()
        topt.step()

    def torch_infer():
        with torch.no_grad():
            return tmodel(txi)

    rows = []
    for name, ours, theirs, batch in (("train step, batch 64", ours_train, torch_train, 64),
                                      ("inference, batch 256", ours_infer, torch_infer, 256)):
        t_o = median_time(ours, args.steps)
        t_t = median_time(theirs, args.steps)
        rows.append((name, batch / t_o, batch / t_t))
    print(f"LeNet-5, 1x28x28, {threads} thread(s), numpy {np.__version__}, torch {torch.__version__}")
    print(f"{'case':<22}{'numcnn img/s':>14}{'torch img/s':>14}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<22}{a:>14,.0f}{b:>14,.0f}{a / b:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
