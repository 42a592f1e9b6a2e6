"""Issue 15, class by class: special files, forged numbers, labels, memory, the command's own
inputs, atomic replace semantics, the run-folder lock, what a kill leaves, a full disk, and cost.

The big randomised runs (10,000 fuzzed inputs, 100 kill -9s) are in test_reliability_big.py.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn import cli
from numcnn import data as F
from numcnn.architecture import MAX_LAYERS, load_architecture
from numcnn.data.datasets import load_dataset
from numcnn.errors import (ConfigError, DataError, ModelFileError, NumcnnError, StateError,
                           StorageError)
from numcnn.files import atomic_write, is_temp_name
from numcnn.io import decode_safetensors, encode_safetensors, load_checkpoint, load_model
from numcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU
from numcnn.model import Sequential
from numcnn.training import Trainer
from numcnn.training.run import RunFolderLock, TrainingRun
from numcnn.validate import check_file_labels, file_index, file_int
from numcnn.viz.plots import read_history

HERE = Path(__file__).parent


class Hang(BaseException):
    pass


@contextlib.contextmanager
def deadline(seconds=20):
    def fire(signum, frame):
        raise Hang(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def tiny_model():
    return Sequential([Conv2D(1, 2, 3, rng=0), BatchNorm2D(2), ReLU(), Flatten(),
                       Dropout(0.5, rng=1), Dense(2 * 4 * 4, 3, rng=2)], input_shape=(1, 6, 6))


def tiny_data(n=8):
    x = (np.arange(n * 36) % 256).astype(np.uint8).reshape(n, 1, 6, 6)
    return x, np.arange(n) % 3


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=1, batch_size=4, seed=0, out_dir=d,
            progress=False).fit(tiny_data())
    return (d / "checkpoint.safetensors").read_bytes(), (d / "best.safetensors").read_bytes()


def sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


# ======================================================= 1. files that are not regular files
def _readers(tmp_path):
    """(name, call(path)) for every reader numcnn has; the path is given a fitting name."""
    def image_folder(p):
        root = tmp_path / "imgs"
        (root / "a").mkdir(parents=True, exist_ok=True)
        link = root / "a" / "x.png"
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(p, link)
        return F.read_image_folder(root)

    return [("model", "m.safetensors", load_model), ("checkpoint", "c.safetensors", load_checkpoint),
            ("idx", "train-images-idx3-ubyte", F.read_idx),
            ("cifar", "data_batch_1.bin", F.read_cifar_binary), ("npz", "d.npz", F.read_npz),
            ("npz dataset", "d.npz", load_dataset), ("image", "x.png", F.load_image),
            ("image folder", "x.png", image_folder),
            ("architecture", "a.json", load_architecture), ("history", "history.json", read_history)]


def _special_files(tmp_path):
    """name -> a path (made under tmp_path) that is not a regular file, or a symlink to one."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    made = {"FIFO": fifo, "socket": tmp_path / "sock", "folder": tmp_path,
            "/dev/zero": Path("/dev/zero"), "/proc file": Path("/proc/self/status")}
    return made, sock


@pytest.mark.parametrize("special", ["FIFO", "socket", "folder", "/dev/zero", "/proc file"])
def test_every_reader_refuses_special_files_at_once(tmp_path, special):
    made, sock = _special_files(tmp_path)
    try:
        for name, fname, read in _readers(tmp_path):
            link = tmp_path / "links" / name.replace(" ", "_") / fname
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(made[special], link)                  # a name the reader accepts
            with deadline(20), pytest.raises(NumcnnError) as info:
                read(link)
            msg = str(info.value)
            assert msg.strip(), (name, special)
            if special != "/proc file":                      # /proc files are regular, 0 bytes
                assert "not a regular file" in msg or "folder" in msg or "directory" in msg \
                    or "cannot open" in msg, (name, special, msg)
    finally:
        sock.close()


def test_unreadable_files_are_a_clear_error(tmp_path, monkeypatch):
    # as root, chmod cannot make a file unreadable: the kernel's answer is injected instead
    real_open = os.open

    def denied(path, flags, *a):
        if str(path).endswith((".safetensors", ".npz", ".png", ".json", "ubyte", ".bin")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", denied)
    for name, fname, read in [(n, f, r) for n, f, r in _readers(tmp_path) if n != "image folder"]:
        p = tmp_path / fname
        p.write_bytes(b"x")
        with pytest.raises(NumcnnError, match="permission denied|cannot read|Permission") as info:
            read(p)
        assert fname in str(info.value)


# =============================================== 2. headers first, then only declared bytes
def test_huge_sparse_file_and_appended_gigabyte_are_refused_without_reading_them(tmp_path):
    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as f:
        f.truncate(6 << 30)                                   # 6 GiB of holes
    good = tmp_path / "good.safetensors"
    tiny_model().save(good)
    appended = tmp_path / "appended.safetensors"
    appended.write_bytes(good.read_bytes())
    with open(appended, "r+b") as f:
        f.truncate(good.stat().st_size + (1 << 30))          # + 1 GiB
    tracemalloc.start()
    try:
        for p, pattern in ((sparse, "too short|header|not valid JSON|not a model"),
                           (appended, "follow the last tensor")):
            tracemalloc.reset_peak()
            with pytest.raises(ModelFileError, match=pattern):
                load_model(p)
            assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_header_with_absurd_tensor_count_is_refused_before_parsing(tmp_path):
    entry = '"t{}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    header = ("{" + ",".join(entry.format(i) for i in range(100_001)) + "}").encode()
    header += b" " * (-len(header) % 8)
    p = tmp_path / "many.safetensors"
    p.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ModelFileError, match="more than 100,000 tensors"):
        load_model(p)


# ==================================================================== 3. forged numbers
def _forge(blob, tensors_fn=None, meta_fn=None):
    tensors, meta = decode_safetensors(blob)
    if tensors_fn:
        tensors_fn(tensors)
    if meta_fn:
        meta_fn(meta)
    return encode_safetensors(tensors, meta)


def _info(fn):
    def edit(meta):
        info = json.loads(meta["checkpoint"])
        fn(info)
        meta["checkpoint"] = json.dumps(info)
    return edit


FORGED = {
    "rng key: Arabic-Indic digit": lambda m: m.update(rng=json.dumps({"\u0664": {}})),
    "rng key: 5000 digits": lambda m: m.update(rng=json.dumps({"9" * 5000: {}})),
    "epoch 10**400": _info(lambda i: i.update(epoch=10 ** 400)),
    "steps 10**400": _info(lambda i: i["optimizer"].update(steps=10 ** 400)),
    "lr 10**400": _info(lambda i: i["optimizer"].update(lr=10 ** 400)),
    "history 10**400": _info(lambda i: i["history"].update(train_loss=[10 ** 400])),
    "partial totals 10**400": _info(lambda i: i.update(batch=1, partial={
        "seen": 10 ** 400, "correct": 0, "loss_sum": 1.0, "time": 1.0})),
    "mid-epoch without partial state": _info(lambda i: i.update(batch=1, partial=None)),
    "mid-epoch with 0 images seen": _info(lambda i: i.update(batch=1, partial={
        "seen": 0, "correct": 0, "loss_sum": 0.0, "time": 0.0})),
    "epoch end with partial state": _info(lambda i: i.update(batch=0, partial={
        "seen": 4, "correct": 1, "loss_sum": 1.0, "time": 1.0})),
    "rng layer key \u00b2": _info(lambda i: i.update(rng={"\u00b2": {}})),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_numbers_in_checkpoints(tmp_path, checkpoint_bytes, case):
    p = tmp_path / "ck.safetensors"
    p.write_bytes(_forge(checkpoint_bytes[0], meta_fn=FORGED[case]))
    tr = Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=5, batch_size=4, seed=0,
                 progress=False)
    before = [q.value.copy() for q in tr.model.parameters()]
    with pytest.raises((ModelFileError, StateError)) as info:
        tr.fit(tiny_data(), resume=p)
    assert str(info.value).strip() and str(p) in str(info.value)
    assert all(np.array_equal(a, q.value) for a, q in zip(before, tr.model.parameters()))


def test_forged_numbers_through_the_command(tmp_path, checkpoint_bytes):
    np.savez(tmp_path / "d.npz", x=tiny_data()[0], y=tiny_data()[1])
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps(tiny_model().config()))
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(_forge(checkpoint_bytes[0], meta_fn=FORGED["epoch 10**400"]))
    p = subprocess.run([sys.executable, "-m", "numcnn.cli", "train", "--data", tmp_path / "d.npz",
                        "--model", arch, "--out", tmp_path / "out", "--resume", ck,
                        "--batch-size", "4", "--optimizer", "adam"],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "corrupt checkpoint metadata (epoch 100000000000...(401 characters)" in p.stderr
    assert len(p.stderr) < 600


@pytest.mark.parametrize("shape", [[1] * 65, [2 ** 32, 2 ** 32], [0, 2 ** 64], [0] + [1] * 40,
                                   [True, 2], ["3"], [1.0]])
def test_forged_tensor_shapes(tmp_path, shape):
    p = tmp_path / "m.safetensors"
    blob = bytearray(Path(tiny_model().save(p) or p).read_bytes())
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["layers.0.weight"]["shape"] = shape
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    p.write_bytes(len(h).to_bytes(8, "little") + h + bytes(blob[8 + n:]))
    with pytest.raises(ModelFileError, match="bad header entry|does not fit"):
        load_model(p)


def test_file_numbers_are_validated_in_one_place():
    assert file_index("3", 5) == 3
    for bad in ("\u0663", "\u00b2", "9" * 5000, "-1", "", " 1", "1_0", "5", 3):
        assert file_index(bad, 5) is None, bad
    assert file_int(7, "n", "f") == 7
    for bad in (10 ** 400, -1, True, 1.0, "1", None):
        with pytest.raises(ModelFileError, match="must be an integer"):
            file_int(bad, "n", "f")


def test_architecture_with_absurd_input_shape(tmp_path):
    for shape in ([1] * 65, [2 ** 64, 1, 1], [2 ** 32, 2 ** 32, 1], [1, 8]):
        p = tmp_path / "a.json"
        p.write_text(json.dumps({"input_shape": shape, "layers": [
            {"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 3}]}))
        with pytest.raises(ConfigError):
            load_architecture(p)


# ======================================================= 4. loaded values in their valid range
@pytest.mark.parametrize("value", [-1.0, np.nan, np.inf])
def test_batchnorm_running_var_out_of_range_is_refused(tmp_path, value):
    p = tmp_path / "m.safetensors"
    tiny_model().save(p)

    def edit(t):
        t["layers.1.running_var"] = t["layers.1.running_var"].copy()
        t["layers.1.running_var"][0] = value
    p.write_bytes(_forge(p.read_bytes(), tensors_fn=edit))
    with pytest.raises(ModelFileError, match="running_var"):
        load_model(p)


def test_negative_adam_second_moment_is_refused(tmp_path, checkpoint_bytes):
    p = tmp_path / "ck.safetensors"

    def edit(t):
        k = next(k for k in t if k.startswith("optim.") and k.endswith(".v"))
        t[k] = -np.abs(t[k]) - 1
    p.write_bytes(_forge(checkpoint_bytes[0], tensors_fn=edit))
    tr = Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=5, batch_size=4, seed=0,
                 progress=False)
    with pytest.raises(StateError):
        tr.fit(tiny_data(), resume=p)


# ======================================================================= 5. labels
@pytest.mark.parametrize("y", [np.array([0, 2 ** 31 - 1], np.int32), np.array([0, 1e15]),
                               np.array([0, 2 ** 64 - 1], np.uint64), np.array([0, 1e300]),
                               np.array([0, 2 ** 63 - 1], np.int64), np.array([0, 10_000])])
def test_labels_that_would_explode_are_refused_before_sizing(tmp_path, y):
    x = np.zeros((2, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="NUMCNN_MAX_CLASSES") as info:
            load_dataset(tmp_path / "d.npz")
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()
    assert "-" not in str(info.value).split("largest label is ")[1].split(",")[0]   # no wrap


def test_the_class_cap_can_be_raised_deliberately(tmp_path, monkeypatch):
    x = np.zeros((4, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 12_000, 3]))
    with pytest.raises(DataError):
        load_dataset(tmp_path / "d.npz", test_fraction=0.5)
    monkeypatch.setenv("NUMCNN_MAX_CLASSES", "12001")
    assert load_dataset(tmp_path / "d.npz", test_fraction=0.5).num_classes == 12_001
    monkeypatch.setenv("NUMCNN_MAX_CLASSES", "lots")
    with pytest.raises(ConfigError, match="NUMCNN_MAX_CLASSES"):
        load_dataset(tmp_path / "d.npz")


def test_idx_labels_file_with_a_huge_label(tmp_path):
    F.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8))
    F.write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8))
    F.write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 2 ** 31 - 1], np.int32))
    F.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1], np.int32))
    with pytest.raises(DataError, match="2147483647"):
        load_dataset(tmp_path)


def test_check_file_labels_keeps_the_value_range():
    assert check_file_labels(np.array([0, 3], np.uint64), "w").tolist() == [0, 3]
    assert check_file_labels(np.array([[1], [2]], np.float32), "w").tolist() == [1, 2]
    with pytest.raises(DataError, match="whole"):
        check_file_labels(np.array([0.5]), "w")


# ====================================================== 6. memory estimated from the headers
def test_decoded_size_over_the_limit_is_refused_with_how_to_raise_it(tmp_path, monkeypatch):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(np.full((16, 16), i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    F.write_idx(tmp_path / "big-idx", np.zeros((64, 32, 32), np.uint8))
    np.savez(tmp_path / "d.npz", x=np.zeros((64, 32, 32), np.uint8), y=np.zeros(64, np.int64))
    rec = np.zeros((3, 3073), np.uint8)
    (tmp_path / "data_batch_1.bin").write_bytes(rec.tobytes())
    monkeypatch.setenv("NUMCNN_MAX_DATA_BYTES", "10000")
    for call in (lambda: F.read_image_folder(tmp_path / "imgs"),
                 lambda: F.read_idx(tmp_path / "big-idx"), lambda: F.read_npz(tmp_path / "d.npz"),
                 lambda: F.read_cifar_binary(tmp_path / "data_batch_1.bin")):
        with pytest.raises(DataError, match=r"more than numcnn's limit .*NUMCNN_MAX_DATA_BYTES="):
            call()
    monkeypatch.setenv("NUMCNN_MAX_DATA_BYTES", str(1 << 30))
    assert F.read_image_folder(tmp_path / "imgs")[0].shape == (60, 1, 16, 16)


# ============================================================ 7. no silent omissions
def test_unreadable_class_folder_is_an_error_not_an_empty_class(tmp_path, monkeypatch):
    from PIL import Image
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / c / "1.png")
    real = os.scandir

    def scandir(path="."):           # as root, chmod 000 does not stop reading: inject EACCES
        if str(path).endswith("dog"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="dog.*cannot read this folder"):
        F.read_image_folder(tmp_path)


# ============================================================ 8. the command's own inputs
def _env(**kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", **kw)
    env["PYTHONPATH"] = str(Path(numcnn.__file__).resolve().parents[1]) + os.pathsep + \
        env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"{not json", b"[1, 2, 3]",
                                     b'{"train_loss": [1, "a"]}', b'{"train_loss": [1], "val_loss": [1, 2]}',
                                     b'{"train_loss": [' + b"9" * 5000 + b"]}"])
def test_plot_history_that_is_not_a_history(tmp_path, capsys, content):
    model = tmp_path / "m.safetensors"
    tiny_model().save(model)
    (tmp_path / "h.json").write_bytes(content)
    rc = cli.main(["plot", str(model), "--history", str(tmp_path / "h.json"),
                   "--image", str(tmp_path / "none.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "h.json" in err and "history" in err and "Traceback" not in err


def test_non_utf8_class_names_and_paths(tmp_path):
    from PIL import Image
    root = os.fsencode(tmp_path) + b"/imgs"
    for i, c in enumerate((b"caf\xe9", b"th\xe9")):
        os.makedirs(root + b"/" + c)
        for k in range(6):
            Image.fromarray(np.full((8, 8), 40 * i + k, np.uint8)).save(os.fsdecode(root + b"/" + c + b"/" + str(k).encode() + b".png"))
    out = os.fsencode(tmp_path) + b"/out\xff"
    arch = tmp_path / "net.json"
    arch.write_text(json.dumps({"input_shape": [1, 8, 8], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "in_features": 64, "out_features": 2}]}))
    p = subprocess.run([sys.executable, "-m", "numcnn.cli", "train", "--data", root, "--model", arch,
                        "--epochs", "1", "--out", out, "--no-progress", "--batch-size", "4"],
                       capture_output=True, env=_env(PYTHONIOENCODING="utf-8:strict"), timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert b"out\\xff" in p.stdout                              # printed with an escape
    assert os.path.isfile(os.fsdecode(out + b"/confusion.png"))
    assert load_model(os.fsdecode(out + b"/model.safetensors")).classes == ["caf\\xe9", "th\\xe9"]


def test_no_error_line_is_empty(capsys, monkeypatch):
    for exc in (MemoryError(), NumcnnError(""), OSError(), OSError(errno.ENOSPC, "No space left")):
        def boom(args, exc=exc):
            raise exc
        monkeypatch.setattr(cli.demo, "cmd_datasets", boom)
        monkeypatch.setattr(cli, "build_parser", _parser_with(boom))
        rc = cli.main(["datasets"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("numcnn datasets: error: ")
        assert len(err.split("error: ", 1)[1]) > 10, err


def _parser_with(fn):
    real = cli.build_parser

    def build():
        p = real()
        for action in p._subparsers._group_actions:
            action.choices["datasets"].set_defaults(func=fn)
        return p
    return build


# ============================================================ 9. atomic replace semantics
def test_writes_go_through_symlinks_and_never_replace_special_files(tmp_path, capsys):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    os.symlink(target, link)
    atomic_write(link, b"new")
    assert os.path.islink(link) and target.read_bytes() == b"new"      # the link stays
    dangling = tmp_path / "dangling.json"
    os.symlink(tmp_path / "sub" / "made.json", dangling)
    atomic_write(dangling, b"x")
    assert (tmp_path / "sub" / "made.json").read_bytes() == b"x" and os.path.islink(dangling)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    specials = [fifo, tmp_path / "fifo-link"]
    os.symlink(fifo, specials[1])
    try:                                       # a device node of our own, not /dev/null itself
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        specials.append(tmp_path / "null")
    except OSError:
        pass
    for p in specials:
        with deadline(10), pytest.raises(ConfigError, match="not a regular file"):
            atomic_write(p, b"x")
        assert not stat.S_ISREG(os.stat(p).st_mode)                    # still what it was
    model = tiny_model()
    with pytest.raises(ConfigError, match="not a regular file"):
        model.save(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        F.write_idx(fifo, np.zeros(3, np.uint8))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [f for f in os.listdir(tmp_path) if is_temp_name(f)]


def test_evaluate_json_to_stdout_and_to_a_fifo(tmp_path, capsys):
    x, y = tiny_data(12)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    m = tiny_model()
    m.classes = ["0", "1", "2"]
    m.save(tmp_path / "m.safetensors")
    rc = cli.main(["evaluate", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "d.npz"),
                   "--json", "-"])
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out)["samples"] > 0
    os.mkfifo(tmp_path / "fifo")
    rc = cli.main(["evaluate", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "d.npz"),
                   "--json", str(tmp_path / "fifo")])
    assert rc == 2 and "not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


# ==================================================================== 10. the run-folder lock
def _train_cmd(tmp_path, out, *extra, epochs=40):
    np.savez(tmp_path / "d.npz", x=np.repeat(tiny_data(24)[0], 1, 0), y=tiny_data(24)[1])
    (tmp_path / "net.json").write_text(json.dumps(tiny_model().config()))
    return [sys.executable, "-m", "numcnn.cli", "train", "--data", str(tmp_path / "d.npz"),
            "--model", str(tmp_path / "net.json"), "--epochs", str(epochs), "--batch-size", "4",
            "--optimizer", "sgd", "--no-progress", "--out", str(out), *map(str, extra)]


def _wait_for(path, proc, seconds=120):
    t = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < seconds
        time.sleep(0.01)


def test_two_trainers_on_one_folder_second_refused_at_once_nothing_lost(tmp_path):
    out = tmp_path / "out"
    a = subprocess.Popen(_train_cmd(tmp_path, out), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for(out / "checkpoint.safetensors", a)
    b = subprocess.run(_train_cmd(tmp_path, out), capture_output=True, text=True, env=_env(),
                       timeout=120)
    still_running = a.poll() is None
    c = subprocess.run(_train_cmd(tmp_path, out, "--resume", out / "checkpoint.safetensors"),
                       capture_output=True, text=True, env=_env(), timeout=120)
    a_out, a_err = a.communicate(timeout=300)
    assert still_running, "the first run ended before the second was refused: make it longer"
    for p in (b, c):
        assert p.returncode == 2 and "another numcnn run is using the folder" in p.stderr, p.stderr
    assert a.returncode == 0, a_err
    hist = read_history(out / "history.json")
    assert hist["epoch"] == list(range(1, 41))              # the first run is whole
    load_model(out / "model.safetensors")


def test_a_killed_runs_lock_is_released_by_the_kernel(tmp_path):
    out = tmp_path / "out"
    a = subprocess.Popen(_train_cmd(tmp_path, out), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env())
    _wait_for(out / "checkpoint.safetensors", a)
    with pytest.raises(ConfigError, match="another numcnn run"):
        RunFolderLock(out).acquire()
    a.kill()
    a.wait()
    lock = RunFolderLock(out).acquire()                     # free at once
    lock.release()
    p = subprocess.run(_train_cmd(tmp_path, out, "--resume", out / "checkpoint.safetensors"),
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr


# ============================================================ 11. what a kill leaves behind
def test_folder_without_checkpoint_restarts_and_says_so(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    tiny_model().save(out / "best.safetensors")               # killed before the 1st checkpoint
    (out / "history.json").write_text("{}")
    (out / ".tmp-0123456789ab.part").write_bytes(b"half")     # and a temporary of a killed write
    (out / ".tmp-keep.part").write_bytes(b"not ours")         # not numcnn's name: kept
    lines = []
    np.savez(tmp_path / "d.npz", x=tiny_data(12)[0], y=tiny_data(12)[1])
    (tmp_path / "net.json").write_text(json.dumps(tiny_model().config()))
    run = TrainingRun(data=str(tmp_path / "d.npz"), model=str(tmp_path / "net.json"), epochs=1,
                      batch_size=4, out=str(out), progress=False, log=lines.append)
    run.run()
    text = "\n".join(lines)
    assert "starts again from epoch 0" in text and "removed 1 temporary file" in text
    assert not (out / ".tmp-0123456789ab.part").exists() and (out / ".tmp-keep.part").exists()
    assert read_history(out / "history.json")["epoch"] == [1]
    with pytest.raises(ConfigError, match=f"--resume {out / 'checkpoint.safetensors'}"):
        TrainingRun(data=str(tmp_path / "d.npz"), model=str(tmp_path / "net.json"), epochs=2,
                    batch_size=4, out=str(out), progress=False, log=lines.append).run()


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    from numcnn.viz import plots
    (tmp_path / "history.png").write_bytes(b"old picture")

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(numcnn.files.os, "replace", fail)
    with pytest.raises(StorageError, match="history.png.*intact"):
        plots.plot_history({"train_loss": [1.0, 0.5]}, tmp_path / "history.png")
    assert (tmp_path / "history.png").read_bytes() == b"old picture"
    assert not [f for f in os.listdir(tmp_path) if is_temp_name(f)]


# ==================================================================== 12. a full disk
@pytest.mark.parametrize("where", ["open", "write", "fsync", "replace"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_injected_write_failures_keep_the_previous_files(tmp_path, monkeypatch, where, code):
    out = tmp_path / "run"
    x, y = tiny_data()
    Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=1, batch_size=4, seed=0,
            out_dir=out, progress=False).fit((x, y), (x, y))
    before = {f: sha(out / f) for f in ("checkpoint.safetensors", "best.safetensors", "history.json")}
    real = {n: getattr(os, n) for n in ("open", "write", "fsync", "replace")}

    def failing(*a, **k):
        if where != "open" or (a and ".tmp-" in str(a[0])):
            raise OSError(code, os.strerror(code))
        return real[where](*a, **k)
    monkeypatch.setattr(numcnn.files.os, where, failing)
    tr = Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=3, batch_size=4, seed=0,
                 out_dir=out, progress=False)
    with pytest.raises(StorageError) as info:
        tr.fit((x, y), (x, y), resume=out / "checkpoint.safetensors")
    monkeypatch.undo()
    msg = str(info.value)
    assert info.value.errno == code and isinstance(info.value, OSError)
    assert str(out) in msg and ".safetensors" in msg and "intact" in msg
    assert {f: sha(out / f) for f in before} == before
    assert not [f for f in os.listdir(out) if is_temp_name(f)]
    load_checkpoint(out / "checkpoint.safetensors")
    with pytest.raises(StorageError):                          # model.save: the library's error
        monkeypatch.setattr(numcnn.files.os, where, failing)
        tiny_model().save(out / "best.safetensors")
    monkeypatch.undo()
    assert sha(out / "best.safetensors") == before["best.safetensors"]


@contextlib.contextmanager
def small_tmpfs(path, size="256k"):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the injected "
                    "cases above cover the same code")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_real_full_disk_and_a_read_only_folder(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        x, y = tiny_data()
        Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=1, batch_size=4, seed=0,
                out_dir=out, progress=False).fit((x, y), (x, y))
        before = {f: sha(out / f) for f in ("checkpoint.safetensors", "best.safetensors")}
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)   # fill it to the last byte
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        tr = Trainer(tiny_model(), optimizer="adam", lr=1e-3, epochs=3, batch_size=4, seed=0,
                     out_dir=out, progress=False)
        with pytest.raises(StorageError, match="No space left on device") as info:
            tr.fit((x, y), (x, y), resume=out / "checkpoint.safetensors")
        assert "intact" in str(info.value) and str(out) in str(info.value)
        assert {f: sha(out / f) for f in before} == before
        os.unlink(disk / "filler")
        r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only here")
        with pytest.raises(StorageError, match="read-only") as info:
            tiny_model().save(out / "best.safetensors")
        assert "best.safetensors" in str(info.value)
        assert sha(out / "best.safetensors") == before["best.safetensors"]


def test_full_disk_through_the_command_names_the_file(tmp_path):
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        cmd = _train_cmd(tmp_path, disk / "out", epochs=2)
        with open(disk / "filler", "wb") as f:
            f.write(b"\0" * (1024 * 1024 - 64 * 1024))      # leave a little room
        p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert "No space left on device" in p.stderr and str(disk / "out") in p.stderr


# ======================================================================== 13. cost
def _calls_to_build(n):
    specs = [{"type": "ReLU"}] * n
    count = [0]

    def prof(frame, event, arg):
        if event == "call":
            count[0] += 1
    sys.setprofile(prof)
    try:
        Sequential.from_config({"layers": specs, "input_shape": [1, 4, 4]}).summary()
    finally:
        sys.setprofile(None)
    return count[0]


def test_building_and_summarising_is_linear_in_the_layer_count():
    small, large = _calls_to_build(500), _calls_to_build(2000)
    assert large / small < 4.4          # quadratic would be ~16x (it was, through any(... is ...))


def test_layer_count_and_file_size_are_capped(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"layers": [{"type": "ReLU"}] * (MAX_LAYERS + 1)}))
    with pytest.raises(ConfigError, match="10,001 layers"):
        load_architecture(p)
    p.write_text(" " * (1 << 20) + "{}")
    with pytest.raises(ConfigError, match="limit"):
        load_architecture(p)
    m = tmp_path / "m.safetensors"
    m.write_bytes(_forge(_model_bytes(tmp_path), meta_fn=lambda meta: meta.update(
        architecture=json.dumps({"layers": [{"type": "ReLU"}] * (MAX_LAYERS + 1)}))))
    with pytest.raises(ModelFileError, match="10,001 layers"):
        load_model(m)


def _model_bytes(tmp_path):
    tiny_model().save(tmp_path / "t.safetensors")
    return (tmp_path / "t.safetensors").read_bytes()
