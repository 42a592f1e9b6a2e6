"""Child process for tests/test_reliability_big.py: one batch of fuzzed inputs for one reader.

    python fuzz_child.py READER SEED COUNT WORKDIR [--mem-mib M] [--case-seconds S]

Runs under ``RLIMIT_AS`` = M MiB (default 1536) so a reader that allocates without bound dies
of MemoryError here, not in the test process.  Builds a small corpus of *valid* inputs for
``READER`` (seeded), then for each of ``COUNT`` cases damages one (truncation, flipped/inserted/
deleted/appended bytes, 32/64-bit fields overwritten with extreme values, numbers in JSON text
replaced by 10**400, 1e400, -1, a Unicode digit, 2**64...), writes it to ``WORKDIR`` and calls
the reader under a SIGALRM deadline (S seconds, default 10) whose exception is a BaseException.

Each case ends as ``ok`` (loaded; the result is checked for consistency), ``refused:<Error>``
(a NumcnnError subclass with a non-empty message), ``raw:<Type>`` (anything else: a failure) or
``hang``.  ``tracemalloc`` measures each case's peak allocation by Python and NumPy; the bound
checked is ``peak <= 4 * (input bytes + decoded output bytes) + 2 MiB``.  Prints one JSON line:
``{"reader", "cases", "outcomes", "failures": [first 20], "over_bound": n, "worst_ratio",
"max_peak", "vmhwm_kib"}``.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import resource
import signal
import struct
import sys
import tracemalloc

EXTREME_INTS = [0, 1, 255, 2 ** 15, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, 2 ** 64 - 1]
JSON_NUMBERS = ["0", "-1", "1e400", "-1e400", "NaN", "Infinity", str(10 ** 400), str(2 ** 64),
                "2147483647", "1.5", "true", "null", '"\u0663"', '"' + "9" * 5000 + '"',
                "[" * 5 + "1" + "]" * 5, '{"a": 1}', str(2 ** 53 + 1), "1e15"]


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


# ------------------------------------------------------------------------ corpora of valid files
def corpus_idx(rng, np, F):
    out = []
    for _ in range(6):
        code = rng.choice(sorted(F.IDX_DTYPES))
        dt = F.IDX_DTYPES[code].newbyteorder("=") if F.IDX_DTYPES[code].itemsize > 1 else F.IDX_DTYPES[code]
        shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3)))
        a = (np.arange(int(np.prod(shape))) % 100).astype(dt).reshape(shape)
        buf = io.BytesIO()
        header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
        raw = header + a.astype(F.IDX_DTYPES[code]).tobytes()
        out.append(("idx", raw))
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
            g.write(raw)
        out.append(("idx.gz", buf.getvalue()))
    return out


def corpus_cifar(rng, np):
    out = []
    for kind, nlab, name in (("cifar10", 1, "data_batch_1.bin"), ("cifar100", 2, "train.bin")):
        for n in (1, 2):
            rec = np.zeros((n, nlab + 3072), np.uint8)
            rec[:, :nlab] = 3
            rec[:, nlab:] = np.arange(3072) % 256
            out.append((name, rec.tobytes()))
    return out


def corpus_npz(rng, np):
    out = []
    for compressed in (False, True):
        for dt in ("uint8", "float32", "int64", "uint64", "float64"):
            buf = io.BytesIO()
            arrays = {"x": (np.arange(2 * 4 * 4) % 200).astype("uint8").reshape(2, 4, 4),
                      "y": np.array([0, 1], dtype=dt)}
            (np.savez_compressed if compressed else np.savez)(buf, **arrays)
            out.append(("data.npz", buf.getvalue()))
    return out


def corpus_images(rng, np):
    from PIL import Image
    out = []
    for fmt, ext, mode in (("PNG", "png", "L"), ("PNG", "png", "RGB"), ("BMP", "bmp", "RGB"),
                           ("GIF", "gif", "P"), ("PPM", "ppm", "RGB"), ("JPEG", "jpg", "L"),
                           ("TIFF", "tif", "RGB")):
        a = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
        img = Image.fromarray(a).convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out.append((f"img.{ext}", buf.getvalue()))
    return out


def tiny_model(np):
    from numcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU
    from numcnn.model import Sequential
    return Sequential([Conv2D(1, 2, 3, rng=0), BatchNorm2D(2), ReLU(), Flatten(),
                       Dropout(0.5, rng=1), Dense(2 * 4 * 4, 3, rng=2)], input_shape=(1, 6, 6))


def corpus_models(rng, np, workdir, checkpoint):
    from numcnn.training import Trainer
    model = tiny_model(np)
    p = os.path.join(workdir, "corpus.safetensors")
    if checkpoint:
        x = (np.arange(8 * 36) % 256).astype(np.uint8).reshape(8, 1, 6, 6)
        y = np.arange(8) % 3
        tr = Trainer(model, optimizer="adam", lr=1e-3, epochs=1, batch_size=4, seed=0,
                     out_dir=os.path.join(workdir, "run"), progress=False)
        tr.fit((x, y))
        p = os.path.join(workdir, "run", "checkpoint.safetensors")
    else:
        model.save(p)
    with open(p, "rb") as f:
        return [("m.safetensors", f.read())]


def corpus_arch(rng, np):
    arch = {"input_shape": [1, 8, 8], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2D", "num_features": 2}, {"type": "ReLU"},
        {"type": "MaxPool2D", "kernel_size": 2}, {"type": "Flatten"},
        {"type": "Dense", "in_features": 32, "out_features": 4}]}
    toml = ('input_shape = [1, 8, 8]\n[[layers]]\ntype = "Conv2D"\nin_channels = 1\n'
            'out_channels = 2\nkernel_size = 3\n[[layers]]\ntype = "ReLU"\n[[layers]]\n'
            'type = "Flatten"\n[[layers]]\ntype = "Dense"\nin_features = 72\nout_features = 3\n')
    return [("a.json", json.dumps(arch).encode()), ("a.toml", toml.encode())]


def corpus_history(rng, np):
    h = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.25], "train_acc": [0.3, 0.6, 0.9],
         "val_loss": [1.1, 0.6, 0.3], "val_acc": [0.2, 0.5, 0.8], "lr": [0.1, 0.1, 0.01],
         "time": [0.1, 0.1, 0.1], "images_per_s": [100.0, 110.0, 120.0]}
    return [("history.json", json.dumps(h).encode())]


# ------------------------------------------------------------------------------------- damage
def damage(rng, blob, text=False):
    n = len(blob)
    ops = ["none", "truncate", "flip", "field", "insert", "delete", "append", "random", "empty"]
    if text:
        ops += ["number"] * 6
    op = rng.choice(ops)
    if op == "none":
        return blob
    if op == "empty":
        return b""
    if op == "random":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
    if op == "truncate":
        return blob[:rng.randint(0, max(n - 1, 0))]
    if op == "append":
        return blob + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    if n == 0:
        return b""
    pos = rng.randint(0, n - 1)
    if op == "flip":
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randint(0, n - 1)] ^= rng.randint(1, 255)
        return bytes(b)
    if op == "field":
        v = rng.choice(EXTREME_INTS)
        width = rng.choice([4, 8])
        enc = (v % 2 ** (8 * width)).to_bytes(width, rng.choice(["big", "little"]))
        pos = rng.choice([0, 2, 4, 8, pos]) if n > 8 else pos
        return blob[:pos] + enc + blob[pos + width:]
    if op == "insert":
        return blob[:pos] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 32))) + blob[pos:]
    if op == "delete":
        return blob[:pos] + blob[pos + rng.randint(1, 64):]
    if op == "number":                   # a number in JSON/TOML text (or a model's header)
        s = blob.decode("latin-1")
        spots = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", s)]
        if not spots:
            return blob
        a, b = rng.choice(spots)
        return s[:a].encode("latin-1") + rng.choice(JSON_NUMBERS).encode() + s[b:].encode("latin-1")
    raise AssertionError(op)


def labels_npz(rng, np):
    """A dataset .npz whose labels are forged (dtype and values drawn from extremes)."""
    dt = rng.choice(["int8", "int32", "int64", "uint8", "uint32", "uint64", "float32", "float64",
                     "bool", "complex64", "U3"])
    vals = rng.choice([[0, 1], [0, 2 ** 31 - 1], [0, 1e15], [0, 2 ** 64 - 1], [0, 1e300], [-1, 0],
                       [0, 1.5], [0, float("nan")], [0, float("inf")], [0, 9999], [0, 10000],
                       [0, 2 ** 63 - 1]])
    n = 4
    x = (np.arange(n * 16) % 256).astype(np.uint8).reshape(n, 4, 4)
    with np.errstate(all="ignore"):
        try:
            y = np.array([vals[i % 2] for i in range(n)]).astype(dt)
        except (OverflowError, ValueError, TypeError):
            y = np.array([0, 1, 0, 1], dtype="int64")
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


# -------------------------------------------------------------------------------------- main
def main():
    reader, seed, count, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    mem = int(sys.argv[sys.argv.index("--mem-mib") + 1]) if "--mem-mib" in sys.argv else 1536
    per_case = int(sys.argv[sys.argv.index("--case-seconds") + 1]) if "--case-seconds" in sys.argv else 10
    resource.setrlimit(resource.RLIMIT_AS, (mem << 20, mem << 20))
    import warnings
    warnings.simplefilter("ignore")          # Pillow's "corrupt EXIF" chatter on damaged files
    import numpy as np

    import numcnn  # noqa: F401 - registers model.save etc.
    from numcnn import data as F
    from numcnn.architecture import load_architecture
    from numcnn.data.datasets import load_dataset
    from numcnn.errors import NumcnnError
    from numcnn.io import load_checkpoint, load_model
    from numcnn.training import Trainer
    from numcnn.training.checkpoint import restore_checkpoint
    if reader == "history":
        from numcnn.viz.plots import read_history

    rng = random.Random(f"{reader}-{seed}")
    os.makedirs(workdir, exist_ok=True)
    text = reader in ("architecture", "history", "model", "checkpoint")
    if reader == "idx":
        corpus = corpus_idx(rng, np, F)
    elif reader == "cifar":
        corpus = corpus_cifar(rng, np)
    elif reader in ("npz",):
        corpus = corpus_npz(rng, np)
    elif reader in ("image", "image_folder"):
        corpus = corpus_images(rng, np)
    elif reader in ("model", "checkpoint"):
        corpus = corpus_models(rng, np, workdir, reader == "checkpoint")
    elif reader == "architecture":
        corpus = corpus_arch(rng, np)
    elif reader == "history":
        corpus = corpus_history(rng, np)
    elif reader == "labels":
        corpus = [("data.npz", b"")]
    else:
        raise SystemExit(f"unknown reader {reader}")

    def nbytes(result):
        if hasattr(result, "nbytes"):
            return int(result.nbytes)
        if isinstance(result, dict):
            return sum(nbytes(v) for v in result.values())
        if isinstance(result, (tuple, list)):
            return sum(nbytes(v) for v in result)
        if hasattr(result, "parameters"):          # a model
            return sum(int(p.value.nbytes) * 4 for p in result.parameters()) + (1 << 16)
        return 0

    def run_case(path, name):
        if reader == "idx":
            return F.read_idx(path)
        if reader == "cifar":
            return F.read_cifar_binary(path)
        if reader == "npz":
            return F.read_npz(path)
        if reader == "image":
            return F.load_image(path, size=(8, 8) if rng.random() < 0.5 else None)
        if reader == "image_folder":
            return F.read_image_folder(os.path.dirname(os.path.dirname(path)), size=(8, 8))
        if reader == "model":
            m = load_model(path)
            m.predict(np.zeros((1, 1, 6, 6), np.uint8))
            return m
        if reader == "checkpoint":
            load_checkpoint(path)
            tr = Trainer(tiny_model(np), optimizer="adam", lr=1e-3, epochs=5, batch_size=4, seed=0,
                         progress=False)
            return restore_checkpoint(tr, path)
        if reader == "architecture":
            m = load_architecture(path)
            return m
        if reader == "history":
            return read_history(path)
        if reader == "labels":
            return load_dataset(path)
        raise AssertionError(reader)

    signal.signal(signal.SIGALRM, _alarm)
    tracemalloc.start()
    outcomes, failures = {}, []
    over, worst, max_peak = 0, 0.0, 0
    for i in range(count):
        name, blob = rng.choice(corpus)
        if reader == "labels":
            blob = labels_npz(rng, np)
            if rng.random() < 0.3:
                blob = damage(rng, blob)
        else:
            blob = damage(rng, blob, text)
        case_dir = os.path.join(workdir, f"c{i % 4}")
        if reader == "image_folder":
            for cls in ("a", "b"):
                os.makedirs(os.path.join(case_dir, "root", cls), exist_ok=True)
            good = corpus[0][1]
            with open(os.path.join(case_dir, "root", "a", "good.png"), "wb") as f:
                f.write(good)
            path = os.path.join(case_dir, "root", "b", name)
            for old in os.listdir(os.path.join(case_dir, "root", "b")):
                os.unlink(os.path.join(case_dir, "root", "b", old))
        else:
            os.makedirs(case_dir, exist_ok=True)
            path = os.path.join(case_dir, name)
        with open(path, "wb") as f:
            f.write(blob)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = None
        signal.alarm(per_case)
        try:
            result = run_case(path, name)
            outcome = "ok"
        except Hang:
            outcome = "hang"
        except NumcnnError as exc:
            outcome = f"refused:{type(exc).__name__}" if str(exc).strip() else "raw:EmptyMessage"
        except BaseException as exc:  # noqa: BLE001 - anything else is what we are looking for
            outcome = f"raw:{type(exc).__name__}"
            if len(failures) < 20:
                import traceback
                failures.append({"case": i, "name": name, "error": f"{type(exc).__name__}: {exc}"[:300],
                                 "where": traceback.format_exc()[-600:], "input": blob[:300].decode("latin-1")})
        finally:
            signal.alarm(0)
        peak = tracemalloc.get_traced_memory()[1] - base
        legit = len(blob) + nbytes(result)
        bound = 4 * legit + (2 << 20)
        if peak > bound:
            over += 1
            if len(failures) < 20:
                failures.append({"case": i, "name": name, "error": f"peak {peak} > bound {bound}"})
        worst = max(worst, peak / bound)
        max_peak = max(max_peak, peak)
        if outcome == "hang" and len(failures) < 20:
            failures.append({"case": i, "name": name, "error": "hang"})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        del result
    hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"reader": reader, "seed": seed, "cases": count, "outcomes": outcomes,
                      "failures": failures, "over_bound": over, "worst_ratio": round(worst, 4),
                      "max_peak": max_peak, "vmhwm_kib": hwm}), flush=True)


if __name__ == "__main__":
    main()
