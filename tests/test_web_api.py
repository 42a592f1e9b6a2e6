"""``numcnn serve``'s JSON API, endpoint by endpoint, with every bad request it must refuse.

Starlette's TestClient drives the app in-process; the streaming-limit tests drive it at the ASGI
level (to count what the app reads) and through a real uvicorn server on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)

from conftest import torch_conv  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from webapp import live_server, png_bytes, train_digits_model  # noqa: E402

from numcnn.functional import conv2d  # noqa: E402
from numcnn.viz import convdemo  # noqa: E402
from numcnn.web import conv_api, lookinside, server  # noqa: E402
from numcnn.web.security import allowed_hosts, is_loopback, token_for  # noqa: E402
from numcnn.web.server import MAX_UPLOAD, create_app  # noqa: E402

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A root folder with one run folder holding a trained digits model."""
    root = tmp_path_factory.mktemp("serve-root")
    model, test = train_digits_model(root / "runs" / "digits-run", epochs=6)
    return root, model, test


def make_client(root, **kw):
    app = create_app(root, port=8000, **kw)
    return TestClient(app, base_url=BASE, raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


@pytest.fixture(scope="module")
def mclient(trained):
    return make_client(trained[0])


def model_id(client, name_part="model.safetensors"):
    models = client.get("/api/models").json()["models"]
    return next(m["id"] for m in models if m["name"].endswith(name_part))


def assert_json_error(r, status, *words):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    assert "Traceback" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg


# -- pages -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(server.PAGES))
def test_every_page_is_served_directly_with_viewport_and_favicon(client, path):
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in r.text
    assert 'rel="icon"' in r.text
    for src in ("/static/common.js", "/static/style.css"):
        assert src in r.text
    # no CDN: every script and stylesheet is this server's own
    assert "http://" not in r.text and "https://" not in r.text


def test_favicon_and_static_files(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    for name in ("common.js", "conv.js", "kernels.js", "model.js", "train.js", "summary.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_unknown_route_and_wrong_method_are_json(client):
    assert_json_error(client.get("/api/nope"), 404, "not found")
    assert_json_error(client.get("/api/conv"), 405, "GET")
    assert_json_error(client.get("/static/../server.py"), 404)
    assert_json_error(client.get("/static/%2e%2e/server.py"), 404)


def test_unexpected_exception_is_a_json_500_without_traceback(client, monkeypatch):
    def boom(params):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(conv_api, "conv_demo", boom)
    r = client.post("/api/conv", json={})
    assert_json_error(r, 500, "internal error", "RuntimeError")
    assert "secret internals" not in r.text


def test_api_index_and_info(client):
    routes = client.get("/api").json()["routes"]
    assert "/api/conv" in routes and "/api/train" in routes
    info = client.get("/api/info").json()
    assert info["deck"] == {"size": 5, "depth": 3, "filters": 2, "kernel": 3, "stride": 2,
                            "padding": 1, "dilation": 1}
    names = {d["name"] for d in info["datasets"]}
    assert {"digits", "mnist-5k"} <= names
    assert [k["name"] for k in info["kernels"]] == list(convdemo.classic_kernels())
    assert info["limits"]["upload_bytes"] == MAX_UPLOAD


# -- Host, Origin, token -----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000"])
def test_own_host_names_are_accepted(client, host):
    assert client.get("/api/info", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:8000", "127.0.0.1:8001", "localhost", "", "127.0.0.1.nip.io:8000"])
def test_foreign_host_is_refused_dns_rebinding(client, host):
    assert_json_error(client.get("/api/info", headers={"Host": host}), 403, "Host")
    assert_json_error(client.post("/api/conv", json={}, headers={"Host": host}), 403)


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8001", "null",
                                    "file://", "http://localhost:8000.evil.example"])
def test_foreign_origin_is_refused(client, origin):
    assert_json_error(client.post("/api/conv", json={}, headers={"Origin": origin}), 403, "not allowed")


def test_a_request_the_browser_marks_cross_site_is_refused(client):
    assert_json_error(client.get("/api/info", headers={"Sec-Fetch-Site": "cross-site"}), 403, "another site")
    for same in ("same-origin", "none"):
        assert client.get("/api/info", headers={"Sec-Fetch-Site": same}).status_code == 200


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8000", "http://localhost:8000"])
def test_own_origin_is_accepted(client, origin):
    assert client.post("/api/conv", json={}, headers={"Origin": origin}).status_code == 200


def test_defaults_bind_loopback_and_other_hosts_need_a_token():
    import argparse
    from numcnn.web import command
    p = argparse.ArgumentParser()
    command.add_parser(p.add_subparsers())
    args = p.parse_args(["serve"])
    assert (args.host, args.port, args.model, args.open) == ("127.0.0.1", 8000, None, False)
    assert token_for("127.0.0.1") is None and token_for("localhost") is None and token_for("::1") is None
    t1, t2 = token_for("0.0.0.0"), token_for("192.168.1.5")
    assert t1 and t2 and t1 != t2 and len(t1) >= 24
    assert token_for("0.0.0.0", "given") == "given"
    assert is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")
    assert allowed_hosts("0.0.0.0", 80) is None
    assert "192.168.1.5:9000" in allowed_hosts("192.168.1.5", 9000)


def test_token_is_required_then_kept_in_a_cookie(tmp_path):
    app = create_app(tmp_path, host="192.0.2.7", port=8000, token="s3cret-token")
    c = TestClient(app, base_url="http://192.0.2.7:8000")
    assert_json_error(c.get("/"), 403, "token")
    assert_json_error(c.get("/api/info"), 403, "token")
    assert_json_error(c.get("/?token=wrong"), 403, "token")
    r = c.get("/?token=s3cret-token")
    assert r.status_code == 200 and "numcnn_token=s3cret-token" in r.headers["set-cookie"]
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert c.get("/api/info").status_code == 200          # the cookie now
    c.cookies.clear()
    assert_json_error(c.get("/api/info"), 403, "token")
    assert c.get("/api/info", headers={"Authorization": "token s3cret-token"}).status_code == 200
    # the token does not replace the Host check
    assert_json_error(c.get("/api/info?token=s3cret-token", headers={"Host": "evil.example"}), 403, "Host")


# -- bounded bodies ----------------------------------------------------------------------------
def _asgi_request(app, path, chunks, headers=()):
    """Call the ASGI app with a body given chunk by chunk; returns (status, body, chunks read)."""
    read = 0
    sent = []

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000")] + list(headers)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read


def test_chunked_upload_is_stopped_at_the_limit_while_streaming(trained):
    app = create_app(trained[0], port=8000)
    mid = model_id(TestClient(app, base_url=BASE))
    chunk = b"\0" * (256 << 10)
    chunks = [chunk] * 400                      # 100 MiB offered, no Content-Length
    status, body, read = _asgi_request(app, f"/api/models/{mid}/predict", chunks)
    assert status == 413 and "too large" in body["error"]
    # the reading stopped at the first chunk past the limit: 4 MiB / 256 KiB = 16, +1
    assert read == MAX_UPLOAD // len(chunk) + 1
    status, body, read = _asgi_request(app, "/api/kernels", chunks)
    assert status == 413 and read == MAX_UPLOAD // len(chunk) + 1


def test_declared_oversize_upload_is_refused_before_reading(trained):
    app = create_app(trained[0], port=8000)
    status, body, read = _asgi_request(app, "/api/kernels", [b"x"] * 3,
                                       headers=[(b"content-length", str(MAX_UPLOAD + 1).encode())])
    assert status == 413 and read == 0
    status, body, read = _asgi_request(app, "/api/conv", [b"{}"] * 3,
                                       headers=[(b"content-length", str(2 << 20).encode())])
    assert status == 413 and read == 0


def test_real_server_answers_413_to_an_endless_chunked_upload(trained):
    """Through uvicorn and a socket: the answer comes while the client is still sending."""
    with live_server(trained[0]) as (url, app):
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.sendall(b"POST /api/kernels HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Transfer-Encoding: chunked\r\nContent-Type: image/png\r\n\r\n" % port)
        piece = b"\0" * (64 << 10)
        frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
        sent = 0
        done = threading.Event()

        def send_forever():
            nonlocal sent
            try:
                while not done.is_set() and sent < 64 * MAX_UPLOAD:
                    s.sendall(frame)
                    sent += len(piece)
            except OSError:
                pass
        sender = threading.Thread(target=send_forever, daemon=True)
        sender.start()
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                got = s.recv(65536)
                if not got:
                    break
                answer += got
        finally:
            done.set()
            sender.join(30)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 64 * MAX_UPLOAD             # refused long before the client finished


def test_json_bodies_are_bounded_and_checked(client):
    assert_json_error(client.post("/api/conv", content=b"{" * 100), 400, "JSON")
    assert_json_error(client.post("/api/conv", content=b"[1, 2]"), 400, "object")
    assert_json_error(client.post("/api/conv", content=b""), 400, "empty")
    assert_json_error(client.post("/api/conv", content=b" " * ((1 << 20) + 1)), 413, "too large")


# -- convolution demo --------------------------------------------------------------------------
def _conv_reference(d):
    s = d["sizes"]
    x = np.array(d["x"])[None]
    w = np.array(d["weight"])
    b = np.array(d["bias"])
    return x, w, b, s


def test_conv_default_is_the_deck_example_and_equals_conv2d(client):
    r = client.post("/api/conv", json={})
    assert r.status_code == 200
    d = r.json()
    x, w, b, stride, pad = convdemo.deck_example()
    np.testing.assert_array_equal(np.array(d["x"])[None], x)
    np.testing.assert_array_equal(np.array(d["weight"]), w)
    np.testing.assert_array_equal(np.array(d["bias"]), b)
    assert d["output_shape"] == [2, 3, 3] and len(d["steps"]) == 18
    assert d["output_size"]["formula"] == "1 + (5 + 2*1 - 3) / 2 = 3"
    np.testing.assert_allclose(np.array(d["output"])[None], conv2d(x, w, b, 2, 1), rtol=0, atol=1e-12)
    steps, _ = convdemo.conv_steps(x, w, b, stride, pad)
    assert [s["text"] for s in d["steps"]] == [convdemo.format_step(s) for s in steps]


@pytest.mark.parametrize("sizes", [
    {"size": 5, "depth": 3, "filters": 2, "kernel": 3, "stride": 1, "padding": 0, "dilation": 1},
    {"size": 7, "depth": 2, "filters": 3, "kernel": 3, "stride": 2, "padding": 2, "dilation": 2},
    {"size": 6, "depth": 1, "filters": 1, "kernel": 2, "stride": 3, "padding": 1, "dilation": 1},
    {"size": 9, "depth": 4, "filters": 4, "kernel": 5, "stride": 2, "padding": 0, "dilation": 1},
    {"size": 8, "depth": 1, "filters": 2, "kernel": 2, "stride": 1, "padding": 0, "dilation": 3},
])
def test_conv_numbers_equal_conv2d_and_torch(client, sizes):
    d = client.post("/api/conv", json={**sizes, "seed": 7}).json()
    x, w, b, s = _conv_reference(d)
    expected = conv2d(x, w, b, s["stride"], s["padding"], s["dilation"])
    out = np.array(d["output"])[None]
    assert list(out.shape[1:]) == d["output_shape"]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out, torch_conv(x, w, b, s["stride"], s["padding"], s["dilation"]),
                               rtol=0, atol=1e-9)
    xpad = np.array(d["x_padded"])
    span = len(d["taps"])
    spread = np.array(d["weight_spread"])
    for st in d["steps"]:           # every window, product and sum as the page shows them
        r0, c0 = st["origin"]
        window = np.array(st["window"])
        np.testing.assert_array_equal(window, xpad[:, r0:r0 + span, c0:c0 + span])
        np.testing.assert_allclose(np.array(st["products"]), window * spread[st["o"]])
        assert st["value"] == pytest.approx(sum(st["channel_sums"]) + st["bias"])
        assert st["value"] == pytest.approx(out[0, st["o"], st["y"], st["x"]])


def test_conv_with_typed_numbers(client):
    x = np.arange(2 * 4 * 4, dtype=float).reshape(2, 4, 4) - 10.5
    w = np.full((1, 2, 3, 3), 0.5)
    w[0, 1, 1, 1] = -3
    r = client.post("/api/conv", json={"size": 4, "depth": 2, "filters": 1, "kernel": 3, "stride": 1,
                                       "padding": 1, "x": x.tolist(), "weight": w.tolist(), "bias": [2.25]})
    d = r.json()
    np.testing.assert_allclose(np.array(d["output"])[None],
                               conv2d(x[None], w, np.array([2.25]), 1, 1), atol=1e-12)


def test_conv_random_values_follow_the_seed(client):
    a = client.post("/api/conv", json={"seed": 1}).json()
    b = client.post("/api/conv", json={"seed": 1}).json()
    c = client.post("/api/conv", json={"seed": 2}).json()
    assert a["x"] == b["x"] and a["x"] != c["x"]


@pytest.mark.parametrize("body, status, words", [
    ({"size": 17}, 400, ["size", "1 to 16"]),
    ({"size": 0}, 400, ["size"]),
    ({"depth": 5}, 400, ["depth"]),
    ({"filters": 99999}, 400, ["filters"]),
    ({"kernel": 9}, 400, ["kernel"]),
    ({"stride": 0}, 400, ["stride"]),
    ({"padding": -1}, 400, ["padding"]),
    ({"dilation": 4}, 400, ["dilation"]),
    ({"stride": 1.5}, 400, ["stride"]),
    ({"stride": "two"}, 400, ["stride"]),
    ({"stride": True}, 400, ["stride"]),
    ({"size": 16, "padding": 1}, 422, ["padded input", "16x16"]),
    ({"size": 3, "kernel": 7, "padding": 0}, 422, ["larger than the padded input"]),
    ({"size": 4, "kernel": 3, "padding": 0, "dilation": 3}, 422, ["dilated"]),
    ({"size": 16, "padding": 0, "kernel": 1, "stride": 1, "depth": 4, "filters": 4}, 200, []),
    ({"size": 14, "padding": 1, "kernel": 7, "stride": 1, "depth": 4, "filters": 4}, 422, ["numbers"]),
    ({"seed": -1}, 400, ["seed"]),
    ({"seed": "abc"}, 400, ["seed"]),
    ({"colour": 1}, 400, ["unknown field"]),
    ({"x": [[1, 2]]}, 400, ["x", "shape"]),
    ({"x": "nope"}, 400, ["x"]),
    ({"weight": [[[[1e300] * 3] * 3] * 3] * 2}, 422, ["limited"]),
    ({"bias": [float("nan"), 1]}, 400, ["bias"]),
])
def test_conv_bad_requests(client, body, status, words):
    r = client.post("/api/conv", content=json.dumps(body, allow_nan=True).encode())
    if status == 200:
        assert r.status_code == 200
    else:
        assert_json_error(r, status, *words)


def test_conv_output_size_note_when_the_stride_does_not_fit(client):
    d = client.post("/api/conv", json={"size": 6, "depth": 1, "filters": 1, "kernel": 3,
                                       "stride": 2, "padding": 0}).json()
    assert d["output_size"]["formula"] == "1 + (6 + 2*0 - 3) / 2 = 2.5, rounded down to 2"
    assert not d["output_size"]["exact"] and "never under the filter" in d["output_size"]["note"]


# -- kernels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(convdemo.classic_kernels()))
def test_kernels_on_the_builtin_picture_equal_conv2d(client, name):
    d = client.get(f"/api/kernels?image=sample&kernel={name}&border=zeros").json()
    img = convdemo.sample_image(128).astype(np.float64)
    k = convdemo.classic_kernels()[name]
    expected = conv2d(img[None, None], k[None, None], None, 1, 1)[0, 0]
    np.testing.assert_allclose(np.array(d["output"]), expected, atol=2e-3)
    np.testing.assert_array_equal(np.array(d["input"]), img)
    assert d["scale"]["min"] == -d["scale"]["max"] and d["scale"]["max"] >= 255
    assert "one colour scale for both" in d["scale"]["explain"]


def test_kernels_typed_5x5_and_edge_border(client):
    vals = ",".join(["1"] * 25)
    d = client.get(f"/api/kernels?kernel=custom&values={vals}&border=edge").json()
    img = convdemo.sample_image(128).astype(np.float64)
    padded = np.pad(img, 2, mode="edge")
    expected = conv2d(padded[None, None], np.ones((1, 1, 5, 5)), None, 1, 0)[0, 0]
    np.testing.assert_allclose(np.array(d["output"]), expected, atol=2e-3)
    assert d["kernel"]["sum"] == 25


def test_kernels_on_an_uploaded_picture(client):
    pic = (np.arange(300 * 200) % 251).reshape(300, 200).astype(np.uint8)
    r = client.post("/api/kernels?kernel=identity&border=zeros", content=png_bytes(pic),
                    headers={"Content-Type": "image/png"})
    d = r.json()
    assert (d["height"], d["width"]) == (160, 107)       # long side shrunk to 160
    np.testing.assert_allclose(np.array(d["output"]), np.array(d["input"]), atol=1e-3)


@pytest.mark.parametrize("query, status, words", [
    ("kernel=nope", 400, ["unknown kernel"]),
    ("kernel=custom", 400, ["values"]),
    ("kernel=custom&values=1,2,3", 400, ["3x3", "5x5"]),
    ("kernel=custom&values=a,b,c,d,e,f,g,h,i", 400, ["numbers"]),
    ("kernel=custom&values=1e9,0,0,0,0,0,0,0,0", 400, ["within"]),
    ("kernel=custom&values=nan,0,0,0,0,0,0,0,0", 400, ["finite"]),
    ("kernel=edge&border=wrap", 400, ["border"]),
    ("image=/etc/passwd", 400, ["sample"]),
])
def test_kernels_bad_requests(client, query, status, words):
    assert_json_error(client.get(f"/api/kernels?{query}"), status, *words)


def test_kernels_bad_image_upload(client):
    r = client.post("/api/kernels", content=b"GIF89a this is not really an image" * 10)
    assert_json_error(r, 422, "uploaded file")
    assert "/tmp" not in r.json()["error"] and "numcnn-upload" not in r.json()["error"]
    assert_json_error(client.post("/api/kernels", content=b""), 400, "empty")


def test_decompression_bomb_is_refused_from_its_header(client):
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")      # 6000x6000: 36 M pixels, a few KB
    assert len(buf.getvalue()) < MAX_UPLOAD
    assert_json_error(client.post("/api/kernels", content=buf.getvalue()), 413, "pixels")


# -- models ------------------------------------------------------------------------------------
def test_model_list_comes_from_run_folders_and_model_flag(trained, tmp_path):
    root, model, _ = trained
    extra = tmp_path / "elsewhere" / "mine.safetensors"
    extra.parent.mkdir()
    model.save(extra)
    c = make_client(root, model_path=extra)
    models = c.get("/api/models").json()["models"]
    names = {m["name"]: m["source"] for m in models}
    assert names == {"mine.safetensors": "--model",
                     os.path.join("runs", "digits-run", "model.safetensors"): "run folder"}
    assert all("/" not in m["id"] and ".." not in m["id"] for m in models)


def test_model_list_does_not_follow_links_or_leave_the_root(trained, tmp_path):
    root, model, _ = trained
    outside = tmp_path / "outside-run"
    outside.mkdir()
    model.save(outside / "model.safetensors")
    (outside / "history.json").write_text("{}")
    link = root / "linked-run"
    link.symlink_to(outside, target_is_directory=True)
    try:
        c = make_client(root)
        names = [m["name"] for m in c.get("/api/models").json()["models"]]
        assert not any("linked-run" in n or "outside" in n for n in names)
    finally:
        link.unlink()


@pytest.mark.parametrize("mid", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                                 "runs/digits-run/model.safetensors", "m0000000000"])
def test_model_ids_that_are_paths_are_404(mclient, mid):
    for path in (f"/api/models/{mid}", f"/api/models/{mid}/predict?index=0"):
        r = mclient.get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


def test_model_info_summary_and_filters(mclient, trained):
    _, model, _ = trained
    d = mclient.get(f"/api/models/{model_id(mclient)}").json()
    assert d["input_shape"] == [1, 8, 8] and d["classes"] == [str(i) for i in range(10)]
    assert d["test_dataset"] == "digits" and d["value_max"] == 16
    s = d["summary"]
    assert s["text"] == model.summary()
    shapes = [list(shape) for _, shape in model.shapes()]
    assert [r["output_shape"] for r in s["layers"]] == shapes
    assert s["total_params"] == sum(int(np.prod(p.shape)) for p in model.parameters())
    assert [r["params"] for r in s["layers"]] == [sum(int(np.prod(p.shape)) for p in l.parameters())
                                                  for l in model.layers]
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    assert len(d["filters"]) == len(convs)
    for f, conv in zip(d["filters"], convs):
        np.testing.assert_array_equal(lookinside.unpack(f["data"]), conv.weight.value)


def test_predict_test_image_gives_probabilities_activations_and_saliency(mclient, trained):
    _, model, (xte, yte) = trained
    mid = model_id(mclient)
    for index in (0, 5, 17):
        d = mclient.get(f"/api/models/{mid}/predict?index={index}").json()
        probs = model.predict(xte[index:index + 1])[0]
        np.testing.assert_allclose(d["probabilities"], probs, rtol=1e-5, atol=1e-6)
        assert d["prediction"] == int(probs.argmax()) and d["true_label"] == int(yte[index])
        x = model.prepare_input(xte[index:index + 1])
        np.testing.assert_allclose(lookinside.unpack(d["input"]), x[0], rtol=1e-6)
        # every layer (but Flatten) in order, each equal to running the layers by hand
        a = x
        outs = []
        for layer in model.layers:
            a = layer.forward(a, training=False)
            if type(layer).__name__ != "Flatten":
                outs.append(a[0])
        assert len(d["layers"]) == len(outs)
        for got, want in zip(d["layers"], outs):
            np.testing.assert_allclose(lookinside.unpack(got["data"]), want, rtol=1e-5, atol=1e-5)
        assert [l["kind"] for l in d["layers"]][:5] == ["conv", "map", "conv", "map", "pool"]
        # saliency: |dL/dx| for L = -log p[predicted], by central differences in float64
        sal = lookinside.unpack(d["saliency"])
        assert sal.shape == (8, 8)
        m64 = model.__class__.from_config(model.config(), normalization=model.normalization)
        for l64, l in zip(m64.layers, model.layers):
            for p64, p in zip(l64.parameters(), l.parameters()):
                p64.value = p.value.astype(np.float64)
        m64.eval()
        x64 = x.astype(np.float64)
        k = int(probs.argmax())
        from numcnn.functional import log_softmax
        loss = lambda z: -float(log_softmax(m64.forward(z), axis=1)[0, k])
        for (i, j) in [(2, 3), (4, 4), (6, 1)]:
            e = np.zeros_like(x64)
            e[0, 0, i, j] = 1e-5
            fd = (loss(x64 + e) - loss(x64 - e)) / 2e-5
            assert sal[i, j] == pytest.approx(abs(fd), rel=2e-3, abs=1e-5)


def test_predict_uploaded_drawing_of_a_test_digit(mclient, trained):
    """A test digit drawn big (upscaled 32x, 0..255) comes back as the model's class for it."""
    _, model, (xte, yte) = trained
    mid = model_id(mclient)
    probs = model.predict(xte[:40])
    right = [i for i in range(40) if probs[i].argmax() == yte[i]]
    for i in right[:4]:
        big = np.kron(xte[i, 0].astype(np.float64) * 255 / 16, np.ones((32, 32))).astype(np.uint8)
        for invert, pic in (("auto", big), ("auto", 255 - big), ("yes", 255 - big)):
            r = mclient.post(f"/api/models/{mid}/predict?fit=0&invert={invert}", content=png_bytes(pic))
            d = r.json()
            assert d["prediction"] == int(yte[i])
            raw = lookinside.unpack(d["input_raw"])
            assert raw.max() <= 16                      # scaled to the digits' 0..16
            assert np.abs(raw[0] - xte[i, 0]).max() <= 1
        assert mclient.post(f"/api/models/{mid}/predict?fit=1", content=png_bytes(big)).status_code == 200


@pytest.mark.parametrize("query, body, status, words", [
    ("fit=maybe", b"x", 400, ["fit"]),
    ("invert=sideways", None, 400, ["invert"]),
    ("", b"not an image at all", 422, ["uploaded file"]),
    ("", b"", 400, ["empty"]),
])
def test_predict_bad_uploads(mclient, query, body, status, words):
    mid = model_id(mclient)
    if body is None:
        body = png_bytes(np.zeros((8, 8)))
    assert_json_error(mclient.post(f"/api/models/{mid}/predict?{query}", content=body), status, *words)


@pytest.mark.parametrize("query, status, words", [
    ("index=360", 400, ["below 360"]), ("index=-1", 400, ["index"]), ("index=x", 400, ["whole number"]),
])
def test_predict_bad_test_index(mclient, query, status, words):
    assert_json_error(mclient.get(f"/api/models/{model_id(mclient)}/predict?{query}"), status, *words)


def test_a_damaged_model_file_is_a_422(tmp_path):
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "history.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    c = make_client(tmp_path)
    mid = model_id(c)
    assert_json_error(c.get(f"/api/models/{mid}"), 422, "cannot load")


def test_test_images(mclient):
    d = mclient.get("/api/datasets/digits/test-images?start=10&count=5").json()
    from numcnn import datasets
    (_, _), (xte, yte) = datasets.load("digits")
    np.testing.assert_array_equal(lookinside.unpack(d["images"]), xte[10:15])
    assert d["labels"] == yte[10:15].tolist() and d["total"] == len(xte)
    assert_json_error(mclient.get("/api/datasets/digits/test-images?count=65"), 400, "count")
    assert_json_error(mclient.get("/api/datasets/cifar10/test-images"), 400, "unknown dataset")
    assert_json_error(mclient.get("/api/datasets/..%2F..%2Fetc/test-images"), 404)


def test_preset_summary(client):
    from numcnn import models
    d = client.get("/api/presets/lenet5/summary?dataset=mnist-5k").json()
    m = models.lenet5()
    assert d["summary"]["text"] == m.summary()
    assert [r["flops"] for r in d["summary"]["layers"]][0] == m.layers[0].flops((1, 28, 28))
    assert_json_error(client.get("/api/presets/resnet/summary"), 404, "unknown preset")
    assert_json_error(client.get("/api/presets/lenet5/summary?dataset=imagenet"), 400, "unknown dataset")
    assert_json_error(client.get("/api/presets/lenet5/summary?dataset=digits"), 422, "lenet5")


# -- training ----------------------------------------------------------------------------------
def _wait(c, states=("done", "stopped", "failed"), timeout=120, until=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = c.get("/api/train").json()
        if s["state"] in states or (until and until(s)):
            return s
        time.sleep(0.1)
    raise AssertionError(f"training did not reach {states}: {s}")


@pytest.mark.parametrize("body, words", [
    ({"dataset": "imagenet"}, ["unknown dataset"]),
    ({"model": "resnet"}, ["unknown preset"]),
    ({"epochs": 0}, ["epochs"]), ({"epochs": 10 ** 6}, ["epochs"]), ({"epochs": "5"}, ["epochs"]),
    ({"batch_size": 0}, ["batch_size"]), ({"batch_size": 4096}, ["batch_size"]),
    ({"optimizer": "lbfgs"}, ["optimizer"]),
    ({"lr": -1}, ["lr"]), ({"lr": 100}, ["lr"]), ({"lr": "fast"}, ["lr"]),
    ({"seed": -3}, ["seed"]),
    ({"out": "/tmp/x"}, ["unknown field"]),
])
def test_train_bad_requests(client, body, words):
    assert_json_error(client.post("/api/train", json=body), 400, *words)


def test_train_preset_that_does_not_fit_the_data(client):
    assert_json_error(client.post("/api/train", json={"dataset": "digits", "model": "lenet5"}), 422, "lenet5")


def test_train_run_writes_a_run_folder_and_publishes_the_model(tmp_path):
    c = make_client(tmp_path)
    assert c.get("/api/train").json() == {"state": "idle"}
    assert_json_error(c.post("/api/train/stop"), 409, "no training run")
    r = c.post("/api/train", json={"dataset": "digits", "model": "digits-cnn", "epochs": 2,
                                   "batch_size": 64})
    assert r.status_code == 202
    assert_json_error(c.post("/api/train", json={"dataset": "digits"}), 409, "one at a time")
    s = _wait(c)
    assert s["state"] == "done", s
    run = tmp_path / s["run_folder"]
    assert run.parent == tmp_path / "runs"
    for f in ("model.safetensors", "best.safetensors", "checkpoint.safetensors", "history.json",
              "evaluation.json", "history.png", "confusion.png", "filters.png", "feature_maps.png"):
        assert (run / f).is_file(), f
    assert s["history"]["epoch"] == [1, 2]
    assert json.loads((run / "history.json").read_text())["val_acc"] == s["history"]["val_acc"]
    res = s["result"]
    assert np.array(res["confusion"]).sum() == 360
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert res["accuracy"] == evaluation["accuracy"]
    wrong = np.array(res["confusion"]).sum() - np.trace(np.array(res["confusion"]))
    assert len(res["misclassified"]) == min(24, wrong)
    assert all(m["label"] != m["pred"] for m in res["misclassified"])
    assert [f["epoch"] for f in s["filters"]] == [0, 1, 2]
    assert lookinside.unpack(s["filters"][0]["data"]).shape == (16, 1, 3, 3)
    # the model is on the model list, and answers
    ids = [m["id"] for m in c.get("/api/models").json()["models"]]
    assert s["model_id"] in ids and len(ids) == 2          # its file and best.safetensors
    assert c.get(f"/api/models/{s['model_id']}/predict?index=0").status_code == 200
    # the stream of a finished run sends its final status and ends
    with c.stream("GET", "/api/train/events") as ev:
        assert ev.headers["content-type"].startswith("text/event-stream")
        text = "".join(ev.iter_text())
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events and events[-1]["state"] == "done"


def test_train_stop_and_resume(tmp_path):
    c = make_client(tmp_path)
    r = c.post("/api/train", json={"dataset": "digits", "model": "digits-cnn", "epochs": 40,
                                   "batch_size": 16})
    assert r.status_code == 202
    _wait(c, (), until=lambda s: len(s["history"].get("epoch", [])) >= 1)
    assert c.post("/api/train/stop").json() == {"state": "stopping"}
    s = _wait(c)
    assert s["state"] == "stopped" and s["can_resume"]
    run = tmp_path / s["run_folder"]
    done = json.loads((run / "history.json").read_text())["epoch"]
    assert len(done) >= 1 and (run / "checkpoint.safetensors").is_file()
    assert not (run / "model.safetensors").exists()         # as after Ctrl-C in `numcnn train`
    assert s["model_id"] is not None                        # the stopped model, in memory
    r = c.post("/api/train", json={"resume": True, "epochs": len(done) + 1})
    assert r.status_code == 202, r.text
    s = _wait(c)
    assert s["state"] == "done" and s["run_folder"] == str(run.relative_to(tmp_path))
    assert s["history"]["epoch"] == list(range(1, len(done) + 2))
    assert (run / "model.safetensors").is_file()
    assert_json_error(c.post("/api/train", json={"resume": True}), 409, "no stopped run")


def test_predictions_answer_while_training(trained):
    """A prediction is answered while a run is going (not after it); not a timing test."""
    root, _, _ = trained
    c = make_client(root)
    mid = model_id(c)
    r = c.post("/api/train", json={"dataset": "digits", "model": "digits-cnn", "epochs": 30,
                                   "batch_size": 16})
    assert r.status_code == 202
    try:
        _wait(c, (), until=lambda s: s["state"] == "running" and s["progress"]["batch"] > 0)
        for i in range(5):
            assert c.get(f"/api/models/{mid}/predict?index={i}").status_code == 200
            assert c.post("/api/conv", json={}).status_code == 200
        assert c.get("/api/train").json()["state"] == "running"
    finally:
        c.post("/api/train/stop")
        _wait(c)


# -- the command -------------------------------------------------------------------------------
def test_numcnn_serve_command_starts_on_loopback_and_stops_on_ctrl_c(trained):
    import signal
    import subprocess
    import urllib.request
    root = trained[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.Popen([sys.executable, "-m", "numcnn.cli", "serve", "--port", "0"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("numcnn serve: http://127.0.0.1:") and "token" not in line, line
        url = line.split(": ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200 and b"Watch a convolution" in r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(url + "api/models", timeout=10) as r:
            names = [m["name"] for m in json.loads(r.read())["models"]]
        # the fixture's model, and (timing permitting) runs earlier tests started and stopped
        assert os.path.join("runs", "digits-run", "model.safetensors") in names
        assert all(n.startswith("runs" + os.sep) for n in names)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_numcnn_serve_refuses_a_missing_model_file(tmp_path, capsys):
    from numcnn.cli import main
    assert main(["serve", "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_train_your_own_architecture(tmp_path):
    c = make_client(tmp_path)
    arch = {"input_shape": [1, 8, 8], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": 2}, {"type": "Flatten"},
        {"type": "Dense", "in_features": 64, "out_features": 10}]}
    r = c.post("/api/train", json={"dataset": "digits", "model": "architecture", "architecture": arch,
                                   "epochs": 1})
    assert r.status_code == 202, r.text
    s = _wait(c)
    assert s["state"] == "done", s
    run = tmp_path / s["run_folder"]
    assert json.loads((run / "architecture.json").read_text()) == arch
    from numcnn.io import load_model
    assert load_model(run / "model.safetensors").config()["layers"][0]["out_channels"] == 4
    # refused: no architecture, one that does not fit the data, one that is not a model at all
    assert_json_error(c.post("/api/train", json={"dataset": "digits", "model": "architecture"}),
                      400, "architecture")
    bad = {**arch, "layers": arch["layers"][:-1] + [{"type": "Dense", "in_features": 64, "out_features": 3}]}
    r = c.post("/api/train", json={"dataset": "digits", "model": "architecture", "architecture": bad})
    assert_json_error(r, 422, "3 outputs", "architecture.json")
    assert str(tmp_path) not in r.json()["error"]
    r = c.post("/api/train", json={"dataset": "digits", "model": "architecture",
                                   "architecture": {"layers": [{"type": "Nope"}]}})
    assert_json_error(r, 422, "Nope")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.name]   # no leftovers


def test_fit_drawing_brings_an_off_centre_digit_back_to_mnist_geometry():
    """An MNIST digit drawn 10x bigger somewhere on a large pad comes back the way MNIST makes
    its digits: fitted in a 20x20 box, centre of mass at the centre, close to the original."""
    from numcnn import datasets
    from numcnn.web.model_store import fit_drawing
    _, (xte, _) = datasets.load("mnist-5k")
    corr = []
    for i in range(20):
        pad = np.zeros((400, 400), np.uint8)
        pad[30:310, 95:375] = np.kron(xte[i, 0], np.ones((10, 10), np.uint8))
        out = fit_drawing(pad, (28, 28), 0.15).astype(float)
        ys, xs = np.nonzero(out > 24)
        assert 17 <= max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20
        cy = (out.sum(axis=1) * np.arange(28)).sum() / out.sum()
        cx = (out.sum(axis=0) * np.arange(28)).sum() / out.sum()
        assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
        corr.append(np.corrcoef(out.ravel(), xte[i, 0].ravel())[0, 1])
    assert np.median(corr) > 0.7, corr       # resampled once more: not pixel for pixel


def test_only_a_few_model_files_stay_loaded(trained, tmp_path, monkeypatch):
    from numcnn.web import model_store
    monkeypatch.setattr(model_store, "LOADED_LIMIT", 2)
    _, model, _ = trained
    for i in range(4):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        model.save(run / "model.safetensors")
        (run / "history.json").write_text("{}")
    c = make_client(tmp_path)
    ids = [m["id"] for m in c.get("/api/models").json()["models"]]
    for mid in ids + ids[:1]:
        assert c.get(f"/api/models/{mid}/predict?index=3").status_code == 200
    store = c.app.state.numcnn.store
    loaded = [e.id for e in store._entries.values() if e.model is not None]
    assert sorted(loaded) == sorted([ids[-1], ids[0]])


def test_graph_model_activations_branch_by_branch(tmp_path):
    """A model with a Residual block and a Concat: every layer on every path is reported under
    its nested name, then the block's output, each equal to running the paths by hand."""
    from numcnn import Sequential
    from numcnn.layers import (BatchNorm2D, Concat, Conv2D, Dense, Flatten, Identity, MaxPool2D,
                               ReLU, Residual)
    from numcnn import datasets
    model = Sequential([Conv2D(1, 8, 3, padding=1, rng=1), ReLU(),
                        Residual([Conv2D(8, 8, 3, padding=1, rng=2), BatchNorm2D(8), ReLU(),
                                  Conv2D(8, 8, 3, padding=1, rng=3)]), ReLU(),
                        Concat([Identity(), [Conv2D(8, 4, 1, rng=4), ReLU()]]), MaxPool2D(2),
                        Flatten(), Dense(12 * 4 * 4, 10, rng=5)], input_shape=(1, 8, 8))
    run = tmp_path / "runs" / "graph"
    run.mkdir(parents=True)
    model.save(run / "model.safetensors")
    (run / "history.json").write_text("{}")
    c = make_client(tmp_path)
    mid = model_id(c)
    d = c.get(f"/api/models/{mid}/predict?index=4").json()
    _, (xte, _) = datasets.load("digits")
    model.eval()
    x = model.prepare_input(xte[4:5])
    np.testing.assert_allclose(d["probabilities"], model.predict(xte[4:5])[0], rtol=1e-5, atol=1e-7)
    # by hand, path by path
    run_ = lambda layers, a: [a := l.forward(a, training=False) for l in layers]
    a0 = run_(model.layers[:2], x)
    res = model.layers[2]
    body = run_(res.body, a0[-1])
    block = body[-1] + a0[-1]
    relu3 = model.layers[3].forward(block, training=False)
    cat = model.layers[4]
    b0 = [cat.branches[0][0].forward(relu3, training=False)]
    b1 = run_(cat.branches[1], relu3)
    joined = np.concatenate([b0[-1], b1[-1]], axis=1)
    pooled = model.layers[5].forward(joined, training=False)
    want = {"0": a0[0], "1": a0[1], "2.body.0": body[0], "2.body.1": body[1], "2.body.2": body[2],
            "2.body.3": body[3], "2": block, "3": relu3, "4.branches.0.0": b0[0],
            "4.branches.1.0": b1[0], "4.branches.1.1": b1[1], "4": joined, "5": pooled}
    got = {l["path"]: l for l in d["layers"]}
    assert [l["path"] for l in d["layers"]] == list(want) + ["7"]
    for path, a in want.items():
        np.testing.assert_allclose(lookinside.unpack(got[path]["data"]), a[0], rtol=1e-5, atol=1e-5,
                                   err_msg=path)
    assert got["2"]["kind"] == got["4"]["kind"] == "block"
    assert got["2.body.0"]["depth"] == 1 and got["4.branches.1.1"]["depth"] == 1 and got["2"]["depth"] == 0
    info = c.get(f"/api/models/{mid}").json()
    assert [f["path"] for f in info["filters"]] == ["0", "2.body.0", "2.body.3", "4.branches.1.0"]
    rows = info["summary"]["layers"]
    assert [r["index"] for r in rows if r["depth"] == 1] == ["2.body.0", "2.body.1", "2.body.2",
                                                              "2.body.3", "4.branches.0.0",
                                                              "4.branches.1.0", "4.branches.1.1"]
    assert info["summary"]["total_params"] == sum(int(np.prod(p.shape)) for p in model.parameters())
    # saliency through the fork: |dL/dx| by central differences in float64
    from numcnn.functional import log_softmax
    sal = lookinside.unpack(d["saliency"])
    model.astype(np.float64)
    x64, k = x.astype(np.float64), d["prediction"]
    loss = lambda z: -float(log_softmax(model.forward(z, training=False), axis=1)[0, k])
    for i, j in [(3, 3), (5, 2)]:
        e = np.zeros_like(x64)
        e[0, 0, i, j] = 1e-6
        assert sal[i, j] == pytest.approx(abs(loss(x64 + e) - loss(x64 - e)) / 2e-6, rel=2e-3, abs=1e-6)
