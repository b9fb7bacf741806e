"""Figures shared by the experiments (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from deltalift.plot.heatmap import new_figure as plot_figure

if TYPE_CHECKING:
    import matplotlib.figure

__all__ = ["box_plot", "new_figure"]


def new_figure(
    width: float, height: float, ncols: int = 1, nrows: int = 1
) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """A figure (drawn off-screen by Agg, without pyplot's global state) and its axes, always a
    2-d array."""
    figure = plot_figure(width, height, layout=None)
    return figure, figure.subplots(nrows, ncols, squeeze=False)


def box_plot(values: Sequence[np.ndarray], labels: Sequence[str], title: str, xlabel: str) -> matplotlib.figure.Figure:
    """Horizontal box plots, one per method, first method on top."""
    figure, axes = new_figure(7.0, 0.42 * len(labels) + 1.2)
    ax = axes[0, 0]
    ax.boxplot([np.asarray(v) for v in values][::-1], vert=False, showfliers=False)
    ax.set_yticks(range(1, len(labels) + 1), list(labels)[::-1])
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    figure.tight_layout()
    return figure
