"""Issue 16's pictures: what each one shows, read back from the matplotlib figure (path=None
returns it) rather than from pixels."""
from __future__ import annotations

import numpy as np
import pytest

from numcnn import models
from numcnn.viz import convdemo, plots


def high_history(n=10):
    return dict(epoch=list(range(1, n + 1)), train_loss=list(np.linspace(0.3, 0.02, n)),
                val_loss=list(np.linspace(0.12, 0.05, n)),
                train_acc=list(np.linspace(0.95, 0.995, n)), val_acc=list(np.linspace(0.965, 0.981, n)),
                lr=[2e-3 * (1 + np.cos(np.pi * i / n)) / 2 for i in range(n)])


def test_the_accuracy_axis_is_zoomed_to_the_data():
    fig = plots.plot_history(high_history(), path=None)
    ax_loss, ax_acc = fig.axes[:2]
    lo, hi = ax_acc.get_ylim()
    assert 0.94 <= lo <= 0.95 and 0.995 < hi <= 1.0      # not 0..1, which flattened 0.95..1.0
    low = dict(high_history(), train_acc=list(np.linspace(0.1, 0.9, 10)),
               val_acc=list(np.linspace(0.2, 0.8, 10)))
    lo, hi = plots.plot_history(low, path=None).axes[1].get_ylim()
    assert lo == pytest.approx(0.02) and hi == pytest.approx(0.98)


def test_the_learning_rate_has_a_legend_entry_and_the_legend_is_outside_the_lines():
    fig = plots.plot_history(high_history(), path=None)
    ax_loss = fig.axes[0]
    legend = ax_loss.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["training", "validation", "learning rate (right axis)"]
    # the legend sits below the panel: its box is under the axes' box, so no line runs under it
    fig.canvas.draw()
    assert legend.get_window_extent().y1 <= ax_loss.get_window_extent().y0


def test_filters_share_one_scale_with_a_colour_bar_and_are_bigger():
    w = np.zeros((6, 1, 5, 5))
    w[0, 0, 2, 2] = 1.0                     # one big weight, one small one
    w[1, 0, 2, 2] = 0.1
    fig = plots.plot_filters(w, path=None)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6
    assert {im.get_clim() for im in images} == {(-1.0, 1.0)}          # one scale for all
    cbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(cbar) == 1 and "weight" in cbar[0].get_ylabel()
    assert fig.get_size_inches()[0] >= 7                               # was 4 inches


def test_feature_maps_name_the_image_and_the_prediction_and_use_the_input_row():
    model = models.digits_cnn()
    model.classes = [str(i) for i in range(10)]
    x = np.random.default_rng(0).integers(0, 17, (1, 1, 8, 8)).astype(np.uint8)
    fig = plots.plot_feature_maps(model, x, path=None, image_name="test image 0 of digits",
                                  true_class="3")
    title = fig._suptitle.get_text()
    p = model.predict(x)[0]
    best = int(p.argmax())
    assert title.startswith(f"Feature maps of test image 0 of digits: predicted {best} ({p[best]:.1%})")
    assert "true class 3" in title
    first = fig.subfigs[0]
    assert len(first.axes) == 2                            # the image and the probabilities
    assert len(first.axes[1].patches) == 10
    heights = sorted(r.get_height() for r in first.axes[1].patches)[::-1]
    np.testing.assert_allclose(heights, np.sort(p)[::-1], rtol=1e-6)


def test_the_gallery_shares_one_scale_for_the_edge_tiles():
    """A smooth picture: its edge tiles stay dark (one scale, at least a quarter of the range)
    instead of each being stretched to white."""
    yy, xx = np.mgrid[0:48, 0:48]
    smooth = (100 + 40 * np.sin(xx / 12.0) + 20 * np.cos(yy / 9.0)).astype(np.uint8)[None]
    fig = convdemo.kernel_gallery(smooth, path=None)
    edge_axes = [ax for ax in fig.axes if ax.get_title().split("\n")[0].endswith("*")]
    assert len(edge_axes) == 3
    for ax in edge_axes:
        assert ax.images[0].get_array().max() < 0.5          # no edge here: dark, not white
    assert "one shared scale" in fig._suptitle.get_text()


def test_a_written_plot_is_a_path_that_a_notebook_shows(tmp_path):
    path = plots.plot_history(high_history(), tmp_path / "h.png")
    assert isinstance(path, str) and path == str(tmp_path / "h.png")
    assert path._repr_png_() == (tmp_path / "h.png").read_bytes()
    assert path._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
