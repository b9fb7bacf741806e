"""The ``deltalift`` command line.

    deltalift demo [--out DIR] [--epochs N] [--seed S]
    deltalift explain --model model.pt --inputs x.npy [--target INT] [--baseline zero|mean|FLOAT|FILE] [--out DIR]
    deltalift genomics attribute --model model.pt --fasta seqs.fa [--target INT] [--n-shuffles K] [--out DIR]
    deltalift experiment list | run NAME [--quick] [--out DIR] [--seed S]

Exit status: 0 on success, 1 when a job fails (the reason printed as one line on stderr),
2 for a malformed command line, 130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from deltalift import __version__
from deltalift.errors import DeltaliftError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Errors reported as one line without a traceback (``--debug`` shows it): bad files and
#: arguments, models deltalift cannot capture, failures of the model on the given inputs.
USER_ERRORS = (DeltaliftError, OSError, ValueError, TypeError, ImportError, RuntimeError, ArithmeticError)

DESCRIPTION = "DeepLIFT attributions for PyTorch models, computed on operations rather than modules."
EPILOG = """examples:
  deltalift demo                                 train a digits CNN and explain it (a few seconds)
  deltalift explain --model model.pt --inputs x.npy --target 3 --baseline mean
  deltalift genomics attribute --model bpnet.pt --fasta peaks.fa --n-shuffles 20
run 'deltalift COMMAND --help' for the options of a command."""

EXPLAIN_EPILOG = """The model file is a whole module saved with torch.save(model, path) -- loading it runs
code from the file, so load only files you trust; its class must be importable -- or a program
saved with torch.export.save (.pt2). TorchScript and bare state dicts cannot be explained.
Writes to --out: attributions.npy (shaped like the inputs), deltas.npy (per example,
sum of attributions minus t(x) - t(x0), ~0 for exact DeepLIFT), targets.npy, and
attributions.png when the inputs look like images (N, H, W) or (N, 1|3, H, W)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser, out_help: str) -> None:
    parser.add_argument("--out", type=Path, default=Path("deltalift-output"), metavar="DIR", help=out_help)
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback when the command fails"
    )


def _model_command(
    commands: Any, name: str, help: str, description: str, epilog: str, data: tuple[str, str]
) -> argparse.ArgumentParser:
    """The parser of a command that explains a saved model on a data file: ``--model``, then the
    data file's option ``data = (option, help)``, both required."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path, metavar="FILE", help="model file (.pt or .pt2)")
    option, data_help = data
    parser.add_argument(option, required=True, type=Path, metavar="FILE", help=data_help)
    return parser


def _demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a small CNN on scikit-learn's 8x8 digits and explain it",
        description="Train a small CNN on scikit-learn's bundled 8x8 handwritten digits (no download), "
        "explain a few test digits with DeepLIFT against a blank (all-zero) reference, and write a "
        "figure of each digit beside its attributions for the predicted and the runner-up class. "
        "Needs the demo extra: pip install 'deltalift[demo]'.",
    )
    demo.add_argument("--epochs", type=positive_int, default=6, metavar="N", help="training epochs (default: 6)")
    demo.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the split, init and shuffling (default: 0)"
    )
    demo.add_argument(
        "--examples", type=positive_int, default=6, metavar="N", help="test digits to explain (default: 6)"
    )
    _add_common(demo, "output folder for the figure, model and examples (default: deltalift-output)")
    demo.set_defaults(run=_run_demo)


def _explain_parser(commands: Any) -> None:
    explain = _model_command(
        commands,
        "explain",
        "explain a saved model on an inputs file",
        "Compute DeepLIFT attributions of a saved model's output for each example\nof an inputs file.",
        EXPLAIN_EPILOG,
        ("--inputs", "inputs (.npy or .pt), batch first"),
    )
    explain.add_argument(
        "--target", type=int, default=None, metavar="INT", help="output index to explain (default: the predicted class)"
    )
    explain.add_argument(
        "--baseline",
        default="zero",
        metavar="REF",
        help="reference input: zero, mean (the mean input), a number, or a .npy/.pt file (default: zero)",
    )
    explain.add_argument(
        "--batch-size", type=positive_int, default=64, metavar="N", help="examples per batch (default: 64)"
    )
    explain.add_argument("--device", default="cpu", help="torch device to compute on (default: cpu)")
    explain.add_argument(
        "--max-plotted", type=int, default=8, metavar="N", help="examples drawn in the figure (default: 8; 0: none)"
    )
    _add_common(explain, "output folder (default: deltalift-output)")
    explain.set_defaults(run=_run_explain)


def _genomics_parser(commands: Any) -> None:
    from deltalift.genomics.cli import add_genomics_parser  # the command's options and its run

    add_genomics_parser(commands)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``deltalift``."""
    parser = argparse.ArgumentParser(
        prog="deltalift",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deltalift {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    _demo_parser(commands)
    _explain_parser(commands)
    _genomics_parser(commands)
    __import__("deltalift.experiments.cli", fromlist=["add_parser"]).add_parser(commands)
    __import__("deltalift.senn.cli", fromlist=["add_parser"]).add_parser(commands)
    return parser


def _run_demo(args: argparse.Namespace) -> None:
    from deltalift.demo import run_demo

    result = run_demo(
        args.out, epochs=args.epochs, seed=args.seed, n_examples=args.examples, show_progress=not args.no_progress
    )
    print(f"done in {result.seconds:.1f} s")


def _run_explain(args: argparse.Namespace) -> None:
    from deltalift.explain_files import explain_saved_model

    explain_saved_model(
        args.model,
        args.inputs,
        args.out,
        target=args.target,
        baseline=args.baseline,
        batch_size=args.batch_size,
        max_plotted=args.max_plotted,
        device=args.device,
        show_progress=not args.no_progress,
    )


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a multi-line message is joined with spaces)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if isinstance(exc, (KeyError, DeltaliftError, OSError, ValueError, ImportError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"deltalift: warning: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deltalift`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    A malformed command line exits through argparse (``SystemExit(2)``); ``--help`` and
    ``--version`` exit with status 0.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args.run(args)
    except KeyboardInterrupt:
        print("\ndeltalift: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"deltalift: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
