"""Downloads against a local HTTP server (127.0.0.1, port 0) - never the real network."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from numcnn import datasets
from numcnn.data import download as dl
from numcnn.data import sources
from numcnn.data.download import cache_dir, download
from numcnn.data.sources import fetch_dataset
from numcnn.data import write_idx
from numcnn.errors import ConfigError, DownloadError


@pytest.fixture(autouse=True)
def _local_network_only(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"test tried to reach {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.ignore_range``;
    ``server.cut[path] = n`` sends only n bytes (announcing the full length) and closes, once;
    ``server.stall`` seconds of sleep before answering."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if srv.stall:
            time.sleep(srv.stall)
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = srv.cut.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.cut, srv.requests = {}, {}, []
    srv.ignore_range, srv.stall = False, 0
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(timeout=5)


def _blob(n=200_000, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def test_download_success_and_reuse(server, tmp_path):
    data = _blob()
    server.files["/f.bin"] = data
    dest = tmp_path / "sub" / "f.bin"
    out = download(server.base + "/f.bin", dest, _sha(data).upper(), timeout=5, progress=False)
    assert out == dest and dest.read_bytes() == data
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    n = len(server.requests)
    download(server.base + "/f.bin", dest, _sha(data), timeout=5, progress=False)
    assert len(server.requests) == n                    # verified copy present: no request
    dest.write_bytes(b"damaged")                         # a bad copy is replaced
    download(server.base + "/f.bin", dest, _sha(data), timeout=5, progress=True)
    assert dest.read_bytes() == data and len(server.requests) == n + 1


def test_bad_checksum_keeps_nothing(server, tmp_path):
    data = _blob()
    server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="checksum mismatch") as ei:
        download(server.base + "/f.bin", dest, "0" * 64, timeout=5, progress=False)
    assert _sha(data) in str(ei.value)
    assert not dest.exists()
    assert not (tmp_path / "f.bin.part").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ignore_range", [False, True])
def test_interrupted_transfer_resumes_or_restarts(server, tmp_path, ignore_range):
    data = _blob(300_001, seed=1)
    server.files["/f.bin"] = data
    server.cut["/f.bin"] = 120_000                       # first answer stops after 120 kB
    server.ignore_range = ignore_range
    dest = tmp_path / "f.bin"
    part = tmp_path / "f.bin.part"
    with pytest.raises(DownloadError, match="resume"):
        download(server.base + "/f.bin", dest, _sha(data), timeout=5, progress=False)
    assert not dest.exists()                             # a half file is never data
    assert part.exists() and 0 < part.stat().st_size < len(data)
    assert data.startswith(part.read_bytes())
    have = part.stat().st_size
    download(server.base + "/f.bin", dest, _sha(data), timeout=5, progress=False)
    assert dest.read_bytes() == data and not part.exists()
    # the second call asked to resume; the server either sent 206 (appended) or 200 (restart)
    assert server.requests == [("/f.bin", None), ("/f.bin", f"bytes={have}-")]


def test_resume_sends_the_right_range(server, tmp_path):
    data = _blob(100_000, seed=2)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:40_000])
    download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data), timeout=5, progress=False)
    assert server.requests == [("/f.bin", "bytes=40000-")]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_stale_part_restarts_from_zero(server, tmp_path):
    data = _blob(100_000, seed=3)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(b"x" * 30_000)   # not a prefix of the real file
    download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data), timeout=5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=30000-"), ("/f.bin", None)]


def test_complete_part_answered_416_is_verified(server, tmp_path):
    data = _blob(5000, seed=4)
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data), timeout=5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_mirror_fallback(server, tmp_path):
    data = _blob(50_000, seed=5)
    server.files["/b/f.bin"] = data
    mirrors = [f"http://127.0.0.1:{_closed_port()}/f.bin",      # connection refused
               server.base + "/a/f.bin",                       # 404
               server.base + "/b/f.bin"]
    download(mirrors, tmp_path / "f.bin", _sha(data), timeout=5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert [p for p, _ in server.requests] == ["/a/f.bin", "/b/f.bin"]


def test_all_mirrors_fail_lists_them(server, tmp_path):
    with pytest.raises(DownloadError) as ei:
        download([server.base + "/x", server.base + "/y"], tmp_path / "f", "a" * 64,
                 timeout=5, progress=False)
    msg = str(ei.value)
    assert "/x" in msg and "/y" in msg and "404" in msg
    assert list(tmp_path.iterdir()) == []


def test_timeout_is_bounded(server, tmp_path):
    server.files["/slow"] = b"abc"
    server.stall = 3
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="slow"):
        download(server.base + "/slow", tmp_path / "slow", _sha(b"abc"), timeout=0.3,
                 progress=False)
    assert time.perf_counter() - t0 < 2.5


def test_size_bound_rejects_overlong_body(server, tmp_path):
    data = _blob(10_000, seed=6)
    server.files["/f.bin"] = data
    with pytest.raises(DownloadError):
        download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data[:5000]), timeout=5,
                 progress=False, size=5000)
    assert not (tmp_path / "f.bin").exists()


def test_argument_errors(tmp_path):
    with pytest.raises(ConfigError):
        download([], tmp_path / "x", "0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        download("http://127.0.0.1:1/x", tmp_path / "x", "abc")
    with pytest.raises(DownloadError, match="scheme"):
        download("ftp://127.0.0.1/x", tmp_path / "x", "0" * 64, progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        fetch_dataset("svhn", cache=tmp_path)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMCNN_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    assert sources.dataset_dir("mnist") == tmp_path / "home" / "mnist"
    monkeypatch.delenv("NUMCNN_HOME")
    assert cache_dir().parts[-2:] == (".cache", "numcnn")


def test_known_table_is_complete():
    for name in ("mnist", "fashion-mnist", "cifar10"):
        spec = sources.DATASETS[name]
        assert spec["mirrors"]
        for fname, (sha, size) in spec["files"].items():
            assert len(sha) == 64 and int(sha, 16) >= 0 and size > 0
    assert sources.DATASETS["mnist"]["files"]["train-images-idx3-ubyte.gz"][0] == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609")


def test_fetch_mnist_from_local_server(server, tmp_path):
    r = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte.gz": r.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": r.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    sums = {}
    for name, a in arrays.items():
        p = write_idx(tmp_path / name, a)
        server.files["/mnist/" + name] = p.read_bytes()
        sums[name] = _sha(p.read_bytes())
        p.unlink()
    cache = tmp_path / "cache"
    mirrors = [server.base + "/missing/", server.base + "/mnist/"]
    (xtr, ytr), (xte, yte) = datasets.load("mnist", cache=cache, mirrors=mirrors,
                                           checksums=sums, progress=False, timeout=5)
    assert xtr.shape == (30, 1, 28, 28) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    np.testing.assert_array_equal(xtr[:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte.gz"])
    assert sorted(q.name for q in (cache / "mnist").iterdir()) == sorted(arrays)
    n = len(server.requests)
    (xtr2, _), _ = datasets.load("mnist", cache=cache, download=False)   # cached: no requests
    np.testing.assert_array_equal(xtr, xtr2)
    assert len(server.requests) == n
    # a wrong checksum for one file: that file is not kept, the others are
    cache2 = tmp_path / "cache2"
    bad = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "1" * 64})
    with pytest.raises(DownloadError, match="t10k-labels"):
        fetch_dataset("mnist", cache=cache2, mirrors=[server.base + "/mnist/"], checksums=bad,
                      progress=False, timeout=5)
    assert (cache2 / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not (cache2 / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not (cache2 / "mnist" / "t10k-labels-idx1-ubyte.gz.part").exists()
    with pytest.raises(Exception, match="not in the cache"):
        datasets.load("mnist", cache=tmp_path / "empty", download=False)


def _tar_member(tar, name, data, **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def test_fetch_cifar10_extracts_safely(server, tmp_path):
    r = np.random.default_rng(8)
    folder = "cifar-10-batches-bin"
    buf = io.BytesIO()
    expected = {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            x = r.integers(0, 256, (2, 3072), dtype=np.uint8)
            y = r.integers(0, 10, (2, 1), dtype=np.uint8)
            rec = np.concatenate([y, x], axis=1).tobytes()
            expected[name] = rec
            _tar_member(tar, f"{folder}/{name}", rec)
        _tar_member(tar, f"{folder}/batches.meta.txt", b"airplane\nautomobile\n")
        _tar_member(tar, "../evil.txt", b"escape")
        _tar_member(tar, "/tmp/numcnn_abs_evil.txt", b"escape")
        _tar_member(tar, f"{folder}/../../evil2.txt", b"escape")
        link = tarfile.TarInfo(f"{folder}/link.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    blob = buf.getvalue()
    server.files["/kriz/cifar-10-binary.tar.gz"] = blob
    cache = tmp_path / "c10"
    d = fetch_dataset("cifar10", cache=cache, mirrors=[server.base + "/kriz/"],
                      checksums={"cifar-10-binary.tar.gz": _sha(blob)}, progress=False,
                      timeout=5)
    assert d == cache / "cifar10"
    got = sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))
    assert got == [folder] + sorted(f"{folder}/{n}" for n in list(expected) +
                                    ["batches.meta.txt"])
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "evil2.txt").exists()
    for name, rec in expected.items():
        assert (d / folder / name).read_bytes() == rec
    (xtr, ytr), (xte, yte) = datasets.load("cifar10", cache=cache, download=False)
    assert xtr.shape == (10, 3, 32, 32) and xte.shape == (2, 3, 32, 32)


# --- mirror fallback on a checksum mismatch; the user's file is never lost; clear errors ---

_MNIST_FILES = list(sources.DATASETS["mnist"]["files"])


def _serve_mnist(server, prefix, seed=20):
    """Random stand-in bytes for the four MNIST files under ``prefix``; returns their sums."""
    sums = {}
    for i, fname in enumerate(_MNIST_FILES):
        data = _blob(3000 + i, seed=seed + i)
        server.files[prefix + fname] = data
        sums[fname] = _sha(data)
    return sums


def test_checksum_mismatch_falls_back_to_next_mirror(server, tmp_path):
    good, bad = _blob(40_000, seed=10), _blob(40_000, seed=11)
    server.files["/a/f.bin"] = bad                      # 200, wrong bytes
    server.files["/b/f.bin"] = good
    dest = tmp_path / "f.bin"
    out = download([server.base + "/a/f.bin", server.base + "/b/f.bin"], dest, _sha(good),
                   timeout=5, progress=False)
    assert out == dest and dest.read_bytes() == good
    assert server.requests == [("/a/f.bin", None), ("/b/f.bin", None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]     # no .part left


def test_every_mirror_mismatching_lists_each_and_keeps_nothing(server, tmp_path):
    want = _blob(1000, seed=12)
    server.files["/a/f.bin"] = _blob(1000, seed=13)
    server.files["/b/f.bin"] = _blob(2000, seed=14)
    mirrors = [server.base + "/a/f.bin", server.base + "/b/f.bin"]
    with pytest.raises(DownloadError) as ei:
        download(mirrors, tmp_path / "f.bin", _sha(want), timeout=5, progress=False)
    msg = str(ei.value)
    assert msg.count("checksum mismatch") == 2
    for url, data in zip(mirrors, (server.files["/a/f.bin"], server.files["/b/f.bin"])):
        assert f"{url}: checksum mismatch: sent {len(data)} bytes with SHA-256 {_sha(data)}" in msg
    assert "another mirror" in msg
    assert [p for p, _ in server.requests] == ["/a/f.bin", "/b/f.bin"]
    assert list(tmp_path.iterdir()) == []


def test_fetch_dataset_mismatch_falls_back_to_next_mirror(server, tmp_path):
    sums = _serve_mnist(server, "/good/")
    for fname in _MNIST_FILES:                           # first mirror: wrong bytes, status 200
        server.files["/stale/" + fname] = b"stale copy of " + fname.encode()
    cache = tmp_path / "cache"
    d = fetch_dataset("mnist", cache=cache, mirrors=[server.base + "/stale/",
                                                     server.base + "/good/"],
                      checksums=sums, progress=False, timeout=5)
    assert d == cache / "mnist"
    assert sorted(p.name for p in d.iterdir()) == sorted(_MNIST_FILES)
    for fname in _MNIST_FILES:
        assert (d / fname).read_bytes() == server.files["/good/" + fname]
    assert [p for p, _ in server.requests] == [
        pre + f for f in _MNIST_FILES for pre in ("/stale/", "/good/")]


@pytest.mark.parametrize("failure", ["mismatch", "offline", "404"])
def test_failed_download_keeps_the_existing_file(server, tmp_path, failure):
    data = _blob(20_000, seed=15)
    server.files["/f.bin"] = data
    url = {"mismatch": server.base + "/f.bin",
           "offline": f"http://127.0.0.1:{_closed_port()}/f.bin",
           "404": server.base + "/nope.bin"}[failure]
    sha = "2" * 64 if failure == "mismatch" else _sha(data)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"the user's own older copy")
    with pytest.raises(DownloadError, match="left unchanged") as ei:
        download(url, dest, sha, timeout=5, progress=False)
    assert str(dest) in str(ei.value)
    assert dest.read_bytes() == b"the user's own older copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    # once a verified download exists, it (and only it) replaces the old copy
    download(server.base + "/f.bin", dest, _sha(data), timeout=5, progress=False)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_destination_folder_is_refused_before_any_transfer(server, tmp_path):
    from numcnn.data import download_file
    data = _blob(5000, seed=16)
    server.files["/f.bin"] = data
    folder = tmp_path / "adir"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is a folder") as ei:
        download_file(server.base + "/f.bin", folder, _sha(data), timeout=5, progress=False)
    assert str(folder) in str(ei.value)
    assert server.requests == []                         # refused before downloading
    assert not (tmp_path / "adir.part").exists()
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "mine"


def test_cache_under_a_regular_file_is_a_clear_error(server, tmp_path, monkeypatch):
    sums = _serve_mnist(server, "/mn/")
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a folder")
    with pytest.raises(ConfigError, match="not a folder") as ei:
        fetch_dataset("mnist", cache=afile, mirrors=[server.base + "/mn/"], checksums=sums,
                      progress=False, timeout=5)
    assert str(afile) in str(ei.value) and "cache=" in str(ei.value)
    monkeypatch.setenv("NUMCNN_HOME", str(afile))
    with pytest.raises(ConfigError, match="NUMCNN_HOME") as ei:
        fetch_dataset("mnist", mirrors=[server.base + "/mn/"], checksums=sums,
                      progress=False, timeout=5)
    assert str(afile) in str(ei.value)
    # the dataset folder itself being a file
    monkeypatch.delenv("NUMCNN_HOME")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        fetch_dataset("mnist", cache=cache, mirrors=[server.base + "/mn/"], checksums=sums,
                      progress=False, timeout=5)
    # a destination under a regular file, through download()
    with pytest.raises(ConfigError, match="not a folder") as ei:
        download(server.base + "/mn/" + _MNIST_FILES[0], afile / "sub" / "f.gz",
                 sums[_MNIST_FILES[0]], timeout=5, progress=False)
    assert str(afile) in str(ei.value)
    assert server.requests == []
    assert afile.read_bytes() == b"not a folder"
    assert (cache / "mnist").read_bytes() == b"x"


@pytest.mark.parametrize("bad", ["5", 0, -1.5, float("nan"), float("inf"), True, None, [5]])
def test_bad_timeout_is_a_config_error(server, tmp_path, bad):
    data = b"abc"
    server.files["/f.bin"] = data
    with pytest.raises(ConfigError, match="timeout must be a positive, finite number"):
        download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data), timeout=bad,
                 progress=False)
    sums = _serve_mnist(server, "/mn/")
    with pytest.raises(ConfigError, match="timeout must be a positive, finite number"):
        fetch_dataset("mnist", cache=tmp_path / "c", mirrors=[server.base + "/mn/"],
                      checksums=sums, progress=False, timeout=bad)
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_timeout_accepts_numbers(server, tmp_path):
    data = b"abc"
    server.files["/f.bin"] = data
    download(server.base + "/f.bin", tmp_path / "f.bin", _sha(data), timeout=np.float32(5),
             progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_fetch_dataset_single_mirror_string(server, tmp_path):
    sums = _serve_mnist(server, "/mn/")
    d = fetch_dataset("mnist", cache=tmp_path, mirrors=server.base + "/mn/", checksums=sums,
                      progress=False, timeout=5)
    assert sorted(p.name for p in d.iterdir()) == sorted(_MNIST_FILES)
    for fname in _MNIST_FILES:
        assert (d / fname).read_bytes() == server.files["/mn/" + fname]
    assert server.requests == [("/mn/" + f, None) for f in _MNIST_FILES]


@pytest.mark.parametrize("bad", [[], "", [""], [None], 5])
def test_fetch_dataset_bad_mirrors_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="mirrors must be a base URL"):
        fetch_dataset("mnist", cache=tmp_path, mirrors=bad, progress=False, timeout=5)


def test_download_bad_url_or_dest_argument(tmp_path):
    with pytest.raises(ConfigError, match="at least one URL"):
        download(None, tmp_path / "x", "0" * 64)
    with pytest.raises(ConfigError, match="dest_path"):
        download("http://127.0.0.1:1/x", None, "0" * 64)
    with pytest.raises(ConfigError, match="size"):
        download("http://127.0.0.1:1/x", tmp_path / "x", "0" * 64, size="5")
    assert list(tmp_path.iterdir()) == []
