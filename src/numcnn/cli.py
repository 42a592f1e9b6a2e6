"""The ``numcnn`` command: argument parsing and printing only; the work lives in the library.

    numcnn train                         LeNet-5 on the embedded MNIST 5k digits
    numcnn evaluate runs/x/model.safetensors
    numcnn predict  runs/x/model.safetensors digit.png
    numcnn summary  lenet5
    numcnn plot     runs/x/model.safetensors
    numcnn convdemo                      the deck's convolution, step by step, as a GIF
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .errors import ConfigError, DataError, ModelFileError, NumcnnError

DEFAULTS = dict(data="mnist-5k", model="lenet5", epochs=30, batch_size=32, optimizer="adam",
                momentum=0.9, schedule="cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
#: what a training run leaves in its folder (a new run refuses to overwrite them)
RUN_FILES = ("model.safetensors", "best.safetensors", "checkpoint.safetensors", "history.json")


def _say(*a):
    print(*a, flush=True)


# -- models --------------------------------------------------------------------------------------
def build_model(spec, shape, num_classes, seed):
    """A preset name, or a .json/.toml file describing a Sequential."""
    from . import models
    if spec in models.PRESETS:
        c, h, w = shape
        if h != w:
            raise ConfigError(f"preset {spec!r} needs square images, the data has {h}x{w}")
        return models.build(spec, in_channels=c, num_classes=num_classes, image_size=h, rng=seed)
    if os.path.splitext(spec)[1].lower() in (".json", ".toml"):
        return load_architecture(spec, seed)
    raise ConfigError(f"unknown model {spec!r}: choose a preset ({', '.join(models.PRESETS)}) or "
                      "give a .json/.toml architecture file")


def load_architecture(path, seed=0):
    """Read ``{"input_shape": [C, H, W], "layers": [{"type": "Conv2D", ...}, ...]}`` (JSON/TOML)."""
    from .init import as_generator
    from .io import check_architecture, check_model_size
    from .layers import layer_from_config
    from .model import Sequential
    if not os.path.isfile(path):
        raise ConfigError(f"architecture file {path!r} does not exist")
    with open(path, "rb") as f:
        raw = f.read((1 << 20) + 1)
    if len(raw) > 1 << 20:
        raise ConfigError(f"{path}: architecture files are limited to 1 MiB")
    is_toml = path.lower().endswith(".toml")
    try:
        if is_toml:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError("TOML architectures need Python 3.11+; use JSON instead") from None
            spec = tomllib.loads(raw.decode("utf-8"))
        else:
            spec = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if is_toml else 'JSON'}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise ConfigError(f"{path}: expected a 'layers' list of {{\"type\": ..., ...}} tables")
    # sizes, NaN arguments, dtypes and input_shape are checked before anything is allocated
    check_architecture(spec, path, error=ConfigError)
    rng = as_generator(seed)
    layers = []
    for i, ls in enumerate(spec["layers"]):
        if isinstance(ls, dict) and ls.get("type") in ("Conv2D", "Dense"):
            ls = {**ls, "rng": rng}
        try:
            if isinstance(ls, dict) and not isinstance(ls.get("type"), str):
                raise ConfigError(f"the 'type' of a layer must be a string, got {ls.get('type')!r}")
            layers.append(layer_from_config(ls))
        except NumcnnError as exc:
            raise ConfigError(f"{path}: layer {i}: {exc}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                RecursionError) as exc:     # a layer constructor choking on a bad argument
            raise ConfigError(f"{path}: layer {i}: bad arguments ({type(exc).__name__}: {exc})") from None
    try:
        model = Sequential(layers, input_shape=spec.get("input_shape"))
    except NumcnnError as exc:          # layers that do not fit together: name the file
        raise ConfigError(f"{path}: {exc}") from None
    check_model_size(model, path, error=ConfigError)
    return model


def _load_data(name, args, classes=None):
    """The dataset ``name``; ``classes`` (a trained model's) fixes an image folder's labels."""
    from .datasets import load_dataset
    from .datasets import _canonical
    kw = {"classes": list(classes)} if classes else {}
    size = getattr(args, "image_size", None)
    if size is not None:
        if size < 1:
            raise ConfigError(f"--image-size must be a positive number of pixels, got {size}")
        if _canonical(str(name)) is not None:
            raise ConfigError(f"--image-size resizes image folders; {name!r} is a named dataset "
                              "with a fixed size (drop --image-size)")
        kw["size"] = (size, size)
    return load_dataset(name, **kw)


# -- commands ------------------------------------------------------------------------------------
def cmd_train(args):
    from .data.augment import Augment
    from .metrics import format_report
    from .training import Trainer, evaluate
    ds = _load_data(args.data, args)
    (xtr, ytr), (xte, yte) = ds.splits
    classes = list(ds.classes)
    model = build_model(args.model, xtr.shape[1:], len(classes), args.seed)
    k = model.num_outputs()
    if k is not None and k != len(classes):
        raise ConfigError(f"model {args.model!r} has {k} outputs but {args.data!r} has "
                          f"{len(classes)} classes; make its last layer output {len(classes)}")
    model.classes = classes
    if model.input_shape and tuple(xtr.shape[1:]) != model.input_shape:
        raise ConfigError(f"model {args.model!r} takes images of shape {model.input_shape} but "
                          f"{args.data!r} has {tuple(xtr.shape[1:])}")
    out = args.out or os.path.join("runs", f"{os.path.basename(str(args.data)).replace('.', '_')}-"
                                            f"{os.path.basename(args.model).split('.')[0]}-{time.strftime('%Y%m%d-%H%M%S')}")
    previous = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if previous and not args.resume:
        raise ConfigError(f"--out {out} holds a previous run ({', '.join(previous)}); continue it "
                          f"with --resume {os.path.join(out, 'checkpoint.safetensors')}, or choose "
                          "another --out (or delete that folder)")
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.momentum is None:
        args.momentum = DEFAULTS["momentum"]
    elif args.optimizer != "sgd":
        raise ConfigError(f"--momentum is for --optimizer sgd; {args.optimizer} has its own "
                          "moving averages (drop --momentum, or use --optimizer sgd)")
    if args.shift is None:        # 2 pixels for 28x28 digits, 1 for 8x8: about 1/14 of the side
        args.shift = max(1, round(xtr.shape[-1] / 14))
    elif args.shift >= min(xtr.shape[-2:]) / 2:
        raise ConfigError(f"--shift {args.shift} would move most of a {xtr.shape[-2]}x"
                          f"{xtr.shape[-1]} image off its canvas; use less than "
                          f"{min(xtr.shape[-2:]) / 2:g} (the default is about 1/14 of the side)")
    augment = Augment(shift=args.shift, flip=args.flip) if (args.shift or args.flip) else None
    trainer = Trainer(model, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, augment=augment, out_dir=out,
                      patience=args.patience, progress="lines" if args.no_progress else True)
    _say(f"numcnn train: {args.model} on {args.data} ({len(xtr):,} train / {len(xte):,} test images "
         f"of {'x'.join(map(str, xtr.shape[1:]))}), {args.epochs} epochs, batch {args.batch_size}, "
         f"{type(trainer.optimizer).__name__} lr {trainer.optimizer.lr:g}, {args.schedule} schedule")
    _say(f"output folder: {out}")
    t0 = time.perf_counter()
    history = trainer.fit((xtr, ytr), (xte, yte), resume=args.resume)
    elapsed = time.perf_counter() - t0
    if trainer.interrupted:
        again = [a for a in (args.argv or []) if a != "--resume"]
        if args.resume and args.resume in again:
            again.remove(args.resume)
        _say(f"\ninterrupted: checkpoint saved to {trainer.checkpoint_path}; continue with\n"
             f"  numcnn train {' '.join(again)} --resume {trainer.checkpoint_path}")
        return 130
    report = evaluate(model, xte, yte)
    _write_json(report, os.path.join(out, "evaluation.json"))
    _write_training_plots(model, history, report, xte, out)
    ips = history["images_per_s"][-1] if history["images_per_s"] else float("nan")
    _say("")
    _say(format_report(report))
    _say("")
    _say(f"test accuracy {report['accuracy'] * 100:.2f}% after {len(history['epoch'])} epochs in "
         f"{elapsed:.1f}s ({ips:,.0f} training images/s)")
    _say(f"model saved to {os.path.join(out, 'model.safetensors')}")
    return 0


def _write_json(obj, path):
    """JSON written the way every numcnn file is: atomically, its folder created if needed."""
    from .io import atomic_write
    atomic_write(path, json.dumps(obj, indent=1).encode())


def _write_training_plots(model, history, report, x, out):
    from .viz import plots
    plots.plot_history(history, os.path.join(out, "history.png"))
    plots.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"],
                         os.path.join(out, "confusion.png"))
    conv = _first_conv(model)
    if conv is not None:
        plots.plot_filters(conv.weight.value, os.path.join(out, "filters.png"))
        plots.plot_feature_maps(model, x[:1], os.path.join(out, "feature_maps.png"))


def _first_conv(model):
    from .layers import Conv2D
    return next((l for l in model.layers if isinstance(l, Conv2D)), None)


def _load_model(path):
    from .io import load_model
    return load_model(path)


def cmd_evaluate(args):
    from .metrics import format_report
    from .training import evaluate
    model = _load_model(args.model)
    ds = _load_data(args.data, args, model.classes)
    (xtr, ytr), (xte, yte) = ds.splits
    x, y = (xte, yte) if args.split == "test" else (xtr, ytr)
    if model.input_shape and tuple(x.shape[1:]) != model.input_shape:
        raise ConfigError(f"the model takes images of shape {model.input_shape} but {args.data!r} "
                          f"has {tuple(x.shape[1:])}")
    report = evaluate(model, x, y, batch_size=args.batch_size, class_names=model.classes or list(ds.classes))
    _say(f"{args.model} on {args.data} ({args.split} split)")
    _say(format_report(report))
    if args.json:
        _write_json(report, args.json)
    return 0


def cmd_predict(args):
    from .data.formats import load_image
    model = _load_model(args.model)
    if not model.input_shape:
        raise ModelFileError(f"{args.model}: the model has no input shape; cannot prepare images")
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    c, h, w = model.input_shape
    images = np.stack([load_image(p, size=(h, w), channels=c) for p in args.images])
    probs = model.predict(images)
    names = model.classes if model.classes and len(model.classes) == probs.shape[1] \
        else [str(i) for i in range(probs.shape[1])]
    k = min(args.top, probs.shape[1])
    rows = [[os.path.basename(p)] + [f"{names[j]} ({pr[j] * 100:.1f}%)" for j in np.argsort(-pr)[:k]]
            for p, pr in zip(args.images, probs)]
    header = ["image", "prediction"] + [f"top{i + 1}" for i in range(1, k)]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:                    # columns as wide as their widest cell
        _say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _parse_shape(text):
    """``"C,H,W"`` -> ``(C, H, W)`` of positive ints (ConfigError otherwise)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input-shape must be three positive integers C,H,W (e.g. 3,32,32), "
                          f"got {text!r}")
    return shape


def cmd_summary(args):
    from . import models
    shape = _parse_shape(args.input_shape) if args.input_shape else None
    if args.model in models.PRESETS:
        kw = {}
        if shape:
            if shape[1] != shape[2]:
                raise ConfigError(f"preset {args.model!r} is built for square images; give "
                                  f"--input-shape {shape[0]},{shape[1]},{shape[1]} (or a .json "
                                  "architecture for other shapes)")
            kw = dict(in_channels=shape[0], image_size=shape[1])
        model = models.build(args.model, **kw) if kw else models.PRESETS[args.model]()
    elif args.model.lower().endswith((".json", ".toml")):
        model = load_architecture(args.model)
        if shape is None and model.input_shape is None:
            raise ConfigError(f"{args.model} has no input_shape; give one with --input-shape C,H,W "
                              "(or add \"input_shape\": [C, H, W] to the file)")
    elif not os.path.exists(args.model) and not os.path.splitext(args.model)[1]:
        raise ConfigError(f"unknown model {args.model!r}: give a preset "
                          f"({', '.join(models.PRESETS)}), a .json/.toml architecture or a "
                          ".safetensors model file")
    else:
        model = _load_model(args.model)
    _say(model.summary(shape))
    return 0


def cmd_plot(args):
    from .data.formats import load_image
    from .training import evaluate
    from .viz import plots
    model = _load_model(args.model)
    out = args.out or os.path.dirname(os.path.abspath(args.model))   # made by the first PNG
    written, history, report = [], None, None
    hist_path = args.history or os.path.join(os.path.dirname(os.path.abspath(args.model)), "history.json")
    if args.history and not os.path.isfile(args.history):
        raise ConfigError(f"--history {args.history!r} is not a file; give the history.json a "
                          "training run wrote, or leave --history out")
    if os.path.isfile(hist_path):
        with open(hist_path) as f:
            try:
                history = json.load(f)
            except json.JSONDecodeError as exc:
                raise DataError(f"{hist_path}: not a valid history file ({exc})") from None
    conv = _first_conv(model)
    # everything is read and checked before the first PNG is written
    if args.image:
        c, h, w = model.input_shape
        image = load_image(args.image, size=(h, w), channels=c)[None]
    else:
        ds = _load_data(args.data, args, model.classes)
        (_, _), (xte, yte) = ds.splits
        if model.input_shape and tuple(xte.shape[1:]) != model.input_shape:
            raise ConfigError(f"the model takes images of shape {model.input_shape} but {args.data!r} "
                              f"has {tuple(xte.shape[1:])}")
        if not 0 <= args.index < len(xte):
            raise ConfigError(f"--index must be in 0..{len(xte) - 1}")
        report = evaluate(model, xte, yte, class_names=model.classes or list(ds.classes))
        image = xte[args.index:args.index + 1]
    if history is not None:
        written.append(plots.plot_history(history, os.path.join(out, "history.png")))
    if report is not None:
        written.append(plots.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"],
                                            os.path.join(out, "confusion.png")))
    if conv is not None:
        written.append(plots.plot_filters(conv.weight.value, os.path.join(out, "filters.png")))
        written.append(plots.plot_feature_maps(model, image, os.path.join(out, "feature_maps.png")))
    for p in written:
        _say(f"wrote {p}")
    return 0


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


def _gallery_size(path, longest=512):
    """Shrink big photos before filtering: the gallery's tiles are ~340 pixels wide, and a 12 MP
    picture took 22 s and 5 GB through every kernel."""
    from pathlib import Path

    from .data.formats import _open_image
    if not Path(path).is_file():
        return None                      # load_image says what is wrong with it
    _, (h, w) = _open_image(Path(path))
    scale = longest / max(h, w)
    return None if scale >= 1 else (max(1, round(h * scale)), max(1, round(w * scale)))


def cmd_convdemo(args):
    from .viz import convdemo            # its writers make --out when they write into it
    if args.gallery:
        from .data.formats import load_image
        img = convdemo.sample_image(64, rgb=True) if args.gallery == "sample" else \
            load_image(args.gallery, size=_gallery_size(args.gallery))
        path = convdemo.kernel_gallery(img, os.path.join(args.out, "kernels.png"))
        _say(f"applied {len(convdemo.classic_kernels())} classic kernels: wrote {path}")
        return 0
    own = {"--kernel": args.kernel, "--stride": args.stride, "--padding": args.padding,
           "--bias": args.bias}
    if args.image:
        from .data.formats import load_image
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
        for s in steps:
            _say(convdemo.format_step(s))
            _say("")
    gif = os.path.join(args.out, "convdemo.gif")
    path, frames = convdemo.render_gif(x, weight, bias, stride, padding, gif)
    _say(f"output volume {out.shape[2]}x{out.shape[3]}x{out.shape[1]} (height x width x depth, as "
         f"in the deck; depth = number of kernels); "
         f"wrote {path} ({frames} frames)")
    return 0


def cmd_datasets(args):
    from . import datasets
    for name in datasets.available():
        inf = datasets.info(name)
        _say(f"{name:<14} {inf.get('description', '')}")
    return 0


# -- parser --------------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(prog="numcnn", description="Convolutional neural networks on NumPy: "
                                "train, evaluate, predict and look inside.")
    p.add_argument("--version", action="version", version="numcnn 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (default: LeNet-5 on the embedded MNIST 5k)",
                       description="Train a CNN; writes checkpoints, the best and final model, "
                       "history and plots under --out.")
    t.add_argument("--data", default=DEFAULTS["data"], help="dataset name (mnist-5k, digits, mnist, "
                   "fashion-mnist, cifar10) or path (IDX/CIFAR folder, image folder, .npz); default %(default)s")
    t.add_argument("--model", default=DEFAULTS["model"], help="preset (lenet5, mnist-small, digits-cnn, "
                   "cifar-vgg) or .json/.toml architecture; default %(default)s")
    t.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    t.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    t.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["sgd", "adam", "adamw"])
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 0.05 for sgd, 2e-3 for adam/adamw)")
    t.add_argument("--momentum", type=float, default=None,
                   help=f"SGD momentum in [0, 1) (default {DEFAULTS['momentum']}; sgd only)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--schedule", default=DEFAULTS["schedule"], choices=["constant", "step", "cosine"])
    t.add_argument("--shift", type=int, default=None, help="random-shift augmentation in pixels "
                   "(0: off; default about 1/14 of the image side: 2 for 28x28, 1 for 8x8)")
    t.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits)")
    t.add_argument("--image-size", type=int, default=None, help="resize image folders to this size")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--patience", type=int, default=None, help="early stopping patience in epochs")
    t.add_argument("--out", default=None, help="output folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--resume", default=None, help="checkpoint to continue from")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one line of results per epoch still)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix of a model")
    e.add_argument("model", help="a .safetensors model file")
    e.add_argument("--data", default=DEFAULTS["data"])
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--image-size", type=int, default=None)
    e.add_argument("--json", default=None, help="also write the report as JSON here")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="class probabilities for image files")
    pr.add_argument("model")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top", type=int, default=3)
    pr.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", help="layers, output shapes, parameters and FLOPs")
    s.add_argument("model", help="a preset name, .json/.toml architecture or .safetensors model")
    s.add_argument("--input-shape", default=None, help="C,H,W (e.g. 3,32,32)")
    s.set_defaults(func=cmd_summary)

    pl = sub.add_parser("plot", help="training curves, confusion matrix, filters and feature maps (PNG)")
    pl.add_argument("model")
    pl.add_argument("--data", default=DEFAULTS["data"])
    pl.add_argument("--history", default=None, help="history.json (default: next to the model)")
    pl.add_argument("--image", default=None, help="image file for the feature maps")
    pl.add_argument("--index", type=int, default=0, help="test image for the feature maps")
    pl.add_argument("--image-size", type=int, default=None)
    pl.add_argument("--out", default=None, help="folder for the PNGs (default: the model's folder)")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("convdemo", help="watch a convolution happen (the deck's demo) or apply classic kernels")
    c.add_argument("--image", default=None, help="a small image (<= 16x16 after padding) to convolve instead of the deck's")
    c.add_argument("--kernel", default=None, help="kernel rows, e.g. '0 -1 0; -1 4 -1; 0 -1 0'")
    c.add_argument("--stride", type=int, default=None, help="with --image (default 1)")
    c.add_argument("--padding", type=int, default=None, help="with --image (default 0)")
    c.add_argument("--bias", type=float, default=None, help="with --image (default 0)")
    c.add_argument("--gallery", nargs="?", const="sample", default=None, metavar="IMAGE",
                   help="apply edge/sharpen/blur kernels to IMAGE (a built-in picture if none), side by side")
    c.add_argument("--out", default="convdemo", help="output folder (default %(default)s)")
    c.add_argument("--quiet", action="store_true", help="don't print every step")
    c.set_defaults(func=cmd_convdemo)

    d = sub.add_parser("datasets", help="list the datasets numcnn knows by name")
    d.set_defaults(func=cmd_datasets)

    from .interop import command as interop_command      # export / import (ONNX)
    interop_command.add_parser(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except NumcnnError as exc:
        print(f"numcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                 # `numcnn convdemo | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (OSError, MemoryError) as exc:
        print(f"numcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"numcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
