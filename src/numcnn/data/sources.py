"""The datasets numcnn can download: their files, checksums and mirrors, and fetching them.

:data:`DATASETS` lists the known datasets with their real file names, mirrors, byte sizes and
SHA-256 checksums; :func:`fetch_dataset` downloads them with :func:`numcnn.data.download.download`
(checksummed, resumable, atomic), extracts CIFAR-10's archive safely, and returns the folder;
:func:`dataset_dir` and :func:`is_fetched` say where a dataset lives and whether it is there.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, DataError
from .download import CHUNK, cache_dir, check_timeout, download, ensure_dir, url_list

__all__ = ["DATASETS", "dataset_dir", "fetch_dataset", "is_fetched"]

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
                    shutil.copyfileobj(src, out, CHUNK)
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
    timeout = check_timeout(timeout, "fetch_dataset")
    bases = list(spec["mirrors"]) if mirrors is None else url_list(mirrors)
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
    ensure_dir(d, hint)
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
