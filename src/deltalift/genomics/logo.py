"""Sequence logos of per-base contributions, drawn with logomaker (Tareen & Kinney 2020).

Each position ``l`` of a ``(4, L)`` array of scores becomes a stack of letters whose heights are
the scores, drawn above the axis for positive and below it for negative values. For DeepLIFT on
one-hot DNA, pass the actual contributions ``hyp * one_hot`` (only the observed base has a height)
or the hypothetical contributions (every base has one).

logomaker and matplotlib are imported only when a logo is drawn (``pip install 'deltalift[plot]'``).
The figure is rendered by the Agg backend through :class:`matplotlib.figure.Figure`, so pyplot's
global state and the user's interactive backend are left alone.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from deltalift.plot.heatmap import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_logo"]

MISSING_LOGOMAKER = (
    "deltalift.genomics.plot_logo needs logomaker and matplotlib. Install them with: pip install 'deltalift[plot]'"
)


def _new_axes(width: float, height: float) -> Axes:
    return new_figure(width, height).add_subplot()


def plot_logo(
    contributions: Tensor | np.ndarray,
    start: int | None = None,
    end: int | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
    alphabet: str = "ACGT",
) -> Axes:
    """Draw a sequence logo of ``contributions[:, start:end]``.

    Parameters
    ----------
    contributions:
        Scores ``(4, L)`` or ``(1, 4, L)``, channels in ``alphabet`` order.
    start, end:
        The positions to draw, as a Python slice; the x axis is labelled with the positions in the
        full sequence.
    ax:
        matplotlib axes to draw into; a new figure (about 0.12 inch per position) is made when None.
    path:
        Also save the figure there (format from the suffix, e.g. ``.png``).
    alphabet:
        The letters of the channels.

    Returns
    -------
    matplotlib.axes.Axes
        The axes holding the logo.
    """
    try:
        import logomaker
        import pandas as pd
    except ImportError as exc:
        raise ImportError(MISSING_LOGOMAKER) from exc
    scores = (
        contributions.detach().to("cpu", torch.float64).numpy() if isinstance(contributions, Tensor) else contributions
    )
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 3 and scores.shape[0] == 1:
        scores = scores[0]
    if scores.ndim != 2 or scores.shape[0] != len(alphabet):
        raise ValueError(
            f"contributions must be shaped ({len(alphabet)}, L) or (1, {len(alphabet)}, L), got {scores.shape}"
        )
    positions = np.arange(scores.shape[1])[start:end]
    if positions.size == 0:
        raise ValueError(f"start={start}, end={end} select no position of a sequence of length {scores.shape[1]}")
    frame = pd.DataFrame(scores[:, positions].T, index=positions, columns=list(alphabet.upper()))
    if ax is None:
        ax = _new_axes(max(3.0, 0.12 * positions.size + 1.0), 2.0)
    logomaker.Logo(frame, ax=ax, color_scheme="classic")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("position")
    ax.set_ylabel("contribution")
    if path is not None:
        root: Figure = ax.figure.figure  # type: ignore[assignment]  # the Figure itself, or a SubFigure's Figure
        root.savefig(os.fspath(path), dpi=150)
    return ax
