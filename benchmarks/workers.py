"""One framework in a process of its own, timed on request by the driver (benchmarks/run.py).

    python benchmarks/workers.py FRAMEWORK --threads N        (started by run.py, over pipes)
    python benchmarks/workers.py --memory-probe FRAMEWORK NET BATCH --threads N

Why a process each: in one process the frameworks change each other's speed.  numcnn's first
forward pass sets glibc's malloc to keep freed blocks (numcnn.backend.keep_freed_memory), which
made PyTorch 1.3-1.6x faster than in a process of its own; and numpy's OpenBLAS threads, still
spinning after a numcnn step, slowed the PyTorch step after it.

FRAMEWORK is ``numcnn``, ``torch``, ``convnet``, ``gemm`` (numpy's float32 1024^3 GEMM: the
reference rate) or ``torch+malloc`` (PyTorch in a process where numcnn's malloc settings were
made first: the note row that keeps that effect visible).  Every worker uses N threads: numcnn
``set_num_threads(N)`` (N batch shards, BLAS at N outside them), PyTorch
``torch.set_num_threads(N)``, numpy's BLAS (threadpoolctl) and convnet's pools N.

Requests are JSON lines on stdin, one answer line each on stdout (all other output goes to
stderr):

* ``{"op": "time", "case": CASE, "steps": n, "warmup": w, "budget_s": s}`` -> ``{"times": [...]}``
  (w untimed calls, then n timed ones, fewer if they would take more than s seconds);
  CASE is ``["step", net, batch, "train"|"infer"]`` or ``["conv", layer index, batch]``.
* ``{"op": "logits", "net": net}`` -> logits of 8 images before and after one training step.
* ``{"op": "tracemalloc", "net": net, "batch": b}``, ``{"op": "info"}``, ``{"op": "quit"}``.
"""
from __future__ import annotations

import os
import sys

ENV_VARS = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from nets import Runner, build_net, load_convnet, make_data, to_torch  # noqa: E402

FRAMEWORKS = ("numcnn", "torch", "convnet", "gemm", "torch+malloc")


def setup_threads(fw, n):
    """``n`` threads for this worker's framework and for numpy's BLAS."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        print("warning: threadpoolctl missing; numpy's BLAS keeps its thread count", file=sys.stderr)
    if fw == "numcnn":
        import numcnn
        numcnn.set_num_threads(n)
    elif fw.startswith("torch"):
        import torch
        torch.set_num_threads(n)
        if fw == "torch+malloc":
            from numcnn.backend import keep_freed_memory
            keep_freed_memory()          # what numcnn's first forward pass does to the process
    elif fw == "convnet":
        cv = load_convnet()
        if cv is not None and cv.available():
            cv.configure(n)
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=n, user_api="blas")    # cv2 brings its own OpenBLAS


class Worker:
    def __init__(self, fw, threads):
        self.fw = "torch" if fw == "torch+malloc" else fw
        self.name, self.threads = fw, threads
        self.runners, self.fns = {}, {}

    def runner(self, net):
        if net not in self.runners:
            self.runners[net] = Runner(self.fw, net)
        return self.runners[net]

    def fn(self, case):
        key = tuple(case)
        if key not in self.fns:
            self.fns[key] = self._make(case)
        return self.fns[key]

    def _make(self, case):
        if self.name == "gemm":
            n = 1024
            a = np.random.default_rng(0).random((n, n), dtype=np.float32)
            b = np.random.default_rng(1).random((n, n), dtype=np.float32)
            return lambda: a @ b
        if case[0] == "step":
            _, net, batch, mode = case
            r = self.runner(net)
            x, y = make_data(r.input_shape, batch)
            return r.fn(r.prepare(x, y), mode)
        return conv_layer_fn(self.fw, case[1], case[2])

    def time(self, case, steps, warmup, budget_s=None):
        fn = self.fn(case)
        for _ in range(warmup):
            fn()
        times = []
        start = time.perf_counter()
        while len(times) < steps:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            if budget_s is not None and time.perf_counter() - start > budget_s:
                break
        return {"times": times}

    def logits(self, net):
        """Logits on 8 images with the copied weights, and after one training step on them."""
        r = Runner(self.fw, net)
        x, y = make_data(build_net(net)[1], 8, seed=3)
        before = np.asarray(r.logits(x))
        r.fn(r.prepare(x, y), "train")()
        return {"before": before.tolist(), "after": np.asarray(r.logits(x)).tolist()}

    def info(self):
        out = {"fw": self.name, "threads": self.threads, "pid": os.getpid(),
               "env": {k: os.environ.get(k) for k in ENV_VARS}}
        try:
            from machine import numpy_blas
            out["blas"] = numpy_blas()
        except Exception:
            pass
        if self.fw == "torch":
            import torch
            out["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                            "interop": torch.get_num_interop_threads(),
                            "mkl": torch.backends.mkl.is_available(),
                            "mkldnn": torch.backends.mkldnn.is_available()}
        if self.fw == "numcnn":
            import numcnn
            out["numcnn"] = {"version": numcnn.__version__, "threads": numcnn.get_num_threads(),
                             "layout": numcnn.Sequential.internal_layout}
        if self.fw == "convnet":
            cv = load_convnet()
            out["convnet"] = cv.describe() if cv is not None else "not installed"
            try:
                out["pool_err"] = cv.maxpool_backward_error()
            except Exception as exc:
                out["pool_err"] = f"{type(exc).__name__}: {exc}"
        return out

    def convnet_default_path(self, net):
        cv = load_convnet()
        model, shape = build_net(net)
        x, _ = make_data(shape, 8, seed=3)
        ref = np.asarray(model.forward(x[:4], training=False))
        err = cv.default_path_error(model, shape, x[:4], ref)
        return {"error": err}


def conv_layer_fn(fw, index, batch):
    """Conv2D ``index`` of the CIFAR net alone, forward + backward on its real input shape:
    numcnn in its internal CNHW layout as Sequential calls it, PyTorch through nn.Conv2d."""
    model, shape = build_net("cifar")
    rng = np.random.default_rng(2)
    in_shape = tuple(shape)
    for i, (layer, out_shape) in enumerate(model.shapes(shape)):
        if i == index:
            break
        in_shape = out_shape
    c, h, w = in_shape
    o, ho, wo = out_shape
    if fw == "numcnn":
        xn = rng.random((batch, c, h, w), dtype=np.float32)
        xc = xn.transpose(1, 0, 2, 3) if index == 0 else np.ascontiguousarray(xn.transpose(1, 0, 2, 3))
        g = rng.standard_normal((o, batch, ho, wo), dtype=np.float32)

        def f_numcnn():
            layer.forward(xc, training=True, layout="CNHW")
            layer.backward(g)
            layer.zero_grad()
        return f_numcnn
    import torch
    conv = to_torch(model)[index]
    xt = torch.from_numpy(rng.random((batch, c, h, w), dtype=np.float32))
    xt.requires_grad_(layer.needs_input_grad)
    gt = torch.from_numpy(rng.standard_normal((batch, o, ho, wo), dtype=np.float32))

    def f_torch():
        conv(xt).backward(gt)
        conv.zero_grad(set_to_none=True)
        xt.grad = None
    return f_torch


def tracemalloc_step(step):
    """Peak traced bytes above the traced bytes at the start of one step, after a traced warm-up
    step.  numpy reports its array buffers to tracemalloc; PyTorch doesn't."""
    gc.collect()
    tracemalloc.start()
    try:
        step()
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def serve(fw, threads):
    """Answer the driver's requests until "quit" (or end of input)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                        # anything else printed goes to stderr
    sys.stdout = sys.stderr
    setup_threads(fw, threads)
    w = Worker(fw, threads)
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "quit":
                break
            if op == "time":
                out = w.time(req["case"], req["steps"], req.get("warmup", 0), req.get("budget_s"))
            elif op == "logits":
                out = w.logits(req["net"])
            elif op == "tracemalloc":
                r = w.runner(req["net"])
                x, y = make_data(r.input_shape, req["batch"])
                out = {"bytes": tracemalloc_step(r.fn(r.prepare(x, y), "train"))}
            elif op == "convnet_default_path":
                out = w.convnet_default_path(req["net"])
            elif op == "info":
                out = w.info()
            else:
                out = {"error": f"unknown op {op!r}"}
        except Exception as exc:         # a framework failing must not stop the benchmark
            out = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        proto.write(json.dumps(out) + "\n")


# -- memory --------------------------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _maxrss_kb():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r       # bytes on macOS, KiB on Linux


def _fix_malloc_threshold(nbytes=65536):
    """glibc: mmap every block >= nbytes and unmap it when freed (as MALLOC_MMAP_THRESHOLD_ does;
    a fixed threshold also stops glibc from raising it, up to 32 MiB, after large frees)."""
    try:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, nbytes))          # -3: M_MMAP_THRESHOLD
    except Exception:
        return False


def memory_probe(fw, net, batch, threads):
    """Peak RSS growth of one training step in this (fresh) process, as JSON on stdout."""
    fixed = _fix_malloc_threshold()
    setup_threads(fw, threads)
    runner = Runner(fw, net)
    x, y = make_data(runner.input_shape, batch)
    step = runner.fn(runner.prepare(x, y), "train")

    def reset_peak():    # Linux: "5" resets this address space's peak-RSS mark (VmHWM) to RSS
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    if reset_peak():
        step()                       # warm-up: momentum buffers, grads, lazily built kernels
        gc.collect()
        reset_peak()
        base = _status_kb("VmRSS")
        method = "warm-up step; peak reset (/proc/self/clear_refs); one step; peak - RSS before"
    else:
        gc.collect()
        base = _maxrss_kb()
        method = "no peak reset possible: first step (with one-time allocations); " \
                 "ru_maxrss after - before"
    ru_before = _maxrss_kb()
    step()
    ru_after = _maxrss_kb()
    hwm = _status_kb("VmHWM") if sys.platform.startswith("linux") else None
    print(json.dumps({"fw": fw, "net": net, "batch": batch, "rss_before_kb": base,
                      "ru_maxrss_before_kb": ru_before, "ru_maxrss_after_kb": ru_after,
                      "vmhwm_after_kb": hwm, "delta_kb": ru_after - base,
                      "hwm_delta_kb": None if hwm is None else hwm - base, "method": method,
                      "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                      "mallopt_mmap_threshold": fixed}))


def main(argv=None):
    ap = argparse.ArgumentParser(description="one framework's benchmark worker (see run.py)")
    ap.add_argument("framework", nargs="?", choices=FRAMEWORKS)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--memory-probe", nargs=3, metavar=("FRAMEWORK", "NET", "BATCH"))
    args = ap.parse_args(argv)
    if args.memory_probe:
        fw, net, batch = args.memory_probe
        memory_probe(fw, net, int(batch), args.threads)
    elif args.framework:
        serve(args.framework, args.threads)
    else:
        ap.error("give a FRAMEWORK or --memory-probe")


if __name__ == "__main__":
    main()
