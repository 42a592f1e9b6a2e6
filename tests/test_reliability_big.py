"""The two big reliability runs of issue 15, in one module (about 2 minutes on 2 cores):

* ``test_fuzz_every_reader_in_capped_children``: 10,000 generated inputs (10 readers x 1,000)
  through every reader numcnn has - IDX, CIFAR, .npz, one image, an image folder, model files,
  checkpoints (loaded and restored into a Trainer), architecture files (JSON/TOML), history.json
  and dataset labels - in child processes (``tests/helpers/fuzz_child.py``, 500 cases each)
  under ``RLIMIT_AS`` = 1.5 GiB and a per-case SIGALRM deadline.  Zero hangs, zero exceptions
  other than NumcnnError subclasses with a message, and every case's peak allocation (Python +
  NumPy, ``tracemalloc``) at most ``4 x (input bytes + decoded output bytes) + 2 MiB``.
* ``test_kill_nine_a_hundred_times``: the ``numcnn train`` command (a fork server,
  ``tests/helpers/run_zygote.py``, so a run costs a fork, not an interpreter start) is SIGKILLed
  100 times at random moments (seeded) of a short run: loading data, training, writing
  checkpoints, the best model, history, evaluation and plots.  After each kill the folder is
  checked file by file, the lock must be free, and the next command is chosen from what the
  folder holds *and what numcnn says*: a plain ``train`` first whenever a checkpoint exists (it
  must be refused, naming the ``--resume`` path to use, which is then used), and a plain
  ``train`` on a folder without a checkpoint (it must start again).  Every finished run must be
  bit-identical (model, best model, evaluation report) to an uninterrupted one.

Set ``NUMCNN_RELIABILITY_STATS=<folder>`` to get the counts as JSON (docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn.files import is_temp_name
from numcnn.io import load_checkpoint, load_model
from numcnn.viz.plots import read_history

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import reliability_stats as stats  # noqa: E402

HELPERS = Path(__file__).parent / "helpers"
READERS = ("idx", "cifar", "npz", "image", "image_folder", "model", "checkpoint",
           "architecture", "history", "labels")
CASES_PER_CHILD = 500
CHILDREN_PER_READER = 2                        # 10 readers x 2 x 500 = 10,000 cases
KILLS = 100
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _dump_stats():
    yield
    stats.dump("test_reliability_big")


def child_env():
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"                                    # one BLAS thread: bit-reproducible
    src = str(Path(numcnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


# ====================================================================================== fuzzing
def test_fuzz_every_reader_in_capped_children(tmp_path):
    jobs = [(r, s) for r in READERS for s in range(CHILDREN_PER_READER)]

    def one(job):
        reader, seed = job
        cmd = [sys.executable, str(HELPERS / "fuzz_child.py"), reader, str(seed),
               str(CASES_PER_CHILD), str(tmp_path / f"{reader}-{seed}"), "--mem-mib", "1536",
               "--case-seconds", "20"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=400)
        assert p.returncode == 0, f"{reader}/{seed}: child failed ({p.returncode}): {p.stderr[-2000:]}"
        return json.loads(p.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    total, problems = 0, []
    for res in results:
        total += res["cases"]
        for outcome, n in res["outcomes"].items():
            stats.record(f"fuzz:{res['reader']}", outcome, n)
        stats.record(f"fuzz:{res['reader']}", "vmhwm_kib_max", 0)
        stats.COUNTS[f"fuzz:{res['reader']}|vmhwm_kib_max"] = max(
            stats.COUNTS[f"fuzz:{res['reader']}|vmhwm_kib_max"], res["vmhwm_kib"])
        stats.COUNTS[f"fuzz:{res['reader']}|peak_alloc_max"] = max(
            stats.COUNTS[f"fuzz:{res['reader']}|peak_alloc_max"], res["max_peak"])
        stats.COUNTS[f"fuzz:{res['reader']}|worst_ratio_x1e4"] = max(
            stats.COUNTS[f"fuzz:{res['reader']}|worst_ratio_x1e4"], int(res["worst_ratio"] * 1e4))
        bad = {k: v for k, v in res["outcomes"].items() if not (k == "ok" or k.startswith("refused:"))}
        if bad or res["over_bound"]:
            problems.append((res["reader"], res["seed"], bad, res["over_bound"], res["failures"][:5]))
        # each reader both loads and refuses: the fuzzing reaches past the first check
        assert res["outcomes"].get("ok", 0) > 0 and sum(
            v for k, v in res["outcomes"].items() if k.startswith("refused:")) > 0, res
    assert total >= 10_000
    assert not problems, json.dumps(problems, indent=1)[:6000]


# ================================================================================ kill -9 x 100
class Zygote:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, str(HELPERS / "run_zygote.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=child_env())

    def _ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().split()

    def start(self, argv, log):
        return int(self._ask(f"run {log} {json.dumps([str(a) for a in argv])}")[1])

    def wait(self, pid):
        return int(self._ask(f"wait {pid}")[1])

    def run(self, argv, log):
        rc = self.wait(self.start(argv, log))
        return rc, Path(log).read_text(errors="replace")

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


def _setup(tmp_path):
    from numcnn import datasets
    (x, y), _ = datasets.load("digits")
    data = tmp_path / "digits150.npz"
    np.savez(data, x=x[:150], y=y[:150])
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps({"input_shape": [1, 8, 8], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": 2}, {"type": "Flatten"},
        {"type": "Dropout", "p": 0.2},
        {"type": "Dense", "in_features": 64, "out_features": 10}]}))
    return data, arch


ALLOWED = {".lock", "checkpoint.safetensors", "best.safetensors", "model.safetensors",
           "history.json", "evaluation.json", "history.png", "confusion.png", "filters.png",
           "feature_maps.png", "run.json"}       # run.json: how the run was made (parallel)


AIMS = ("start-up", "write", "training", "evaluation and plots")
AIM_WEIGHTS = (10, 40, 30, 20)


def _text(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _epoch_lines(path):
    return sum(1 for line in _text(path).splitlines() if line.startswith("epoch "))


def _inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(pid, condition, seconds=120):
    """Poll until ``condition()``; False when the child ended first."""
    t = time.perf_counter()
    while not condition():
        if not _alive(pid):
            return False
        assert time.perf_counter() - t < seconds, "the run made no progress"
        time.sleep(0.001)
    return True


def check_folder_after_kill(out):
    """Every file a kill can leave is whole; returns the folder's state in words."""
    temps = 0
    for f in os.listdir(out):
        if is_temp_name(f):
            temps += 1
            continue
        assert f in ALLOWED, f"unexpected file {f} after a kill"
        p = out / f
        if f == "checkpoint.safetensors":
            load_checkpoint(p)
        elif f.endswith(".safetensors"):
            load_model(p)
        elif f == "history.json":
            read_history(p)
        elif f == "evaluation.json":
            json.loads(p.read_text())
        elif f.endswith(".png"):
            from PIL import Image
            with Image.open(p) as im:                  # never a 0-byte or half PNG
                im.load()
    if (out / "checkpoint.safetensors").exists():
        return "continuable", temps
    if (out / "model.safetensors").exists():
        return "finished", temps
    if any((out / f).exists() for f in ("best.safetensors", "history.json")):
        return "restartable (leftovers)", temps
    return "fresh", temps


def test_kill_nine_a_hundred_times(tmp_path):
    data, arch = _setup(tmp_path)
    base = ["train", "--data", data, "--model", arch, "--epochs", "20", "--batch-size", "16",
            "--optimizer", "sgd", "--seed", "0", "--no-progress"]
    z = Zygote()
    try:
        # the reference run, timed in two phases: training (until model.safetensors appears)
        # and the rest (evaluation, plots)
        t0 = time.perf_counter()
        pid = z.start(base + ["--out", tmp_path / "ref"], tmp_path / "ref.log")
        while not (tmp_path / "ref" / "model.safetensors").exists():
            time.sleep(0.002)
        trained = time.perf_counter() - t0
        rc = z.wait(pid)
        full = time.perf_counter() - t0
        assert rc == 0, (tmp_path / "ref.log").read_text()
        ready = 0.2                                # start-up of a forked run: well under this
        per_epoch = trained / 20
        ref = {f: (tmp_path / "ref" / f).read_bytes()
               for f in ("model.safetensors", "best.safetensors", "evaluation.json")}
        rnd = random.Random(15)
        aims = {}
        kills, finished, campaign, states, refusals, restarts = 0, 0, 0, {}, 0, 0
        temps_seen, temps_removed, runs = 0, 0, 1
        out = tmp_path / f"run{campaign}"
        while kills < KILLS:
            state, temps = check_folder_after_kill(out) if out.exists() else ("fresh", 0)
            temps_seen += temps
            argv = base + ["--out", out]
            if state == "continuable":
                # what numcnn says to a plain `train` on this folder is what we do next
                rc, log = z.run(argv, tmp_path / "refused.log")
                runs += 1
                assert rc == 2 and "--resume" in log and "another numcnn run" not in log, log
                if "temporary file" in log:                  # the refused run tidied up
                    temps_removed += int(log.split("removed ", 1)[1].split()[0])
                said = log.split("--resume ", 1)[1].split(";")[0].split()[0]
                assert Path(said) == out / "checkpoint.safetensors" and Path(said).exists()
                refusals += 1
                argv = argv + ["--resume", said]
            elif state == "finished":
                raise AssertionError("a model.safetensors without checkpoint: cannot happen")
            elif state == "restartable (leftovers)":
                restarts += 1
            log_path = tmp_path / "run.log"
            model_before = _inode(out / "model.safetensors")
            pid = z.start(argv, log_path)
            runs += 1
            aim = rnd.choices(AIMS, weights=AIM_WEIGHTS)[0]
            aims[aim] = aims.get(aim, 0) + 1
            if aim == "start-up":                  # imports are shared: lock, data, model, resume
                time.sleep(rnd.uniform(0, ready))
            elif aim == "write":                   # 0-5 ms after the k-th epoch line: the best
                k = rnd.randint(1, 4)              # model, checkpoint and history writes follow
                if _wait_for(pid, lambda: _epoch_lines(log_path) >= k):
                    time.sleep(rnd.uniform(0, 0.005))
            elif aim == "training":                # any moment of the epochs
                if _wait_for(pid, lambda: "output folder:" in _text(log_path)):
                    time.sleep(rnd.uniform(0, 4 * per_epoch))
            else:                                  # after training: evaluation and plots
                if _wait_for(pid, lambda: _inode(out / "model.safetensors") not in (None, model_before)):
                    time.sleep(rnd.uniform(0, full - trained))
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            rc = z.wait(pid)
            log = _text(log_path)
            assert "another numcnn run" not in log, log      # a killed run's lock was freed
            if "removed" in log and "temporary file" in log:
                temps_removed += int(log.split("removed ", 1)[1].split()[0])
            if rc == -9:
                kills += 1
                states[state] = states.get(state, 0) + 1
                phase = ("start-up, lock, data" if "output folder:" not in log else
                         "evaluation and plots" if (out / "model.safetensors").exists() else
                         "training (checkpoint, best model, history writes)")
                stats.record("kill", f"killed during: {phase}")
                continue
            assert rc == 0, log
            # the run finished: bit-identical to the uninterrupted one, nothing left over
            finished += 1
            for f, b in ref.items():
                assert (out / f).read_bytes() == b, f"{f} differs after kills (campaign {campaign})"
            assert not [f for f in os.listdir(out) if is_temp_name(f)]
            campaign += 1
            out = tmp_path / f"run{campaign}"
        # finish the last campaign without kills
        state, temps = check_folder_after_kill(out) if out.exists() else ("fresh", 0)
        argv = base + ["--out", out]
        if state == "continuable":
            argv += ["--resume", out / "checkpoint.safetensors"]
        rc, log = z.run(argv, tmp_path / "last.log")
        assert rc == 0, log
        finished += 1
        for f, b in ref.items():
            assert (out / f).read_bytes() == b
        stats.record("kill", "reference run ms (training)", int(trained * 1000))
        stats.record("kill", "reference run ms (total)", int(full * 1000))
        stats.record("kill", "kills", kills)
        stats.record("kill", "finished runs (bit-identical)", finished)
        stats.record("kill", "commands run", runs)
        stats.record("kill", "refused without --resume, path followed", refusals)
        stats.record("kill", "restarted from leftovers without checkpoint", restarts)
        stats.record("kill", "temporaries seen after kills", temps_seen)
        stats.record("kill", "temporaries removed by the next run", temps_removed)
        for k, v in states.items():
            stats.record("kill", f"state before kill: {k}", v)
        for k, v in aims.items():
            stats.record("kill", f"aimed at: {k} (runs)", v)
        assert kills == KILLS and finished >= 2
    finally:
        z.close()
