"""Pictures of training and of what a network has learned, written as PNG files.

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg (file-only) canvas, so
nothing opens a window, nothing needs a display, and no figure is left behind in memory.  Each
writes one PNG of ``figsize * dpi`` pixels and returns its path, a :class:`PlotPath` (a ``str``
that a Jupyter notebook shows as the picture).  With ``path=None`` nothing is written and the
``Figure`` itself is returned (it shows inline in a notebook too).

* :func:`plot_history`: loss and accuracy per epoch, training against validation.
* :func:`plot_confusion`: which classes get mistaken for which.
* :func:`plot_filters`: the first convolution layer's kernels as little pictures.
* :func:`plot_feature_maps`: what each convolution layer outputs for one image.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError, DataError, ShapeError
from ..files import atomic_write
from ..functional import softmax
from ..layers.activation import Softmax

__all__ = ["plot_history", "plot_confusion", "plot_filters", "plot_feature_maps"]


def _new_figure(figsize, dpi, layout=None):
    """A Figure on the Agg canvas: draws to memory/files only, never to a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


class PlotPath(str):
    """The path of a PNG just written: a plain ``str``, which a notebook displays as the
    picture (``_repr_png_`` reads the file back)."""

    def _repr_png_(self):
        try:
            with open(self, "rb") as f:
                return f.read()
        except OSError:
            return None


def _figure_png(fig):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, dpi=fig.dpi, format="png", facecolor="white")
    return buf.getvalue()


def _show_figures_inline():
    """In IPython/Jupyter, display numcnn's Agg figures as PNG (matplotlib's inline backend
    does so only once pyplot has been imported)."""
    import sys
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        from matplotlib.figure import Figure
        shell.display_formatter.formatters["image/png"].for_type(Figure, _figure_png)


def _save(fig, path):
    """Render to memory, then write atomically (a kill never leaves a 0-byte or half PNG), and
    return a :class:`PlotPath`; ``path=None``: return the Figure (for a notebook or further
    drawing), nothing written."""
    if path is None:
        _show_figures_inline()
        return fig
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=fig.dpi, format="png", facecolor="white")
    atomic_write(path, buf.getvalue())
    return PlotPath(str(path))


#: history.json files larger than this are refused unread (a run of 10,000 epochs is ~2 MiB)
MAX_HISTORY_BYTES = 64 << 20
_HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time",
                 "images_per_s")


def read_history(path):
    """The ``history.json`` a training run wrote, checked: a regular file of at most
    :data:`MAX_HISTORY_BYTES`, UTF-8 JSON, an object whose known keys hold equally long lists
    of numbers (or null).  DataError naming the file otherwise."""
    import json
    import math

    from ..files import read_regular

    raw = read_regular(path, "history file", DataError, limit=MAX_HISTORY_BYTES)
    try:
        history = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a history file: it is not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start}); give the history.json a training run wrote") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not a history file: not valid JSON ({exc}); give the "
                        "history.json a training run wrote") from None
    if not isinstance(history, dict):
        raise DataError(f"{path}: not a history file: expected a JSON object of per-epoch lists "
                        f"such as {{\"train_loss\": [...]}}, got {type(history).__name__}")
    lengths = set()
    for k in _HISTORY_KEYS:
        v = history.get(k)
        if v is None:
            continue
        ok = isinstance(v, list) and all(
            u is None or (isinstance(u, (int, float)) and not isinstance(u, bool)
                          and (isinstance(u, float) or abs(u) < 2 ** 53)
                          and (isinstance(u, int) or not math.isinf(u))) for u in v)
        if not ok:
            raise DataError(f"{path}: history {k!r} must be a list of numbers (one per epoch); the "
                            "file is damaged - give the history.json a training run wrote")
        if v:
            lengths.add(len(v))
    if len(lengths) > 1:
        raise DataError(f"{path}: the history's lists have different lengths {sorted(lengths)}; "
                        "the file is damaged")
    return history


def plot_history(history, path="history.png", figsize=(11, 4.2), dpi=100):
    """Two panels, loss and accuracy per epoch, training (solid) and validation (dashed).

    Args:
        history: a dict of equally long lists with any of the keys ``epoch``, ``train_loss``,
            ``train_acc``, ``val_loss``, ``val_acc`` and ``lr``.  ``val_*`` may be missing or hold
            ``None`` for epochs without validation; those points are left out.  Without
            ``epoch`` the epochs are numbered 1, 2, ...  When the learning rate ``lr`` changes
            during training it is drawn too (dotted, right axis of the loss panel, log scale).
        path: the PNG to write.
        figsize, dpi: the picture is ``figsize * dpi`` pixels.

    Returns:
        ``path`` as a string.
    """
    if not isinstance(history, dict):
        raise ConfigError(f"plot_history: history must be a dict of lists, got {type(history).__name__}")
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    series = {k: _numbers(history[k], k) for k in keys if history.get(k)}     # skip None and []
    if not any(k in series for k in keys[:4]):
        raise ConfigError("plot_history: history has no values under 'train_loss', 'train_acc', "
                          "'val_loss' or 'val_acc'; nothing to plot (train for an epoch first)")
    n = max(len(v) for v in series.values())
    epochs = np.asarray(history["epoch"], dtype=float) if history.get("epoch") is not None \
        else np.arange(1, n + 1, dtype=float)
    for k, v in series.items():
        if len(v) != len(epochs):
            raise ShapeError(f"plot_history: '{k}' has {len(v)} values but there are "
                             f"{len(epochs)} epochs; every list needs one value per epoch")

    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(figsize, dpi, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    lr = series.get("lr")
    ax_lr = None
    if lr is not None and np.nanmax(lr) > np.nanmin(lr) > 0:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(epochs, lr, ":", color="grey", label="learning rate (right axis)")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="grey")
        ax_lr.tick_params(axis="y", colors="grey")
    for ax, what, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        drawn = False
        for split, style, colour in (("train", "-", "tab:blue"), ("val", "--", "tab:orange")):
            v = series.get(f"{split}_{what}")
            if v is None or np.isnan(v).all():
                continue
            ax.plot(epochs, v, style, color=colour, marker="o", markersize=3.5,
                    label="training" if split == "train" else "validation")
            drawn = True
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # no epoch 1.25
        if len(set(epochs)) == 1:                                   # one epoch: one tick
            ax.set_xticks(sorted(set(epochs)))
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.grid(alpha=0.3)
        if drawn:
            handles, labels = ax.get_legend_handles_labels()
            if ax is ax_loss and ax_lr is not None:        # the learning rate in the same legend
                more = ax_lr.get_legend_handles_labels()
                handles, labels = handles + more[0], labels + more[1]
            # below the panel, so no line ever runs under it
            ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      ncol=len(labels), fontsize=9, frameon=False)
        else:
            ax.text(0.5, 0.5, f"no {label} recorded", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    acc = [series[k] for k in ("train_acc", "val_acc") if k in series]
    values = np.concatenate(acc) if acc else np.array([])
    values = values[np.isfinite(values)]
    if values.size and values.max() <= 1.0:
        # zoomed to the data (0.95..1.0 when every value is high), not 0..1, which flattened it
        lo, hi = float(values.min()), float(values.max())
        pad = max(0.1 * (hi - lo), 0.005)
        ax_acc.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) + (0.002 if hi >= 1.0 else 0))
    return _save(fig, path)


#: Largest default side of :func:`plot_confusion`'s figure, inches (reached at 32 classes).
_CONFUSION_MAX_INCHES = 20.0
#: Most pixels a side of any confusion-matrix PNG may have: figsize * dpi above this is refused
#: (a 1,000-class matrix at the old unbounded 552 inches took over 24 GB of memory to draw).
_CONFUSION_MAX_PIXELS = 8000
#: Up to this many classes every class gets its tick label; above it, every n-th one does.
_CONFUSION_ALL_LABELS = 60
#: About this many labelled ticks per axis above _CONFUSION_ALL_LABELS classes.
_CONFUSION_LABELS_SHOWN = 40


def plot_confusion(matrix, class_names=None, path="confusion.png", figsize=None, dpi=100):
    """An annotated heatmap of a confusion matrix: rows are true classes, columns predictions.

    ``matrix[i, j]`` counts the images of class ``i`` the model called ``j``; the diagonal holds
    the correct answers.  Each cell shows its count (for up to 30 classes); darker = more.
    Up to 60 classes every row and column is labelled with its class name; with more, only
    every n-th one is (about 40 labels an axis; the axis title says how often), so that even a
    1,000-class matrix draws in seconds.

    Args:
        matrix: ``(K, K)`` counts.
        class_names: K names (default ``0 .. K-1``).
        path: the PNG to write.
        figsize: inches; by default it grows with K (``max(5, 0.55 K + 2.5)`` square) up to 20
            inches a side.
        dpi: the picture is ``figsize * dpi`` pixels, at most 8000 a side: the default size
            shrinks to fit; a ``figsize`` given with it that would exceed it is a ConfigError.

    Returns:
        ``path`` as a string.
    """
    m = to_numpy(matrix) if hasattr(matrix, "dtype") else np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ShapeError(f"plot_confusion: expected a square (K, K) matrix, got shape {m.shape}")
    k = m.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ShapeError(f"plot_confusion: {len(names)} class names for a {k}x{k} matrix")
    side = min(_CONFUSION_MAX_INCHES, max(5.0, 0.55 * k + 2.5))
    if figsize is None and isinstance(dpi, (int, float)) and dpi > 0:
        side = min(side, _CONFUSION_MAX_PIXELS / dpi)      # a high dpi shrinks the default size
    figsize = _bounded_figsize(figsize or (side, side), dpi, "plot_confusion")
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    # many classes: several cells share a pixel, so average them rather than drop rows
    im = ax.imshow(m, cmap="Blues", interpolation="nearest" if k <= 200 else "antialiased",
                   vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="count")
    step = 1 if k <= _CONFUSION_ALL_LABELS else math.ceil(k / _CONFUSION_LABELS_SHOWN)
    ticks = range(0, k, step)
    shown = [names[i] for i in ticks]
    long = max(len(s) for s in shown) > 3
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(shown, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticklabels(shown)
    every = "" if step == 1 else f" (one in {step} of {k} classes labelled)"
    ax.set_xlabel("predicted class" + every)
    ax.set_ylabel("true class" + every)
    total = m.sum()
    acc = float(np.trace(m) / total) if total else float("nan")
    ax.set_title(f"Confusion matrix\naccuracy {acc:.1%} on {int(total)} images"
                 if total else "Confusion matrix (empty)")
    if k <= 30:
        vmax = float(m.max()) or 1.0
        integer = np.allclose(m, np.round(m))
        size = 10 if k <= 12 else 7
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                ax.text(j, i, f"{int(round(v))}" if integer else f"{v:.2f}", ha="center",
                        va="center", fontsize=size, color="white" if v > 0.5 * vmax else "black")
    fig.tight_layout()
    return _save(fig, path)


def _bounded_figsize(figsize, dpi, where):
    """Check that ``figsize * dpi`` is a sane picture before matplotlib allocates it: a huge
    canvas is not an error there, it just eats all the memory."""
    try:
        w, h = (float(v) for v in figsize)
        dpi = float(dpi)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: figsize must be (width, height) in inches and dpi a number, "
                          f"got figsize={figsize!r}, dpi={dpi!r}") from None
    if not (w > 0 and h > 0 and dpi > 0 and math.isfinite(w * h * dpi)):
        raise ConfigError(f"{where}: figsize and dpi must be positive, got figsize={figsize!r}, "
                          f"dpi={dpi!r}")
    if max(w, h) * dpi > _CONFUSION_MAX_PIXELS:
        raise ConfigError(
            f"{where}: figsize {w:g}x{h:g} inches at dpi {dpi:g} is a {round(w * dpi)}x"
            f"{round(h * dpi)}-pixel picture; at most {_CONFUSION_MAX_PIXELS} pixels a side are "
            f"drawn - lower figsize or dpi")
    return w, h


def plot_filters(weight, path="filters.png", title=None, figsize=None, dpi=100):
    """The first convolution layer's kernels, one picture per filter, with a value scale.

    Args:
        weight: ``(out_channels, in_channels, kh, kw)`` array, or a Conv2D layer, or a model (its
            first Conv2D layer is used).
        path: the PNG to write (None: return the Figure).
        title: the figure's title (a default names the shape).
        figsize: inches; by default 2.1 inches per tile, as square a grid as possible, plus
            room for the colour bar.
        dpi: the picture is ``figsize * dpi`` pixels.

    How each tile is coloured: with 1 input channel (or the mean over input channels, for
    other than 3) every filter shares one diverging scale, red = positive weight, blue =
    negative, white = 0, and the colour bar gives the values, so tiles compare in size as well
    as in pattern.  With 3 input channels each tile is an RGB picture with its three channels
    min-max scaled together (the colour bar then does not apply and is left out).

    Returns:
        ``path`` as a :class:`PlotPath` (or the Figure).
    """
    w = _first_conv_weight(weight)
    if w.ndim != 4:
        raise ShapeError(f"plot_filters: expected a conv weight (out, in, kh, kw), got shape {w.shape}")
    n, c = w.shape[:2]
    ncols = math.ceil(math.sqrt(n)) if n <= 16 else 8
    nrows = math.ceil(n / ncols)
    rgb = c == 3
    fig = _new_figure(figsize or (max(5.0, 2.1 * ncols + (0 if rgb else 1.2)), 2.1 * nrows + 1.0),
                      dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    how = "RGB, each tile min-max scaled" if rgb else \
        ("" if c == 1 else f"mean of {c} input channels; ") + "red = positive, blue = negative"
    tiles = w if rgb else w.mean(axis=1)
    top = float(np.abs(tiles).max()) or 1.0
    image = None
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        if rgb:
            ax.imshow(_minmax(w[i]).transpose(1, 2, 0), interpolation="nearest")
        else:
            image = ax.imshow(tiles[i], cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        ax.set_title(f"filter {i}", fontsize=9, pad=3)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="weight (shared scale)")
    fig.suptitle(title or f"{n} filters of the first conv layer ({c}x{w.shape[2]}x{w.shape[3]} "
                 f"each, {how})", fontsize=11)
    return _save(fig, path)


def _conv_activations(layers, x, max_maps):
    """``([(label, maps)], output)``: the output of every Conv2D, also inside blocks (Residual,
    Concat), labelled by its name in the model (``layer 3.body.0: ...``), in the order they run;
    and the model's output."""
    from ..layers import Conv2D
    from ..layers.container import record_activations

    blocks = []

    def keep(name, layer, out, layout="NCHW"):
        if isinstance(layer, Conv2D):
            maps = to_numpy(out)[0]
            shown = min(len(maps), max_maps)
            label = f"layer {name}: {layer!r}  ->  {'x'.join(map(str, maps.shape))}"
            if shown < len(maps):
                label += f"  (first {shown} maps)"
            blocks.append((label, maps[:shown]))

    h = x
    for i, layer in enumerate(layers):
        with record_activations(layer, str(i), keep):       # the layers inside a block
            h = layer.forward(h, training=False)
        keep(str(i), layer, h)
    return blocks, h


def plot_feature_maps(model, image, path="feature_maps.png", max_maps=32, ncols=8, figsize=None,
                      dpi=100, image_name=None, true_class=None):
    """What each convolution layer of ``model`` outputs for one image.

    The image goes through ``model.layers`` one layer at a time (in evaluation mode); after each
    :class:`numcnn.layers.Conv2D` (also those inside Residual and Concat blocks, titled with their
    nested name such as ``3.body.0``) its output, one feature map per filter, is drawn: bright where
    the filter found its pattern.  The input comes first, then one block of tiles per conv layer
    (up to ``max_maps`` maps each, ``ncols`` per row), titled with the layer and its output shape.
    Each map is scaled on its own (viridis: yellow = its largest value).  Beside the input, the
    model's class probabilities for it; the title names the image and the prediction.

    Args:
        model: a :class:`numcnn.Sequential` with at least one Conv2D layer.
        image: one image: ``(C, H, W)``, ``(1, C, H, W)`` or grey ``(H, W)``.  uint8 images go
            through ``model.prepare_input`` (scaling and the model's normalisation); float images
            are taken as already prepared.
        path: the PNG to write (None: return the Figure).
        figsize: inches; by default ``ncols * 1.4`` wide and 1.55 inches per row of tiles.
        dpi: the picture is ``figsize * dpi`` pixels.
        image_name: what the image is, for the title (e.g. ``"test image 0 of digits"``).
        true_class: its true class name, when known.

    Returns:
        ``path`` as a :class:`PlotPath` (or the Figure).
    """
    layers = getattr(model, "layers", None)
    if not layers:
        raise ConfigError(f"plot_feature_maps: expected a numcnn model with .layers, got "
                          f"{type(model).__name__}")
    if max_maps < 1 or ncols < 1:
        raise ConfigError("plot_feature_maps: max_maps and ncols must be >= 1")
    x = image if hasattr(image, "dtype") else np.asarray(image)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ShapeError(f"plot_feature_maps: expected one image (C, H, W), (1, C, H, W) or (H, W), "
                         f"got shape {tuple(np.shape(image))}")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ShapeError(f"plot_feature_maps: the model takes images of shape {tuple(shape)} "
                         f"(C, H, W), got {tuple(x.shape[1:])}")
    x = model.prepare_input(x) if hasattr(model, "prepare_input") else x

    blocks = [("input  " + "x".join(map(str, x.shape[1:])), _input_tile(to_numpy(x)[0]))]
    maps, h = _conv_activations(layers, x, max_maps)
    blocks += maps
    if len(blocks) == 1:
        raise ConfigError("plot_feature_maps: the model has no Conv2D layer, so there are no "
                          "feature maps to show")
    scores = to_numpy(h).reshape(1, -1)
    probs = scores[0] if isinstance(layers[-1], Softmax) else to_numpy(softmax(h.reshape(1, -1), axis=1))[0]
    names = list(getattr(model, "classes", None) or [])
    if len(names) != len(probs):
        names = [str(i) for i in range(len(probs))]
    best = int(np.argmax(probs))
    verdict = f"predicted {names[best]} ({probs[best]:.1%})"
    if true_class is not None:
        verdict += f", true class {true_class}" + (" - right" if str(true_class) == names[best]
                                                   else " - wrong")

    rows = [1] + [math.ceil(len(b[1]) / ncols) for b in blocks[1:]]
    fig = _new_figure(figsize or (ncols * 1.4, 1.45 * sum(rows) + 0.3 * len(rows) + 0.4), dpi,
                      layout="constrained")
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=[r + 0.25 for r in rows])
    subfigs = np.atleast_1d(subfigs)
    for sub, (label, tiles), r in zip(subfigs, blocks, rows):
        sub.suptitle(label, fontsize=9, x=0.01, ha="left")
        if label.startswith("input"):
            # the input, and beside it what the model makes of it (the row's free space)
            ax_img, ax_p = sub.subplots(1, 2, width_ratios=[1, max(1, ncols - 1)])
            ax_img.imshow(tiles, cmap=None if tiles.ndim == 3 else "gray", interpolation="nearest")
            ax_img.set_xticks([])
            ax_img.set_yticks([])
            order = np.argsort(-probs)[:10]
            colours = ["tab:green" if k == best else "tab:grey" for k in order]
            ax_p.bar(range(len(order)), probs[order], color=colours)
            ax_p.set_xticks(range(len(order)))
            ax_p.set_xticklabels([names[k] for k in order], fontsize=8,
                                 rotation=30 if max(len(names[k]) for k in order) > 3 else 0)
            ax_p.set_ylim(0, 1)
            ax_p.set_ylabel("probability", fontsize=8)
            ax_p.tick_params(axis="y", labelsize=7)
            ax_p.set_title("the model's class probabilities for this image", fontsize=9)
            continue
        axes = np.atleast_1d(sub.subplots(r, ncols, squeeze=False)).ravel()
        for j, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(tiles):
                ax.axis("off")
                continue
            ax.imshow(tiles[j], cmap="viridis", interpolation="nearest")
            ax.set_title(f"map {j}", fontsize=7, pad=2)
    fig.suptitle(f"Feature maps of {image_name or 'one image'}: {verdict}\n(each conv filter's "
                 "output, each map scaled on its own: yellow = high, purple = low)", fontsize=11)
    return _save(fig, path)


def _input_tile(chw):
    """One prepared image (C, H, W) as something imshow can draw: RGB if C == 3, else grey."""
    if chw.shape[0] == 3:
        return _minmax(chw).transpose(1, 2, 0)
    return _minmax(chw.mean(axis=0))


def _minmax(a):
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a) + 0.5


def _numbers(values, key):
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"plot_history: '{key}' must be a list of numbers (or None), "
                          f"got {values!r:.80}") from None


def _first_conv_weight(obj):
    from ..layers import Conv2D
    from ..layers.base import Parameter

    if hasattr(obj, "layers"):
        conv = next((l for l in obj.layers if isinstance(l, Conv2D)), None)
        if conv is None:
            raise ConfigError("plot_filters: the model has no Conv2D layer")
        obj = conv
    if isinstance(obj, Conv2D):
        obj = obj.weight
    if isinstance(obj, Parameter):
        obj = obj.value
    return np.asarray(to_numpy(obj) if hasattr(obj, "dtype") else obj, dtype=np.float64)
