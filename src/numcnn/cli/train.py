"""``numcnn train``: the run's options, ``TrainingRun(...).run()``, and the closing report.

    numcnn train                                   LeNet-5 on the embedded MNIST 5k digits
    numcnn train --data digits --model digits-cnn --epochs 3
    numcnn train --resume runs/x/checkpoint.safetensors
"""
from __future__ import annotations

import os

from .. import models
from ..metrics import format_report
from ..parallel import launch
from ..training.run import DEFAULTS, TrainingRun
from .output import say


def add_parser(subparsers):
    t = subparsers.add_parser(
        "train", help="train a model (default: LeNet-5 on the embedded MNIST 5k)",
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


def cmd_train(args):
    run = TrainingRun(data=args.data, model=args.model, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      momentum=args.momentum, weight_decay=args.weight_decay,
                      schedule=args.schedule, shift=args.shift, flip=args.flip,
                      image_size=args.image_size, seed=args.seed, patience=args.patience,
                      out=args.out, resume=args.resume, threads=args.threads,
                      progress="lines" if args.no_progress else True, log=say, argv=args.argv)
    result = run.run()
    if result.get("complete"):
        return 0
    if run.world is not None and not run.world.root:         # rank 0 reports for the job
        return launch.finished(run.world, 130 if result["interrupted"] else 0)
    if result["interrupted"]:
        say(f"\ninterrupted: checkpoint saved to {run.trainer.checkpoint_path}; continue with\n"
            f"  {run.resume_command}")
        return launch.finished(run.world, 130)
    history, report = result["history"], result["report"]
    ips = history["images_per_s"][-1] if history["images_per_s"] else float("nan")
    say("")
    say(format_report(report))
    say("")
    n = len(history["epoch"])
    say(f"test accuracy {report['accuracy'] * 100:.2f}% after {n} epoch{'' if n == 1 else 's'} in "
        f"{result['elapsed']:.1f}s ({ips:,.0f} training images/s)")
    say(f"model saved to {os.path.join(result['out'], 'model.safetensors')}")
    return launch.finished(run.world, 0)
