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
:data:`DATASETS` lists the known datasets with their real file names, mirrors, byte sizes
and SHA-256 checksums; :func:`fetch_dataset` downloads (and for CIFAR-10 safely extracts)
one of them and returns its directory.
"""
from __future__ import annotations

import hashlib
import http.client
import math
import numbers
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, DataError, DownloadError

__all__ = ["DATASETS", "cache_dir", "download", "fetch_dataset", "sha256_file",
           "dataset_dir", "is_fetched"]

_USER_AGENT = "numcnn/0.1 (+https://pypi.org/project/numcnn)"
_CHUNK = 1 << 16

#: Known downloadable datasets.  ``files`` maps file name -> (SHA-256, size in bytes).  The
#: checksums are the published ones (identical in TensorFlow Datasets' url_checksums and
#: the Fashion-MNIST README); a wrong one could only make a real download fail loudly.
DATASETS: dict[str, dict] = {
    "mnist": {
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        "files": {
            "train-images-idx3-ubyte.gz":
                ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            "train-labels-idx1-ubyte.gz":
                ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            "t10k-images-idx3-ubyte.gz":
                ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            "t10k-labels-idx1-ubyte.gz":
                ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        },
        "extract": None,
    },
    "fashion-mnist": {
        "mirrors": [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ],
        "files": {
            "train-images-idx3-ubyte.gz":
                ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            "train-labels-idx1-ubyte.gz":
                ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "t10k-images-idx3-ubyte.gz":
                ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            "t10k-labels-idx1-ubyte.gz":
                ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        },
        "extract": None,
    },
    "cifar10": {
        "mirrors": ["https://www.cs.toronto.edu/~kriz/"],
        "files": {
            "cifar-10-binary.tar.gz":
                ("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171),
        },
        # archive -> the files it must yield (in its cifar-10-batches-bin/ folder)
        "extract": {
            "archive": "cifar-10-binary.tar.gz",
            "folder": "cifar-10-batches-bin",
            "members": ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin",
                        "batches.meta.txt"],
            "max_bytes": 400 * 1024 * 1024,
        },
    },
}


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


def _url_list(value):
    """One URL (a string) or several as a list of non-empty strings; [] when it is neither."""
    if isinstance(value, str):
        value = [value]
    try:
        urls = list(value)
    except TypeError:
        return []
    return urls if all(isinstance(u, str) and u.strip() for u in urls) else []


def _check_timeout(timeout, who):
    """A finite number of seconds > 0 (bools refused), as a float; ConfigError otherwise."""
    ok = isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)
    if ok:
        timeout = float(timeout)
        ok = math.isfinite(timeout) and timeout > 0
    if not ok:
        raise ConfigError(f"{who}: timeout must be a positive, finite number of seconds (e.g. "
                          f"timeout=30), got {timeout!r}")
    return timeout


def _ensure_dir(path: Path, hint: str):
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
                        want = _CHUNK
                        if limit is not None:
                            want = min(_CHUNK, limit - received + 1)  # +1 detects overrun
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
    mirrors = _url_list(url_or_mirrors)
    if not mirrors:
        raise ConfigError(f"download: need at least one URL, got {url_or_mirrors!r}")
    want = str(sha256).strip().lower()
    if len(want) != 64 or any(ch not in "0123456789abcdef" for ch in want):
        raise ConfigError(f"download: sha256 must be 64 hex digits, got {sha256!r}")
    timeout = _check_timeout(timeout, "download")
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
    _ensure_dir(dest.parent, "pass a destination in a folder you can write to")

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


def dataset_dir(name: str, cache=None) -> Path:
    """``<cache>/<name>``: the directory holding dataset ``name``'s files, ``cache`` being the
    cache root (default :func:`cache_dir`)."""
    _spec(name)
    return (Path(cache).expanduser() if cache is not None else cache_dir()) / name


def _spec(name):
    if name not in DATASETS:
        raise ConfigError(f"unknown downloadable dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def _needed_files(name):
    spec = _spec(name)
    ex = spec["extract"]
    if ex is None:
        return list(spec["files"])
    return [f"{ex['folder']}/{m}" for m in ex["members"]]


def is_fetched(name: str, cache=None) -> bool:
    """True when every file dataset ``name`` needs is already in the cache (no network)."""
    d = dataset_dir(name, cache)
    return all((d / f).is_file() for f in _needed_files(name))


def _safe_member_name(member: tarfile.TarInfo):
    p = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or p.is_absolute() or ".." in p.parts:
        return None
    if any(":" in part or "\\" in part for part in p.parts):
        return None
    return p


def _extract_tar(archive: Path, dest: Path, folder: str, members, max_bytes: int):
    """Extract only the wanted regular files of ``folder/`` from a .tar.gz, safely.

    Members that are not regular files (links, devices...), absolute names, names with
    ``..`` and anything outside ``folder/`` are never written.  Files are copied through
    ``extractfile`` into paths built here, into a temporary folder renamed into place once
    complete, so a half-extracted folder is never taken for data.
    """
    wanted = set(members)
    tmp = dest / (folder + ".extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    total = 0
    got = set()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                p = _safe_member_name(member)
                if p is None or not member.isreg():
                    continue
                if len(p.parts) != 2 or p.parts[0] != folder or p.parts[1] not in wanted:
                    continue
                total += member.size
                if total > max_bytes:
                    raise DataError(f"{archive}: archive expands past {max_bytes} bytes; it "
                                    f"is not the expected dataset - delete it")
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isreg() members always have data
                    continue
                with src, open(tmp / p.parts[1], "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                got.add(p.parts[1])
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract ({type(exc).__name__}: {exc}); delete it "
                        f"and download again") from exc
    missing = sorted(wanted - got)
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: archive lacks {folder}/{missing}; delete it and download "
                        f"again")
    final = dest / folder
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def fetch_dataset(name: str, cache=None, mirrors=None, *, checksums=None, timeout: float = 30,
                  progress: bool = True) -> Path:
    """Make sure dataset ``name`` ('mnist', 'fashion-mnist' or 'cifar10') is in the cache;
    download what is missing; return the dataset's directory.

    Parameters
    ----------
    cache : path or None
        The cache root (default :func:`cache_dir`); the files go to ``cache / name``.
    mirrors : str, list of base URLs or None
        Override the known mirrors (each file's name is appended to each base URL); a single
        string is one mirror.
    checksums : dict or None
        ``{file name: sha256}`` overriding the known checksums (for local test servers or
        re-published copies).  Sizes are then not enforced.

    Layout: MNIST and Fashion-MNIST keep their four ``*-ubyte.gz`` files directly in the
    directory; CIFAR-10's archive is extracted (regular files only, no absolute or ``..``
    paths) into ``cifar-10-batches-bin/`` and then deleted.  Files already present are
    trusted (they only ever get there after their checksum matched).
    """
    spec = _spec(name)
    d = dataset_dir(name, cache)
    if is_fetched(name, cache):
        return d
    timeout = _check_timeout(timeout, "fetch_dataset")
    bases = list(spec["mirrors"]) if mirrors is None else _url_list(mirrors)
    if not bases:
        raise ConfigError(f"fetch_dataset: mirrors must be a base URL or a list of base URLs "
                          f"(e.g. 'https://host/mnist/'), got {mirrors!r}")
    if checksums is not None and not isinstance(checksums, dict):
        raise ConfigError(f"fetch_dataset: checksums must be a dict {{file name: sha256}}, got "
                          f"{type(checksums).__name__}")
    checksums = dict(checksums or {})
    unknown = set(checksums) - set(spec["files"])
    if unknown:
        raise ConfigError(f"fetch_dataset: checksums given for unknown file(s) "
                          f"{sorted(unknown)} of {name}; its files are {sorted(spec['files'])}")
    if cache is not None:
        hint = "pass another cache= folder"
    elif os.environ.get("NUMCNN_HOME"):
        hint = "set NUMCNN_HOME to a folder (or unset it to use ~/.cache/numcnn)"
    else:
        hint = "set NUMCNN_HOME to a folder you can write to, or pass cache="
    _ensure_dir(d, hint)
    ex = spec["extract"]
    for fname, (sha, size) in spec["files"].items():
        if ex is None and (d / fname).is_file():
            continue
        if fname in checksums:
            sha, size = checksums[fname], None
        urls = [b if b.endswith(fname) else b.rstrip("/") + "/" + fname for b in bases]
        download(urls, d / fname, sha, timeout=timeout, progress=progress, size=size)
    if ex is not None:
        archive = d / ex["archive"]
        _extract_tar(archive, d, ex["folder"], ex["members"], ex["max_bytes"])
        archive.unlink()
    return d
