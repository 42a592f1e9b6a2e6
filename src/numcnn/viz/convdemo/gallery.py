"""Classic hand-made kernels and the gallery: how convolutions "highlight aspects of an image"."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError, ShapeError
from ...functional import conv2d
from ..plots import _new_figure, _save
from .steps import _as_float
from .text import _kernel_label


def classic_kernels():
    """Classic 3x3 image kernels, by name, as float64 arrays.

    * ``identity``: copies the image.
    * ``edge`` (edge detect, the 8-neighbour Laplacian with its sign flipped): 8 times the pixel
      minus its 8 neighbours; zero on flat areas, large where the brightness changes in any
      direction.
    * ``sobel_x`` / ``sobel_y``: brightness increasing to the right / downwards (vertical /
      horizontal edges), with the centre row / column weighted double.
    * ``sharpen``: the pixel plus 4 times its difference from its 4 neighbours.
    * ``box_blur``: the mean of the 3x3 neighbourhood.
    * ``gaussian_blur``: a weighted mean, centre 4/16, edges 2/16, corners 1/16.
    * ``emboss``: a diagonal difference that looks like light from the top left.

    numcnn's convolution, like PyTorch's and the deck's, does not flip the kernel
    (it is a cross-correlation), so a kernel is applied exactly as written here.
    """
    return {
        "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64),
        "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float64),
        "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
        "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
        "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
        "box_blur": np.ones((3, 3)) / 9.0,
        "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16.0,
        "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
    }


def apply_kernels(image, kernels=None, border="zeros"):
    """Convolve an image with each kernel, keeping its size; returns ``{name: result}``.

    Args:
        image: a grey ``(H, W)`` image or a ``(C, H, W)`` one, uint8 or float.  A ``(H, W, 3)``
            or ``(H, W, 4)`` array, as ``numpy.asarray(PIL_image)`` gives, is recognised too.
        kernels: ``{name: (kh, kw) array}`` with odd kh and kw; :func:`classic_kernels` if None.
        border: ``"zeros"`` (the convolution's own zero padding, as in a CNN layer) or ``"edge"``
            (repeat the outermost pixels instead, so flat areas stay flat up to the border).

    Returns:
        ``{name: float64 array}``, each the shape and layout of ``image``, in the image's own
        units (uint8 images are not rescaled), so the identity kernel gives the image back.

    How: each kernel is the weight of a 1-in, 1-out convolution with zero padding
    ``(kh // 2, kw // 2)`` (1 for 3x3), which keeps H and W.  To filter every colour channel on its
    own with that single-channel kernel, the channels are moved into the batch axis:
    ``(C, H, W) -> (C, 1, H, W)``, so one :func:`numcnn.functional.conv2d` call filters them all
    (a "grouped" convolution).  All kernels of the same size go in the same call as its outputs.
    With ``border="zeros"`` the padding counts as black, so e.g. a blur darkens the outermost
    ring and an edge detector finds an "edge" all around the picture; ``border="edge"`` pads the
    image with copies of its border pixels first and then convolves with padding 0.
    """
    img, layout = _as_image(image, "kernel gallery")
    kernels = classic_kernels() if kernels is None else kernels
    if not isinstance(kernels, dict) or not kernels:
        raise ConfigError("kernel gallery: kernels must be a non-empty dict {name: 2-D array}")
    if border not in ("zeros", "edge"):
        raise ConfigError(f"kernel gallery: border must be 'zeros' or 'edge', got {border!r}")
    groups = {}
    for name, k in kernels.items():
        k = _as_float(k, f"kernel gallery: kernel {name!r}")
        if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ShapeError(f"kernel gallery: kernel {name!r} must be a 2-D array with odd sides "
                             f"(e.g. 3x3) so the output keeps the image's size; got shape {k.shape}")
        groups.setdefault(k.shape, []).append((name, k))
    c, h, w = img.shape
    batch = img.reshape(c, 1, h, w)                      # channels -> batch axis
    results = {}
    for (kh, kw), items in groups.items():
        weight = np.stack([k for _, k in items])[:, None]            # (K, 1, kh, kw)
        pad = (kh // 2, kw // 2)
        if border == "edge":
            padded = np.pad(batch, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2), mode="edge")
            out = conv2d(padded, weight, None, 1, 0)                 # (C, K, H, W)
        else:
            out = conv2d(batch, weight, None, 1, pad)                # (C, K, H, W)
        for i, (name, _) in enumerate(items):
            results[name] = _restore_layout(out[:, i], layout)
    return {name: results[name] for name in kernels}


def kernel_gallery(image, path="kernels.png", kernels=None, figsize=None, dpi=100):
    """Save a PNG with the original image and what each kernel makes of it, side by side.

    Each tile is titled with the kernel's name and its numbers.  Kernels whose numbers add up to
    1 (identity, blurs, sharpen, emboss) keep the overall brightness and are shown on the image's
    own scale (clipped to it).  Kernels that add up to 0 (edge detect, Sobel) give 0 on flat areas
    and positive or negative values at edges, so their tile shows the *size* of the response,
    ``|result|`` (averaged over colour channels) on one scale shared by all of them (white =
    the strongest responses of any, at least a quarter of the image's range): bright = edge,
    and a smooth picture's edge tiles stay dark.  The gallery pads with copies of the border pixels (``border="edge"`` in
    :func:`apply_kernels`) so the picture's frame doesn't show up as an edge.

    Args:
        image: as for :func:`apply_kernels`.
        path: the PNG to write.
        kernels: ``{name: kernel}``; :func:`classic_kernels` if None.
        figsize: inches ``(w, h)``; by default 3.4 x 3.6 inches per tile, 3 tiles per row.
        dpi: pixels per inch, so the PNG is ``figsize * dpi`` pixels.

    Returns:
        ``path`` as a string.
    """
    img, layout = _as_image(image, "kernel_gallery")
    kernels = classic_kernels() if kernels is None else kernels
    results = apply_kernels(img, kernels, border="edge")
    n = 1 + len(results)
    ncols = 3 if n > 4 else n
    nrows = math.ceil(n / ncols)
    figsize = figsize or (3.4 * ncols, 3.6 * nrows + 0.4)
    lo, hi = (0.0, 255.0) if np.issubdtype(np.asarray(image).dtype, np.integer) else \
        (float(img.min()), float(img.max()))

    fig = _new_figure(figsize, dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    tiles = [("original", None, img)] + [(name, np.asarray(kernels[name], dtype=float), r)
                                          for name, r in results.items()]
    # one scale for every edge tile (not each its own), so the kernels compare honestly and a
    # smooth picture's edge tiles stay dark instead of showing its noise magnified; never less
    # than a quarter of the image's range, the size of a clear edge
    mags = {name: np.abs(r).mean(axis=0) for name, k, r in tiles
            if k is not None and abs(k.sum()) < 1e-9}
    top = max([float(np.percentile(m, 99.5)) for m in mags.values()] + [0.25 * (hi - lo), 1e-12])
    for ax, (name, k, r) in zip(axes.ravel(), tiles):
        if name in mags:
            ax.imshow(np.clip(mags[name] / top, 0, 1), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            note = True
        else:
            ax.imshow(_display(r, lo, hi), cmap="gray" if r.shape[0] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            note = False
        title = _GALLERY_TITLES.get(name, name.replace("_", " ")) + ("  *" if note else "")
        if k is not None:
            title += "\n" + _kernel_label(k)
        ax.set_title(title, fontsize=10, family="monospace" if k is not None else None)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("What classic 3x3 kernels highlight in an image\n"
                 "* kernels that add up to 0 find edges: their tiles show the size |result|,\n"
                 f"all on one shared scale (white = {top:.3g} or more); the others use the image's scale",
                 fontsize=12)
    return _save(fig, path)


_GALLERY_TITLES = {
    "identity": "identity (no change)", "edge": "edge detect (Laplacian)",
    "sobel_x": "Sobel x: vertical edges", "sobel_y": "Sobel y: horizontal edges",
    "sharpen": "sharpen", "box_blur": "box blur", "gaussian_blur": "Gaussian blur",
    "emboss": "emboss",
}


def sample_image(size=64, rgb=False):
    """A small synthetic test picture (uint8): a gradient, a bright disc, a dark square, stripes.

    Handy for :func:`kernel_gallery` when there is no photo at hand.  Returns ``(size, size)``
    or, with ``rgb=True``, ``(3, size, size)`` with coloured shapes.
    """
    if size < 8:
        raise ConfigError(f"sample_image: size must be at least 8, got {size}")
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    grey = 60 + 80 * xx
    disc = (xx - 0.3) ** 2 + (yy - 0.3) ** 2 < 0.2 ** 2
    square = (xx > 0.55) & (xx < 0.9) & (yy > 0.15) & (yy < 0.5)
    stripes = (yy > 0.62) & (np.floor(xx * size / 4) % 2 == 0)
    triangle = (yy > 0.62) & (yy < 0.95) & (xx > 0.55) & (xx - 0.55 < (yy - 0.62))
    if not rgb:
        img = grey.copy()
        img[disc] = 235
        img[square] = 15
        img[stripes & (xx < 0.45)] = 200
        img[triangle] = 170
        return np.clip(img, 0, 255).astype(np.uint8)
    img = np.stack([grey, grey, grey])
    for mask, colour in ((disc, (240, 200, 40)), (square, (30, 60, 200)),
                         (stripes & (xx < 0.45), (220, 40, 40)), (triangle, (40, 180, 80))):
        for ch in range(3):
            img[ch][mask] = colour[ch]
    return np.clip(img, 0, 255).astype(np.uint8)


def _as_image(image, where):
    """``(H, W)``, ``(C, H, W)`` or ``(H, W, 3|4)`` -> float ``(C, H, W)`` and how to undo it.

    A last axis of 3 or 4 is read as colour channels (``numpy.asarray(PIL_image)``), even when
    the first axis could be channels too (a picture 1, 3 or 4 rows high); a ``(C, H, W)``
    array is recognised when its last axis (the width) is not 3 or 4.
    """
    img = _as_float(image, f"{where}: image")
    if img.ndim == 2:
        return img[None], "hw"
    if img.ndim == 3:
        if img.shape[2] in (3, 4):
            return np.ascontiguousarray(img.transpose(2, 0, 1)), "hwc"
        return img, "chw"
    raise ShapeError(f"{where}: expected a grey (H, W) or a (C, H, W) image, got shape {img.shape}")


def _restore_layout(chw, layout):
    if layout == "hw":
        return chw[0]
    if layout == "hwc":
        return np.ascontiguousarray(chw.transpose(1, 2, 0))
    return chw


def _display(chw, lo, hi):
    """(C, H, W) on the scale [lo, hi] -> an image matplotlib can show, values in [0, 1]."""
    span = (hi - lo) or 1.0
    v = np.clip((chw - lo) / span, 0, 1)
    if v.shape[0] == 1:
        return v[0]
    if v.shape[0] >= 3:
        return v[:3].transpose(1, 2, 0)
    return v.mean(axis=0)
