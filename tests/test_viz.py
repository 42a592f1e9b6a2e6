"""Tests of numcnn.viz: the step-by-step convolution demo, its GIF, the kernel gallery and plots."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from numcnn import models, viz
from numcnn.errors import ConfigError, ShapeError
from numcnn.functional import conv2d
from numcnn.layers import Conv2D, Dense, Flatten, ReLU
from numcnn.model import Sequential
from numcnn.viz import convdemo

# The deck's filter W1 as the deck prints it: w1[:,:,c] is the 3x3 slice of channel c.
DECK_W1 = np.stack([np.array([[0, -1, 0], [1, 1, 0], [1, -1, 1]]),
                    np.array([[0, 1, -1], [-1, 1, 1], [1, 1, 1]]),
                    np.array([[1, -1, -1], [1, -1, 1], [1, 0, 0]])], axis=-1)   # (3, 3, C)


def hand_conv_value(x, weight, bias, stride, padding, o, y, x_):
    """One output value written out as the deck's sum over c, i, j (plain Python loops)."""
    _, c_count, h, w = x.shape
    _, _, kh, kw = weight.shape
    total = 0.0
    for c in range(c_count):
        for i in range(kh):
            for j in range(kw):
                r, s = y * stride[0] + i - padding[0], x_ * stride[1] + j - padding[1]
                if 0 <= r < h and 0 <= s < w:            # outside the image: zero padding
                    total += x[0, c, r, s] * weight[o, c, i, j]
    return total + bias[o]


def decode_gif(path):
    im = Image.open(path)
    frames = []
    for k in range(im.n_frames):
        im.seek(k)
        frames.append(np.asarray(im.convert("RGB")))
    return im, frames


# -- the deck example ----------------------------------------------------------------------------
def test_deck_example_has_the_decks_geometry_and_filter_w1():
    x, weight, bias, stride, padding = viz.deck_example()
    assert x.shape == (1, 3, 5, 5) and weight.shape == (2, 3, 3, 3)
    assert set(np.unique(x)) <= {0.0, 1.0, 2.0}
    assert (stride, padding) == (2, 1)
    for c in range(3):
        for i in range(3):
            for j in range(3):
                assert weight[0, c, i, j] == DECK_W1[i, j, c]
    assert bias.tolist() == [0.0, 1.0]
    assert np.array_equal(weight[1], np.round(weight[1])) and np.abs(weight[1]).max() <= 2
    x2 = viz.deck_example()[0]
    assert np.array_equal(x, x2)                       # seeded: the same every time


def test_conv_steps_deck_output_shape_order_and_matches_conv2d():
    x, weight, bias, stride, padding = viz.deck_example()
    steps, out = viz.conv_steps(x, weight, bias, stride, padding)
    assert out.shape == (1, 2, 3, 3)
    assert len(steps) == 18
    assert [(s.o, s.y, s.x) for s in steps] == [(o, y, x_) for o in range(2) for y in range(3)
                                                 for x_ in range(3)]
    np.testing.assert_array_equal(out, conv2d(x, weight, bias, stride, padding))
    for s in steps:
        assert out[0, s.o, s.y, s.x] == s.value


def test_conv_steps_each_deck_value_equals_the_hand_sum():
    x, weight, bias, stride, padding = viz.deck_example()
    steps, _ = viz.conv_steps(x, weight, bias, stride, padding)
    xpad = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    for s in steps:
        assert s.value == hand_conv_value(x, weight, bias, (2, 2), (1, 1), s.o, s.y, s.x)
        r0, c0 = s.origin
        assert (r0, c0) == (2 * s.y, 2 * s.x)
        np.testing.assert_array_equal(s.window, xpad[:, r0:r0 + 3, c0:c0 + 3])
        np.testing.assert_array_equal(s.kernel, weight[s.o])
        np.testing.assert_array_equal(s.products, s.window * s.kernel)
        np.testing.assert_array_equal(s.channel_sums, s.products.sum(axis=(1, 2)))
        assert s.total == s.products.sum() and s.value == s.total + s.bias == s.total + bias[s.o]


@pytest.mark.parametrize("seed", range(6))
def test_conv_steps_random_cases_match_conv2d(seed):
    rng = np.random.default_rng(seed)
    c, o = rng.integers(1, 4), rng.integers(1, 4)
    kh, kw = rng.integers(1, 4, size=2)
    stride = tuple(int(v) for v in rng.integers(1, 3, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
    h, w = rng.integers(max(kh, 2), 8), rng.integers(max(kw, 2), 8)
    x = rng.normal(size=(1, c, h, w))
    weight = rng.normal(size=(o, c, kh, kw))
    bias = None if seed % 3 == 0 else rng.normal(size=o)
    steps, out = viz.conv_steps(x, weight, bias, stride, padding)
    np.testing.assert_allclose(out, conv2d(x, weight, bias, stride, padding), rtol=1e-12, atol=1e-12)
    assert len(steps) == out.size
    b = np.zeros(o) if bias is None else bias
    s = steps[len(steps) // 2]
    assert s.value == pytest.approx(hand_conv_value(x, weight, b, stride, padding, s.o, s.y, s.x))


def test_conv_steps_refuses_bad_shapes():
    x, weight, bias, _, _ = viz.deck_example()
    with pytest.raises(ShapeError, match="channels"):
        viz.conv_steps(x, weight[:, :2], bias, 2, 1)
    with pytest.raises(ShapeError, match="one image"):
        viz.conv_steps(np.concatenate([x, x]), weight, bias, 2, 1)
    with pytest.raises(ShapeError, match="bias"):
        viz.conv_steps(x, weight, [1.0, 2.0, 3.0], 2, 1)
    with pytest.raises(ConfigError, match="stride"):
        viz.conv_steps(x, weight, bias, 0, 1)


def test_format_step_shows_the_sum_and_the_matrices():
    x, weight, bias, stride, padding = viz.deck_example()
    steps, _ = viz.conv_steps(x, weight, bias, stride, padding)
    s = steps[5]                                           # filter 0 at output (1, 2)
    text = viz.format_step(s)
    lines = text.splitlines()
    sums = " + ".join(f"({int(v)})" for v in s.channel_sums)
    assert lines[0] == f"o[0][1,2] = sum(window * w0) + b0 = {sums} + 0 = {int(s.value)}"
    assert "rows 2..4, columns 4..6" in lines[1]
    assert len(lines) == 3 + 3 * 3                         # header lines + C * kh matrix rows
    assert lines[4].count("[") == 3 and "*" in lines[4] and "=" in lines[4]
    assert lines[4].rstrip().endswith(str(int(s.channel_sums[0])))


# -- the animation -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deck_gif(tmp_path_factory):
    """The deck example's GIF, written once: (path, number of frames, decoded RGB frames)."""
    x, weight, bias, stride, padding = viz.deck_example()
    target = tmp_path_factory.mktemp("gif") / "deck.gif"
    path, n = viz.render_gif(x, weight, bias, stride, padding, target, frame_ms=400)
    assert path == str(target)
    return path, n, decode_gif(path)


def test_render_gif_deck_has_18_frames_of_the_expected_size(deck_gif):
    x, weight, bias, stride, padding = viz.deck_example()
    path, n, (im, frames) = deck_gif
    assert n == 18
    assert im.format == "GIF" and im.n_frames == 18
    rgb = viz.render_frames(x, weight, bias, stride, padding)
    assert len(rgb) == 18
    assert im.size == rgb[0].size
    assert all(f.size == rgb[0].size for f in rgb)
    w, h = im.size
    cell = convdemo.gif.CELL
    assert w >= (7 + 3 + 3 + 3 + 3) * cell and h >= 3 * 7 * cell     # 7x7 input, 3 filters...
    assert w <= 1400 and h <= 1400                                    # ...but still screen-sized
    assert tuple(frames[0][2, 2]) == (255, 255, 255)                  # white background


def test_render_gif_frames_highlight_the_value_being_computed(deck_gif):
    x, weight, bias, stride, padding = viz.deck_example()
    path, _, (_, frames) = deck_gif
    with Image.open(path) as im:
        assert im.info.get("loop") == 0 and im.info.get("duration") == 400     # loops forever
        im.seek(17)
        assert im.info.get("duration") == 4 * 400              # the finished output stays longer
    painter = convdemo.gif._Painter(x, weight, bias, stride, padding)
    green, done, todo = (convdemo.gif._COLORS[k] for k in ("out_now", "out", "out_todo"))
    for k, st in enumerate(painter.steps):
        cx, cy = painter._out_cell(st.o, st.y, st.x)
        assert tuple(frames[k][int(cy) + 5, int(cx) + 5]) == green        # the current value
        for j, other in enumerate(painter.steps):
            if j == k:
                continue
            ox, oy = painter._out_cell(other.o, other.y, other.x)
            expected = done if j < k else todo                             # filled in so far
            assert tuple(frames[k][int(oy) + 6, int(ox) + 6]) == expected
        r0, c0 = st.origin                       # the window's cells are highlighted in blue
        wx = painter.cols[0][0] + (c0 + 1) * painter.w_in + 3
        wy = painter._band_top(0) + painter.label_h + (r0 + 1) * painter.cell_h + 3
        assert tuple(frames[k][wy, wx]) == convdemo.gif._COLORS["window"]


def test_render_gif_refuses_a_bad_frame_time(tmp_path):
    x, weight, bias, stride, padding = viz.deck_example()
    with pytest.raises(ConfigError, match="frame_ms"):
        viz.render_gif(x, weight, bias, stride, padding, tmp_path / "a.gif", frame_ms=0)


# -- your own image ------------------------------------------------------------------------------
def test_user_demo_grey_image_gives_steps_output_and_gif(tmp_path):
    img = np.arange(25, dtype=np.uint8).reshape(5, 5)
    k = viz.classic_kernels()["sobel_x"]
    res = viz.user_demo(img, k, padding=1, bias=2, path=tmp_path / "mine.gif", frame_ms=100)
    expected = conv2d(img[None, None].astype(float), k[None, None], np.array([2.0]), 1, 1)
    np.testing.assert_allclose(res.output, expected)
    assert len(res.steps) == 25 and res.frames == 25
    assert Image.open(res.path).n_frames == 25
    assert res.output[0, 0, 2, 2] == 8 + 2                 # a ramp of slope 1: (1+2+1)*2 + bias
    assert res.text().count("o[0][") == 25


def test_user_demo_rgb_image_and_channel_kernels():
    img = np.random.default_rng(0).integers(0, 256, size=(3, 4, 6)).astype(np.uint8)
    k = np.stack([viz.classic_kernels()["box_blur"]] * 3)
    res = viz.user_demo(img, k, stride=(1, 2))
    assert res.output.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(res.output, conv2d(img[None].astype(float), k[None], None, (1, 2), 0))
    assert res.path is None and res.frames == 0


def test_user_demo_inputs_are_ready_for_conv_steps():
    x, weight, bias, stride, padding = viz.user_demo_inputs(np.ones((4, 5), np.uint8),
                                                           [[1, 0], [0, -1]], 2, 1, 0.5)
    assert x.shape == (1, 1, 4, 5) and x.dtype == np.float64
    assert weight.shape == (1, 1, 2, 2) and bias.tolist() == [0.5]
    assert (stride, padding) == ((2, 2), (1, 1))
    _, out = viz.conv_steps(x, weight, bias, stride, padding)
    np.testing.assert_allclose(out, conv2d(x, weight, bias, stride, padding))


def test_user_demo_refuses_images_too_big_to_animate():
    with pytest.raises(ConfigError, match=r"too big to animate.*resize"):
        viz.user_demo(np.zeros((17, 10)), np.ones((3, 3)))
    with pytest.raises(ConfigError, match="18x18"):
        viz.user_demo(np.zeros((16, 16)), np.ones((3, 3)), padding=1)
    viz.user_demo(np.zeros((14, 14)), np.ones((3, 3)), padding=1)           # 16x16: fine


def test_user_demo_refuses_kernels_whose_channels_dont_match():
    with pytest.raises(ShapeError, match="1 channel, but the image has 3"):
        viz.user_demo(np.zeros((3, 6, 6)), np.ones((3, 3)))
    with pytest.raises(ShapeError, match="2 channels"):
        viz.user_demo(np.zeros((3, 6, 6)), np.ones((2, 3, 3)))
    with pytest.raises(ShapeError, match="larger than the padded image"):
        viz.user_demo(np.zeros((2, 2)), np.ones((3, 3)))
    with pytest.raises(ShapeError):
        viz.user_demo(np.zeros((1, 1, 4, 4)), np.ones((3, 3)))


# -- classic kernels -----------------------------------------------------------------------------
def test_classic_kernels_are_the_textbook_ones():
    k = viz.classic_kernels()
    assert set(k) == {"identity", "edge", "sobel_x", "sobel_y", "sharpen", "box_blur",
                      "gaussian_blur", "emboss"}
    assert all(v.shape == (3, 3) for v in k.values())
    for name in ("identity", "sharpen", "box_blur", "gaussian_blur", "emboss"):
        assert k[name].sum() == pytest.approx(1.0)         # keep the overall brightness
    for name in ("edge", "sobel_x", "sobel_y"):
        assert k[name].sum() == 0                           # flat areas -> 0


def test_identity_kernel_returns_the_image_grey_and_rgb():
    grey = viz.sample_image(16)
    rgb = viz.sample_image(16, rgb=True)
    out = viz.apply_kernels(grey)
    np.testing.assert_array_equal(out["identity"], grey.astype(float))
    assert all(v.shape == grey.shape for v in out.values())
    np.testing.assert_array_equal(viz.apply_kernels(rgb)["identity"], rgb.astype(float))
    hwc = rgb.transpose(1, 2, 0)                            # numpy.asarray(PIL image) layout
    np.testing.assert_array_equal(viz.apply_kernels(hwc)["identity"], hwc.astype(float))


def test_blur_and_laplacian_edge_detect_of_a_constant_image():
    img = np.full((7, 9), 50, dtype=np.uint8)
    out = viz.apply_kernels(img)
    np.testing.assert_allclose(out["box_blur"][1:-1, 1:-1], 50.0)
    np.testing.assert_allclose(out["gaussian_blur"][1:-1, 1:-1], 50.0)
    np.testing.assert_array_equal(out["edge"][1:-1, 1:-1], 0.0)
    assert out["box_blur"][0, 0] == pytest.approx(50 * 4 / 9)   # zero padding: 4 of 9 pixels
    edge = viz.apply_kernels(img, border="edge")
    np.testing.assert_allclose(edge["box_blur"], 50.0)
    np.testing.assert_allclose(edge["edge"], 0.0, atol=1e-12)


def test_sobel_of_a_ramp_and_rgb_channels_filtered_separately():
    ramp = np.tile(np.arange(6, dtype=float) * 3, (5, 1))       # brightness + 3 per column
    out = viz.apply_kernels(ramp, {"sx": viz.classic_kernels()["sobel_x"],
                                   "sy": viz.classic_kernels()["sobel_y"]})
    np.testing.assert_allclose(out["sx"][1:-1, 1:-1], 4 * 2 * 3)
    np.testing.assert_allclose(out["sy"][1:-1, 1:-1], 0.0)
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 6, 7)).astype(np.uint8)
    both = viz.apply_kernels(rgb)
    for c in range(3):
        alone = viz.apply_kernels(rgb[c])
        for name in both:
            np.testing.assert_allclose(both[name][c], alone[name])


def test_apply_kernels_reads_a_pil_style_rgb_array_even_when_it_is_4_rows_high():
    """(4, 6, 3) is a 4x6 RGB picture as numpy.asarray(PIL image) gives it, not 4 channels of
    6x3: each channel is blurred on its own, and the result keeps the input's layout."""
    r = np.random.default_rng(0)
    rgb = r.integers(0, 256, (4, 6, 3)).astype(np.float64)
    box = np.ones((3, 3)) / 9
    out = convdemo.apply_kernels(rgb, {"box": box}, border="edge")["box"]
    assert out.shape == (4, 6, 3)
    padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    want = sum(padded[i:i + 4, j:j + 6] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_a_negative_bias_is_printed_as_a_subtraction():
    x, w, b, stride, padding = convdemo.user_demo_inputs(np.ones((3, 3)), np.ones((2, 2)), bias=-1.5)
    steps, out = convdemo.conv_steps(x, w, b, stride, padding)
    line = convdemo.format_step(steps[0]).splitlines()[0]
    assert line.endswith("= (4) - 1.5 = 2.5") and out[0, 0, 0, 0] == 2.5


def test_plot_history_of_one_epoch_has_one_whole_epoch_tick(tmp_path, monkeypatch):
    seen = []
    import matplotlib.axes
    real = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks",
                        lambda self, ticks, *a, **k: (seen.append(list(ticks)), real(self, ticks, *a, **k))[1])
    viz.plots.plot_history({"epoch": [1], "train_loss": [2.0], "train_acc": [0.3]}, tmp_path / "h.png")
    assert seen and all(t == [1.0] for t in seen)


def test_plot_confusion_at_a_high_dpi_shrinks_its_default_size_to_fit(tmp_path):
    path = viz.plots.plot_confusion(np.eye(20, dtype=int) * 3, path=tmp_path / "c.png", dpi=600)
    with Image.open(path) as png:
        assert max(png.size) <= 8000 and max(png.size) > 7000


def test_apply_kernels_refuses_even_kernels():
    with pytest.raises(ShapeError, match="odd"):
        viz.apply_kernels(np.zeros((5, 5)), {"even": np.ones((2, 2))})


def test_kernel_gallery_png_has_the_expected_size(tmp_path):
    path = viz.kernel_gallery(viz.sample_image(32), tmp_path / "g.png", figsize=(9, 10), dpi=50)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (450, 500)
    rgb = viz.kernel_gallery(viz.sample_image(32, rgb=True), tmp_path / "rgb.png", dpi=40)
    with Image.open(rgb) as im:
        assert im.size == (round(3 * 3.4 * 40), round((3 * 3.6 + 0.4) * 40))


# -- plots ---------------------------------------------------------------------------------------
def png_size(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


def test_plot_history_with_missing_and_none_validation(tmp_path):
    h = {"epoch": [1, 2, 3, 4], "train_loss": [2.0, 1.0, 0.7, 0.5],
         "train_acc": [0.3, 0.6, 0.8, 0.9], "val_loss": [1.9, None, 0.9, None],
         "val_acc": [0.35, None, 0.75, None], "lr": [0.1, 0.1, 0.01, 0.01]}
    assert png_size(viz.plot_history(h, tmp_path / "h.png", figsize=(8, 3), dpi=50)) == (400, 150)
    only_train = {"train_loss": [1.0, 0.5], "train_acc": [0.5, 0.7], "val_loss": [], "lr": None}
    assert png_size(viz.plot_history(only_train, tmp_path / "t.png")) == (1100, 420)
    with pytest.raises(ShapeError, match="one value per epoch"):
        viz.plot_history({"epoch": [1, 2], "train_loss": [1.0]}, tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="nothing to plot"):
        viz.plot_history({"lr": [0.1], "train_loss": []}, tmp_path / "bad.png")


def test_plot_confusion_png(tmp_path):
    m = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    path = viz.plot_confusion(m, ["cat", "dog", "bird"], tmp_path / "c.png", figsize=(5, 4), dpi=60)
    assert png_size(path) == (300, 240)
    assert png_size(viz.plot_confusion(np.eye(12) * 3, None, tmp_path / "c12.png", dpi=20)) == \
        (round((0.55 * 12 + 2.5) * 20),) * 2
    with pytest.raises(ShapeError):
        viz.plot_confusion(np.ones((2, 3)), None, tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="class names"):
        viz.plot_confusion(m, ["a", "b"], tmp_path / "bad.png")


def test_plot_confusion_1000_classes_is_bounded_and_quick(tmp_path):
    # the default side used to be 0.55 * 1000 + 2.5 = 552.5 inches (55250 px at dpi 100): the
    # drawing ran out of memory; now it is capped at 20 inches = 2000 px, with one tick label
    # every ceil(1000 / 40) = 25 classes and no cell counts
    m = np.eye(1000, dtype=int) * 3
    start = time.perf_counter()
    path = viz.plot_confusion(m, None, tmp_path / "c1000.png")
    seconds = time.perf_counter() - start
    assert png_size(path) == (2000, 2000)
    assert seconds < 20, f"a 1000-class confusion matrix took {seconds:.1f} s to draw"
    # the cap starts where 0.55 K + 2.5 reaches 20 inches: 31 classes are 19.55, 40 are 20
    assert png_size(viz.plot_confusion(np.eye(31), None, tmp_path / "a.png", dpi=20)) == (391, 391)
    assert png_size(viz.plot_confusion(np.eye(40), None, tmp_path / "b.png", dpi=20)) == (400, 400)
    # an explicit figsize still works, but not one that makes a picture over 8000 px a side
    assert png_size(viz.plot_confusion(m, None, tmp_path / "s.png", figsize=(6, 4), dpi=50)) == \
        (300, 200)
    with pytest.raises(ConfigError, match=r"552x552 inches at dpi 100 is a 55200x55200-pixel.*"
                                          r"at most 8000 pixels a side.*lower figsize or dpi"):
        viz.plot_confusion(m, None, tmp_path / "huge.png", figsize=(552, 552))
    # a high dpi shrinks the default 20 inches to fit 8000 pixels instead of refusing
    assert png_size(viz.plot_confusion(np.eye(40), None, tmp_path / "hi.png", dpi=500)) == (8000, 8000)
    with pytest.raises(ConfigError, match="positive"):
        viz.plot_confusion(m, None, tmp_path / "bad.png", figsize=(0, 4))
    assert not (tmp_path / "huge.png").exists() and not (tmp_path / "bad.png").exists()


def test_plot_confusion_labels_every_nth_class_above_60(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    seen = {}
    real = Axes.set_xticklabels

    def spy(self, labels, *args, **kwargs):
        seen["x"] = [str(t) for t in labels]
        return real(self, labels, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_xticklabels", spy)
    viz.plot_confusion(np.eye(60), None, tmp_path / "c60.png", dpi=20)
    assert seen["x"] == [str(i) for i in range(60)]                     # all 60 labelled
    viz.plot_confusion(np.eye(61), None, tmp_path / "c61.png", dpi=20)
    assert seen["x"] == [str(i) for i in range(0, 61, 2)]               # ceil(61 / 40) = 2
    names = [f"class{i}" for i in range(1000)]
    viz.plot_confusion(np.eye(1000), names, tmp_path / "c1000.png", dpi=20)
    assert seen["x"] == [f"class{i}" for i in range(0, 1000, 25)] and len(seen["x"]) == 40


@pytest.mark.parametrize("in_channels", [1, 3, 6])
def test_plot_filters_grey_rgb_and_mean(tmp_path, in_channels):
    w = np.random.default_rng(0).normal(size=(10, in_channels, 5, 5))
    path = viz.plot_filters(w, tmp_path / "f.png", figsize=(4, 4), dpi=50)
    assert png_size(path) == (200, 200)


def test_plot_filters_takes_a_model_or_layer(tmp_path):
    model = models.lenet5()
    # 6 filters: 3x2 tiles of 2.1 inches, plus 1.2 inches for the colour bar (issue 16: bigger)
    assert png_size(viz.plot_filters(model, tmp_path / "m.png", dpi=50)) == (375, 260)
    conv = Conv2D(3, 4, 3, rng=0)
    assert png_size(viz.plot_filters(conv, tmp_path / "l.png", figsize=(6, 3), dpi=50)) == (300, 150)


def test_plot_feature_maps_on_lenet5(tmp_path):
    model = models.lenet5()
    rng = np.random.default_rng(0)
    image = rng.random((1, 28, 28)).astype(np.float32)
    path = viz.plot_feature_maps(model, image, tmp_path / "fm.png", figsize=(8, 6), dpi=50)
    assert png_size(path) == (400, 300)
    with pytest.raises(ShapeError, match=r"\(1, 28, 28\)"):
        viz.plot_feature_maps(model, np.zeros((1, 32, 32), np.float32), tmp_path / "bad.png")


def test_plot_feature_maps_prepares_a_grey_uint8_image(tmp_path):
    small = Sequential([Conv2D(1, 3, 3, padding=1, rng=0), ReLU(), Conv2D(3, 10, 3, rng=0)],
                       input_shape=(1, 8, 8))
    raw = np.random.default_rng(0).integers(0, 256, size=(8, 8)).astype(np.uint8)
    w, h = png_size(viz.plot_feature_maps(small, raw, tmp_path / "fm.png", dpi=40))
    rows = 1 + 1 + 2                                     # input, 3 maps, 10 maps in rows of 8
    assert (w, h) == (round(8 * 1.4 * 40), round((1.45 * rows + 0.3 * 3 + 0.4) * 40))


def test_plot_feature_maps_needs_a_conv_layer(tmp_path):
    mlp = Sequential([Flatten(), Dense(16, 4, rng=0), ReLU()], input_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match="no Conv2D"):
        viz.plot_feature_maps(mlp, np.zeros((1, 4, 4), np.float32), tmp_path / "bad.png")
