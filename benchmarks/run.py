"""numcnn vs PyTorch (and the PyPI package ``convnet``): throughput, FLOP/s and memory, side by side.

    python benchmarks/run.py                   # full run (~3.5 min on 2 idle cores), writes results.md
    python benchmarks/run.py --quick           # short run (~1 min)
    python benchmarks/run.py --only numcnn,torch --threads 1
    python benchmarks/run.py --memory-probe numcnn|torch|convnet lenet5|cifar BATCH   (internal)

Networks: LeNet-5 on 1x28x28 (``numcnn.models.lenet5()``) and a CIFAR-style net on 3x32x32
(conv3x3 32 - conv3x3 32 - pool - conv3x3 64 - conv3x3 64 - pool - dense 256 - dense 10, ReLU
after each conv/hidden dense, padding 1).  For batch 64 and 256: a training step (forward,
backward, SGD momentum 0.9) and inference (forward, eval mode).  Every framework runs the SAME
weights (copied from numcnn's arrays, checked by comparing logits before and after one step),
PyTorch with ``torch.set_num_threads`` equal to numcnn's BLAS thread count.  Times are medians of
timed steps after warm-up; frameworks take turns in several rounds so that a change in the
machine's background load hits all of them.  See benchmarks/README.md for how to read the output.
"""
from __future__ import annotations

import os
import sys

# Recorded before anything (numpy, torch, convnet) is imported or can change them.
ENV_VARS = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ENV_AT_START = {k: os.environ.get(k) for k in ENV_VARS}

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMEWORKS = ("numcnn", "torch", "convnet")
NETS = {"lenet5": "LeNet-5, 1x28x28", "cifar": "CIFAR net, 3x32x32"}
LR, MOMENTUM = 0.01, 0.9


def _numpy_blas():
    """numpy's own BLAS entry from threadpoolctl (other libraries bundle their own OpenBLAS)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in infos if "numpy" in i.get("filepath", "")] or infos
    return mine[0] if mine else None


NUMPY_BLAS = _numpy_blas()    # before torch/scipy/cv2 add theirs


# -- networks ------------------------------------------------------------------------------------
def build_net(name):
    import numcnn
    from numcnn.init import as_generator
    from numcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    if name == "lenet5":
        return numcnn.models.lenet5(), (1, 28, 28)
    if name == "cifar":
        rng = as_generator(0)
        return numcnn.Sequential([
            Conv2D(3, 32, 3, padding=1, rng=rng), ReLU(),
            Conv2D(32, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
            Conv2D(32, 64, 3, padding=1, rng=rng), ReLU(),
            Conv2D(64, 64, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
            Flatten(), Dense(64 * 8 * 8, 256, rng=rng), ReLU(), Dense(256, 10, rng=rng),
        ], input_shape=(3, 32, 32)), (3, 32, 32)
    raise SystemExit(f"unknown network {name!r}; choose from {', '.join(NETS)}")


def forward_flops(model, input_shape):
    """Forward FLOPs of one image: the sum of every layer's flops() (multiply and add)."""
    total, shape = 0, tuple(input_shape)
    for layer, out_shape in model.shapes(input_shape):
        total += layer.flops(shape)
        shape = out_shape
    return total


def to_torch(model):
    """An nn.Sequential with the same layers and a copy of numcnn's weights."""
    import torch
    from torch import nn

    from numcnn import layers as L
    mods = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, bias=layer.bias is not None)
        elif isinstance(layer, L.Dense):
            m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        elif isinstance(layer, L.ReLU):
            m = nn.ReLU()
        elif isinstance(layer, L.MaxPool2D):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, L.Flatten):
            m = nn.Flatten()
        else:
            raise NotImplementedError(f"to_torch: {layer!r}")
        if isinstance(layer, (L.Conv2D, L.Dense)):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.weight.value))
                if layer.bias is not None:
                    m.bias.copy_(torch.from_numpy(layer.bias.value))
        mods.append(m)
    return nn.Sequential(*mods)


def load_convnet():
    """The adapter module, or None (never raises: the benchmark runs without convnet)."""
    try:
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
        import _convnet_adapter as cv
    except Exception:
        return None
    return cv


def numcnn_train_step(model, x, y, after=lambda: None):
    """A callable: one numcnn training step on ``(x, y)`` (cross-entropy, SGD with momentum, as
    every benchmark here), then ``after()`` (e.g. a GPU synchronisation)."""
    import numcnn
    loss = numcnn.losses.CrossEntropy()
    opt = numcnn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step():
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
        opt.step()
        opt.zero_grad()
        after()
    return step


def make_data(input_shape, batch, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((batch,) + tuple(input_shape), dtype=np.float32), rng.integers(0, 10, batch)


class Runner:
    """One framework's copy of one network: ``fn(prepare(x, y), mode)`` is a callable that runs
    one training step (``mode="train"``) or one inference pass (``"infer"``) on that batch."""

    def __init__(self, fw, net):
        self.fw, self.net = fw, net
        model, self.input_shape = build_net(net)
        if fw == "numcnn":
            import numcnn
            self.model = model
            self.loss = numcnn.losses.CrossEntropy()
            self.opt = numcnn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        elif fw == "torch":
            import torch
            self.model = to_torch(model)
            self.loss = torch.nn.CrossEntropyLoss()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        elif fw == "convnet":
            cv = load_convnet()
            if cv is None or not cv.available():
                raise RuntimeError("convnet is not installed")
            self.cv = cv
            self.model = cv.build(model, self.input_shape)   # may raise cv.NotExpressible
        else:
            raise SystemExit(f"unknown framework {fw!r}")

    def prepare(self, x, y):
        """The framework's natural input: NCHW arrays, torch tensors, NHWC for convnet."""
        if self.fw == "torch":
            import torch
            return torch.from_numpy(x), torch.from_numpy(y)
        if self.fw == "convnet":
            return self.cv.to_nhwc(x), y
        return x, y

    def fn(self, data, mode):
        x, y = data
        if self.fw == "numcnn":
            m, loss, opt = self.model, self.loss, self.opt
            if mode == "infer":
                return lambda: m.forward(x, training=False)

            def train():
                loss.forward(m.forward(x, training=True), y)
                m.backward(loss.backward())
                opt.step()
                opt.zero_grad()
            return train
        if self.fw == "torch":
            import torch
            m, loss, opt = self.model, self.loss, self.opt
            if mode == "infer":
                def infer():
                    m.eval()
                    with torch.inference_mode():
                        return m(x)
                return infer

            def train():
                m.train()
                opt.zero_grad()
                loss(m(x), y).backward()
                opt.step()
            return train
        cv, m = self.cv, self.model
        if mode == "infer":
            return lambda: cv.infer(m, x)
        return lambda: cv.train_step(m, x, y)

    def logits(self, x):
        if self.fw == "numcnn":
            return self.model.forward(x, training=False)
        if self.fw == "torch":
            import torch
            self.model.eval()
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).numpy()
        return np.asarray(self.cv.infer(self.model, self.cv.to_nhwc(x)))


# -- settings ------------------------------------------------------------------------------------
def setup_threads(threads, frameworks=FRAMEWORKS):
    """Apply one thread count everywhere; returns it (numpy's BLAS count when not given)."""
    blas = NUMPY_BLAS["num_threads"] if NUMPY_BLAS else (os.cpu_count() or 1)
    n = threads or blas
    keep = None
    if threads:
        try:
            from threadpoolctl import threadpool_limits
            keep = threadpool_limits(limits=n, user_api="blas")
        except ImportError:
            print("warning: threadpoolctl missing; --threads cannot change numpy's BLAS threads")
    if "torch" in frameworks:
        try:
            import torch
            torch.set_num_threads(n)
        except ImportError:
            pass
    if "convnet" in frameworks:
        cv = load_convnet()
        if cv is not None and cv.available():
            cv.configure(n)
            if threads:     # cv2 brings its own OpenBLAS, loaded after the limits above
                from threadpoolctl import threadpool_limits
                keep = threadpool_limits(limits=n, user_api="blas")
    return n, keep


def numpy_blas_now():
    try:
        from threadpoolctl import threadpool_info
        for i in threadpool_info():
            if NUMPY_BLAS and i.get("filepath") == NUMPY_BLAS.get("filepath"):
                return i
    except ImportError:
        pass
    return NUMPY_BLAS


def machine_info():
    model = "?"
    cores_per_socket = siblings = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name" and model == "?":
                    model = v
                elif k == "cpu cores" and cores_per_socket is None:
                    cores_per_socket = v
                elif k == "siblings" and siblings is None:
                    siblings = v
    except OSError:
        model = platform.processor() or "?"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "logical": os.cpu_count(), "usable": usable,
            "cores": cores_per_socket, "siblings": siblings}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


class CpuMeter:
    """The share of the machine's CPU time that other processes used between start and stop:
    busy time from /proc/stat minus this process's own (threads and children) from os.times()."""

    def __init__(self):
        self.a = self._snap()

    @staticmethod
    def _snap():
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]   # user .. steal
        except (OSError, ValueError):
            return None
        t = os.times()
        return sum(vals), vals[3] + vals[4], t.user + t.system + t.children_user + t.children_system

    def share(self):
        b = self._snap()
        if self.a is None or b is None or b[0] == self.a[0]:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        total = (b[0] - self.a[0]) / hz
        busy = total - (b[1] - self.a[1]) / hz
        return max(0.0, busy - (b[2] - self.a[2])) / total


def wait_idle(limit_s, threshold=0.1):
    """Wait (up to limit_s) for a 3-second window in which other processes use < threshold."""
    t0 = time.monotonic()
    while True:
        m = CpuMeter()
        time.sleep(3)
        share = m.share()
        if share is None or share < threshold:
            return share
        if time.monotonic() - t0 > limit_s:
            print(f"machine still busy ({100 * share:.0f}% CPU used by others); starting anyway")
            return share
        print(f"waiting for an idle machine: others use {100 * share:.0f}% of the CPU", flush=True)


# -- timing --------------------------------------------------------------------------------------
SETTLE = {"torch": 0.25}


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(fns, steps, warmup, rounds=4, capped=(), cap_s=None, cap_min=3, settle=SETTLE):
    """Median seconds per call for each of ``fns`` ({name: fn}).

    The frameworks take turns: ``rounds`` rounds in which each runs a warm-up (``warmup`` calls in
    the first round, one after that) and then its share of ``steps`` timed calls, so that changes
    in the machine's background load spread over all of them.  The ones named in ``capped`` (slow
    peers) get as many steps as fit in ``cap_s`` seconds (at least ``cap_min``, at most ``steps``,
    judged from the first warm-up call) and no warm-up after the first round.  ``settle``
    ({name: seconds}) pauses before that one's turn: numpy's OpenBLAS threads keep spinning for
    ~0.1-0.2 s after its last call and slow PyTorch's OpenMP threads down meanwhile, by up to
    10x for a LeNet-sized step (the other way round there is no such effect).
    Returns {name: (median seconds, timed calls, error or None)}.
    """
    times = {k: [] for k in fns}
    total = {}
    errors = {}
    for r in range(rounds):
        for name, fn in fns.items():
            if name in errors:
                continue
            if name in settle and len(fns) > 1:
                time.sleep(settle[name])
            try:
                t_w = None
                for _ in range(warmup if r == 0 else (0 if name in capped else 1)):
                    t_w = _time(fn)
                if r == 0:
                    total[name] = steps
                    if name in capped and cap_s is not None and t_w is not None:
                        total[name] = max(cap_min, min(steps, int(cap_s / max(t_w, 1e-9))))
                n = total[name] // rounds + (1 if r < total[name] % rounds else 0)
                for _ in range(n):
                    times[name].append(_time(fn))
            except Exception as exc:     # a framework failing must not stop the benchmark
                errors[name] = f"{type(exc).__name__}: {exc}"[:160]
    return {k: (statistics.median(v) if v else None, len(v), errors.get(k)) for k, v in times.items()}


def gemm_fns(n=1024):
    """{"gemm": numpy float32 n x n @ n x n} and its FLOPs (2 n^3)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    return {"gemm": lambda: a @ b}, 2 * n ** 3


def gemm_peak(steps, n=1024):
    """Stand-alone GEMM rates in GFLOP/s: numpy (and torch.mm, for reference)."""
    fns, flops = gemm_fns(n)
    out = {"numpy": flops / measure(fns, max(steps, 10), 3, rounds=1)["gemm"][0] / 1e9}
    try:
        import torch
        ta = torch.from_numpy(np.random.default_rng(0).random((n, n), dtype=np.float32))
        tb = torch.from_numpy(np.random.default_rng(1).random((n, n), dtype=np.float32))
        time.sleep(SETTLE["torch"])
        out["torch"] = flops / measure({"t": lambda: ta @ tb}, max(steps, 10), 3, rounds=1)["t"][0] / 1e9
    except ImportError:
        pass
    return out


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
    """Run in a fresh process: peak RSS growth of one training step, as JSON on stdout."""
    fixed = _fix_malloc_threshold()
    setup_threads(threads, (fw,))
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


def run_probe(fw, net, batch, threads):
    env = dict(os.environ)
    # Large blocks are mmap'd and unmapped when freed, so RSS follows live memory instead of
    # glibc keeping freed blocks in the heap (its threshold otherwise grows up to 32 MiB).
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    # numcnn's first forward pass would raise that threshold to keep freed blocks for reuse
    # (numcnn.backend.keep_freed_memory): RSS would then stay at the high-water mark of the
    # warm-up step and the measured step would show ~no growth.  Opt out, so that every
    # framework's figure is the working set of one step.
    env["NUMCNN_MALLOC"] = "system"
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", fw, net, str(batch),
           "--threads", str(threads)]
    if os.path.exists("/bin/sh"):
        # Python starts children with vfork, and Linux then folds this (large) process's peak
        # RSS into the child's ru_maxrss, which no reset clears.  A shell that forks the probe
        # (the trailing "exit" keeps it from exec'ing it in place) gives it a clean account.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + cmd
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:160]}


def tracemalloc_step(step):
    """Peak traced bytes above the traced bytes at the start of one step, after a traced warm-up
    step (a step frees what the one before left behind, e.g. convnet's cached activations, and
    tracemalloc only sees frees of blocks it saw allocated).  numpy reports its array buffers to
    tracemalloc; PyTorch doesn't."""
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


# -- per-conv-layer ------------------------------------------------------------------------------
def conv_layers_bench(batch, steps, warmup, rounds, frameworks):
    """Each Conv2D of the CIFAR net, forward + backward alone, on its real input shape."""
    from numcnn.layers import Conv2D
    model, shape = build_net("cifar")
    rows = []
    rng = np.random.default_rng(2)
    tmodel = to_torch(model) if "torch" in frameworks else None
    in_shape = tuple(shape)
    for i, (layer, out_shape) in enumerate(model.shapes(shape)):
        if isinstance(layer, Conv2D):
            c, h, w = in_shape
            o, ho, wo = out_shape
            need_dx = layer.needs_input_grad
            flops = layer.flops(in_shape) * batch * (3 if need_dx else 2)
            fns = {}
            if "numcnn" in frameworks:
                xn = rng.random((batch, c, h, w), dtype=np.float32)
                # as inside Sequential: layer 0 gets a CNHW view of the NCHW batch, the others
                # a contiguous CNHW array from the layer before
                xc = xn.transpose(1, 0, 2, 3) if i == 0 else np.ascontiguousarray(xn.transpose(1, 0, 2, 3))
                g = rng.standard_normal((o, batch, ho, wo), dtype=np.float32)

                def f_numcnn(layer=layer, xc=xc, g=g):
                    layer.forward(xc, training=True, layout="CNHW")
                    layer.backward(g)
                    layer.zero_grad()
                fns["numcnn"] = f_numcnn
            if tmodel is not None:
                import torch
                conv = tmodel[i]
                xt = torch.from_numpy(rng.random((batch, c, h, w), dtype=np.float32))
                xt.requires_grad_(need_dx)
                gt = torch.from_numpy(rng.standard_normal((batch, o, ho, wo), dtype=np.float32))

                def f_torch(conv=conv, xt=xt, gt=gt):
                    conv(xt).backward(gt)
                    conv.zero_grad(set_to_none=True)
                    xt.grad = None
                fns["torch"] = f_torch
            gemm, gemm_flops = gemm_fns()
            meter = CpuMeter()
            res = measure({**fns, **gemm}, steps, warmup, rounds)
            rows.append({"layer": i, "repr": repr(layer), "input": (batch, c, h, w), "flops": flops,
                         "need_dx": need_dx, "gemm": gemm_flops / res["gemm"][0] / 1e9,
                         "others": meter.share(),
                         **{fw: res[fw][0] for fw in fns}})
        in_shape = out_shape
    return rows


# -- agreement -----------------------------------------------------------------------------------
def agreement(net, frameworks, cv, default_path=True):
    """max |logits - numcnn's| for each framework, before and after one SGD step (batch 8)."""
    out = {}
    x, y = make_data(build_net(net)[1], 8, seed=3)
    runners = {}
    for fw in ("numcnn",) + tuple(f for f in frameworks if f != "numcnn"):
        try:
            runners[fw] = Runner(fw, net)
        except Exception as exc:
            out[fw] = f"n/a ({exc})"
    if "numcnn" not in runners:
        return out
    ref0 = runners["numcnn"].logits(x)
    before = {fw: r.logits(x) for fw, r in runners.items()}
    for r in runners.values():
        r.fn(r.prepare(x, y), "train")()
    ref1 = runners["numcnn"].logits(x)
    for fw, r in runners.items():
        if fw == "numcnn":
            continue
        d0 = float(np.abs(before[fw] - ref0).max())
        d1 = float(np.abs(r.logits(x) - ref1).max())
        out[fw] = f"{d0:.1e} / {d1:.1e} (logits up to {float(np.abs(ref0).max()):.2f})"
    if cv is not None and "convnet" in runners and default_path:
        model, shape = build_net(net)
        err = cv.default_path_error(model, shape, x[:4], ref0[:4])
        out["convnet default conv path"] = "not run (no OpenCV)" if err is None else \
            f"{err:.1e} (OpenCV filter2D forward: flipped, shifted kernel)"
    return out


# -- report --------------------------------------------------------------------------------------
def fmt_rate(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "—"


def fmt_pct(v):
    return "?" if v is None else f"{100 * v:.0f}%"


def fmt_mib(kb):
    return f"{kb / 1024:.1f} MiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="5 timed steps, 2 rounds, fewer layer/memory cases (~1 min)")
    ap.add_argument("--only", default=",".join(FRAMEWORKS),
                    help="comma-separated frameworks: numcnn,torch,convnet (default: all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for numpy's BLAS and torch (default: numpy's BLAS count)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20, --quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2, --quick 1)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="turns the frameworks take (default 3, --quick 2)")
    ap.add_argument("--layer-steps", type=int, default=None,
                    help="timed steps per conv layer (default 10, --quick 3)")
    ap.add_argument("--nets", default="lenet5,cifar", help="lenet5,cifar")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--convnet-seconds", type=float, default=None,
                    help="time per convnet case (default 5, --quick 1.5): it is far slower, so it "
                         "gets as many steps as fit, at least 3 (1 with --quick)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for a moment when other processes use < 10%% "
                         "of the CPU (default: don't wait)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-conv-layer timings")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"),
                    help="Markdown file to write (default benchmarks/results.md)")
    ap.add_argument("--memory-probe", nargs=3, metavar=("FRAMEWORK", "NET", "BATCH"),
                    help="internal: peak RSS growth of one training step, in this process")
    args = ap.parse_args(argv)

    if args.memory_probe:
        fw, net, batch = args.memory_probe
        memory_probe(fw, net, int(batch), args.threads)
        return None

    q = args.quick
    cfg = {"steps": args.steps or (5 if q else 20),
           "warmup": args.warmup if args.warmup is not None else (1 if q else 2),
           "rounds": args.rounds or (2 if q else 3),
           "layer_steps": args.layer_steps or (3 if q else 10),
           "cap_s": args.convnet_seconds or (1.5 if q else 5.0),
           "cap_min": 1 if q else 3}
    frameworks = [f.strip() for f in args.only.split(",") if f.strip()]
    for f in frameworks:
        if f not in FRAMEWORKS:
            raise SystemExit(f"--only: unknown framework {f!r}; choose from {', '.join(FRAMEWORKS)}")
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    for n in nets:
        if n not in NETS:
            raise SystemExit(f"--nets: unknown network {n!r}; choose from {', '.join(NETS)}")
    batches = [int(b) for b in args.batches.split(",")]

    idle_at_start = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    t_start = time.perf_counter()
    whole = CpuMeter()
    sections = {}
    load_start = loadavg()
    try:
        import torch  # noqa: F401
    except ImportError:
        if "torch" in frameworks:
            print("torch is not installed: skipping it")
            frameworks.remove("torch")
    cv = load_convnet()
    convnet_note = None
    if "convnet" in frameworks and (cv is None or not cv.available()):
        convnet_note = "not installed" if cv is None else cv.describe()
        print(f"convnet: {convnet_note}; skipping it")
        frameworks.remove("convnet")
    threads, _keep = setup_threads(args.threads, frameworks)
    mach = machine_info()
    blas = numpy_blas_now()
    print(f"{mach['cpu']}, {mach['usable']} usable cores; {threads} thread(s); "
          f"load average {load_start}; frameworks: {', '.join(frameworks)}", flush=True)

    t = time.perf_counter()
    peak = {"start": gemm_peak(cfg["steps"])}
    print("GEMM 1024^3 float32: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak["start"].items()),
          flush=True)

    # -- same-weights check
    agree = {}
    if "numcnn" in frameworks and len(frameworks) > 1:
        for net in nets:
            agree[net] = agreement(net, frameworks, cv if "convnet" in frameworks else None,
                                   default_path=not q)
            print(f"agreement {net}: {agree[net]}", flush=True)
    sections["setup, GEMM, agreement"] = time.perf_counter() - t

    # -- throughput
    t = time.perf_counter()
    runners, not_expr = {}, {}
    for net in nets:
        for fw in frameworks:
            try:
                runners[(fw, net)] = Runner(fw, net)
            except Exception as exc:
                not_expr[(fw, net)] = str(exc)
    gemm, gemm_flops = gemm_fns()
    rows = []
    for net in nets:
        model, shape = build_net(net)
        fl = forward_flops(model, shape)
        for batch in batches:
            x, y = make_data(shape, batch)
            data = {fw: runners[(fw, net)].prepare(x, y) for fw in frameworks if (fw, net) in runners}
            for mode in ("train", "infer"):
                fns = {fw: runners[(fw, net)].fn(data[fw], mode) for fw in data}
                meter = CpuMeter()
                res = measure({**fns, **gemm}, cfg["steps"], cfg["warmup"], cfg["rounds"],
                              capped=("convnet",), cap_s=cfg["cap_s"], cap_min=cfg["cap_min"])
                row = {"net": net, "batch": batch, "mode": mode, "others": meter.share(),
                       "flops": fl * batch * (3 if mode == "train" else 1),
                       "gemm": gemm_flops / res["gemm"][0] / 1e9}
                for fw in frameworks:
                    if (fw, net) in not_expr:
                        row[fw] = {"na": not_expr[(fw, net)]}
                    else:
                        sec, n, err = res[fw]
                        row[fw] = {"t": sec, "n": n, "err": err, "ips": batch / sec if sec else None}
                rows.append(row)
                print(f"{net:7s} b{batch:<4d} {mode:5s} " + "  ".join(
                    f"{fw} {fmt_rate(row[fw].get('ips'))} img/s (n={row[fw].get('n')})"
                    for fw in frameworks) + f"  gemm {row['gemm']:.0f} GFLOP/s"
                    + f"  others {fmt_pct(row['others'])}", flush=True)
    sections["throughput"] = time.perf_counter() - t

    # -- per conv layer
    t = time.perf_counter()
    layer_rows = {}
    if not args.no_layers and "cifar" in nets and ({"numcnn", "torch"} & set(frameworks)):
        for batch in ([min(batches)] if q else batches):
            layer_rows[batch] = conv_layers_bench(batch, cfg["layer_steps"], cfg["warmup"],
                                                  cfg["rounds"], frameworks)
            print(f"conv layers b{batch}: " + ", ".join(
                f"#{r['layer']} numcnn {r['flops'] / r['numcnn'] / 1e9:.1f} GFLOP/s "
                f"({100 * r['flops'] / r['numcnn'] / 1e9 / r['gemm']:.0f}% of GEMM)"
                for r in layer_rows[batch] if r.get("numcnn")), flush=True)
    sections["conv layers"] = time.perf_counter() - t

    # -- memory
    t = time.perf_counter()
    mem = []
    if not args.no_memory:
        cases = [("lenet5", 256)] + ([] if q else [("cifar", 256)])
        for net, batch in cases:
            if net not in nets:
                continue
            for fw in frameworks:
                entry = {"net": net, "batch": batch, "fw": fw}
                if (fw, net) in not_expr:
                    entry["na"] = not_expr[(fw, net)]
                    mem.append(entry)
                    continue
                if fw in ("numcnn", "convnet"):
                    r = runners[(fw, net)]
                    x, y = make_data(r.input_shape, batch)
                    entry["tracemalloc"] = tracemalloc_step(r.fn(r.prepare(x, y), "train"))
                entry["probe"] = run_probe(fw, net, batch, threads)
                mem.append(entry)
                p = entry["probe"]
                print(f"memory {net} b{batch} {fw}: "
                      + (f"tracemalloc {entry['tracemalloc'] / 2**20:.1f} MiB, "
                         if "tracemalloc" in entry else "")
                      + (f"peak RSS +{p['delta_kb'] / 1024:.1f} MiB" if "delta_kb" in p else str(p)),
                      flush=True)
    sections["memory"] = time.perf_counter() - t

    peak["end"] = gemm_peak(cfg["steps"])     # again: the background load may have changed
    pool_err = None
    if "convnet" in frameworks:
        try:
            pool_err = cv.maxpool_backward_error()
        except Exception as exc:
            pool_err = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t_start
    others = whole.share()
    info = {"others": others, "idle_at_start": idle_at_start,"args": args, "cfg": cfg, "frameworks": frameworks, "threads": threads, "mach": mach,
            "blas": blas, "peak": peak, "agree": agree, "rows": rows, "layer_rows": layer_rows,
            "mem": mem, "convnet_note": convnet_note, "cv": cv, "load": (load_start, loadavg()),
            "elapsed": elapsed, "sections": sections, "pool_err": pool_err}
    text = report(info) + gpu_section(args.out)     # the GPU figures come from benchmarks/gpu.py
    with open(args.out, "w") as f:
        f.write(text)
    print("\n" + ", ".join(f"{k} {v:.0f} s" for k, v in sections.items())
          + f"; other processes used {fmt_pct(others)} of the CPU meanwhile")
    print(f"wrote {os.path.relpath(args.out)} in {elapsed:.0f} s")
    return rows


GPU_HEADING = "## GPU: numcnn on CuPy vs PyTorch CUDA"


def gpu_section(path):
    """The GPU section of an existing results file (written by benchmarks/gpu.py), or ""."""
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        return ""
    at = old.find(GPU_HEADING)
    return "\n" + old[at:].rstrip() + "\n" if at >= 0 else ""


def report(info):
    import numcnn
    args, cfg, frameworks, peak = info["args"], info["cfg"], info["frameworks"], info["peak"]
    rows, mach, blas, cv = info["rows"], info["mach"], info["blas"], info["cv"]
    steps = cfg["steps"]
    L = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/run.py" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))
    L.append("# numcnn benchmarks\n")
    L.append(f"Generated by `{cmd}` on {now} in {info['elapsed']:.0f} s"
             f"{' (quick run)' if args.quick else ''}.  How to read it: `benchmarks/README.md`.  "
             "Other processes may share the machine: the absolute numbers move with them, the "
             "**ratios** between frameworks timed in turns in the same run less so.\n")
    if info["others"] is not None and info["others"] > 0.1:
        L.append(f"**Warning: other processes used {fmt_pct(info['others'])} of the CPU during this "
                 "run** (column 'others' per row).  With 2 cores, a loaded machine slows "
                 "multi-threaded code unevenly (numpy's OpenBLAS suffers more than PyTorch's OpenMP "
                 "when a thread is descheduled), so even the ratios are skewed in rows with a "
                 "high 'others'.\n")

    # machine and settings
    try:
        import torch
        tver = torch.__version__
        tthreads = f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op"
        tblas = ("MKL" if torch.backends.mkl.is_available() else "no MKL") + \
            (", oneDNN" if torch.backends.mkldnn.is_available() else "")
    except ImportError:
        tver, tthreads, tblas = "not installed", "—", "—"
    L.append("## Machine and settings\n")
    L.append("| | |\n|---|---|")
    cores = f"{mach['usable']} usable ({mach['logical']} logical"
    if mach["cores"]:
        cores += f"; /proc/cpuinfo: {mach['cores']} cores, {mach['siblings']} siblings"
    L.append(f"| CPU | {mach['cpu']} |")
    L.append(f"| cores | {cores}) |")
    L.append(f"| load average (1/5/15 min) | {info['load'][0]} at start, {info['load'][1]} at end |")
    L.append(f"| CPU used by other processes | {fmt_pct(info['others'])} of the machine during the run"
             + (f" ({fmt_pct(info['idle_at_start'])} in the 3 s before it, after --wait-idle)"
                if info["idle_at_start"] is not None else "") + " |")
    L.append(f"| Python | {platform.python_version()} ({platform.machine()}, {platform.system()}) |")
    L.append(f"| numpy | {np.__version__} |")
    if blas:
        L.append(f"| numpy's BLAS (threadpoolctl) | internal_api {blas.get('internal_api')}, version "
                 f"{blas.get('version')}, architecture/coretype {blas.get('architecture')}, "
                 f"num_threads {blas.get('num_threads')}, threading {blas.get('threading_layer')}, "
                 f"`{os.path.basename(blas.get('filepath', ''))}` |")
    else:
        L.append("| numpy's BLAS | unknown (threadpoolctl not installed) |")
    L.append(f"| numcnn | {numcnn.__version__}, internal layout {numcnn.Sequential.internal_layout} |")
    L.append(f"| PyTorch | {tver}, {tthreads} threads, {tblas} |")
    L.append(f"| convnet | {cv.describe() if cv is not None and cv.available() else (info['convnet_note'] or 'not installed')} |")
    L.append(f"| threads | {info['threads']} for every framework "
             f"({'--threads' if args.threads else 'the count numpy BLAS uses'}): "
             f"torch.set_num_threads({info['threads']})"
             + (", threadpoolctl limits on every BLAS" if args.threads else "") + " |")
    for k in ENV_VARS:
        L.append(f"| `{k}` | {ENV_AT_START[k] if ENV_AT_START[k] is not None else 'not set'} |")
    L.append(f"| timing | median of {steps} timed steps after {cfg['warmup']} warm-up step(s); the "
             f"frameworks and a GEMM take turns in {cfg['rounds']} rounds (one more warm-up step "
             f"each after the first; a {SETTLE['torch']:g} s pause before PyTorch's turn lets "
             "OpenBLAS's spinning threads go to sleep); convnet: as many steps as fit in "
             f"{cfg['cap_s']:g} s (at least {cfg['cap_min']}, at most {steps}; n shown) |")
    st, en = peak["start"], peak["end"]
    gem = sorted(r["gemm"] for r in rows) + sorted(lr["gemm"] for v in info["layer_rows"].values() for lr in v)
    L.append("| GEMM peak: numpy float32 1024x1024 @ 1024x1024, median time -> 2n³/t | "
             f"alone: **{st['numpy']:.1f} GFLOP/s** at the start, {en['numpy']:.1f} at the end"
             + (f"; taking turns with the frameworks (each row's own): {gem[0]:.1f} to {gem[-1]:.1f}, "
                f"median {statistics.median(gem):.1f}" if gem else "")
             + (f"; torch.mm alone: {st['torch']:.1f} / {en['torch']:.1f}" if "torch" in st else "")
             + " |")
    L.append("| run time | " + ", ".join(f"{k} {v:.0f} s" for k, v in info["sections"].items()) + " |")
    L.append("")

    # throughput
    L.append("## Throughput (images/s, higher is better)\n")
    L.append("Training step = forward + backward + SGD (momentum 0.9, lr 0.01) on cross-entropy; "
             "inference = forward in eval mode.  GFLOP/s = each layer's `flops()` per image "
             "(forward; multiply and add counted) x images/s, x3 for a training step.  "
             "% of GEMM = numcnn's GFLOP/s over the numpy GEMM rate measured in the same rounds "
             "(GEMM column).  'others' = share of the machine's CPU that other processes used "
             "while the row was measured.\n")
    head = ["network", "batch", "mode"] + [f"{fw} img/s" for fw in frameworks]
    if "numcnn" in frameworks:
        head += [f"numcnn / {fw}" for fw in frameworks if fw != "numcnn"]
        head += ["numcnn GFLOP/s", "numcnn % of GEMM"]
    if "torch" in frameworks:
        head += ["torch GFLOP/s"]
    head += ["GEMM GFLOP/s", "others"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for r in rows:
        cells = [NETS[r["net"]], str(r["batch"]), "train step" if r["mode"] == "train" else "inference"]
        for fw in frameworks:
            c = r[fw]
            if "na" in c:
                cells.append(f"n/a ({c['na']})")
            elif c.get("err"):
                cells.append(f"error ({c['err']})")
            else:
                s = fmt_rate(c["ips"])
                if fw == "convnet" or c["n"] != steps:
                    s += f" (n={c['n']})"
                cells.append(s)
        if "numcnn" in frameworks:
            a = r["numcnn"].get("ips")
            for fw in frameworks:
                if fw != "numcnn":
                    cells.append(fmt_ratio(a, r[fw].get("ips")))
            t = r["numcnn"].get("t")
            g = r["flops"] / t / 1e9 if t else None
            cells += [f"{g:.1f}" if g else "—", f"{100 * g / r['gemm']:.0f}%" if g else "—"]
        if "torch" in frameworks:
            t = r["torch"].get("t")
            cells.append(f"{r['flops'] / t / 1e9:.1f}" if t else "—")
        cells += [f"{r['gemm']:.1f}", fmt_pct(r["others"])]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    # per conv layer
    for batch, lrows in info["layer_rows"].items():
        L.append(f"## CIFAR net conv layers in a training step, batch {batch}\n")
        L.append(f"Each Conv2D alone, forward + backward (dW, db, and dX except for the first layer, "
                 f"which needs no input gradient), on its real input; median of "
                 f"{cfg['layer_steps']} timed steps.  GFLOP = forward FLOPs x3 (x2 without dX).  "
                 "numcnn runs the layer in its internal CNHW layout, as `Sequential` does; PyTorch "
                 "runs `nn.Conv2d` with the same weights.  % = of the numpy GEMM rate measured in "
                 "the same rounds (GEMM column); 'others' as above.\n")
        head = ["layer", "input (N, C, H, W)", "GFLOP"]
        if "numcnn" in frameworks:
            head += ["numcnn ms", "numcnn GFLOP/s", "numcnn % of GEMM"]
        if "torch" in frameworks:
            head += ["torch ms", "torch GFLOP/s", "torch % of GEMM"]
        head += ["GEMM GFLOP/s", "others"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|---|---|" + "---:|" * (len(head) - 2))
        tot = {"numcnn": 0.0, "torch": 0.0}
        for lr in lrows:
            cells = [f"#{lr['layer']} {lr['repr']}", "x".join(map(str, lr["input"])),
                     f"{lr['flops'] / 1e9:.2f}"]
            for fw in ("numcnn", "torch"):
                if fw in frameworks:
                    t = lr.get(fw)
                    if t:
                        tot[fw] += t
                        g = lr["flops"] / t / 1e9
                        cells += [f"{1e3 * t:.1f}", f"{g:.1f}", f"{100 * g / lr['gemm']:.0f}%"]
                    else:
                        cells += ["—"] * 3
            cells += [f"{lr['gemm']:.1f}", fmt_pct(lr.get("others"))]
            L.append("| " + " | ".join(cells) + " |")
        step_t = {}
        for fw in ("numcnn", "torch"):
            for r in rows:
                if r["net"] == "cifar" and r["batch"] == batch and r["mode"] == "train" and fw in r:
                    step_t[fw] = r[fw].get("t")
        parts = []
        for fw in ("numcnn", "torch"):
            if fw in frameworks and tot[fw] and step_t.get(fw):
                parts.append(f"{fw}: the four conv layers take {1e3 * tot[fw]:.0f} ms alone, "
                             f"{100 * tot[fw] / step_t[fw]:.0f}% of its {1e3 * step_t[fw]:.0f} ms "
                             "training step")
        if parts:
            L.append("\n" + "; ".join(parts) + ".")
        L.append("")

    # memory
    mem = info["mem"]
    if mem:
        L.append("## Peak memory of one training step\n")
        L.append("* **tracemalloc** (numcnn, convnet; in this process): after a traced warm-up step, "
                 "the peak of traced bytes during one step minus the traced bytes at its start: the "
                 "step's transient working set (activations, im2col columns, gradients).  numpy "
                 "reports its array buffers to tracemalloc; PyTorch's CPU allocator does not, so "
                 "PyTorch has no figure here.")
        L.append("* **peak RSS growth** (every framework, one method): a fresh subprocess "
                 "(`python benchmarks/run.py --memory-probe FRAMEWORK NET BATCH`) builds the model "
                 "and data, runs one warm-up step, resets the kernel's peak-RSS mark to the current "
                 "RSS (`/proc/self/clear_refs`), runs one step and reports `ru_maxrss` "
                 "(`resource.getrusage`) after the step minus RSS before it.  It fixes glibc's mmap "
                 "threshold at 64 KiB (`mallopt`, and `MALLOC_MMAP_THRESHOLD_`) so that freed large "
                 "blocks go back to the OS and RSS follows live memory (with `NUMCNN_MALLOC=system`, "
                 "since numcnn would otherwise keep freed blocks for reuse), and is started through "
                 "`/bin/sh` (which forks it): a child "
                 "that Python vfork-execs directly inherits this process's own peak in its "
                 "`ru_maxrss`.  Persistent state (weights, momentum buffers, the input batch, the "
                 "interpreter and libraries) is in the baseline of both figures, so not counted.\n")
        L.append("| network | batch | framework | tracemalloc peak | peak RSS growth |")
        L.append("|---|---:|---|---:|---:|")
        for e in mem:
            if "na" in e:
                L.append(f"| {NETS[e['net']]} | {e['batch']} | {e['fw']} | n/a ({e['na']}) | |")
                continue
            tm = f"{e['tracemalloc'] / 2**20:.1f} MiB" if "tracemalloc" in e else "not visible"
            p = e.get("probe", {})
            rss = fmt_mib(p["delta_kb"]) if "delta_kb" in p else f"error ({p.get('error')})"
            L.append(f"| {NETS[e['net']]} | {e['batch']} | {e['fw']} | {tm} | {rss} |")
        methods = {e["probe"]["method"] for e in mem if "method" in e.get("probe", {})}
        if any(not m.startswith("warm-up") for m in methods):
            L.append("\nNote: " + "; ".join(sorted(methods)))
        for e in mem:
            p = e.get("probe", {})
            if p.get("hwm_delta_kb") is not None and abs(p["hwm_delta_kb"] - p["delta_kb"]) > 1024:
                L.append(f"\nNote: {e['fw']} {e['net']} {e['batch']}: ru_maxrss says "
                         f"{fmt_mib(p['delta_kb'])} but VmHWM says {fmt_mib(p['hwm_delta_kb'])}.")
        L.append("")

    # agreement
    if info["agree"]:
        L.append("## Same weights check\n")
        L.append("max |logits - numcnn's logits| on 8 images: with the copied weights / after one "
                 "training step each on them.  Float32 rounding is ~1e-6.\n")
        L.append("| network | framework | max abs difference (before / after one step) |")
        L.append("|---|---|---|")
        for net, d in info["agree"].items():
            for fw, v in d.items():
                L.append(f"| {NETS[net]} | {fw} | {v} |")
        L.append("")
    if "convnet" in frameworks:
        L.append("## convnet notes\n")
        L.append("convnet (PyPI `convnet`, NHWC) is driven as its `Model.fit` does for one batch: "
                 "`forward(x, training=True)`, `loss.forward`, `loss.backward`, `model.backward`, "
                 "`optimizer.step(model._params_and_grads())`, after `compile('categorical_crossentropy', "
                 "'sgd', lr=0.01, momentum=0.9)`; inference is `forward(x, training=False)`.  It can "
                 "express both networks ('same'/'valid' padding, 2x2 pooling, dense).  Its Conv2D "
                 "forward by default takes a per-sample, per-filter, per-channel `cv2.filter2D` loop "
                 "for 3x3/5x5 kernels (or, without OpenCV, a `scipy.signal.oaconvolve` loop); both "
                 "flip the kernel (and filter2D also shifts the output), while its backward computes "
                 "the gradients of the im2col cross-correlation, so the default is a different "
                 "function with mismatched gradients (row 'convnet default conv path' above).  The "
                 "benchmark runs its im2col + GEMM path (`jax_backend.USE_OPENCV = False`, "
                 "`Conv2D(use_fft=False)`), which matches numcnn and PyTorch before training.  Its "
                 "numexpr and OpenCV thread pools get the same thread count.\n")
        pe = info["pool_err"]
        if pe is not None:
            L.append("Its training step is not quite the same computation: `MaxPool2D.backward` caches "
                     "the windows as `x.reshape(N, H/2, 2, W/2, 2, C)` and reads them back as "
                     "`(N, H/2, W/2, 4, C)`, so gradients land on pixels that were not the maximum "
                     f"(max error against numcnn's pooling backward on a small batch: "
                     f"{pe if isinstance(pe, str) else f'{pe:.2f}'}); that is why its logits differ "
                     "after one step.  The step does the same work, so its timings still compare.\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
