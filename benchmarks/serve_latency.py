"""``numcnn serve``: prediction latency idle and during a training run, and page load size/time.

    python benchmarks/serve_latency.py              # ~1 min on 2 cores
    python benchmarks/serve_latency.py --n 100 --no-browser

The server runs in this process (uvicorn in a thread, 127.0.0.1, a free port), as ``numcnn serve``
does.  The model is LeNet-5 for 28x28 digits (weights from one quick epoch on mnist-5k; latency
does not depend on them).  One "prediction" is what the model page asks for on every pen
stroke: ``GET /api/models/{id}/predict?index=i`` (a test image: forward pass with every layer's
activations, the backward pass for the saliency map, JSON) and ``POST .../predict`` with a
280x280 PNG drawing (decode with numcnn's image reader, crop and centre, the same work).
Times are the client's wall clock per request (HTTP over loopback included).  "During training"
means while a LeNet-5 run on mnist-5k (batch 32) is going in the server's training thread.

Page load: bytes of each page and everything it loads (HTML, CSS, JS, favicon; no images or
fonts are fetched), and, with Chromium (``/usr/bin/chromium``), the browser's load time
(navigation start to the load event, and to the first answer drawn) for each page.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))


def get(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def stats(ms):
    ms = sorted(ms)
    return {"median_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
            "min_ms": ms[0], "n": len(ms)}


def measure(url, mid, n, drawing):
    test, draw = [], []
    for i in range(n):
        t0 = time.perf_counter()
        body = get(f"{url}/api/models/{mid}/predict?index={i % 100}")
        test.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        get(f"{url}/api/models/{mid}/predict?fit=1", drawing, {"Content-Type": "image/png"})
        draw.append((time.perf_counter() - t0) * 1000)
    server_ms = json.loads(body)["compute_ms"]
    return {"test_image": stats(test), "drawing": stats(draw), "last_compute_ms": server_ms,
            "answer_bytes": len(body)}


def make_drawing():
    from PIL import Image, ImageDraw
    img = Image.new("L", (280, 280), 0)
    d = ImageDraw.Draw(img)
    d.line([(140, 40), (140, 240)], fill=255, width=22)          # a "1"
    d.line([(110, 70), (140, 40)], fill=255, width=22)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def page_sizes(url):
    from numcnn.web.server import PAGES
    out = {}
    for page in PAGES:
        html = get(url + page)
        assets = set(re.findall(r'(?:src|href)="(/[^"]+)"', html.decode()))
        assets = {a for a in assets if a.startswith(("/static/", "/favicon"))}
        total = len(html) + sum(len(get(url + a)) for a in assets)
        out[page] = {"bytes": total, "files": 1 + len(assets)}
    return out


def browser_times(url):
    import os
    if not os.path.exists("/usr/bin/chromium"):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from numcnn.web.server import PAGES
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    ready = {"/": ".grid.out .c", "/kernels": "#explain:not(:empty)", "/model": "#layers .layer",
             "/train": "#status", "/summary": "#table tr"}
    out = {}
    try:
        for page in PAGES:
            d.get(url + page)
            t0 = time.perf_counter()
            while not d.find_elements("css selector", ready[page]) and time.perf_counter() - t0 < 30:
                time.sleep(0.01)
            drawn = d.execute_script("return performance.now()")
            load = d.execute_script("const t = performance.getEntriesByType('navigation')[0];"
                                    "return t.loadEventEnd - t.startTime")
            out[page] = {"load_ms": round(load, 1), "first_answer_drawn_ms": round(drawn, 1)}
    finally:
        d.quit()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="requests of each kind per measurement")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium page-load times")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    from webapp import live_server
    from numcnn import datasets, models
    from numcnn.training import fit
    root = Path(tempfile.mkdtemp(prefix="numcnn-serve-bench-"))
    run = root / "runs" / "lenet5"
    run.mkdir(parents=True)
    ds = datasets.load_dataset("mnist-5k")
    (xtr, ytr), _ = ds.splits
    model = models.lenet5()
    model.classes = list(ds.classes)
    fit(model, (xtr[:1000], ytr[:1000]), epochs=1, batch_size=64, progress=False)
    model.save(run / "model.safetensors")
    (run / "history.json").write_text("{}")
    drawing = make_drawing()
    results = {}
    with live_server(root) as (url, app):
        mid = json.loads(get(url + "/api/models"))["models"][0]["id"]
        measure(url, mid, 5, drawing)                      # warm up: load model, dataset
        results["idle"] = measure(url, mid, args.n, drawing)
        get(url + "/api/train", json.dumps({"dataset": "mnist-5k", "model": "lenet5", "epochs": 50,
                                            "batch_size": 32}).encode(),
            {"Content-Type": "application/json"})
        while json.loads(get(url + "/api/train"))["progress"]["batch"] < 5:
            time.sleep(0.1)
        t0 = time.perf_counter()
        s0 = json.loads(get(url + "/api/train"))
        results["during_training"] = measure(url, mid, args.n, drawing)
        s1 = json.loads(get(url + "/api/train"))
        results["during_training"]["training_images_per_s"] = s1["progress"]["images_per_s"]
        results["during_training"]["training_batches_meanwhile"] = (
            (s1["progress"]["epoch"] - s0["progress"]["epoch"]) * s1["progress"]["batches"]
            + s1["progress"]["batch"] - s0["progress"]["batch"])
        results["during_training"]["seconds"] = time.perf_counter() - t0
        get(url + "/api/train/stop", b"{}", {"Content-Type": "application/json"})
        while json.loads(get(url + "/api/train"))["state"] in ("starting", "running", "finishing"):
            time.sleep(0.1)
        results["pages"] = page_sizes(url)
        if not args.no_browser:
            results["browser"] = browser_times(url)
    print(json.dumps(results, indent=1))
    for k in ("idle", "during_training"):
        r = results[k]
        print(f"{k:>16}: test image median {r['test_image']['median_ms']:.1f} ms, p95 "
              f"{r['test_image']['p95_ms']:.1f} ms; drawing median {r['drawing']['median_ms']:.1f} ms, "
              f"p95 {r['drawing']['p95_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
