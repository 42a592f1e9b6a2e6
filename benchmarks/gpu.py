"""numcnn on CuPy vs PyTorch on CUDA: throughput on one GPU, side by side in one process.

    python benchmarks/gpu.py                    # needs CuPy, PyTorch with CUDA and a GPU
    python benchmarks/gpu.py --out gpu.md       # also write the Markdown section to a file
    python benchmarks/gpu.py --merge gpu.md     # put that section into benchmarks/results.md

``--merge`` replaces (or appends) the GPU section of results.md with a file a GPU run wrote,
so a section measured on a lent GPU machine lands beside the CPU figures; benchmarks/run.py
keeps that section when it rewrites the file.

The same networks, batches, weights, data and optimizer as ``benchmarks/run.py`` (LeNet-5 on
1x28x28 and the CIFAR-style net on 3x32x32; batch 64 and 256; a training step with SGD momentum
0.9, and inference), with numcnn's model moved to the GPU (``model.to("gpu")``, the same layer
code on CuPy arrays) and PyTorch's on ``cuda``.  Float32 throughout: PyTorch's TF32 shortcuts
for convolutions and matrix products are switched off, as CuPy uses none by default.  Each step
ends with a device synchronisation, so a time is the step's whole GPU work; medians of the timed
steps, the two frameworks taking turns in rounds.  Before timing, the logits of both on the same
batch are compared.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nets import (LR, MOMENTUM, NETS, build_net, forward_flops, make_data,  # noqa: E402
                  numcnn_train_step, to_torch)
from report import GPU_HEADING  # noqa: E402

BATCHES = (64, 256)


def _timed(fn, sync, steps):
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def pair(net, batch, torch_device):
    """``{(framework, mode): step function}`` for one network and batch, and the logits gap."""
    import cupy
    import torch

    model, shape = build_net(net)
    tmodel = to_torch(model).to(torch_device)
    model.to("gpu")
    x, y = make_data(shape, batch)
    xg, yg = cupy.asarray(x), cupy.asarray(y)
    xt, yt = torch.from_numpy(x).to(torch_device), torch.from_numpy(y).to(torch_device)
    with torch.no_grad():
        gap = float(np.abs(cupy.asnumpy(model.forward(xg, training=False))
                           - tmodel(xt).cpu().numpy()).max())
    n_train = numcnn_train_step(model, xg, yg)
    tloss = torch.nn.CrossEntropyLoss()
    topt = torch.optim.SGD(tmodel.parameters(), lr=LR, momentum=MOMENTUM)

    def t_train():
        topt.zero_grad()
        tloss(tmodel(xt), yt).backward()
        topt.step()

    def t_infer():
        with torch.inference_mode():
            tmodel(xt)

    fns = {("numcnn", "train"): n_train, ("numcnn", "infer"): lambda: model.forward(xg, training=False),
           ("torch", "train"): t_train, ("torch", "infer"): t_infer}
    return fns, gap, forward_flops(model, shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round (default 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the Markdown section here too")
    ap.add_argument("--torch-device", default="cuda", help=argparse.SUPPRESS)   # cpu: dry run
    ap.add_argument("--merge", default=None, metavar="FILE",
                    help="put FILE (a section this script wrote) into results.md, run nothing")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge)
    import cupy
    import torch

    import numcnn
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    sync_c = cupy.cuda.Device().synchronize
    sync_t = torch.cuda.synchronize if args.torch_device == "cuda" else (lambda: None)
    t0 = time.time()
    rows = []
    for net in NETS:
        for batch in BATCHES:
            fns, gap, flops = pair(net, batch, args.torch_device)
            times = {k: [] for k in fns}
            for (fw, mode), fn in fns.items():              # warm-up (kernels compiled, cached)
                _timed(fn, sync_c if fw == "numcnn" else sync_t, args.warmup)
            for _ in range(args.rounds):                    # take turns
                for (fw, mode), fn in fns.items():
                    times[(fw, mode)] += _timed(fn, sync_c if fw == "numcnn" else sync_t, args.steps)
            for mode in ("train", "infer"):
                n, t = (statistics.median(times[(fw, mode)]) for fw in ("numcnn", "torch"))
                rows.append((NETS[net], batch, mode, batch / n, batch / t, n * 1e3, t * 1e3,
                             flops * batch * (3 if mode == "train" else 1) / n / 1e9, gap))
            print(f"{net} b{batch} done ({time.time() - t0:.0f} s)", flush=True)
    name = torch.cuda.get_device_name(0) if args.torch_device == "cuda" else "(dry run)"
    lines = [
        GPU_HEADING, "",
        f"Generated by `python benchmarks/gpu.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {time.time() - t0:.0f} s: {name}; CuPy {cupy.__version__}, PyTorch {torch.__version__} "
        f"(TF32 off), numpy {np.__version__}, Python {platform.python_version()}, numcnn "
        f"{getattr(numcnn, '__version__', '?')}.  Median of {args.rounds} x {args.steps} timed steps "
        f"after {args.warmup} warm-up steps, each ending in a device synchronisation.",
        "",
        "| network | batch | mode | numcnn img/s | torch img/s | numcnn / torch | numcnn ms | "
        "torch ms | numcnn GFLOP/s | max logit gap |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for net, batch, mode, n, t, nms, tms, gf, gap in rows:
        lines.append(f"| {net} | {batch} | {'train step' if mode == 'train' else 'inference'} | "
                     f"{n:,.0f} | {t:,.0f} | {n / t:.2f}x | {nms:.2f} | {tms:.2f} | {gf:.1f} | {gap:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def merge(section_file, results=os.path.join(HERE, "results.md")):
    """Replace the GPU section of results.md with ``section_file``'s text (or append it)."""
    with open(section_file) as f:
        section = f.read().strip() + "\n"
    if not section.startswith(GPU_HEADING):
        raise SystemExit(f"{section_file} does not start with {GPU_HEADING!r}")
    with open(results) as f:
        text = f.read()
    at = text.find(GPU_HEADING)
    text = (text[:at] if at >= 0 else text.rstrip() + "\n\n") + section
    with open(results, "w") as f:
        f.write(text)
    print(f"merged {section_file} into {results}")


if __name__ == "__main__":
    main()
