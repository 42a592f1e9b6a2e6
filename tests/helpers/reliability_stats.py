"""Outcome counters for the reliability tests (tests/test_fuzz_readers.py and friends).

Each test records what every hostile input did (``record("idx", "loaded")``,
``record("idx", "DataError")``...).  When the environment variable ``NUMCNN_RELIABILITY_STATS``
names a folder, each test module writes its counts there as ``<module>.json`` at the end; that is
where the numbers in docs/reliability.md come from.  Without the variable nothing is written.
"""
from __future__ import annotations

import collections
import json
import os

COUNTS: collections.Counter = collections.Counter()


def record(category: str, what: str, n: int = 1) -> None:
    COUNTS[f"{category}|{what}"] += n


def dump(module: str) -> None:
    folder = os.environ.get("NUMCNN_RELIABILITY_STATS")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    mine = {k: v for k, v in sorted(COUNTS.items())}
    with open(os.path.join(folder, f"{module}.json"), "w") as f:
        json.dump(mine, f, indent=1, sort_keys=True)
    COUNTS.clear()
