"""Checksummed, resumable downloads of the standard datasets (urllib only).

Guarantees of :func:`download`:

* Data is written to ``dest + '.part'``; ``dest`` itself only ever appears complete: after the
  SHA-256 of the whole file matched, the ``.part`` is fsync'ed and atomically renamed
  (``os.replace``).  A half file is never accepted as data.
* An interrupted transfer leaves the ``.part`` behind; the next call resumes it with an HTTP
  ``Range`` request.  A server that answers ``206 Partial Content`` is appended to; one that
  answers ``200`` sends the whole file again, which then overwrites the ``.part``.
* On a checksum mismatch the ``.part`` is deleted and the next mirror is tried (if the bad
  file came from resuming a stale ``.part``, one fresh download from byte 0 from the same
  mirror is tried first).  Only when every mirror failed is one :class:`DownloadError`
  raised, saying what each mirror did.
* An existing ``dest`` is never deleted: it stays as it is until a verified ``.part``
  replaces it, so a failed download (offline, wrong checksum) loses nothing.
* Mirrors are tried in order; every request has a timeout; every loop is bounded.

The cache directory is :func:`cache_dir`: ``$NUMCNN_HOME`` if set, else ``~/.cache/numcnn``.
Which datasets exist, and where their files come from, is :mod:`numcnn.data.sources`.
"""
from __future__ import annotations

import hashlib
import http.client
import math
import numbers
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import ConfigError, DownloadError

__all__ = ["cache_dir", "download", "sha256_file"]

_USER_AGENT = "numcnn/0.1 (+https://pypi.org/project/numcnn)"
CHUNK = 1 << 16

def cache_dir() -> Path:
    """Where datasets are cached: ``$NUMCNN_HOME`` if set (and non-empty), else
    ``~/.cache/numcnn``.  Not created here."""
    home = os.environ.get("NUMCNN_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "numcnn"


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Incomplete(Exception):
    """The server closed the connection before sending everything it announced."""


def _progress_bar(total, initial, name, enabled):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional nicety
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name,
                leave=False)


def _fsync_dir(d: Path):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def url_list(value):
    """One URL (a string) or several as a list of non-empty strings; [] when it is neither."""
    if isinstance(value, str):
        value = [value]
    try:
        urls = list(value)
    except TypeError:
        return []
    return urls if all(isinstance(u, str) and u.strip() for u in urls) else []


def check_timeout(timeout, who):
    """A finite number of seconds > 0 (bools refused), as a float; ConfigError otherwise."""
    ok = isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)
    if ok:
        timeout = float(timeout)
        ok = math.isfinite(timeout) and timeout > 0
    if not ok:
        raise ConfigError(f"{who}: timeout must be a positive, finite number of seconds (e.g. "
                          f"timeout=30), got {timeout!r}")
    return timeout


def ensure_dir(path: Path, hint: str):
    """Create folder ``path`` (and its parents); a clear error when a regular file (or other
    non-folder) sits at ``path`` or at one of its parents, or the folder cannot be made."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise ConfigError(f"cannot use {path} as a folder: {p} exists and is not a "
                                  f"folder; {hint}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {path} ({type(exc).__name__}: "
                            f"{exc.strerror or exc}); {hint}") from exc


def _parse_content_range(value):
    """'bytes 100-199/1000' -> (100, 1000 or None); None when unparsable."""
    try:
        unit, rng = value.split(None, 1)
        if unit.lower() != "bytes":
            return None
        span, total = rng.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except (AttributeError, ValueError):
        return None


def _fetch_one(url, part: Path, timeout, progress, size, allow_resume):
    """Transfer ``url`` into ``part`` (resuming it when possible).  Raises on any failure,
    leaving whatever arrived in ``part`` for a later resume.  Returns True if it resumed."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r} (use http, https or file)")
    offset = part.stat().st_size if (allow_resume and part.exists()) else 0
    if size is not None and offset > size:
        offset = 0
    if size is not None and offset == size:
        return True  # the .part is already complete: just verify it
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset and scheme != "file":
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            exc.close()
            return True  # nothing left to send: the .part is probably complete; verify it
        raise
    with resp:
        status = getattr(resp, "status", 200) or 200
        resumed = False
        if offset and status == 206:
            cr = _parse_content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != offset:
                raise _Incomplete(f"server answered a Range request for bytes {offset}- with "
                                  f"Content-Range {resp.headers.get('Content-Range')!r}")
            mode, start, resumed = "ab", offset, True
        elif status in (200, None) or scheme == "file":
            mode, start = "wb", 0        # full body: restart from zero
        else:
            raise _Incomplete(f"unexpected HTTP status {status}")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        limit = size - start if size is not None else None
        if limit is not None and expected is not None and expected > limit:
            raise _Incomplete(f"server announces {expected} bytes but only {limit} are "
                              f"expected")
        bar = _progress_bar((start + expected) if expected is not None else size, start,
                            part.name[:-5], progress)
        received = 0
        try:
            with open(part, mode) as out:
                try:
                    while True:
                        want = CHUNK
                        if limit is not None:
                            want = min(CHUNK, limit - received + 1)  # +1 detects overrun
                        chunk = resp.read(want)
                        if not chunk:
                            break
                        out.write(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                        if limit is not None and received > limit:
                            raise _Incomplete(f"server sent more than the expected "
                                              f"{size} bytes")
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
        if expected is not None and received != expected:
            raise _Incomplete(f"connection closed after {received} of {expected} bytes")
        return resumed


def download(url_or_mirrors, dest_path, sha256: str, *, timeout: float = 30,
             progress: bool = True, size: int | None = None) -> Path:
    """Download a file, verify its SHA-256 and move it into place atomically.

    Parameters
    ----------
    url_or_mirrors : str or sequence of str
        One URL or several mirror URLs of the *same* file, tried in order until one works.
    dest_path : path
        Final location (a file path, not a folder).  The transfer goes to
        ``dest_path + '.part'``; ``dest_path`` appears only once complete and verified.  If
        ``dest_path`` already exists with the right checksum nothing is downloaded; one with
        another checksum is left untouched until the verified download replaces it (so it
        is still there if the download fails).
    sha256 : str
        Expected hex SHA-256 of the whole file (case-insensitive).
    timeout : float
        Seconds for connecting and for each read.
    progress : bool
        Show a tqdm bar when stderr is a terminal.
    size : int or None
        Expected size in bytes, if known: bounds the transfer and skips a complete ``.part``.

    Returns the destination path.  Raises :class:`DownloadError` when every mirror failed -
    could not be reached, or sent a file whose checksum did not match (that file is deleted
    and the next mirror tried); a ``.part`` left by an interrupted transfer is kept for
    resuming.  Raises :class:`ConfigError` for bad arguments (no URL, a malformed sha256, a
    timeout that is not a positive number, a destination that is a folder), before any
    transfer.
    """
    mirrors = url_list(url_or_mirrors)
    if not mirrors:
        raise ConfigError(f"download: need at least one URL, got {url_or_mirrors!r}")
    want = str(sha256).strip().lower()
    if len(want) != 64 or any(ch not in "0123456789abcdef" for ch in want):
        raise ConfigError(f"download: sha256 must be 64 hex digits, got {sha256!r}")
    timeout = check_timeout(timeout, "download")
    if size is not None and (not isinstance(size, numbers.Integral) or isinstance(size, bool)
                             or size < 0):
        raise ConfigError(f"download: size must be None or a number of bytes >= 0, got "
                          f"{size!r}")
    if not isinstance(dest_path, (str, os.PathLike)) or not str(dest_path):
        raise ConfigError(f"download: dest_path must be the path of the file to create, got "
                          f"{dest_path!r}")
    dest = Path(dest_path)
    part = dest.with_name(dest.name + ".part")
    if dest.is_dir():
        raise ConfigError(f"download: the destination {dest} is a folder; pass the path of the "
                          f"file to create (e.g. {dest / 'FILE'}) or move that folder away")
    if (dest.exists() or dest.is_symlink()) and not dest.is_file():
        raise ConfigError(f"download: the destination {dest} exists and is not a regular file "
                          f"(or is a broken link); pass another path or remove it")
    if dest.is_file() and sha256_file(dest) == want:
        return dest
    had_dest = dest.is_file()    # a damaged or outdated copy: kept until the new one is verified
    if part.is_dir() or ((part.exists() or part.is_symlink()) and not part.is_file()):
        raise ConfigError(f"download: {part} (where the transfer is written) exists and is not "
                          f"a regular file; remove it and try again")
    ensure_dir(dest.parent, "pass a destination in a folder you can write to")

    failures = []
    mismatches = 0
    for url in mirrors:
        for attempt in range(2):   # attempt 2 only after a resumed file failed its checksum
            try:
                resumed = _fetch_one(url, part, timeout, progress, size, allow_resume=True)
            except (OSError, http.client.HTTPException, _Incomplete, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
                break                                    # next mirror (resumes the .part)
            got = sha256_file(part)
            if got == want:
                try:
                    os.replace(part, dest)
                except OSError as exc:
                    raise DownloadError(
                        f"downloaded and verified {dest.name}, but could not move {part} to "
                        f"{dest} ({type(exc).__name__}: {exc.strerror or exc}); the verified "
                        f"file is kept as {part} - rename it by hand") from exc
                _fsync_dir(dest.parent)
                return dest
            nbytes = part.stat().st_size
            part.unlink()
            if resumed and attempt == 0:
                failures.append(f"{url}: resumed file had SHA-256 {got}; deleted it and "
                                f"restarted from byte 0")
                continue
            mismatches += 1
            failures.append(f"{url}: checksum mismatch: sent {nbytes} bytes with SHA-256 "
                            f"{got}, expected {want}; deleted")
            break
    kept = ""
    if part.exists():
        if part.stat().st_size:
            kept = f"\n{part.stat().st_size} bytes kept in {part} - run again to resume."
        else:
            part.unlink()
    old = (f"\nThe existing {dest} (whose checksum does not match) was left unchanged."
           if had_dest else "")
    advice = ("\nA mirror that sends a different or damaged file may be out of date - try "
              "again later or another mirror.") if mismatches else ""
    raise DownloadError(
        f"could not download {dest.name}: every mirror failed:\n  "
        + "\n  ".join(failures) + kept + old + advice
        + f"\nCheck your network connection (or proxy), or download the file by hand to "
          f"{dest}")
