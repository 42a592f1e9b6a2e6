"""``numcnn serve``: the subcommand (argument parsing only; the server is :mod:`.server`)."""
from __future__ import annotations

import os


def add_parser(subparsers):
    s = subparsers.add_parser(
        "serve", help="the playground in your browser: convolutions, kernels, your models, live training",
        description="Serve numcnn's web pages on this machine: watch a convolution, see what "
        "kernels highlight, look inside a model and train one live. Binds 127.0.0.1 unless "
        "--host says otherwise; another address needs the token printed at start.")
    s.add_argument("--model", default=None, help="a .safetensors model to offer first (default: none; models in "
                   "run folders under the current directory are listed too)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; "
                   "anything but a loopback address requires a token, printed at start)")
    s.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0: any free port)")
    s.add_argument("--open", action="store_true", help="open the page in a web browser")
    s.set_defaults(func=run)
    return s


def run(args):
    from ..errors import ConfigError
    from .server import serve
    if args.model is not None and not os.path.isfile(args.model):
        raise ConfigError(f"--model {args.model!r} is not a file; give a .safetensors model "
                          "(e.g. runs/<run>/model.safetensors)")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, got {args.port}")
    return serve(args.model, args.host, args.port, args.open, root=os.getcwd())
