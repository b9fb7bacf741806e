"""The registry of experiments that ``deltalift experiment list`` shows and ``deltalift experiment run`` runs.

Each experiment module registers itself when :mod:`deltalift.experiments` is imported::

    from deltalift.experiments.registry import Experiment, register

    def run(experiment: ExperimentRun) -> None:
        experiment.text("...")
        experiment.record("accuracy", 0.97)

    register(Experiment("my-experiment", "one line shown by `deltalift experiment list`", run))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deltalift.experiments.report import ExperimentRun

__all__ = ["Experiment", "all_experiments", "get", "register"]


@dataclass(frozen=True)
class Experiment:
    """An experiment: its name (``"toy"``, ``"digits-erasure"``), a one-line summary, and the
    function that does the work and writes through an :class:`~deltalift.experiments.report.ExperimentRun`."""

    name: str
    summary: str
    run: Callable[[ExperimentRun], None]


_EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry and return it; a name used before raises ``ValueError``."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"register takes an Experiment, got {type(experiment).__name__}")
    if not experiment.name or experiment.name != experiment.name.strip() or " " in experiment.name:
        raise ValueError(f"an experiment's name must be one word without spaces, got {experiment.name!r}")
    if experiment.name in _EXPERIMENTS:
        raise ValueError(f"an experiment named {experiment.name!r} is registered already")
    _EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _EXPERIMENTS[name]
    except KeyError:
        known = ", ".join(sorted(_EXPERIMENTS)) or "none"
        raise ValueError(f"no experiment named {name!r}; the known experiments are: {known}") from None


def all_experiments() -> list[Experiment]:
    """Every registered experiment, sorted by name."""
    return [_EXPERIMENTS[name] for name in sorted(_EXPERIMENTS)]


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for tests that register experiments of their own)."""
    _EXPERIMENTS.pop(name, None)
