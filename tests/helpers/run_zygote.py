"""A fork server for tests/test_reliability_big.py: imports numcnn once, then forks one
``numcnn`` command per request, so 100 runs cost 100 forks instead of 100 interpreter starts.

Protocol (one line each way, on stdin/stdout):

    run <LOG> <JSON argv>   ->  PID <pid>       fork; the child runs numcnn.cli.main(argv) with
                                                 stdout and stderr sent to LOG, then exits
    wait <pid>              ->  RC <code>        waitpid; -9 for a child killed by SIGKILL
    quit

The parent test sends SIGKILL to the child's pid at a random moment.  Each child is a fresh
process as far as the kernel is concerned (its own descriptors, its own flock on the run folder),
which is what the kill test needs; only the imports are shared.
"""
from __future__ import annotations

import json
import os
import sys


def main():
    import matplotlib.figure  # noqa: F401 - the plots' imports, done once
    from matplotlib.backends import backend_agg  # noqa: F401

    import numcnn  # noqa: F401
    from numcnn import cli

    out = sys.stdout
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "run":
            log, _, argv = rest.partition(" ")
            out.flush()
            pid = os.fork()
            if pid == 0:                                   # the child: one numcnn command
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
                sys.stdin.close()
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                try:
                    rc = cli.main(json.loads(argv))
                except BaseException as exc:  # noqa: BLE001 - reported, then a non-zero exit
                    print(f"CHILD CRASHED: {type(exc).__name__}: {exc}", file=sys.stderr)
                    rc = 99
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc if isinstance(rc, int) else 0)
            print(f"PID {pid}", file=out, flush=True)
        elif cmd == "wait":
            _, status = os.waitpid(int(rest), 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            print(f"RC {code}", file=out, flush=True)
        elif cmd == "quit":
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
