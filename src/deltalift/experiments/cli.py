"""``deltalift experiment list`` and ``deltalift experiment run NAME [--quick] [--out DIR] [--seed S] [--no-progress]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

EXPERIMENT_EPILOG = """Each run writes to --out (default: deltalift-output/experiments/NAME):
  report.md     the report, with its tables and the figures embedded
  *.png         the figures
  results.json  every number of the report
--quick runs a small version (tiny training, few examples) in seconds."""


def add_parser(commands: Any) -> None:
    """Add the ``experiment`` command (``list``, ``run``) to the sub-command parsers ``commands``."""
    experiment = commands.add_parser(
        "experiment",
        help="the paper's experiments: list them, run one into a report",
        description="The paper's experiments and the evaluation of attribution methods, one command each.",
    )
    tasks = experiment.add_subparsers(title="tasks", dest="task", metavar="TASK", required=True)
    listing = tasks.add_parser("list", help="list the experiments")
    listing.set_defaults(run=_run_list)
    run = tasks.add_parser(
        "run",
        help="run an experiment, write its report",
        description="Run an experiment and write its report, figures and numbers.",
        epilog=EXPERIMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("name", metavar="NAME", help="the experiment (see 'deltalift experiment list')")
    run.add_argument("--quick", action="store_true", help="a small, fast version (seconds)")
    run.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every random choice (default: 0)")
    run.add_argument(
        "--mnist",
        type=Path,
        default=None,
        metavar="DIR",
        help="digits experiments: train on MNIST from a folder of IDX files instead of scikit-learn's digits",
    )
    run.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder")
    run.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    run.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback when the command fails"
    )
    run.set_defaults(run=_run_experiment)


def _run_list(args: argparse.Namespace) -> None:
    from deltalift.experiments import all_experiments

    experiments = all_experiments()
    width = max((len(e.name) for e in experiments), default=0)
    for e in experiments:
        print(f"{e.name:<{width}}  {e.summary}")


def _run_experiment(args: argparse.Namespace) -> None:
    from deltalift.experiments import get, run_experiment
    from deltalift.experiments.options import set_mnist_folder

    get(args.name)
    out = args.out if args.out is not None else Path("deltalift-output") / "experiments" / args.name
    with set_mnist_folder(args.mnist):
        report = run_experiment(args.name, out, quick=args.quick, seed=args.seed, show_progress=not args.no_progress)
    print(f"wrote {report} (figures and results.json beside it)")
