"""The ``numcnn`` command: argument parsing and printing only; the work lives in the library.

    numcnn train                         LeNet-5 on the embedded MNIST 5k digits
    numcnn evaluate runs/x/model.safetensors
    numcnn predict  runs/x/model.safetensors digit.png
    numcnn summary  lenet5
    numcnn plot     runs/x/model.safetensors
    numcnn convdemo                      the deck's convolution, step by step, as a GIF

One module per idea, each declaring its commands' arguments (``add_parser``) next to the
functions that run them: :mod:`.train` (``train``), :mod:`.inspect` (``evaluate``, ``predict``,
``summary``, ``plot``), :mod:`.demo` (``convdemo``, ``datasets``); :mod:`.output` is how they
print. ``export``/``import`` and ``serve`` come from ``interop`` and ``web``, imported only when
the parser is built, so that importing this package does not load Starlette.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..architecture import load_architecture
from ..errors import NumcnnError
from ..training.run import RUN_FILES
from . import demo, inspect, train
from .demo import _gallery_size, cmd_convdemo, cmd_datasets
from .inspect import cmd_evaluate, cmd_plot, cmd_predict, cmd_summary
from .output import error_text, safe_streams
from .train import cmd_train

# what tests and older callers reach as ``numcnn.cli.<name>``
__all__ = ["main", "build_parser", "cmd_train", "cmd_evaluate", "cmd_predict", "cmd_summary",
           "cmd_plot", "cmd_convdemo", "cmd_datasets", "RUN_FILES", "load_architecture",
           "_gallery_size"]


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
    train.add_parser(sub)                         # train
    inspect.add_parser(sub)                       # evaluate, predict, summary, plot
    demo.add_parser(sub)                          # convdemo, datasets
    from ..interop import command as interop_command      # export / import (ONNX)
    interop_command.add_parser(sub)
    from ..web import command as web_command     # `numcnn serve`: the web app's own module
    web_command.add_parser(sub)
    for command in sub.choices.values():          # every command's help shows its defaults
        command.formatter_class = _HelpFormatter
    return p


def main(argv=None):
    safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except NumcnnError as exc:
        print(f"numcnn {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:                 # `numcnn convdemo | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (OSError, MemoryError) as exc:
        print(f"numcnn {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"numcnn {args.command}: interrupted", file=sys.stderr)
        return 130
