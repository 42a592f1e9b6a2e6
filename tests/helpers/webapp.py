"""Shared by the web tests: a small trained digits model in a run folder, and a live server.

The server binds 127.0.0.1 on a free port and runs uvicorn in a background thread; the model is
numcnn's ``digits-cnn`` preset trained for a few epochs on the embedded 8x8 digits (about 2 s).
"""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np


def train_digits_model(folder, epochs=6, seed=0):
    """Train digits-cnn on the digits, save ``folder/model.safetensors`` and ``history.json``
    (so the folder is a run folder the server lists).  Returns ``(model, (x_test, y_test))``."""
    from numcnn import datasets, models
    from numcnn.training import fit
    ds = datasets.load_dataset("digits")
    (xtr, ytr), (xte, yte) = ds.splits
    model = models.digits_cnn(rng=seed)
    model.classes = list(ds.classes)
    history = fit(model, (xtr, ytr), epochs=epochs, batch_size=32, optimizer="adam", lr=3e-3,
                  seed=seed, progress=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save(folder / "model.safetensors")
    (folder / "history.json").write_text(json.dumps(history))
    return model, (xte, yte)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(root, model_path=None):
    """``numcnn serve``'s app on ``http://127.0.0.1:PORT`` in a thread; yields (url, app)."""
    import uvicorn
    from numcnn.web.server import create_app
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(root, model_path, host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def png_bytes(array):
    """A (H, W) or (H, W, 3) uint8 array as PNG file bytes."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
