"""Where a training step's time goes: cProfile of numcnn's step, by function.

    python benchmarks/profile_step.py                       # LeNet-5, batch 64, CPU
    python benchmarks/profile_step.py --net cifar --batch 256 --gpu

Runs warm-up steps, then profiles ``--steps`` training steps (forward, backward, SGD momentum)
of the network from benchmarks/run.py and prints the functions with the most time of their
own.  On a GPU (``--gpu``, CuPy) each step ends in a device synchronisation, and the host time
per CuPy call shows how much of a step is Python and kernel-launch overhead.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nets import NETS, build_net, make_data, numcnn_train_step  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="lenet5", choices=list(NETS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    model, shape = build_net(args.net)
    x, y = make_data(shape, args.batch)
    sync = lambda: None  # noqa: E731
    if args.gpu:
        import cupy
        model.to("gpu")
        x, y = cupy.asarray(x), cupy.asarray(y)
        sync = cupy.cuda.Device().synchronize
    step = numcnn_train_step(model, x, y, after=sync)

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t) / args.steps
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    st = pstats.Stats(prof)
    calls = sum(v[1] for v in st.stats.values()) / args.steps
    print(f"{args.net} batch {args.batch} on {'GPU' if args.gpu else 'CPU'}: {plain * 1e3:.2f} ms per "
          f"step unprofiled; {calls:,.0f} function calls per step")
    st.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
