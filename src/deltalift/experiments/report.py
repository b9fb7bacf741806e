"""What an experiment writes: a Markdown report with its figures and tables, and a JSON file of every number.

An experiment's ``run`` function receives an :class:`ExperimentRun` and writes through it:
paragraphs (:meth:`~ExperimentRun.text`), tables (:meth:`~ExperimentRun.table`), PNG figures
embedded in the report (:meth:`~ExperimentRun.figure`) and numbers (:meth:`~ExperimentRun.record`,
``"a/b/c"`` keys nest).  :func:`run_experiment` runs a registered experiment seeded and returns the
path of its ``report.md``; ``results.json`` lies beside it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from deltalift.runtime import progress as _progress
from deltalift.runtime import torch_threads

if TYPE_CHECKING:
    import matplotlib.figure

__all__ = ["ExperimentRun", "jsonable", "run_experiment"]

T = TypeVar("T")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy and torch scalars and arrays become numbers and lists,
    paths strings, tuples lists; NaN and infinities become ``None`` (JSON has no such numbers)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()] if value.ndim else jsonable(value.item())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__} in results.json")


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return "—"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


class ExperimentRun:
    """The output of one run of an experiment, collected in order and written by :meth:`finish`.

    Parameters
    ----------
    out:
        The folder to write ``report.md``, ``results.json`` and the figures to (created).
    quick:
        ``True`` for the small version of the experiment (seconds; used by the tests).
    seed:
        The seed every random choice of the experiment derives from.
    show_progress:
        Show tqdm progress bars (:meth:`progress`).
    title:
        The report's heading.
    """

    def __init__(
        self, out: Path | str, quick: bool = False, seed: int = 0, show_progress: bool = True, title: str = "Experiment"
    ) -> None:
        self.out = Path(out)
        self.quick = bool(quick)
        self.seed = int(seed)
        self.show_progress = bool(show_progress)
        self.title = title
        self._blocks: list[str] = []
        self._results: dict[str, Any] = {}
        self._figures: set[str] = set()
        self.out.mkdir(parents=True, exist_ok=True)

    def progress(self, iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
        """``iterable`` in a tqdm bar labelled ``desc`` when :attr:`show_progress` (and tqdm is installed)."""
        options: dict[str, Any] = {"desc": desc, "leave": False}
        if total is not None:
            options["total"] = total
        return _progress(iterable, self.show_progress, **options)

    def text(self, markdown: str) -> None:
        """Add a paragraph (Markdown) to the report."""
        self._blocks.append(markdown.strip())

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
        """Add a Markdown table; floats are shown with three significant digits."""
        if not headers:
            raise ValueError("a table needs at least one column")
        for i, row in enumerate(rows):
            if len(row) != len(headers):
                raise ValueError(f"row {i} of the table has {len(row)} cells, the header {len(headers)}")
        lines = []
        if caption:
            lines += [f"*{caption.strip()}*", ""]
        lines.append("| " + " | ".join(_cell(h) for h in headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        self._blocks.append("\n".join(lines))

    def figure(self, name: str, figure: matplotlib.figure.Figure, caption: str = "") -> Path:
        """Save ``figure`` as ``<out>/<name>.png``, embed it in the report, close it, and return its path."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"a figure's name must be a plain file name without a folder, got {name!r}")
        if name in self._figures:
            raise ValueError(f"a figure named {name!r} was written already in this run")
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        self._figures.add(name)
        block = f"![{caption.strip() or name}]({path.name})"
        if caption:
            block += f"\n\n*{caption.strip()}*"
        self._blocks.append(block)
        return path

    def record(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in ``results.json``; ``"a/b/c"`` nests as ``{"a": {"b": {"c": ...}}}``."""
        parts = key.split("/")
        if not key or any(not p for p in parts):
            raise ValueError(f"a result key is names separated by '/', got {key!r}")
        node = self._results
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"cannot record {key!r}: {part!r} holds a value already, not a group")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"cannot record {key!r}: it is a group of results already")
        node[parts[-1]] = jsonable(value)

    @property
    def results(self) -> dict[str, Any]:
        """The numbers recorded so far (nested)."""
        return self._results

    def finish(self) -> Path:
        """Write ``report.md`` and ``results.json`` into :attr:`out`; return the report's path."""
        report = self.out / "report.md"
        header = f"# {self.title}\n\nseed {self.seed}{', quick run' if self.quick else ''}"
        report.write_text("\n\n".join([header, *self._blocks]) + "\n", encoding="utf-8")
        (self.out / "results.json").write_text(
            json.dumps(self._results, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
        )
        return report


def run_experiment(name: str, out: Path, quick: bool = False, seed: int = 0, show_progress: bool = True) -> Path:
    """Run the registered experiment ``name`` into the folder ``out``; return the path of its report.

    The run is seeded: torch's global generator is seeded with ``seed`` inside the run and
    restored afterwards, and the experiment derives its own generators from ``seed``.  Torch uses
    one intra-op thread (the models are small).  ``results.json`` records ``experiment``,
    ``seed``, ``quick`` and ``seconds`` besides the experiment's numbers.
    """
    import deltalift.experiments  # noqa: F401  (registers the experiments)
    from deltalift.experiments.registry import get

    experiment = get(name)
    run = ExperimentRun(out, quick=quick, seed=seed, show_progress=show_progress, title=f"Experiment `{name}`")
    run.text(experiment.summary)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        experiment.run(run)
    run.record("experiment", name)
    run.record("seed", seed)
    run.record("quick", quick)
    run.record("seconds", round(time.perf_counter() - started, 2))
    return run.finish()
