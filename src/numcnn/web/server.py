"""The Starlette app behind ``numcnn serve`` and the uvicorn runner.

Every route below is documented in ``docs/web-api.md``.  Pages are static files; everything they
show comes from the JSON API, which calls numcnn.  Blocking work (a forward pass, loading a
model) runs in Starlette's thread pool (plain ``def`` endpoints), so one slow request never
stops the others, and training runs in its own thread (:mod:`.training_job`).
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..backend import to_numpy
from ..errors import ConfigError
from . import conv_api, lookinside
from .model_store import ModelStore, prepare_image, value_max_for
from .security import ApiError, Guard, allowed_hosts, error_handlers, read_body, read_json, token_for
from .training_job import TrainingJob, check_config, known_datasets

STATIC = Path(__file__).parent / "static"
#: pages: URL path -> file in static/
PAGES = {"/": "index.html", "/kernels": "kernels.html", "/model": "model.html",
         "/train": "train.html", "/summary": "summary.html"}
#: largest upload (an image file), bytes
MAX_UPLOAD = 4 << 20
#: test images sent as thumbnails in one request, at most
MAX_THUMBS = 64
#: how often the training stream sends its status, seconds
STREAM_INTERVAL = 0.5
_NO_CACHE = {"Cache-Control": "no-store"}


def _query_bool(request, name, default):
    v = request.query_params.get(name)
    if v is None:
        return default
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be 1 or 0, got {v!r}")


def _query_int(request, name, default, lo, hi):
    v = request.query_params.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {v!r}") from None
    if not lo <= n <= hi:
        raise ApiError(400, f"{name} must be from {lo} to {hi}, got {n}")
    return n


class App:
    """The server's state: the model list, the current training run, the datasets loaded."""

    def __init__(self, root, model_path=None):
        self.root = Path(root).resolve()
        self.store = ModelStore(self.root, model_path)
        self.job = None
        self.job_lock = threading.Lock()
        self._datasets = {}
        self.streams = 0                 # open event streams (the tests check pages close them)

    # -- helpers ------------------------------------------------------------------------------
    def dataset(self, name):
        """The test split of an embedded dataset (cached)."""
        known = {d["name"]: d for d in known_datasets()}
        if name not in known:
            raise ApiError(400, f"unknown dataset {name!r}; this server knows {', '.join(known)}")
        if name not in self._datasets:
            from ..data import datasets
            self._datasets[name] = datasets.load_dataset(name).splits[1]
        return self._datasets[name]

    def dataset_for(self, model):
        """The known dataset whose images have the model's input shape, or None."""
        for d in known_datasets():
            if tuple(d["shape"]) == tuple(model.input_shape):
                return d["name"]
        return None

    def analyse(self, entry, raw):
        """One raw image (1, C, H, W) through the model: everything page 3 shows."""
        model = entry.model
        with entry.lock:
            t0 = time.perf_counter()
            x = model.prepare_input(raw)
            layers = lookinside.activations(model, x)
            probs, sal = lookinside.saliency(model, x)
            ms = (time.perf_counter() - t0) * 1000
        classes = model.classes or [str(i) for i in range(len(probs))]
        top = int(np.argmax(probs))
        return {"prediction": top, "label": classes[top] if top < len(classes) else str(top),
                "probabilities": probs.tolist(), "classes": classes,
                "input_raw": lookinside.pack(raw[0].astype(np.float32)),
                "input": lookinside.pack(to_numpy(x)[0]),
                "value_max": value_max_for(entry), "layers": layers,
                "saliency": lookinside.pack(sal), "compute_ms": ms}

    # -- pages ----------------------------------------------------------------------------------
    async def page(self, request):
        return FileResponse(STATIC / PAGES[request.url.path], headers=_NO_CACHE)

    async def favicon(self, request):
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    # -- API: general -------------------------------------------------------------------------
    async def info(self, request):
        return JSONResponse({
            "numcnn": __version__, "pages": list(PAGES), "open_streams": self.streams,
            "limits": {"upload_bytes": MAX_UPLOAD, "conv": conv_api.CONV_LIMITS,
                       "conv_padded_max": conv_api.convdemo.MAX_DEMO_SIZE},
            "deck": conv_api.DECK, "kernels": conv_api.kernel_list(),
            "datasets": known_datasets(), "presets": list(_presets())})

    # -- API: convolution and kernels ---------------------------------------------------------
    async def conv(self, request):
        params = await read_json(request)
        return JSONResponse(await run_in_threadpool(conv_api.conv_demo, params))

    async def kernels(self, request):
        q = request.query_params
        name, kernel = conv_api.parse_kernel(q.get("kernel"), q.get("values"))
        border = q.get("border", "edge")
        if request.method == "POST":
            data = await read_body(request, MAX_UPLOAD)
            img = await run_in_threadpool(_kernel_picture, data)
        else:
            which = q.get("image", "sample")
            if which != "sample":
                raise ApiError(400, f"image must be 'sample' (or POST your picture), got {which!r}")
            img = conv_api.convdemo.sample_image(128)[None]
        return JSONResponse(await run_in_threadpool(conv_api.apply_kernel, img, name, kernel, border))

    # -- API: models --------------------------------------------------------------------------
    async def models(self, request):
        return JSONResponse({"models": await run_in_threadpool(self.store.list), "root": str(self.root.name)})

    async def model_info(self, request):
        def work():
            e = self.store.get(request.path_params["mid"])
            with e.lock:
                return {**e.public(), **lookinside.describe(e.model),
                        "summary": lookinside.summary(e.model), "filters": lookinside.filters(e.model),
                        "value_max": value_max_for(e), "test_dataset": self.dataset_for(e.model)}
        return JSONResponse(await run_in_threadpool(work))

    async def predict(self, request):
        mid = request.path_params["mid"]
        if request.method == "POST":
            fit = _query_bool(request, "fit", True)
            invert = request.query_params.get("invert", "auto")
            data = await read_body(request, MAX_UPLOAD)

            def work():
                e = self.store.get(mid)
                return self.analyse(e, prepare_image(e, data, fit, invert))
        else:
            index = _query_int(request, "index", 0, 0, 10 ** 9)

            def work():
                e = self.store.get(mid)
                name = self.dataset_for(e.model)
                if name is None:
                    raise ApiError(422, "no test images of this model's input shape "
                                   f"{tuple(e.model.input_shape)}; upload a picture instead")
                x, y = self.dataset(name)
                if index >= len(x):
                    raise ApiError(400, f"index must be below {len(x)} (the test images of {name})")
                out = self.analyse(e, x[index:index + 1])
                out["true_label"] = int(y[index])
                return out
        return JSONResponse(await run_in_threadpool(work))

    async def test_images(self, request):
        name = request.path_params["name"]
        start = _query_int(request, "start", 0, 0, 10 ** 9)
        count = _query_int(request, "count", 16, 1, MAX_THUMBS)

        def work():
            x, y = self.dataset(name)
            sl = slice(start, min(start + count, len(x)))
            return {"dataset": name, "start": start, "total": len(x), "labels": y[sl].tolist(),
                    "images": lookinside.pack(x[sl].astype(np.float32))}
        return JSONResponse(await run_in_threadpool(work))

    async def preset_summary(self, request):
        name = request.path_params["name"]
        dataset = request.query_params.get("dataset", "mnist-5k")

        def work():
            from .. import models
            known = {d["name"]: d for d in known_datasets()}
            if name not in models.PRESETS:
                raise ApiError(404, f"unknown preset {name!r}; presets: {', '.join(models.PRESETS)}")
            if dataset not in known:
                raise ApiError(400, f"unknown dataset {dataset!r}; this server knows {', '.join(known)}")
            c, h, _ = known[dataset]["shape"]
            m = models.build(name, in_channels=c, num_classes=len(known[dataset]["classes"]), image_size=h)
            return {"name": name, "dataset": dataset, "summary": lookinside.summary(m)}
        return JSONResponse(await run_in_threadpool(work))

    # -- API: training ------------------------------------------------------------------------
    async def train_start(self, request):
        params = await read_json(request)

        def work():
            with self.job_lock:
                if self.job is not None and self.job.active:
                    raise ApiError(409, "a training run is already going (one at a time); stop it "
                                   "first or wait for it to finish")
                resume_dir = None
                if params.get("resume"):
                    old = self.job
                    if old is None or old.state != "stopped" or not (old.out / "checkpoint.safetensors").exists():
                        raise ApiError(409, "there is no stopped run with a checkpoint to resume")
                    p = {k: v for k, v in old.cfg.items() if k != "value_max"}
                    p["epochs"] = params.get("epochs", p["epochs"])
                    cfg = check_config(p)
                    resume_dir = old.out
                else:
                    cfg = check_config(params)
                self.job = TrainingJob(cfg, self.root, self.store, resume_dir)
                self.job.start()
                return self.job.status()
        return JSONResponse(await run_in_threadpool(work), status_code=202)

    async def train_status(self, request):
        if self.job is None:
            return JSONResponse({"state": "idle"})
        return JSONResponse(self.job.status())

    async def train_stop(self, request):
        if self.job is None or not self.job.active:
            raise ApiError(409, "no training run is going")
        self.job.stop()
        return JSONResponse({"state": "stopping"})

    async def train_events(self, request):
        """Server-sent events: the run's status every half second until it ends or the page
        closes the stream (the page closes it when it is left)."""
        async def stream():
            self.streams += 1
            try:
                async for item in self._events(request):
                    yield item
            finally:
                self.streams -= 1
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(self, request):
        last = None
        while True:
            if await request.is_disconnected():
                return
            status = self.job.status() if self.job is not None else {"state": "idle"}
            text = json.dumps(status)
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if status["state"] not in ("starting", "running", "finishing"):
                return
            await asyncio.sleep(STREAM_INTERVAL)

    async def api_index(self, request):
        return JSONResponse({"routes": sorted({r.path for r in self.routes if r.path.startswith("/api")}),
                             "docs": "docs/web-api.md"})

    @property
    def routes(self):
        r = [Route(path, self.page) for path in PAGES]
        r += [
            Route("/favicon.ico", self.favicon),
            Route("/api", self.api_index),
            Route("/api/info", self.info),
            Route("/api/conv", self.conv, methods=["POST"]),
            Route("/api/kernels", self.kernels, methods=["GET", "POST"]),
            Route("/api/models", self.models),
            Route("/api/models/{mid}", self.model_info),
            Route("/api/models/{mid}/predict", self.predict, methods=["GET", "POST"]),
            Route("/api/presets/{name}/summary", self.preset_summary),
            Route("/api/datasets/{name}/test-images", self.test_images),
            Route("/api/train", self.train_status, methods=["GET"]),
            Route("/api/train", self.train_start, methods=["POST"]),
            Route("/api/train/stop", self.train_stop, methods=["POST"]),
            Route("/api/train/events", self.train_events),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return r


def _presets():
    from .. import models
    return models.PRESETS


def _kernel_picture(data):
    """An uploaded picture for the kernel page: grey, at most KERNEL_IMAGE_SIDE on its long side."""
    from .model_store import decode_upload
    img = decode_upload(data, channels=1)
    h, w = img.shape[1:]
    side = conv_api.KERNEL_IMAGE_SIDE
    if max(h, w) > side:
        from PIL import Image
        s = side / max(h, w)
        small = Image.fromarray(img[0]).resize((max(1, round(w * s)), max(1, round(h * s))),
                                               Image.BILINEAR)
        img = np.asarray(small, dtype=np.uint8)[None]
    return img


def create_app(root=".", model_path=None, host="127.0.0.1", port=8000, token=None):
    """The ASGI app.  ``root``: the directory whose run folders are listed; ``host``/``port``:
    the address the server answers as (Host and Origin checks); ``token``: required on every
    request when given (always given for a non-loopback ``host``, see :func:`serve`)."""
    state = App(root, model_path)
    app = Starlette(routes=state.routes, exception_handlers=error_handlers(),
                    middleware=[Middleware(Guard, hosts=allowed_hosts(host, port), token=token)])
    app.state.numcnn = state
    return app


def serve(model_path=None, host="127.0.0.1", port=8000, open_browser=False, root=".",
          token=None, log_level="warning"):
    """Run the server until Ctrl-C.  A non-loopback ``host`` gets a random token (printed)."""
    import socket
    import uvicorn
    token = token_for(host, token)
    # bind first, so that port 0 ("any free port") gives the real port to the Host check
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose "
                          "another --port") from None
    port = sock.getsockname()[1]
    app = create_app(root, model_path, host, port, token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown if ':' not in shown else '[' + shown + ']'}:{port}/"
    if token:
        url += f"?token={token}"
    print(f"numcnn serve: {url}", flush=True)
    if token:
        print("  (listening on a non-loopback address: every request needs this token)", flush=True)
    print("  Ctrl-C stops the server", flush=True)
    if open_browser:
        import webbrowser
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:           # uvicorn re-raises the Ctrl-C it shut down on: normal end
        pass
    finally:
        sock.close()
    print("numcnn serve: stopped", flush=True)
    return 0


__all__ = ["create_app", "serve", "PAGES", "MAX_UPLOAD"]
if __name__ == "__main__":          # pragma: no cover - `python -m numcnn.web.server`
    sys.exit(serve())
