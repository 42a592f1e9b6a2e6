"""How the ``numcnn`` command prints: lines as they come, errors in words, odd bytes escaped.

Every command prints through :func:`say` (flushed, so a pipe or a log sees each line at once);
:func:`error_text` is the one line ``main`` prints for an error; :func:`safe_streams` keeps a
path that is not valid UTF-8 from crashing the print.
"""
from __future__ import annotations

import codecs
import sys


def say(*a):
    print(*a, flush=True)


def error_text(exc):
    """An error in words: its message, or (for an empty one, e.g. MemoryError()) its type and
    what to do."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError):
        return ((text + ": " if text else "") + "out of memory (MemoryError); the data or model "
                "is too large for this machine - use less data, a smaller --image-size or "
                "--batch-size, or lower NUMCNN_MAX_DATA_BYTES so numcnn refuses it up front")
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or f"{type(exc).__name__} (no message); please report this as a bug"


def _escape(err):
    """Encoding error handler: a path's undecodable byte (``os.fsdecode`` keeps it as a surrogate
    U+DC80..U+DCFF) is printed as ``\\xNN``, as numcnn names such classes; anything else as a
    backslash escape too."""
    bad = err.object[err.start:err.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   c.encode("ascii", "backslashreplace").decode() for c in bad), err.end


def safe_streams():
    """Paths are not always valid UTF-8: on a strict UTF-8 (or ASCII) terminal, print their odd
    bytes as ``\\xNN`` escapes instead of crashing."""
    codecs.register_error("numcnn-escape", _escape)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="numcnn-escape")
        except (AttributeError, ValueError, OSError):   # replaced streams (pytest, pipes)
            pass
