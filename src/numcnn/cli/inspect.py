"""Looking at a model: ``numcnn evaluate``, ``predict``, ``summary`` and ``plot``.

    numcnn evaluate runs/x/model.safetensors
    numcnn predict  runs/x/model.safetensors digit.png
    numcnn summary  lenet5
    numcnn plot     runs/x/model.safetensors
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from .. import models
from ..architecture import load_architecture
from ..data.provenance import load_images_for
from ..errors import ConfigError, DataError, ModelFileError, NumcnnError, NumcnnWarning
from ..io import load_model
from ..metrics import format_report
from ..training import evaluate
from ..training.datasource import SPLITS, data_for_model
from ..training.run import first_conv, write_json
from ..viz import plots
from ..viz.plots import read_history
from .output import say


def add_parser(subparsers):
    e = subparsers.add_parser(
        "evaluate", help="accuracy, per-class metrics and confusion matrix of a model",
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

    pr = subparsers.add_parser(
        "predict", help="class probabilities for image files",
        description="Class probabilities for image files. Each picture is converted to the "
        "model's channels and size and brought to the value range of its training data "
        "(e.g. 0..16 for digits); a picture that cannot be read is reported and the others "
        "still predicted (exit status 1 at the end).")
    pr.add_argument("model", help="a .safetensors model file")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    pr.add_argument("--top", type=int, default=3, help="how many of the most likely classes to show")
    pr.set_defaults(func=cmd_predict)

    s = subparsers.add_parser("summary", help="layers, output shapes, parameters and FLOPs")
    s.add_argument("model", help="a preset name, .json/.toml architecture or .safetensors model")
    s.add_argument("--input-shape", default=None, help="C,H,W (e.g. 3,32,32; default: the model's own)")
    s.set_defaults(func=cmd_summary)

    pl = subparsers.add_parser(
        "plot", help="training curves, confusion matrix, filters and feature maps (PNG)")
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


def cmd_evaluate(args):
    model = load_model(args.model)
    x, y, ds, name, split = data_for_model(model, args.data, args.split, args.image_size)
    report = evaluate(model, x, y, batch_size=args.batch_size, class_names=model.classes or list(ds.classes))
    if args.json == "-":                         # the JSON alone, for a pipe
        write_json(report, "-")
        return 0
    say(f"{args.model} on {name} ({split} split{'s' if split == 'all' else ''}, {len(x):,} images)")
    say(format_report(report))
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
        say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
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
    say(model.summary(shape))
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
        say(f"wrote {p}")
    return 0
