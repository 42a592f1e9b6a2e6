"""``numcnn serve`` in a real browser: headless Chromium driven by Selenium.

The server runs in a background thread on 127.0.0.1 (a free port); the model page's model is
digits-cnn trained for a few epochs in the fixture.  A missing browser FAILS these tests: they
are the proof that the pages work.  Screenshots of every page at desktop (1280x900) and phone
(390x844) width are saved into ``$NUMCNN_WEB_ARTIFACTS`` (default: a temporary folder, printed).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from webapp import live_server, train_digits_model  # noqa: E402

from numcnn.functional import conv2d  # noqa: E402
from numcnn.viz import convdemo  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGES = ["/", "/kernels", "/model", "/train", "/summary"]
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = Path(os.environ.get("NUMCNN_WEB_ARTIFACTS") or tmp_path_factory.mktemp("web-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-root")
    model, test = train_digits_model(root / "runs" / "digits-fixture", epochs=8)
    with live_server(root) as (url, app):
        yield url, app, model, test


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver "
                        "(.ci/run does); the browser tests must run, not skip")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="numcnn-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_window_size(*SIZES["desktop"])
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(fn, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def api(url, path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def dataset(driver, key):
    return driver.execute_script(f"return document.body.dataset[{key!r}] || ''")


def full_page_screenshot(driver, path):
    m = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    # the whole window's width: beyond the viewport there is no scroll bar, so the page is laid
    # out that much wider than the content size measured with one
    width = max(m["width"], driver.execute_script("return window.innerWidth"))
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(m["height"], 5000), "scale": 1}})
    Path(path).write_bytes(base64.b64decode(shot["data"]))


def set_number(driver, element_id, value):
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('change'));", element_id, str(value))


# -- page 1 ------------------------------------------------------------------------------------
def test_conv_page_animates_and_stops_and_its_numbers_equal_conv2d(site, browser):
    url = site[0]
    browser.get(url + "/?speed=10")
    wait_for(lambda: dataset(browser, "playing") == "1", what="movement on")
    cell = lambda: browser.execute_script(
        "const c = document.querySelector('.grid.out .c.now'); return c && c.dataset.k")
    seen = set()
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        seen.add(cell())
        time.sleep(0.05)
    assert len(seen) >= 4, f"the highlighted output cell did not move: {seen}"
    browser.find_element("id", "toggle").click()
    assert dataset(browser, "playing") == "0"
    still = cell()
    time.sleep(0.8)                  # eight ticks at 10 steps per second, had it kept moving
    assert cell() == still
    # the output volume's numbers are numcnn.functional.conv2d's
    x, w, b, stride, padding = convdemo.deck_example()
    expected = conv2d(x, w, b, stride, padding)[0]
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('.grid.out .c')).map("
        "c => [Number(c.dataset.o), Number(c.dataset.y), Number(c.dataset.x), Number(c.dataset.v), c.textContent])")
    assert len(cells) == expected.size == 18
    for o, y, x_, v, text in cells:
        assert v == expected[o, y, x_] and text == str(int(expected[o, y, x_]))
    # clicking an output cell shows its sum: (channel sums) + bias = value
    browser.find_element("css selector", ".grid.out .c[data-k='5']").click()
    eq = browser.find_element("id", "equation").text
    steps, _ = convdemo.conv_steps(x, w, b, stride, padding)
    assert eq.startswith("o[0][1,2] = ") and eq.endswith(f"= {int(steps[5].value)}")
    assert convdemo.format_step(steps[5]) in browser.execute_script(
        "return document.querySelector('#detail pre').textContent")
    assert console_errors(browser) == []


def test_conv_page_stride_and_padding_redraw_with_the_right_output_size(site, browser):
    url = site[0]
    browser.get(url + "/?play=0")
    wait_for(lambda: dataset(browser, "outSize") == "3x3x2", what="the deck's 3x3x2")
    for stride, padding, size in ((1, 1, 5), (1, 0, 3), (2, 0, 2), (3, 2, 3), (2, 1, 3)):
        set_number(browser, "stride", stride)
        set_number(browser, "padding", padding)
        want = f"{size}x{size}x2"
        # the input grid (with its padding) and the output were both redrawn
        wait_for(lambda: dataset(browser, "outSize") == want and len(browser.find_elements(
            "css selector", ".grid.input .c")) == 3 * (5 + 2 * padding) ** 2, what=want)
        n = len(browser.find_elements("css selector", ".grid.out .c"))
        assert n == 2 * size * size
        assert f"1 + (5 + 2*{padding} - 3) / {stride}" in browser.find_element("id", "formula").text
        assert (f"stride={stride}" in browser.current_url) == (stride != 2)     # state in the URL
    # an invalid combination: a clear message, no broken drawing
    set_number(browser, "padding", 0)
    set_number(browser, "kernel", 7)
    msg = wait_for(lambda: browser.find_element("id", "error").text, what="an error message")
    assert "larger than the padded input" in msg
    assert browser.find_elements("css selector", ".grid.out .c") == []
    set_number(browser, "kernel", 3)
    wait_for(lambda: dataset(browser, "outSize") == "2x2x2", what="back to a valid demo")
    assert browser.find_element("id", "error").text == ""
    # Chromium logs every 4xx answer to fetch() as "Failed to load resource"; the refused
    # combination's 422 is the only one, and the page showed its message
    errors = console_errors(browser)
    assert len(errors) == 1 and "/api/conv" in errors[0] and "422" in errors[0], errors


# -- page 2 ------------------------------------------------------------------------------------
def test_kernel_page_typed_kernel_and_uploaded_picture(site, browser, tmp_path):
    from webapp import png_bytes
    url = site[0]
    browser.get(url + "/kernels?kernel=custom&values=0,0,0,0,2,0,0,0,0&border=zeros")
    wait_for(lambda: "custom" in browser.find_element("id", "outtitle").text, what="the typed kernel")
    assert browser.find_element("id", "ksum").text == "the numbers add up to 2"
    # twice the picture: the feature map's values go up to twice the input's largest (235)
    assert browser.find_element("id", "outtitle").text.endswith(".. 470")
    pic = np.zeros((60, 90), np.uint8)
    pic[20:40, 30:60] = 200
    path = tmp_path / "square.png"
    path.write_bytes(png_bytes(pic))
    browser.find_element("id", "file").send_keys(str(path))
    wait_for(lambda: browser.find_element("id", "outtitle").text.endswith(".. 400"), what="the upload")
    assert browser.execute_script("return document.getElementById('out').width") == 90
    assert console_errors(browser) == []


# -- page 3 ------------------------------------------------------------------------------------
def test_drawing_a_digit_with_pointer_events_gets_the_right_class(site, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    url, app, model, (xte, yte) = site
    models = api(url, "/api/models")["models"]
    mid = next(m["id"] for m in models if m["name"].endswith("model.safetensors"))
    first = int(model.predict(xte[:1]).argmax())         # what the page shows before drawing
    # a test digit drawn as thick strokes over its bright cells (the pad is 8x8 cells of 32 px)
    ink = xte[:, 0] >= 8
    drawn = (ink * 16).astype(np.uint8)[:, None]
    ok = np.nonzero((model.predict(drawn).argmax(axis=1) == yte) & (yte != first))[0]
    index = int(ok[0])
    label = str(yte[index])
    browser.get(url + f"/model?m={mid}&brush=32&fit=0")
    wait_for(lambda: dataset(browser, "predictions") == "1", what="the first prediction")
    pad = browser.find_element("id", "pad")
    assert pad.size["width"] == 256
    actions = ActionChains(browser, duration=10)
    for r in range(8):
        c = 0
        while c < 8:
            if not ink[index, r, c]:
                c += 1
                continue
            end = c
            while end + 1 < 8 and ink[index, r, end + 1]:
                end += 1
            actions.move_to_element_with_offset(pad, c * 32 + 16 - 128, r * 32 + 16 - 128)
            actions.click_and_hold().move_by_offset(max(1, (end - c) * 32), 0).release()
            c = end + 1
    actions.perform()
    wait_for(lambda: dataset(browser, "prediction") == label and int(dataset(browser, "predictions")) > 1,
             timeout=20, what=f"the prediction {label}")
    time.sleep(0.5)                  # the last request in flight has answered too
    assert dataset(browser, "prediction") == label
    assert browser.find_element("id", "answer").text.startswith(f"prediction: {label}")
    n_layers = len(browser.find_elements("css selector", "#layers .layer"))
    assert n_layers == len([l for l in model.layers if type(l).__name__ != "Flatten"])
    assert console_errors(browser) == []


def test_model_page_uploaded_picture_and_test_image(site, browser, tmp_path):
    from webapp import png_bytes
    url, app, model, (xte, yte) = site
    mid = next(m["id"] for m in api(url, "/api/models")["models"] if m["name"].endswith("model.safetensors"))
    pred = model.predict(xte[:40]).argmax(axis=1)
    first = int(pred[0])
    i = int(np.nonzero((pred == yte[:40]) & (pred != first))[0][0])
    browser.get(url + f"/model?m={mid}")
    wait_for(lambda: dataset(browser, "predictions") == "1", what="the first prediction")
    # dark ink on white paper, as a photo of a written digit: inverted by the server
    paper = 255 - np.kron(xte[i, 0].astype(np.float64) * 255 / 16, np.ones((24, 24))).astype(np.uint8)
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(paper))
    browser.find_element("id", "file").send_keys(str(path))
    wait_for(lambda: dataset(browser, "predictions") == "2", what="the upload's prediction")
    assert dataset(browser, "prediction") == str(pred[i])
    thumbs = browser.find_elements("css selector", "#thumbs canvas")
    assert len(thumbs) == 32
    thumbs[i].click()
    wait_for(lambda: dataset(browser, "predictions") == "3", what="the test image's prediction")
    assert browser.find_element("id", "answer").text.endswith(f"(true label: {yte[i]})")
    assert console_errors(browser) == []


# -- page 4 ------------------------------------------------------------------------------------
def test_live_training_updates_its_curves_and_finishes(site, browser):
    url = site[0]
    browser.get(url + "/train?dataset=digits&model=digits-cnn&epochs=3&batch_size=64")
    wait_for(lambda: browser.find_element("id", "dataset").get_attribute("value") == "digits")
    browser.find_element("id", "start").click()
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state, epochs = dataset(browser, "state"), dataset(browser, "epochsDone")
        if not seen or seen[-1] != (state, epochs):
            seen.append((state, epochs))
        if state in ("done", "failed"):
            break
        time.sleep(0.05)
    assert seen[-1] == ("done", "3"), seen
    assert len({e for _, e in seen if e}) >= 2, f"the curves never updated during the run: {seen}"
    ink = browser.execute_script(
        "const c = document.getElementById('loss'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] && d[i + 2] > d[i] + 60) n++; return n;")
    assert ink > 100, "no blue training curve drawn"
    assert browser.find_element("id", "result").is_displayed()
    cells = browser.find_elements("css selector", "#conf td")
    assert sum(int(c.text) for c in cells) == 360
    assert len(browser.find_elements("css selector", ".epochrow")) == 4      # start + 3 epochs
    assert console_errors(browser) == []


def test_event_stream_is_closed_when_the_page_is_left_and_the_run_goes_on(site, browser):
    url = site[0]
    api(url, "/api/train", {"dataset": "digits", "model": "digits-cnn", "epochs": 200, "batch_size": 8})
    try:
        browser.get(url + "/train")
        wait_for(lambda: api(url, "/api/info")["open_streams"] == 1, what="the page's stream")
        browser.get(url + "/")
        wait_for(lambda: api(url, "/api/info")["open_streams"] == 0, timeout=10,
                 what="the stream closed after leaving the page")
        assert api(url, "/api/train")["state"] == "running"     # the run survives the tab
    finally:
        api(url, "/api/train/stop", {})
        wait_for(lambda: api(url, "/api/train")["state"] == "stopped", timeout=30)
    assert console_errors(browser) == []


# -- every page --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_loads_without_console_errors_fits_the_width_and_is_saved(site, browser, artifacts, size):
    url = site[0]
    browser.set_window_size(*SIZES[size])
    try:
        for page in PAGES:
            browser.get(url + page)
            wait_for(lambda: browser.execute_script("return document.readyState") == "complete")
            # each page's first answer from the API has been drawn
            ready = {"/": ".grid.out .c", "/kernels": "#explain:not(:empty)", "/model": "#layers .layer",
                     "/train": "#status", "/summary": "#table tr"}[page]
            wait_for(lambda: browser.find_elements("css selector", ready), what=f"{page} drawn")
            time.sleep(0.3)
            widths = browser.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert widths[0] <= widths[1], f"{page} scrolls sideways at {size} width: {widths}"
            assert browser.execute_script("return document.querySelector('header nav a.here').getAttribute('href')") == page
            name = page.strip("/") or "convolution"
            full_page_screenshot(browser, artifacts / f"{name}-{size}.png")
            assert console_errors(browser) == [], page
    finally:
        browser.set_window_size(*SIZES["desktop"])
    assert len(list(artifacts.glob(f"*-{size}.png"))) >= len(PAGES)
