"""Showing the ideas without a model: ``numcnn convdemo`` and ``numcnn datasets``.

    numcnn convdemo                      the deck's convolution, step by step, as a GIF
    numcnn convdemo --image small.png --kernel '0 -1 0; -1 4 -1; 0 -1 0'
    numcnn convdemo --gallery photo.jpg  classic kernels side by side
    numcnn datasets                      the datasets numcnn knows by name
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import datasets
from ..data.images import image_size, load_image
from ..errors import ConfigError
from ..viz import convdemo
from .output import say


def add_parser(subparsers):
    c = subparsers.add_parser(
        "convdemo", help="watch a convolution happen (the deck's demo) or apply classic kernels",
        description="Without options: the deck's convolution (5x5x3 input, padding 1, two "
        "3x3x3 filters, stride 2), every output value as an equation, and an animated GIF. "
        "--image runs it on your own small picture; --gallery applies classic kernels.")
    c.add_argument("--image", default=None, help="a small picture (at most 16x16 after padding) to "
                   "convolve instead of the deck's; colour is turned grey, and the kernel is the "
                   "8-neighbour Laplacian edge detector '-1 -1 -1; -1 8 -1; -1 -1 -1' unless "
                   "--kernel is given (default: the deck's example)")
    c.add_argument("--kernel", default=None, help="kernel rows, e.g. '0 -1 0; -1 4 -1; 0 -1 0' "
                   "(default with --image: the Laplacian above)")
    c.add_argument("--stride", type=int, default=None, help="with --image (default 1)")
    c.add_argument("--padding", type=int, default=None, help="with --image (default 0)")
    c.add_argument("--bias", type=float, default=None, help="with --image (default 0)")
    c.add_argument("--gallery", nargs="?", const="sample", default=None, metavar="IMAGE",
                   help="apply edge/sharpen/blur kernels to IMAGE (or to --image; a built-in "
                   "picture if neither), side by side (default: no gallery)")
    c.add_argument("--out", default="convdemo", help="output folder")
    c.add_argument("--quiet", action="store_true", help="don't print every step")
    c.set_defaults(func=cmd_convdemo)

    d = subparsers.add_parser("datasets", help="list the datasets numcnn knows by name")
    d.set_defaults(func=cmd_datasets)


def _parse_kernel(text):
    try:
        rows = [[float(v) for v in r.replace(",", " ").split()] for r in text.split(";")]
    except ValueError:
        raise ConfigError(f"--kernel must be rows of numbers separated by ';', e.g. '0 -1 0; -1 4 -1; 0 -1 0', got {text!r}") from None
    if not any(rows):
        raise ConfigError("--kernel holds no numbers; give rows separated by ';', e.g. '0 -1 0; -1 4 -1; 0 -1 0'")
    if len({len(r) for r in rows}) != 1:
        raise ConfigError(f"--kernel rows must all have the same length, got {[len(r) for r in rows]} "
                          f"numbers in {text!r}")
    return np.array(rows, dtype=np.float64)


def _gallery_size(path, longest=192):
    """Shrink big photos before filtering: the gallery's tiles are ~340 pixels wide, so a 3x3
    kernel on a bigger picture acts below what the eye sees (a blur looked like the original),
    and a 12 MP picture took 22 s and 5 GB through every kernel."""
    if not Path(path).is_file():
        return None                      # load_image says what is wrong with it
    h, w = image_size(path)
    scale = longest / max(h, w)
    return None if scale >= 1 else (max(1, round(h * scale)), max(1, round(w * scale)))


def cmd_convdemo(args):
    if args.gallery:
        source = args.image if args.gallery == "sample" and args.image else args.gallery
        if args.image and source != args.image:
            raise ConfigError(f"--gallery {args.gallery} and --image {args.image} name two pictures; "
                              "give one (--gallery IMAGE, or --gallery --image IMAGE)")
        if any(v is not None for v in (args.kernel, args.stride, args.padding, args.bias)):
            raise ConfigError("--kernel, --stride, --padding and --bias set up your own "
                              "convolution with --image; the gallery applies its classic kernels "
                              "(drop them, or drop --gallery)")
        img = convdemo.sample_image(64, rgb=True) if source == "sample" else \
            load_image(source, size=_gallery_size(source))
        path = convdemo.kernel_gallery(img, os.path.join(args.out, "kernels.png"))
        what = "the built-in picture" if source == "sample" else source
        say(f"applied {len(convdemo.classic_kernels())} classic kernels to {what}: wrote {path}")
        return 0
    own = {"--kernel": args.kernel, "--stride": args.stride, "--padding": args.padding,
           "--bias": args.bias}
    if args.image:
        img = load_image(args.image, channels=1)[0]
        kernel = _parse_kernel(args.kernel) if args.kernel is not None else convdemo.classic_kernels()["edge"]
        x, weight, bias, stride, padding = convdemo.user_demo_inputs(
            img, kernel, 1 if args.stride is None else args.stride,
            0 if args.padding is None else args.padding, 0.0 if args.bias is None else args.bias)
    elif any(v is not None for v in own.values()):
        given = ", ".join(k for k, v in own.items() if v is not None)
        raise ConfigError(f"{given}: only with --image SMALL.png, to set up your own "
                          "convolution (without --image the deck's example runs as it is)")
    else:
        x, weight, bias, stride, padding = convdemo.deck_example()
    steps, out = convdemo.conv_steps(x, weight, bias, stride, padding)
    if not args.quiet:
        say(convdemo.format_setup(x, weight, bias, stride, padding))
        say("")
        for s in steps:
            say(convdemo.format_step(s))
            say("")
        say(convdemo.format_volume(out))
    gif = os.path.join(args.out, "convdemo.gif")
    path, frames = convdemo.render_gif(x, weight, bias, stride, padding, gif)
    say(f"output volume {out.shape[2]}x{out.shape[3]}x{out.shape[1]} (height x width x depth, as "
        f"in the deck; depth = number of kernels); "
        f"wrote {path} ({frames} frames)")
    return 0


def cmd_datasets(args):
    for name in datasets.available():
        inf = datasets.info(name)
        say(f"{name:<14} {inf.get('description', '')}")
    return 0
