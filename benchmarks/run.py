"""numcnn vs PyTorch (and the PyPI package ``convnet``): throughput, FLOP/s and memory, side by side.

    python benchmarks/run.py                   # full run, writes benchmarks/results.md
    python benchmarks/run.py --quick           # short run
    python benchmarks/run.py --only numcnn,torch --threads 1

The driver.  Every framework runs in a process of its own (benchmarks/workers.py), all with the
same thread count, the same weights (copied from numcnn's arrays, checked by comparing logits)
and the same data.  For each case the processes take turns in rounds (the order reversed every
other round, a short pause before each turn so one process's spinning BLAS threads have gone to
sleep), and each round gives a pairwise ratio of the frameworks' median step times: the table
reports the median of those ratios and their spread.  numcnn's 1 -> N thread scaling is measured
beside PyTorch's in the same rounds, and a note row shows PyTorch in a process given numcnn's
malloc settings.  Networks: benchmarks/nets.py; the report: benchmarks/report.py; reading it:
benchmarks/README.md.
"""
from __future__ import annotations

import os
import sys

# Recorded before anything (numpy, torch, convnet) is imported or can change them.
ENV_VARS = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ENV_AT_START = {k: os.environ.get(k) for k in ENV_VARS}

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from machine import CpuMeter, loadavg, machine_info, usable_cores, wait_idle  # noqa: E402
from nets import (LR, MOMENTUM, NETS, available_nets, build_net, forward_flops,  # noqa: E402,F401
                  make_data, numcnn_train_step, to_torch)
from report import GPU_HEADING, fmt_pct, fmt_rate, gpu_section, report  # noqa: E402,F401

FRAMEWORKS = ("numcnn", "torch", "convnet")
#: seconds between two processes' turns: OpenBLAS threads spin ~0.1-0.2 s after their last call
SETTLE_S = 0.2
GEMM_FLOPS = 2 * 1024 ** 3


class WorkerProcess:
    """A benchmarks/workers.py process for one framework at one thread count."""

    def __init__(self, fw, threads, log):
        self.fw, self.threads = fw, threads
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "workers.py"), fw, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        hello = self._read()
        self.pid = hello.get("pid")
        self.error = hello.get("error")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"{self.fw} worker exited (code {self.proc.poll()}); see its log"}
        return json.loads(line)

    def ask(self, **req):
        if self.proc.poll() is not None:
            return {"error": f"{self.fw} worker is not running"}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.ask(op="quit")
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def take_turns(workers, case, cfg, capped=()):
    """Time ``case`` in every worker, in ``cfg["rounds"]`` rounds of turns (order reversed every
    other round).  Returns ({name: [per-round median seconds]}, {name: all times}, errors)."""
    per_round = {k: [] for k in workers}
    times = {k: [] for k in workers}
    errors = {}
    names = list(workers)
    share = max(1, cfg["steps"] // cfg["rounds"])
    for r in range(cfg["rounds"]):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name in errors:
                continue
            time.sleep(SETTLE_S)
            res = workers[name].ask(op="time", case=case, steps=share,
                                    warmup=cfg["warmup"] if r == 0 else (0 if name in capped else 1),
                                    budget_s=cfg["cap_s"] / cfg["rounds"] if name in capped else None)
            if "error" in res:
                errors[name] = res["error"]
                continue
            per_round[name].append(statistics.median(res["times"]))
            times[name] += res["times"]
    return per_round, times, errors


def ratios(num, den):
    """Pairwise per-round ratios den_t / num_t: how many times faster ``num`` ran (>1: faster)."""
    return [d / n for n, d in zip(num, den) if n and d]


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps and rounds, fewer cases")
    ap.add_argument("--only", default=",".join(FRAMEWORKS),
                    help="comma-separated frameworks: numcnn,torch,convnet (default: all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every framework (default: the usable cores)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per case and framework (default 30, --quick 6)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2, --quick 1)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of turns, one pairwise ratio each (default 6, --quick 3)")
    ap.add_argument("--layer-steps", type=int, default=None,
                    help="timed steps per conv layer (default 12, --quick 3)")
    ap.add_argument("--nets", default=None,
                    help=f"comma-separated, of {','.join(available_nets())} (default: all)")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--convnet-seconds", type=float, default=None,
                    help="time per convnet case (default 5, --quick 1.5): it is far slower")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for a moment when other processes use < 10%% "
                         "of the CPU (default: don't wait)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the 1-thread runs")
    ap.add_argument("--no-note", action="store_true", help="skip the PyTorch+malloc note row")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-conv-layer timings")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"),
                    help="Markdown file to write (default benchmarks/results.md)")
    ap.add_argument("--log", default=None,
                    help="file for the workers' stderr (default: numcnn-benchmark-workers.log in "
                         "the temporary folder)")
    args = ap.parse_args(argv)

    q = args.quick
    cfg = {"steps": args.steps or (6 if q else 30),
           "warmup": args.warmup if args.warmup is not None else (1 if q else 2),
           "rounds": args.rounds or (3 if q else 6),
           "layer_steps": args.layer_steps or (3 if q else 12),
           "cap_s": args.convnet_seconds or (1.5 if q else 5.0)}
    frameworks = [f.strip() for f in args.only.split(",") if f.strip()]
    for f in frameworks:
        if f not in FRAMEWORKS:
            raise SystemExit(f"--only: unknown framework {f!r}; choose from {', '.join(FRAMEWORKS)}")
    known = available_nets()
    nets = [n.strip() for n in (args.nets or ",".join(known)).split(",") if n.strip()]
    for n in nets:
        if n not in known:
            raise SystemExit(f"--nets: unknown network {n!r}; choose from {', '.join(known)}")
    batches = [int(b) for b in args.batches.split(",")]
    threads = args.threads or usable_cores()

    idle_at_start = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    t_start = time.perf_counter()
    load_start = loadavg()
    log_path = args.log or os.path.join(tempfile.gettempdir(), "numcnn-benchmark-workers.log")
    log = open(log_path, "w")
    try:
        import torch  # noqa: F401
    except ImportError:
        if "torch" in frameworks:
            print("torch is not installed: skipping it")
            frameworks.remove("torch")
    from nets import load_convnet
    cv = load_convnet()
    convnet_note = None
    if "convnet" in frameworks and (cv is None or not cv.available()):
        convnet_note = "not installed" if cv is None else cv.describe()
        print(f"convnet: {convnet_note}; skipping it")
        frameworks.remove("convnet")
    scaling = threads > 1 and not args.no_scaling
    names = {fw: (fw, threads) for fw in frameworks}
    names["gemm"] = ("gemm", threads)
    if "torch" in frameworks and not args.no_note:
        names["torch+malloc"] = ("torch+malloc", threads)
    if scaling:
        for fw in ("numcnn", "torch"):
            if fw in frameworks:
                names[f"{fw}@1"] = (fw, 1)
    workers = {k: WorkerProcess(fw, n, log) for k, (fw, n) in names.items()}
    sections = {}
    try:
        bad = {k: w.error for k, w in workers.items() if w.error}
        if bad:
            raise SystemExit(f"workers failed to start: {bad} (see {log_path})")
        pids = [w.pid for w in workers.values()]
        whole = CpuMeter(pids)
        infos = {k: w.ask(op="info") for k, w in workers.items()}
        mach = machine_info()
        print(f"{mach['cpu']}, {mach['usable']} usable cores; {threads} thread(s) per framework, "
              f"each in its own process; load average {load_start}; frameworks: "
              f"{', '.join(frameworks)}", flush=True)

        t = time.perf_counter()
        peak = {"start": GEMM_FLOPS / statistics.median(
            workers["gemm"].ask(op="time", case=["gemm"], steps=10, warmup=3)["times"]) / 1e9}
        print(f"GEMM 1024^3 float32: {peak['start']:.1f} GFLOP/s", flush=True)
        agree = agreement(workers, nets, frameworks, not q) if len(frameworks) > 1 else {}
        for net, d in agree.items():
            print(f"agreement {net}: {d}", flush=True)
        sections["setup, GEMM, agreement"] = time.perf_counter() - t

        # -- throughput, in turns
        t = time.perf_counter()
        rows = []
        main_names = [k for k in workers]
        for net in nets:
            model, shape = build_net(net)
            fl = forward_flops(model, shape)
            for batch in batches:
                for mode in ("train", "infer"):
                    meter = CpuMeter(pids)
                    per_round, times, errors = take_turns(
                        {k: workers[k] for k in main_names}, ["step", net, batch, mode], cfg,
                        capped=("convnet",))
                    row = {"net": net, "batch": batch, "mode": mode, "others": meter.share(),
                           "flops": None if fl is None else fl * batch * (3 if mode == "train" else 1),
                           "threads": threads, "res": {}}
                    gt = per_round.get("gemm")
                    row["gemm"] = GEMM_FLOPS / statistics.median(gt) / 1e9 if gt else None
                    for k in main_names:
                        if k == "gemm":
                            continue
                        if k in errors:
                            row["res"][k] = {"err": errors[k]}
                            continue
                        med = statistics.median(times[k]) if times[k] else None
                        row["res"][k] = {"t": med, "n": len(times[k]),
                                         "ips": batch / med if med else None}
                    for other in frameworks + (["torch+malloc"] if "torch+malloc" in workers else []):
                        if other != "numcnn" and "numcnn" in per_round:
                            row.setdefault("ratio", {})[other] = summary(
                                ratios(per_round["numcnn"], per_round.get(other, [])))
                    if "torch+malloc" in per_round and "torch" in per_round:
                        row["malloc_gain"] = summary(ratios(per_round["torch+malloc"], per_round["torch"]))
                    if "numcnn@1" in per_round and "torch@1" in per_round:
                        row["ratio1"] = summary(ratios(per_round["numcnn@1"], per_round["torch@1"]))
                    for fw in ("numcnn", "torch"):
                        if f"{fw}@1" in per_round:
                            row.setdefault("scaling", {})[fw] = summary(
                                ratios(per_round[fw], per_round[f"{fw}@1"]))
                    rows.append(row)
                    r = row.get("ratio", {}).get("torch")
                    print(f"{net:8s} b{batch:<4d} {mode:5s} " + "  ".join(
                        f"{k} {fmt_rate(row['res'][k].get('ips'))}" for k in row["res"])
                        + (f"  numcnn/torch {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]" if r else "")
                        + f"  others {fmt_pct(row['others'])}", flush=True)
        sections["throughput"] = time.perf_counter() - t

        # -- per conv layer (CIFAR net)
        t = time.perf_counter()
        layer_rows = {}
        if not args.no_layers and "cifar" in nets and "numcnn" in frameworks:
            layer_rows = conv_layers(workers, frameworks, batches[:1] if q else batches, cfg, pids)
        sections["conv layers"] = time.perf_counter() - t

        # -- memory
        t = time.perf_counter()
        mem = memory(workers, frameworks, nets, threads, q) if not args.no_memory else []
        sections["memory"] = time.perf_counter() - t

        peak["end"] = GEMM_FLOPS / statistics.median(
            workers["gemm"].ask(op="time", case=["gemm"], steps=10, warmup=3)["times"]) / 1e9
        others = whole.share()
    finally:
        for w in workers.values():
            w.close()
        log.close()
    elapsed = time.perf_counter() - t_start
    info = {"others": others, "idle_at_start": idle_at_start, "args": args, "cfg": cfg,
            "frameworks": frameworks, "threads": threads, "mach": mach, "infos": infos,
            "peak": peak, "agree": agree, "rows": rows, "layer_rows": layer_rows, "mem": mem,
            "convnet_note": convnet_note, "load": (load_start, loadavg()), "elapsed": elapsed,
            "sections": sections, "env": ENV_AT_START, "scaling": scaling,
            "settle": SETTLE_S}
    text = report(info) + gpu_section(args.out)     # the GPU figures come from benchmarks/gpu.py
    with open(args.out, "w") as f:
        f.write(text)
    print("\n" + ", ".join(f"{k} {v:.0f} s" for k, v in sections.items())
          + f"; other processes used {fmt_pct(others)} of the CPU meanwhile")
    print(f"wrote {os.path.relpath(args.out)} in {elapsed:.0f} s")
    return rows


def agreement(workers, nets, frameworks, default_path):
    """max |logits - numcnn's| for each framework, before and after one SGD step (batch 8)."""
    import numpy as np
    out = {}
    for net in nets:
        res = {fw: workers[fw].ask(op="logits", net=net) for fw in frameworks}
        ref = res.get("numcnn", {})
        d = {}
        for fw in frameworks:
            if fw == "numcnn":
                continue
            r = res[fw]
            if "error" in r or "error" in ref:
                d[fw] = f"n/a ({r.get('error') or ref.get('error')})"
                continue
            r0, r1 = np.asarray(ref["before"]), np.asarray(ref["after"])
            d0 = float(np.abs(np.asarray(r["before"]) - r0).max())
            d1 = float(np.abs(np.asarray(r["after"]) - r1).max())
            d[fw] = f"{d0:.1e} / {d1:.1e} (logits up to {float(np.abs(r0).max()):.2f})"
        if "convnet" in frameworks and default_path:
            err = workers["convnet"].ask(op="convnet_default_path", net=net).get("error")
            d["convnet default conv path"] = "not run (no OpenCV)" if err is None else \
                (f"{err:.1e} (OpenCV filter2D forward: flipped, shifted kernel)"
                 if isinstance(err, float) else str(err))
        out[net] = d
    return out


def conv_layers(workers, frameworks, batches, cfg, pids):
    """Each Conv2D of the CIFAR net alone, forward + backward, numcnn and PyTorch in turns."""
    from numcnn.layers import Conv2D
    model, shape = build_net("cifar")
    names = [k for k in ("numcnn", "torch") if k in frameworks] + ["gemm"]
    out = {}
    lcfg = {**cfg, "steps": cfg["layer_steps"]}
    for batch in batches:
        rows = []
        in_shape = tuple(shape)
        for i, (layer, out_shape) in enumerate(model.shapes(shape)):
            if isinstance(layer, Conv2D):
                need_dx = layer.needs_input_grad
                meter = CpuMeter(pids)
                _, times, errors = take_turns({k: workers[k] for k in names}, ["conv", i, batch], lcfg)
                row = {"layer": i, "repr": repr(layer), "input": (batch,) + in_shape,
                       "flops": layer.flops(in_shape) * batch * (3 if need_dx else 2),
                       "need_dx": need_dx, "others": meter.share(),
                       "gemm": GEMM_FLOPS / statistics.median(times["gemm"]) / 1e9}
                for k in names[:-1]:
                    row[k] = statistics.median(times[k]) if times[k] else None
                rows.append(row)
            in_shape = out_shape
        out[batch] = rows
        print(f"conv layers b{batch}: " + ", ".join(
            f"#{r['layer']} numcnn {r['flops'] / r['numcnn'] / 1e9:.1f} GFLOP/s"
            for r in rows if r.get("numcnn")), flush=True)
    return out


def memory(workers, frameworks, nets, threads, quick):
    cases = [("lenet5", 256)] + ([] if quick else [("cifar", 256)])
    mem = []
    for net, batch in cases:
        if net not in nets:
            continue
        for fw in frameworks:
            entry = {"net": net, "batch": batch, "fw": fw}
            if fw in ("numcnn", "convnet"):
                r = workers[fw].ask(op="tracemalloc", net=net, batch=batch)
                if "bytes" in r:
                    entry["tracemalloc"] = r["bytes"]
            entry["probe"] = run_probe(fw, net, batch, threads)
            mem.append(entry)
            p = entry["probe"]
            print(f"memory {net} b{batch} {fw}: "
                  + (f"tracemalloc {entry['tracemalloc'] / 2**20:.1f} MiB, " if "tracemalloc" in entry else "")
                  + (f"peak RSS +{p['delta_kb'] / 1024:.1f} MiB" if "delta_kb" in p else str(p)),
                  flush=True)
    return mem


def run_probe(fw, net, batch, threads):
    """Peak RSS growth of one step, in a fresh process (workers.py --memory-probe)."""
    env = dict(os.environ)
    # Large blocks are mmap'd and unmapped when freed, so RSS follows live memory instead of
    # glibc keeping freed blocks in the heap (its threshold otherwise grows up to 32 MiB);
    # NUMCNN_MALLOC=system stops numcnn's first forward pass from keeping freed blocks.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["NUMCNN_MALLOC"] = "system"
    cmd = [sys.executable, os.path.join(HERE, "workers.py"), "--memory-probe", fw, net, str(batch),
           "--threads", str(threads)]
    if os.path.exists("/bin/sh"):
        # Python starts children with vfork, and Linux then folds this process's peak RSS into
        # the child's ru_maxrss; a shell that forks the probe gives it a clean account.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + cmd
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:160]}


if __name__ == "__main__":
    main()
