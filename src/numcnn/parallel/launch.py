"""What a training run adds for parallel runs: ``--threads``, the MPI job (rank 0 prints and
writes), and ``run.json``, the record of how a run was made.  Called by
:class:`numcnn.training.TrainingRun` (and so by ``numcnn train``)."""
from __future__ import annotations

import atexit
import json
import os
import platform
import sys
import time

import numpy as np

from ..errors import ConfigError
from ..files import atomic_write
from .mpi import world as mpi_world
from .threads import get_num_threads, set_num_threads


def setup(threads=None):
    """Apply ``threads`` (``--threads``) and join the MPI job, if any; returns the
    :class:`~.mpi.World` or None.  Ranks other than 0 stay quiet on stdout (their errors still
    go to stderr)."""
    if threads is not None:
        set_num_threads(threads)
    world = mpi_world()
    if world is not None:
        if not world.root:
            sys.stdout = open(os.devnull, "w")
        # a rank leaving the command any other way than through finished() (an error that the
        # command line turns into a message and exit status 2) must not leave the others waiting
        atexit.register(_stop_unless_finished, world)
    return world


def finished(world, status):
    """Mark the command as having finished on this rank (so exiting is normal); returns ``status``."""
    _finished.add(id(world))
    return status


_finished: set = set()


def _stop_unless_finished(world):
    if id(world) not in _finished:
        world.fail("numcnn train stopped with an error on this rank (its message is above)")


def agree(world, value):
    """``value`` as rank 0 has it, on every rank (e.g. an output folder named by the clock)."""
    return value if world is None else world.bcast_object(value)


def run_record(arguments, argv, dataset, world, version) -> dict:
    """The arguments, versions, data source, seed, threads per process and process count."""
    arguments = {k: v for k, v in arguments.items()
                 if isinstance(v, (str, int, float, bool, type(None), list))}
    return {
        "command": "numcnn train " + " ".join(argv or []),
        "arguments": arguments,
        "numcnn": version, "numpy": np.__version__, "python": platform.python_version(),
        "platform": platform.platform(),
        "data": {"name": str(arguments.get("data")),
                 "source": getattr(dataset, "source", "") or str(arguments.get("data")),
                 "classes": len(dataset.classes)},
        "seed": arguments.get("seed"),
        "threads": get_num_threads(),
        "processes": 1 if world is None else world.size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_run_json(out, record):
    """``out/run.json``; a resumed run keeps the first record and adds itself under "resumed"."""
    path = os.path.join(out, "run.json")
    if record.get("arguments", {}).get("resume") and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                first = json.load(f)
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            first.setdefault("resumed", []).append(record)
            record = first
    try:
        os.makedirs(out, exist_ok=True)
        atomic_write(path, json.dumps(record, indent=1).encode())
    except OSError as exc:          # the message Trainer gives for an unwritable --out
        raise ConfigError(f"cannot write to the output folder {os.fspath(out)!r} "
                          f"({exc.strerror or exc}); choose another folder") from None
    return path
