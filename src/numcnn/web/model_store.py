"""The models a browser may look at, each chosen by an id; and images prepared for a model.

The browser never sends a path.  The server makes the list: the file ``numcnn serve --model``
names, every ``.safetensors`` model in the run folders under the directory ``serve`` was started
in (a run folder holds ``history.json``, as ``numcnn train`` leaves it; symbolic links are not
followed, hidden folders are skipped, and the scan is bounded), and the models trained by this
server.  An id that is not in the list is a 404.

Images (uploads, drawings) are written to a private temporary file and decoded by numcnn's
hardened reader (:func:`numcnn.data.formats.load_image`), after a look at the header refuses
pictures with too many pixels.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.images import load_image
from ..errors import DataError, NumcnnError
from ..io import load_model
from .security import ApiError

#: how deep under the start directory run folders are looked for, and how many models at most
SCAN_DEPTH = 4
SCAN_LIMIT = 200
#: model files kept loaded at once (the least recently used one is let go)
LOADED_LIMIT = 8
#: the model files of a run folder, in the order they are listed
RUN_MODEL_FILES = ("model.safetensors", "best.safetensors")
#: largest picture (pixels) an upload may decode to
MAX_IMAGE_PIXELS = 25_000_000
#: a grey picture for a model is first shrunk to at most this many pixels on its long side
MAX_DRAWING_SIDE = 1024
_SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", ".git", ".venv", "venv"}


@dataclass
class Entry:
    id: str
    name: str
    source: str                    # "--model", "run folder", "trained here"
    path: Path | None = None
    model: object = None           # loaded (or trained) model
    mtime: float = 0.0
    value_max: int | None = None   # largest raw pixel value of the training data, when known
    dataset: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def public(self):
        return {"id": self.id, "name": self.name, "source": self.source,
                "dataset": self.dataset}


class ModelStore:
    """Models by id: scanned run folders, ``--model``, and models trained by this server."""

    def __init__(self, root, model_path=None):
        self.root = Path(root).resolve()
        self.model_path = Path(model_path).resolve() if model_path else None
        self._entries = {}
        self._trained = {}
        self._lock = threading.Lock()
        self._scanned = 0.0
        self._recent = []

    def _id(self, path: Path) -> str:
        return "m" + hashlib.sha1(str(path).encode()).hexdigest()[:10]

    def scan(self):
        """Refresh the list (at most every 2 seconds): ``--model``, run folders, trained here."""
        with self._lock:
            if time.monotonic() - self._scanned < 2.0 and self._entries:
                return
            found = {}
            if self.model_path is not None:
                found[self._id(self.model_path)] = (self.model_path, self.model_path.name, "--model")
            for path in self._run_models():
                rel = path.relative_to(self.root)
                found.setdefault(self._id(path), (path, str(rel), "run folder"))
            entries = {}
            for mid, (path, name, source) in found.items():
                old = self._entries.get(mid)
                entries[mid] = old if old is not None else Entry(mid, name, source, path)
            trained_paths = {e.path for e in self._trained.values() if e.path is not None}
            entries = {k: e for k, e in entries.items() if e.path not in trained_paths}
            entries.update(self._trained)
            self._entries = entries
            self._scanned = time.monotonic()

    def _run_models(self):
        out = []
        root_depth = len(self.root.parts)
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS
                                 and len(here.parts) - root_depth < SCAN_DEPTH)
            if "history.json" in filenames:
                for f in RUN_MODEL_FILES:
                    p = here / f
                    if f in filenames and not p.is_symlink():
                        out.append(p)
            if len(out) >= SCAN_LIMIT:
                break
        return out[:SCAN_LIMIT]

    def add_trained(self, model, path, name, dataset, value_max):
        """A model trained by this server (``path``: its model file in the run folder)."""
        mid = "t" + hashlib.sha1(f"{path}{time.time()}".encode()).hexdigest()[:10]
        e = Entry(mid, name, "trained here", Path(path) if path else None, model,
                  time.time(), value_max, dataset)
        with self._lock:
            self._trained[mid] = e
            self._entries[mid] = e
        return mid

    def list(self):
        self.scan()
        with self._lock:
            entries = list(self._entries.values())
        order = {"trained here": 0, "--model": 1, "run folder": 2}
        entries.sort(key=lambda e: (order[e.source], e.name))
        return [e.public() for e in entries]

    def get(self, mid) -> Entry:
        """The entry with its model loaded (reloaded when the file changed); 404 if unknown."""
        self.scan()
        with self._lock:
            e = self._entries.get(mid)
        if e is None:
            raise ApiError(404, f"no model with id {mid!r}; ask /api/models for the list")
        if e.source != "trained here":
            try:
                mtime = e.path.stat().st_mtime
            except OSError:
                raise ApiError(404, f"model {e.name} is no longer there") from None
            if e.model is None or mtime != e.mtime:
                try:
                    model = load_model(e.path)
                except NumcnnError as exc:
                    raise ApiError(422, f"cannot load {e.name}: {exc}") from None
                if not model.input_shape:
                    raise ApiError(422, f"{e.name} has no input shape; the page cannot prepare "
                                   "images for it")
                model.eval()
                with e.lock:
                    e.model, e.mtime = model, mtime
        with self._lock:
            model = e.model
            self._used(e)
        # a copy holding the model (and sharing the entry's lock): the caller keeps using it even
        # if another request lets the entry's model go meanwhile
        return replace(e, model=model)

    def _used(self, entry):
        """Keep at most LOADED_LIMIT model files in memory (models trained here always stay);
        called with the store's lock held."""
        if entry.source == "trained here":
            return
        self._recent = [x for x in self._recent if x is not entry] + [entry]
        while len(self._recent) > LOADED_LIMIT:
            old = self._recent.pop(0)
            old.model, old.mtime = None, 0.0


def value_max_for(entry: Entry) -> int:
    """The largest raw pixel value of the model's training data: 16 for scikit-learn's 8x8
    digits (stored as 0..16), 255 otherwise.  Known for models trained here; for files, an 8x8
    grey model is taken to be a digits model (the only 8x8 dataset numcnn knows)."""
    if entry.value_max is not None:
        return entry.value_max
    return 16 if tuple(entry.model.input_shape) == (1, 8, 8) else 255


def decode_upload(data: bytes, size=None, channels=None) -> np.ndarray:
    """Upload bytes -> ``(C, H, W)`` uint8 via :func:`load_image`; 422 for a bad picture."""
    from PIL import Image
    fd, name = tempfile.mkstemp(prefix="numcnn-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:                          # the header alone says how big the decoded picture is
            with Image.open(name) as img:
                w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ApiError(413, f"the picture is {w}x{h} pixels; the limit is "
                               f"{MAX_IMAGE_PIXELS:,} pixels")
        except ApiError:
            raise
        except Exception:             # noqa: BLE001 - load_image below names what is wrong
            pass
        try:
            return load_image(name, size=size, channels=channels)
        except DataError as exc:
            msg = str(exc).replace(name, "the uploaded file")
            raise ApiError(422, msg) from None
    finally:
        os.unlink(name)


def fit_drawing(grey: np.ndarray, out_hw, margin: float) -> np.ndarray:
    """Crop a drawing (H, W) uint8, bright ink on dark, to its ink and bring it to ``out_hw`` the
    way its dataset's digits were made.  With a ``margin`` (MNIST: the digit fits a 20x20 box
    in 28x28), the ink is averaged down (box filter) to fit the inner box, keeping its aspect,
    and placed so that its centre of mass is the image's centre; without one (the 8x8 digits,
    which fill their box), the ink's square box is averaged down to the whole image."""
    from PIL import Image
    ink = grey > 24
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = grey if len(rows) == 0 else grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    oh, ow = out_hw
    if margin <= 0:
        side = max(h, w)
        canvas = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = crop
        return np.asarray(Image.fromarray(canvas).resize((ow, oh), Image.BOX), dtype=np.uint8)
    inner = max(1, int(round(min(oh, ow) * (1 - 2 * margin))))
    s = inner / max(h, w)
    small = np.asarray(Image.fromarray(crop).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                    Image.BOX), dtype=np.uint8)
    sh, sw = small.shape
    mass = small.astype(np.float64)
    total = mass.sum() or 1.0
    cy = (mass.sum(axis=1) * np.arange(sh)).sum() / total
    cx = (mass.sum(axis=0) * np.arange(sw)).sum() / total
    top = int(np.clip(round((oh - 1) / 2 - cy), 0, oh - sh))
    left = int(np.clip(round((ow - 1) / 2 - cx), 0, ow - sw))
    out = np.zeros((oh, ow), dtype=np.uint8)
    out[top:top + sh, left:left + sw] = small
    return out


def prepare_image(entry: Entry, data: bytes, fit: bool, invert: str) -> np.ndarray:
    """Upload/drawing bytes -> one raw image ``(1, C, H, W)`` uint8 in the model's pixel range.

    Grey models: ``invert="auto"`` inverts a picture that is mostly light (dark ink on paper),
    since the digit datasets are light ink on black; ``fit`` crops and centres the ink first.
    The 0..255 picture is then scaled to the training data's range (0..16 for the 8x8 digits).
    """
    c, h, w = entry.model.input_shape
    if invert not in ("auto", "yes", "no"):
        raise ApiError(400, f"invert must be auto, yes or no, got {invert!r}")
    if c == 1:
        grey = decode_upload(data, channels=1)[0]
        if max(grey.shape) > MAX_DRAWING_SIDE:      # a photo: work on a screen-sized copy
            from PIL import Image
            s = MAX_DRAWING_SIDE / max(grey.shape)
            size = (max(1, round(grey.shape[1] * s)), max(1, round(grey.shape[0] * s)))
            grey = np.asarray(Image.fromarray(grey).resize(size, Image.BOX), dtype=np.uint8)
        if invert == "yes" or (invert == "auto" and grey.mean() > 127):
            grey = 255 - grey
        if fit:
            small = fit_drawing(grey, (h, w), 0.15 if h >= 20 else 0.0)
        else:
            from PIL import Image
            small = np.asarray(Image.fromarray(grey).resize((w, h), Image.BOX), dtype=np.uint8)
        img = small[None]
    else:
        img = decode_upload(data, size=(h, w), channels=c)
    vmax = value_max_for(entry)
    if vmax != 255:
        img = np.floor(img.astype(np.float64) * vmax / 255 + 0.5).astype(np.uint8)
    return img[None]
