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
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from . import datasets, models
from .architecture import load_architecture
from .data.images import image_size, load_image
from .data.provenance import load_images_for
from .errors import ConfigError, DataError, ModelFileError, NumcnnError, NumcnnWarning
from .io import load_model
from .metrics import format_report
from .parallel import launch
from .training import evaluate
from .training.datasource import SPLITS, data_for_model
from .training.run import DEFAULTS, RUN_FILES, TrainingRun, first_conv, write_json  # noqa: F401
from .viz import convdemo, plots
from .viz.plots import read_history


def _say(*a):
    print(*a, flush=True)


# -- commands ------------------------------------------------------------------------------------
def cmd_train(args):
    run = TrainingRun(data=args.data, model=args.model, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      momentum=args.momentum, weight_decay=args.weight_decay,
                      schedule=args.schedule, shift=args.shift, flip=args.flip,
                      image_size=args.image_size, seed=args.seed, patience=args.patience,
                      out=args.out, resume=args.resume, threads=args.threads,
                      progress="lines" if args.no_progress else True, log=_say, argv=args.argv)
    result = run.run()
    if result.get("complete"):
        return 0
    if run.world is not None and not run.world.root:         # rank 0 reports for the job
        return launch.finished(run.world, 130 if result["interrupted"] else 0)
    if result["interrupted"]:
        _say(f"\ninterrupted: checkpoint saved to {run.trainer.checkpoint_path}; continue with\n"
             f"  {run.resume_command}")
        return launch.finished(run.world, 130)
    history, report = result["history"], result["report"]
    ips = history["images_per_s"][-1] if history["images_per_s"] else float("nan")
    _say("")
    _say(format_report(report))
    _say("")
    n = len(history["epoch"])
    _say(f"test accuracy {report['accuracy'] * 100:.2f}% after {n} epoch{'' if n == 1 else 's'} in "
         f"{result['elapsed']:.1f}s ({ips:,.0f} training images/s)")
    _say(f"model saved to {os.path.join(result['out'], 'model.safetensors')}")
    return launch.finished(run.world, 0)


def cmd_evaluate(args):
    model = load_model(args.model)
    x, y, ds, name, split = data_for_model(model, args.data, args.split, args.image_size)
    report = evaluate(model, x, y, batch_size=args.batch_size, class_names=model.classes or list(ds.classes))
    if args.json == "-":                         # the JSON alone, for a pipe
        write_json(report, "-")
        return 0
    _say(f"{args.model} on {name} ({split} split{'s' if split == 'all' else ''}, {len(x):,} images)")
    _say(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def cmd_predict(args):
    model = load_model(args.model)
    if not model.input_shape:
        raise ModelFileError(f"{args.model}: the model has no input shape; cannot prepare images")
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NumcnnWarning)
        images, files, failed = load_images_for(model, args.images)
    for w in caught:
        if issubclass(w.category, NumcnnWarning):
            print(f"numcnn predict: warning: {w.message}", file=sys.stderr)
    why = [w if p in w else f"{p}: {w}" for p, w in failed]
    if images is None:                        # nothing to predict: one error says it
        raise DataError(why[0] if len(why) == 1 else
                        f"none of the {len(why)} images could be read; the first: {why[0]}")
    for w in why:                             # the others are still predicted
        print(f"numcnn predict: cannot read {w}", file=sys.stderr)
    probs = model.predict(images)
    names = model.classes if model.classes and len(model.classes) == probs.shape[1] \
        else [str(i) for i in range(probs.shape[1])]
    k = min(args.top, probs.shape[1])
    rows = [[os.path.basename(p)] + [f"{names[j]} ({pr[j] * 100:.1f}%)" for j in np.argsort(-pr)[:k]]
            for p, pr in zip(files, probs)]
    header = ["image", "prediction"] + [f"top{i + 1}" for i in range(1, k)]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:                    # columns as wide as their widest cell
        _say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if failed:
        print(f"numcnn predict: {len(failed)} of {len(failed) + len(files)} image(s) could not be "
              "read (see above)", file=sys.stderr)
        return 1
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
        model = load_model(args.model)
    _say(model.summary(shape))
    return 0


def cmd_plot(args):
    model = load_model(args.model)
    out = args.out or os.path.dirname(os.path.abspath(args.model))   # made by the first PNG
    written, history, report = [], None, None
    hist_path = args.history or os.path.join(os.path.dirname(os.path.abspath(args.model)), "history.json")
    if args.history and not os.path.isfile(args.history):
        raise ConfigError(f"--history {args.history!r} is not a file; give the history.json a "
                          "training run wrote, or leave --history out")
    if os.path.isfile(hist_path):
        history = read_history(hist_path)
    conv = first_conv(model)
    # everything is read and checked before the first PNG is written
    if args.image:
        image, _, failed = load_images_for(model, [args.image])
        if failed:
            raise DataError(failed[0][1])
        shown = dict(image_name=os.path.basename(args.image))
    else:
        xte, yte, ds, name, split = data_for_model(model, args.data, args.split, args.image_size)
        if not 0 <= args.index < len(xte):
            raise ConfigError(f"--index must be in 0..{len(xte) - 1}")
        report = evaluate(model, xte, yte, class_names=model.classes or list(ds.classes))
        image = xte[args.index:args.index + 1]
        names = model.classes or list(ds.classes)
        shown = dict(image_name=f"{split} image {args.index} of {os.path.basename(name)}",
                     true_class=names[int(yte[args.index])])
    if history is not None:
        try:
            written.append(plots.plot_history(history, os.path.join(out, "history.png")))
        except NumcnnError as exc:         # the file's fault: name it, not the function
            raise DataError(f"{hist_path}: not a training history numcnn can draw: "
                            f"{str(exc).removeprefix('plot_history: ')}") from None
    if report is not None:
        written.append(plots.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"],
                                            os.path.join(out, "confusion.png")))
    if conv is not None:
        written.append(plots.plot_filters(conv.weight.value, os.path.join(out, "filters.png")))
        written.append(plots.plot_feature_maps(model, image, os.path.join(out, "feature_maps.png"),
                                               **shown))
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
        _say(f"applied {len(convdemo.classic_kernels())} classic kernels to {what}: wrote {path}")
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
        _say(convdemo.format_setup(x, weight, bias, stride, padding))
        _say("")
        for s in steps:
            _say(convdemo.format_step(s))
            _say("")
        _say(convdemo.format_volume(out))
    gif = os.path.join(args.out, "convdemo.gif")
    path, frames = convdemo.render_gif(x, weight, bias, stride, padding, gif)
    _say(f"output volume {out.shape[2]}x{out.shape[3]}x{out.shape[1]} (height x width x depth, as "
         f"in the deck; depth = number of kernels); "
         f"wrote {path} ({frames} frames)")
    return 0


def cmd_datasets(args):
    for name in datasets.available():
        inf = datasets.info(name)
        _say(f"{name:<14} {inf.get('description', '')}")
    return 0


# -- parser --------------------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (argparse's ArgumentDefaultsHelpFormatter, but
    quiet where the default is "not given" or the help already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default" in text or default is None or default is False \
                or default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser():
    p = argparse.ArgumentParser(prog="numcnn", description="Convolutional neural networks on NumPy: "
                                "train, evaluate, predict and look inside.", formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version="numcnn 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add = lambda name, **kw: sub.add_parser(name, formatter_class=_HelpFormatter, **kw)  # noqa: E731

    t = add("train", help="train a model (default: LeNet-5 on the embedded MNIST 5k)",
            description="Train a CNN; writes checkpoints, the best and final model, "
            "history and plots under --out.")
    t.add_argument("--data", default=DEFAULTS["data"], help="dataset name (mnist-5k, digits, mnist, "
                   "fashion-mnist, cifar10) or path (IDX/CIFAR folder, image folder, .npz)")
    t.add_argument("--model", default=DEFAULTS["model"], help=f"preset ({', '.join(models.PRESETS)}) or "
                   ".json/.toml architecture (examples/architectures/, "
                   "docs/architecture-format.md)")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training data (default {DEFAULTS['epochs']}; with --resume: "
                   "the checkpoint's)")
    t.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per step")
    t.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["sgd", "adam", "adamw"],
                   help="how the weights are updated")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 0.05 for sgd, 2e-3 for adam/adamw)")
    t.add_argument("--momentum", type=float, default=None,
                   help=f"SGD momentum in [0, 1) (default {DEFAULTS['momentum']}; sgd only)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty on the weights")
    t.add_argument("--schedule", default=None, choices=["constant", "step", "cosine"],
                   help=f"learning-rate schedule over the epochs (default {DEFAULTS['schedule']}; "
                   "with --resume: the checkpoint's)")
    t.add_argument("--shift", type=int, default=None, help="random-shift augmentation in pixels "
                   "(0: off; default about 1/14 of the image side: 2 for 28x28, 1 for 8x8)")
    t.add_argument("--flip", action="store_true", help="random horizontal flips, for photos (refused "
                   "for digits: a mirrored 2 is no digit)")
    t.add_argument("--image-size", type=int, default=None, help="resize image folders to this size "
                   "(default: the pictures' own size)")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, shuffling and augmentation")
    t.add_argument("--patience", type=int, default=None, help="early stopping patience in epochs "
                   "(default: off)")
    t.add_argument("--out", default=None, help="output folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--resume", default=None, help="checkpoint to continue from; keeps its epochs and "
                   "schedule unless --epochs is given (default: a new run)")
    t.add_argument("--threads", type=int, default=None, help="threads per process (default: "
                   "NUMCNN_NUM_THREADS, else every usable core); see docs/parallel.md for mpiexec")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one line of results per epoch still)")
    t.set_defaults(func=cmd_train)

    e = add("evaluate", help="accuracy, per-class metrics and confusion matrix of a model",
            description="Evaluate a model file on a dataset: loss, accuracy, top-5, per-class "
            "precision/recall/F1 and the confusion matrix. By default on the data the model was "
            "trained on (recorded in the model file).")
    e.add_argument("model", help="a .safetensors model file (e.g. runs/x/model.safetensors)")
    e.add_argument("--data", default=None, help="dataset name or path (default: the one the model "
                   "was trained on, as its file records; mnist-5k for older files)")
    e.add_argument("--split", default=None, choices=list(SPLITS), help="which images: the test "
                   "split, the training split, or all of them (default: the recorded split, test)")
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (memory, "
                   "not results)")
    e.add_argument("--image-size", type=int, default=None, help="resize an image folder's pictures "
                   "to this size (default: the model's input size)")
    e.add_argument("--json", default=None, help="also write the report as JSON to this file "
                   "('-': only the JSON, to standard output; default: not written)")
    e.set_defaults(func=cmd_evaluate)

    pr = add("predict", help="class probabilities for image files",
             description="Class probabilities for image files. Each picture is converted to the "
             "model's channels and size and brought to the value range of its training data "
             "(e.g. 0..16 for digits); a picture that cannot be read is reported and the others "
             "still predicted (exit status 1 at the end).")
    pr.add_argument("model", help="a .safetensors model file")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    pr.add_argument("--top", type=int, default=3, help="how many of the most likely classes to show")
    pr.set_defaults(func=cmd_predict)

    s = add("summary", help="layers, output shapes, parameters and FLOPs")
    s.add_argument("model", help="a preset name, .json/.toml architecture or .safetensors model")
    s.add_argument("--input-shape", default=None, help="C,H,W (e.g. 3,32,32; default: the model's own)")
    s.set_defaults(func=cmd_summary)

    pl = add("plot", help="training curves, confusion matrix, filters and feature maps (PNG)")
    pl.add_argument("model", help="a .safetensors model file")
    pl.add_argument("--data", default=None, help="dataset for the confusion matrix and feature maps "
                    "(default: the one the model was trained on)")
    pl.add_argument("--split", default=None, choices=list(SPLITS), help="which images (default: "
                    "the recorded split, test)")
    pl.add_argument("--history", default=None, help="history.json (default: next to the model)")
    pl.add_argument("--image", default=None, help="image file for the feature maps (default: "
                    "image --index of the data)")
    pl.add_argument("--index", type=int, default=0, help="which image of the data to show the "
                    "feature maps of")
    pl.add_argument("--image-size", type=int, default=None, help="resize an image folder's pictures "
                    "(default: the model's input size)")
    pl.add_argument("--out", default=None, help="folder for the PNGs (default: the model's folder)")
    pl.set_defaults(func=cmd_plot)

    c = add("convdemo", help="watch a convolution happen (the deck's demo) or apply classic kernels",
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

    d = add("datasets", help="list the datasets numcnn knows by name")
    d.set_defaults(func=cmd_datasets)

    from .interop import command as interop_command      # export / import (ONNX)
    interop_command.add_parser(sub)
    from .web import command as web_command     # `numcnn serve`: the web app's own module
    web_command.add_parser(sub)
    for command in sub.choices.values():          # the hooks' commands show defaults too
        command.formatter_class = _HelpFormatter
    return p


def _error_text(exc):
    """An error in words: its message, or (for an empty one, e.g. MemoryError()) its type and
    what to do."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError):
        return ((text + ": " if text else "") + "out of memory (MemoryError); the data or model "
                "is too large for this machine - use less data, a smaller --image-size or "
                "--batch-size, or lower NUMCNN_MAX_DATA_BYTES so numcnn refuses it up front")
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or f"{type(exc).__name__} (no message); please report this as a bug"


def _escape(err):
    """Encoding error handler: a path's undecodable byte (``os.fsdecode`` keeps it as a surrogate
    U+DC80..U+DCFF) is printed as ``\\xNN``, as numcnn names such classes; anything else as a
    backslash escape too."""
    bad = err.object[err.start:err.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   c.encode("ascii", "backslashreplace").decode() for c in bad), err.end


def _safe_streams():
    """Paths are not always valid UTF-8: on a strict UTF-8 (or ASCII) terminal, print their odd
    bytes as ``\\xNN`` escapes instead of crashing."""
    import codecs
    codecs.register_error("numcnn-escape", _escape)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="numcnn-escape")
        except (AttributeError, ValueError, OSError):   # replaced streams (pytest, pipes)
            pass


def main(argv=None):
    _safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except NumcnnError as exc:
        print(f"numcnn {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:                 # `numcnn convdemo | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (OSError, MemoryError) as exc:
        print(f"numcnn {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"numcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
