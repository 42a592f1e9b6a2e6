"""``numcnn export`` and ``numcnn import``: argument parsing and printing only.

    numcnn export runs/x/model.safetensors --format onnx [--out model.onnx] [--normalize]
    numcnn import model.onnx --out model.safetensors [--fuse-bn]
"""
from __future__ import annotations

import os

from ..errors import ConfigError, ModelFileError, NumcnnError


def _one_line(exc):
    """The CLI prints one line per error: a multi-line list becomes '; '-separated."""
    text = ""
    for line in (l.strip(" -") for l in str(exc).splitlines() if l.strip()):
        text += (" " if not text or text.endswith(":") else "; ") + line
    text = text.strip()
    return type(exc) if type(exc).__init__ is NumcnnError.__init__ else ModelFileError, text


def run_export(args):
    from ..io import load_model
    from ..models import PRESETS
    from .onnx_export import to_onnx
    if args.model in PRESETS and not os.path.exists(args.model):
        model = PRESETS[args.model]()        # its initial weights: useful to try a runtime
        out = args.out or f"{args.model}.onnx"
    else:
        model = load_model(args.model)
        out = args.out or os.path.splitext(args.model)[0] + ".onnx"
    if os.path.abspath(out) == os.path.abspath(args.model):
        raise ConfigError(f"--out {out} would overwrite the model itself; give another file name")
    path = to_onnx(model.eval(), out, normalize=args.normalize)
    shape = "x".join(map(str, model.input_shape or ()))
    takes = "raw 0..255 pixel values (float32)" if args.normalize else "prepared float32 input"
    print(f"wrote {path}: ONNX opset 17, input 'input' (batch, {shape.replace('x', ', ')}) "
          f"takes {takes}, output 'output'", flush=True)
    return 0


def run_import(args):
    from ..io import save_model
    from .onnx_import import from_onnx
    if not args.out.lower().endswith(".safetensors"):
        raise ConfigError(f"--out {args.out}: numcnn writes models as .safetensors files; give a "
                          "name ending in .safetensors")
    model = from_onnx(args.model, fuse_bn=args.fuse_bn)
    save_model(model, args.out)
    n = sum(int(p.value.size) for p in model.parameters())
    print(f"imported {len(model.layers)} layers ({n:,} parameters) from {args.model}; wrote "
          f"{args.out}", flush=True)
    return 0


def _guarded(fn):
    def run(args):
        try:
            return fn(args)
        except NumcnnError as exc:
            kind, text = _one_line(exc)
            raise kind(text) from None
    return run


def add_parser(sub):
    """Add ``export`` and ``import`` to the ``numcnn`` command's subparsers."""
    e = sub.add_parser("export", help="write a model as ONNX (for onnxruntime, Netron...)",
                       description="Write a numcnn model (a .safetensors file or a preset) as an "
                       "ONNX graph computing its evaluation-mode forward pass.")
    e.add_argument("model", help="a .safetensors model file (or a preset name: its initial weights)")
    e.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx, for now")
    e.add_argument("--out", default=None, help="output file (default: the model's name with .onnx)")
    e.add_argument("--normalize", action="store_true",
                   help="put x/255 and the model's (x-mean)/std into the graph, so it takes raw "
                   "0..255 images (as float32)")
    e.set_defaults(func=_guarded(run_export))

    i = sub.add_parser("import", help="turn an ONNX file into a numcnn model file",
                       description="Read an ONNX graph (e.g. from torch.onnx.export) into numcnn "
                       "layers and save it as a .safetensors model file.")
    i.add_argument("model", help="an .onnx file")
    i.add_argument("--out", required=True, help="the .safetensors file to write")
    i.add_argument("--fuse-bn", action="store_true",
                   help="fold each BatchNormalization that follows a Conv into the Conv")
    i.set_defaults(func=_guarded(run_import))
