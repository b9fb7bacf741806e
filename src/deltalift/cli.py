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
from deltalift.runtime import keep_freed_memory

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
    from deltalift.explain_files import EXPLAIN_EPILOG, add_explain_options

    explain = _model_command(
        commands,
        "explain",
        "explain a saved model on an inputs file or image folder, with one or several methods",
        "Compute attributions of a saved model's output for each example of an inputs file, an\n"
        "image or a folder of images, with one or several methods, and write arrays, figures and a report.",
        EXPLAIN_EPILOG,
        ("--inputs", "inputs: .npy/.pt (batch first), a PNG/JPEG image or folder, or a FASTA file"),
    )
    add_explain_options(explain, positive_int)
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
    __import__("deltalift.runner.cli", fromlist=["add_run_parser"]).add_run_parser(commands)
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
    from deltalift.explain_files import run_explain_command

    run_explain_command(args)


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
    ``--version`` exit with status 0.  Run as the program (``argv`` from the command line), it
    first lets glibc keep freed memory for reuse (:func:`deltalift.runtime.keep_freed_memory`:
    DeepLIFT-SHAP on long sequences took 11% less time); called with ``argv``, from another
    program, it leaves that process's allocator alone.
    """
    if argv is None:
        keep_freed_memory()
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
