"""The machine the benchmark runs on: CPU, BLAS, and how busy other processes keep it."""
from __future__ import annotations

import os
import platform
import time


def numpy_blas():
    """numpy's own BLAS entry from threadpoolctl (other libraries bundle their own OpenBLAS)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in infos if "numpy" in i.get("filepath", "")] or infos
    return mine[0] if mine else None


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
    return {"cpu": model, "logical": os.cpu_count(), "usable": usable_cores(),
            "cores": cores_per_socket, "siblings": siblings}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _pid_cpu_s(pid):
    """CPU seconds (user + system, all threads) a live process has used; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class CpuMeter:
    """The share of the machine's CPU time that *other* processes used between start and
    :meth:`share`: busy time from /proc/stat minus this process's own and its workers' (the
    benchmark's child processes, by pid, while they run)."""

    def __init__(self, pids=()):
        self.pids = tuple(pids)
        self.a = self._snap()

    def _snap(self):
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]   # user .. steal
        except (OSError, ValueError):
            return None
        t = os.times()
        mine = t.user + t.system + t.children_user + t.children_system
        return sum(vals), vals[3] + vals[4], mine + sum(_pid_cpu_s(p) for p in self.pids)

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
