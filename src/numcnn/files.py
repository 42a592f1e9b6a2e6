"""Files: written atomically, read within bounds.  The bottom floor every reader and writer uses.

* :func:`atomic_write`: temp file in the same folder, fsync, rename; a crash at any moment leaves
  either the old file or the new one, never half of one.
* :func:`read_file`: a model or checkpoint file's bytes, with a clear error for a missing path or a
  folder.
* :func:`check_writable_folder`: a run's output folder exists and takes files, checked before any
  work is done.
"""
from __future__ import annotations

import os
import secrets
import tempfile

from .errors import ConfigError, ModelFileError


def as_path(path, what):
    """``path`` as a str, or ConfigError when it is not a path at all (None, a number...)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ConfigError(f"{what}: expected a file path, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def _temp_file(folder):
    """``(fd, path)`` of a new ``.tmp-*.part`` file in ``folder``, created with mode 0666 so the
    process's umask applies as for any new file (mkstemp's private 0600 would lock other users
    out of shared models)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder!r}")   # pragma: no cover


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` via temp file + fsync + rename (never a half-written file).

    A file that is replaced keeps its permissions (where the file system allows chmod)."""
    path = as_path(path, "write")
    if os.path.isdir(path):
        raise ConfigError(f"cannot write {path!r}: it is a folder; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = _temp_file(folder)
    except OSError as exc:       # name the file asked for, not the hidden temporary one
        raise type(exc)(exc.errno, f"{exc.strerror} (writing {path!r})") from None
    try:
        try:
            keep = os.stat(path).st_mode & 0o7777
        except OSError:
            keep = None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            try:
                os.chmod(tmp, keep)
            except OSError:                  # e.g. vfat, CIFS: the new file's mode will do
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_file(path, what="model file"):
    path = as_path(path, f"read {what}")
    if not os.path.exists(path):
        raise ModelFileError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise ModelFileError(f"{what} {path!r} is a folder; give the .safetensors file inside it")
    with open(path, "rb") as f:
        return f.read()


def check_writable_folder(path):
    """Create ``path`` if needed and make sure files can be written in it, or ConfigError."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to the output folder {os.fspath(path)!r} "
                          f"({exc.strerror or exc}); choose another folder") from None
