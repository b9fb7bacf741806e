"""The paper's experiments, each reproducible by one command: ``deltalift experiment run NAME``.

Importing this package registers every experiment (:mod:`deltalift.experiments.registry`); each
writes a Markdown report with PNG figures and a JSON file of its numbers through
:class:`~deltalift.experiments.report.ExperimentRun`.
"""

from deltalift.experiments.registry import Experiment, all_experiments, get, register
from deltalift.experiments.report import ExperimentRun, run_experiment

__all__ = ["Experiment", "ExperimentRun", "all_experiments", "get", "register", "run_experiment"]

# Each module below registers its experiment on import.
from deltalift.experiments import (
    digits_checks,  # noqa: E402, F401
    digits_erasure,  # noqa: E402, F401
    genomics_simulation,  # noqa: E402, F401
    internal_influence,  # noqa: E402, F401
    senn,  # noqa: E402, F401
    tcav,  # noqa: E402, F401
    toy,  # noqa: E402, F401
)
