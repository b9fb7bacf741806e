"""The ``deltalift senn`` commands::

deltalift senn train [--out DIR] [--epochs N] [--concepts K] [--conceptizer autoencoder|identity]
                     [--robustness W] [--seed S] [--no-progress]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``senn`` (with its task ``train``) to the ``deltalift`` subcommands."""
    senn = commands.add_parser("senn", help="self-explaining neural networks (SENN): train and explain")
    tasks = senn.add_subparsers(title="tasks", dest="task", metavar="TASK", required=True)
    train = tasks.add_parser(
        "train",
        help="train a SENN on scikit-learn's 8x8 digits",
        description="Train a self-explaining neural network (Alvarez-Melis & Jaakkola 2018) on scikit-learn's "
        "bundled 8x8 digits (no download) with the robustness loss, report its test accuracy, and write the "
        "model, its concept prototypes and per-example explanations.",
    )
    train.add_argument("--epochs", type=_positive_int, default=20, metavar="N", help="training epochs (default: 20)")
    train.add_argument("--concepts", type=_positive_int, default=5, metavar="K", help="concepts (default: 5)")
    train.add_argument(
        "--conceptizer",
        choices=("autoencoder", "identity"),
        default="autoencoder",
        help="concepts from an autoencoder, or the pixels themselves (default: autoencoder)",
    )
    train.add_argument(
        "--robustness", type=_non_negative_float, default=0.1, metavar="W", help="robustness loss weight (0.1)"
    )
    train.add_argument("--seed", type=int, default=0, metavar="S", help="seed of split, init and shuffling (0)")
    train.add_argument("--examples", type=_positive_int, default=6, metavar="N", help="digits explained (6)")
    train.add_argument("--out", type=Path, default=Path("deltalift-output"), metavar="DIR", help="output folder")
    train.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    train.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback when the command fails"
    )
    train.set_defaults(run=_run_train)
    return train


def _run_train(args: argparse.Namespace) -> None:
    from deltalift.senn.job import run_senn_training

    result = run_senn_training(
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        n_concepts=args.concepts,
        conceptizer=args.conceptizer,
        robustness_weight=args.robustness,
        n_examples=args.examples,
        show_progress=not args.no_progress,
    )
    print(f"done in {result.seconds:.1f} s")
