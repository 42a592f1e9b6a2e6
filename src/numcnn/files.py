"""Files: written atomically, read within bounds.  The bottom floor every reader and writer uses.

* :func:`atomic_write`: temp file in the same folder, fsync, rename; a crash at any moment leaves
  either the old file or the new one, never half of one.  A symlink is written *through*: its
  target is replaced atomically and the link stays.  A target that is not a regular file (a
  device such as ``/dev/null``, a FIFO, a socket) is refused: replacing it by a file would
  destroy it.  Write errors (disk full, read-only file system...) are a
  :class:`~numcnn.errors.StorageError` naming the file and saying what was kept.
* :func:`open_regular` / :func:`read_regular`: every reader opens its input here.  The path is
  opened without blocking (a FIFO would otherwise hang the open), then ``os.fstat`` on the
  *descriptor* (not the path, which could change in between) must say "regular file":
  directories, FIFOs, sockets and devices (``/dev/zero``...) are refused before one byte is read,
  and reads never go past the size ``fstat`` reported (``/proc`` files report 0 and read as
  empty).  Missing or unreadable files are the caller's error class with a plain message.
* :func:`check_writable_folder`: a run's output folder exists and takes files, checked before any
  work is done.
* :func:`remove_stale_temps`: the ``.tmp-*.part`` files a killed write left behind.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import secrets
import stat
import tempfile

from .errors import ConfigError, ModelFileError, StorageError

def is_temp_name(name):
    """Whether ``name`` is one of atomic_write's temporaries, ``.tmp-<12 hex digits>.part``
    (no loader ever looks for them)."""
    middle = name[5:-5]
    return name.startswith(".tmp-") and name.endswith(".part") and len(middle) == 12 \
        and all(c in "0123456789abcdef" for c in middle)


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


def _kind(mode):
    """A file type in words, for messages."""
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def write_target(path):
    """The regular file an atomic write of ``path`` replaces: ``path`` itself, or the file a
    symlink (chain) points to.  A folder or a special file is refused with ConfigError."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError:                   # e.g. a parent we cannot search: the write will say
        return real
    if stat.S_ISDIR(mode):
        raise ConfigError(f"cannot write {path!r}: it is a folder; give a file name inside it")
    if not stat.S_ISREG(mode):
        what = _kind(mode)
        raise ConfigError(f"cannot write {path!r}: it is a {what}"
                          + (f" ({real})" if real != os.path.abspath(path) else "")
                          + ", not a regular file; numcnn replaces files atomically and would "
                          "destroy it - give the path of a file (or '-' for standard output "
                          "where the command offers it)")
    return real


def storage_error(path, exc, existed, action="write"):
    """StorageError for an OSError while writing ``path``: the file, the reason, what was kept."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    advice = {_errno.ENOSPC: "free some disk space or write elsewhere",
              _errno.EDQUOT: "free some space within your disk quota or write elsewhere",
              _errno.EROFS: "the file system is read-only; write elsewhere",
              _errno.EACCES: "you may not write there; change the permissions or write elsewhere",
              _errno.EPERM: "you may not write there; change the permissions or write elsewhere",
              }.get(code, "check the disk and the folder, or write elsewhere")
    kept = (f"the previous {os.path.basename(path)} is intact (unchanged)" if existed
            else "nothing was written there")
    return StorageError(f"could not {action} {path}: {reason}; {kept} - {advice}", errno=code)


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` via temp file + fsync + rename (never a half-written file).

    A file that is replaced keeps its permissions (where the file system allows chmod).  A
    symlink is written through (its target is replaced, the link stays); a folder or a special
    file (device, FIFO, socket) is refused with ConfigError.  Any OSError while writing
    (``ENOSPC``, ``EROFS``, ``EACCES``...) is a StorageError naming the file; the previous file,
    if any, is then untouched and the temporary removed."""
    path = as_path(path, "write")
    target = write_target(path)
    folder = os.path.dirname(target)
    existed = os.path.lexists(target)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = _temp_file(folder)
    except OSError as exc:
        raise storage_error(path, exc, existed) from None
    try:
        try:
            keep = os.stat(target).st_mode & 0o7777
        except OSError:
            keep = None
        try:
            view = memoryview(data)
            while view:                        # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if keep is not None:
            try:
                os.chmod(tmp, keep)
            except OSError:                  # e.g. vfat, CIFS: the new file's mode will do
                pass
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise storage_error(path, exc, existed) from None
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temps(folder, older_than):
    """Delete atomic_write's temporaries (``.tmp-<12 hex>.part``, nothing else) in ``folder``
    last modified before ``older_than`` (a time.time() value); returns how many.  Called by a
    run holding its folder's lock, so no live numcnn run is writing them."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if is_temp_name(e.name):
            try:
                if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < older_than:
                    os.unlink(e.path)
                    removed += 1
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def open_regular(path, what="file", error=ModelFileError):
    """Open ``path`` for reading as ``(file, size)``, only if it is a regular file.

    Opened with ``O_NONBLOCK`` (a FIFO never hangs the open), then checked with ``os.fstat`` on
    the descriptor; ``size`` is what fstat says, and callers never read more.  Every OSError
    with an errno - while opening or inside the ``with`` block - becomes ``error`` naming the
    file."""
    path = as_path(path, f"read {what}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} {path!r} does not exist (no such file); check the path") from None
    except PermissionError:
        raise error(f"cannot read {what} {path!r}: permission denied; change its permissions "
                    "or run as a user who may read it") from None
    except OSError as exc:           # ENXIO (a socket), ELOOP, EIO...
        raise error(f"cannot open {what} {path!r}: {exc.strerror or exc}; numcnn reads only "
                    "regular files") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{what} {path!r} is a folder (a directory); give a file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path!r} is a {_kind(st.st_mode)}, not a regular file; numcnn "
                        "reads only regular files (a device or pipe could never end, or block)")
        f = os.fdopen(fd, "rb")
        fd = None
    finally:
        if fd is not None:
            os.close(fd)
    with f:
        try:
            yield f, st.st_size
        except OSError as exc:
            if isinstance(exc, StorageError) or exc.errno is None:   # e.g. Pillow's "truncated"
                raise
            raise error(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def read_exact(f, n, path, what="file", error=ModelFileError):
    """Exactly ``n`` bytes from ``f`` (n already checked against the file's size)."""
    buf = f.read(n)
    if len(buf) != n:
        raise error(f"{what} {path!r} shrank while being read ({len(buf)} of {n} bytes); "
                    "try again")
    return buf


def read_regular(path, what="file", error=ModelFileError, limit=None):
    """All bytes of a regular file, at most ``limit`` (larger files are refused unread)."""
    with open_regular(path, what, error) as (f, size):
        if limit is not None and size > limit:
            raise error(f"{what} {as_path(path, what)!r} is {size:,} bytes, more than the "
                        f"{limit:,}-byte limit for this kind of file; it is the wrong file or "
                        "is damaged")
        return read_exact(f, size, as_path(path, what), what, error)


def read_file(path, what="model file"):
    """A model or checkpoint file's bytes (regular files only; see :func:`open_regular`)."""
    return read_regular(path, what, ModelFileError)


def check_writable_folder(path):
    """Create ``path`` if needed and make sure files can be written in it, or ConfigError."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to the output folder {os.fspath(path)!r} "
                          f"({exc.strerror or exc}); choose another folder") from None
