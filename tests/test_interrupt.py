"""Interruption: SIGKILL a training process at random moments, many times; nothing is lost.

``tests/helpers/train_child.py`` trains a tiny CNN (with dropout, SGD + momentum) on 64 ``digits``
images, 2 steps an epoch, writing a checkpoint after every epoch, and resumes from
``checkpoint.safetensors`` when it exists.  It prints ``READY`` before training and
``SAVING <epoch>`` as each checkpoint write starts.  The test kills it with SIGKILL 20 times, with
seeded random timing of three kinds:

* ``early``  - during start-up (imports, data, reading the checkpoint), before ``READY``;
* ``write``  - right after the k-th ``SAVING`` line, i.e. in the middle of a checkpoint write;
* ``anytime`` - a random 0-30 ms after the k-th ``SAVING`` line (training, history, best model).

After every kill: the checkpoint (if any) loads with :func:`numcnn.io.load_checkpoint`, its epoch
never goes backwards, ``best.safetensors`` and ``history.json`` are whole, and the only other files
are the writer's hidden ``.tmp-*.part`` temporaries (which no loader ever opens).  Finally the run
is resumed to the end and must be bit-identical - every parameter ``np.array_equal``, the model
files byte-identical, the same loss history - to an uninterrupted run with the same settings.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn.errors import NumcnnError
from numcnn.io import decode_safetensors, load_checkpoint, load_model

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import reliability_stats as stats  # noqa: E402

CHILD = Path(__file__).parent / "helpers" / "train_child.py"
EPOCHS = 150
SETTINGS = ["--epochs", str(EPOCHS), "--samples", "64", "--batch-size", "32", "--seed", "0"]
KILLS = 20
KNOWN = {"checkpoint.safetensors", "best.safetensors", "history.json", "model.safetensors"}
TEMP = re.compile(r"^\.tmp-[A-Za-z0-9_]+\.part$")


@pytest.fixture(scope="module", autouse=True)
def _dump_stats():
    yield
    stats.dump("test_interrupt")


def child_env():
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"                                    # one BLAS thread: bit-reproducible
    src = str(Path(numcnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(out_dir, resume=True):
    cmd = [sys.executable, str(CHILD), str(out_dir), *SETTINGS] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def read_until(proc, prefix, count):
    """Block until the ``count``-th stdout line starting with ``prefix``; False if the child
    ended first."""
    seen = 0
    while True:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.startswith(prefix.encode()):
            seen += 1
            if seen >= count:
                return True


def inspect(out_dir, last_epoch):
    """Check what a killed run left behind; returns (checkpoint epoch or None, temp files)."""
    if not out_dir.exists():
        return None, []
    names = sorted(os.listdir(out_dir))
    temps = [n for n in names if TEMP.match(n)]
    strays = [n for n in names if n not in KNOWN and n not in temps]
    assert not strays, f"unexpected files after a kill: {strays}"
    assert not any(n.endswith((".safetensors", ".json")) for n in temps)
    epoch = None
    ck = out_dir / "checkpoint.safetensors"
    if ck.exists():
        model, optim, info = load_checkpoint(ck)        # must load, whatever the timing
        epoch = info["epoch"]
        assert info["batch"] == 0 and info["partial"] is None
        assert last_epoch is None or epoch >= last_epoch, "the checkpoint went backwards"
        assert all(np.all(np.isfinite(p.value)) for p in model.parameters())
        assert optim, "optimizer state missing"
        hist_path = out_dir / "history.json"
        if hist_path.exists():
            # history.json is written after the checkpoint, so it may lag behind it (a kill
            # between the two writes), but it is whole and agrees with the checkpoint's copy
            hist = json.loads(hist_path.read_text())
            n = len(hist["epoch"])
            assert n <= epoch and hist["train_loss"] == info["history"]["train_loss"][:n]
    if (out_dir / "best.safetensors").exists():
        load_model(out_dir / "best.safetensors")
    return epoch, temps


def read_temp(path):
    """A temporary left by a kill is never opened by numcnn; if one were, it either holds a
    whole file (killed between write and rename) or is refused cleanly (killed mid-write)."""
    data = path.read_bytes()
    if data[:1] == b"{":                                # a history.json temporary
        try:
            json.loads(data)
            return "history, whole"
        except ValueError:
            return "history, partial"
    try:
        decode_safetensors(data, where=path.name)
        return "model/checkpoint, whole"
    except NumcnnError:
        return "model/checkpoint, partial (refused)"


def test_sigkill_at_random_moments_never_loses_the_checkpoint(tmp_path):
    rng = random.Random(20251125)
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    reference = start(ref_dir, resume=False)            # the uninterrupted run, in parallel
    modes = ["early"] * 4 + ["write"] * 8 + ["anytime"] * 8
    rng.shuffle(modes)
    last_epoch, startup, kills, mid_write, epochs_seen = None, 1.0, 0, 0, []
    seen_temps = set()
    t_start = time.perf_counter()
    for mode in modes:
        proc = start(run_dir)
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        t0 = time.perf_counter()
        try:
            if mode == "early":
                time.sleep(rng.uniform(0.1, 0.9) * startup)
                alive = proc.poll() is None
            else:
                alive = read_until(proc, "READY", 1)
                startup = min(startup, time.perf_counter() - t0)
                alive = alive and read_until(proc, "SAVING", rng.randint(1, 3))
                if alive:   # "write": inside the write (encode, write, fsync take a few ms)
                    time.sleep(rng.uniform(0.0, 0.004 if mode == "write" else 0.03))
            if alive:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=120)
        finally:
            watchdog.cancel()
        out, err = proc.communicate()
        if proc.returncode == 0:                         # finished before the kill: stop here
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        kills += 1
        stats.record("interrupt", f"kill ({mode})")
        last_epoch, temps = inspect(run_dir, last_epoch)
        new = set(temps) - seen_temps
        if new:
            mid_write += 1
            stats.record("interrupt", f"kill landed mid-write ({mode})")
            for t in sorted(new):
                stats.record("interrupt", f"temp file left: {read_temp(run_dir / t)}")
        seen_temps |= set(temps)
        epochs_seen.append(last_epoch)
    kill_time = time.perf_counter() - t_start
    assert kills >= 15, f"only {kills} kills before the run finished"
    assert last_epoch is not None and last_epoch < EPOCHS

    # resume from the surviving checkpoint to the end
    final = start(run_dir)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0 and b"DONE" in out, err.decode()[-2000:]
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0 and b"DONE" in out, err.decode()[-2000:]

    a, b = load_model(run_dir / "model.safetensors"), load_model(ref_dir / "model.safetensors")
    pa, pb = a.named_parameters(), b.named_parameters()
    assert pa.keys() == pb.keys()
    for name in pa:
        assert np.array_equal(pa[name].value, pb[name].value), f"parameter {name} differs"
    for name in ("model.safetensors", "best.safetensors"):
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    _, opt_a, info_a = load_checkpoint(run_dir / "checkpoint.safetensors")
    _, opt_b, info_b = load_checkpoint(ref_dir / "checkpoint.safetensors")
    assert info_a["epoch"] == info_b["epoch"] == EPOCHS
    assert opt_a.keys() == opt_b.keys() and all(np.array_equal(opt_a[k], opt_b[k]) for k in opt_a)
    assert info_a["history"]["train_loss"] == info_b["history"]["train_loss"]
    assert info_a["rng"] == info_b["rng"]
    stats.record("interrupt", "total kills", kills)
    stats.record("interrupt", "kills that left a temp file (landed mid-write)", mid_write)
    stats.record("interrupt", "stale temp files left in the run folder", len(seen_temps))
    stats.record("interrupt", "kill phase seconds", round(kill_time))
    stats.record("interrupt", "bit-identical final parameters", len(pa))
    print(f"\n{kills} SIGKILLs ({mid_write} mid-write, {len(seen_temps)} temp files left), "
          f"checkpoint epochs after each kill: {epochs_seen}")
    # at least one kill must have landed inside a write (else the test proved less than it says)
    assert mid_write >= 1, "no SIGKILL landed during a checkpoint write"
