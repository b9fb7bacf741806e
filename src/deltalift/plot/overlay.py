"""Attribution heatmaps laid over the image, side by side across methods.

A map ``a`` (the attributions summed over the colour channels, :func:`attribution_map`) is drawn
with a diverging colour scale centred at zero and symmetric, ``[-m, m]``: ``m = max |a|`` of
the panel (or the ``percentile``-th percentile of ``|a|``, values beyond it clipped).  The
colours are matplotlib's ``bwr``: blue ``(0, 0, 1)`` at ``-m``, white at 0, red ``(1, 0, 0)`` at
``+m``, linear in between.  The heat is blended over the image with an opacity that grows with
``|a|``, so that pixels contributing nothing show the photo as it is::

    s = clip(a / m, -1, 1),   alpha = strength * |s|,   pixel = (1 - alpha) * image + alpha * bwr(s)

Each panel has its own ``m`` (methods differ in units and scale: gradients versus contributions),
printed as the colour bar's ends.  The blending is plain numpy (:func:`overlay`), so reports
need no matplotlib; :func:`plot_overlays` draws a matplotlib figure (``deltalift[plot]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from deltalift.plot.heatmap import MISSING_MATPLOTLIB, attribution_map, save_figure, to_numpy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["diverging_colors", "display_image", "overlay", "panel_limit", "plot_overlays"]

ArrayLike = Any


def diverging_colors(scaled: np.ndarray) -> np.ndarray:
    """``bwr`` colours ``(..., 3)`` of values in ``[-1, 1]`` (clipped): blue, white at 0, red."""
    s = np.clip(np.asarray(scaled, dtype=np.float64), -1.0, 1.0)
    negative, positive = np.clip(-s, 0, 1), np.clip(s, 0, 1)
    red = 1.0 - negative
    green = 1.0 - np.abs(s)
    blue = 1.0 - positive
    return np.stack([red, green, blue], axis=-1)


def panel_limit(values: ArrayLike, percentile: float = 100.0) -> float:
    """``m`` of the symmetric scale ``[-m, m]``: the ``percentile``-th percentile of ``|values|``
    (100: the maximum); 1.0 for an all-zero map, so that it draws white.

    Raises
    ------
    ValueError
        ``percentile`` outside ``(0, 100]`` or values that are not finite.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    magnitudes = np.abs(to_numpy(values))
    if not np.isfinite(magnitudes).all():
        raise ValueError("the attributions contain NaN or infinite values")
    limit = float(np.percentile(magnitudes, percentile)) if magnitudes.size else 0.0
    return limit if limit > 0 else 1.0


def display_image(image: ArrayLike) -> np.ndarray:
    """One image as RGB ``(H, W, 3)`` in ``[0, 1]``: from ``(H, W)``, ``(1|3, H, W)`` or ``(H, W, 1|3)``;
    values outside ``[0, 1]`` are rescaled by the image's minimum and maximum."""
    array = to_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image must be (H, W), (C, H, W) or (H, W, C) with C 1 or 3, got {array.shape}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        array = (array - low) / (high - low if high > low else 1.0)
    return array


def overlay(
    image: ArrayLike, attributions: ArrayLike, limit: float | None = None, strength: float = 0.85
) -> np.ndarray:
    """The heatmap of ``attributions`` blended over ``image``: ``(H, W, 3)`` in ``[0, 1]``.

    Parameters
    ----------
    image:
        One image, as :func:`display_image` takes it.
    attributions:
        ``(H, W)``, or ``(C, H, W)`` summed over ``C``.
    limit:
        ``m`` of the scale ``[-m, m]``; default :func:`panel_limit` (``max |a|``).
    strength:
        Opacity of the heat where ``|a| >= m``, in ``[0, 1]``.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    values = to_numpy(attributions)
    if values.ndim == 3:
        values = values.sum(axis=0)  # (C, H, W): summed over the channels
    shown = display_image(image)
    if values.shape != shown.shape[:2]:
        raise ValueError(f"the attribution map is {values.shape} but the image is {shown.shape[:2]}")
    m = panel_limit(values) if limit is None else float(limit)
    if not m > 0:
        raise ValueError(f"limit must be positive, got {limit}")
    scaled = np.clip(values / m, -1.0, 1.0)
    alpha = (strength * np.abs(scaled))[..., None]
    return (1.0 - alpha) * shown + alpha * diverging_colors(scaled)


def plot_overlays(
    images: ArrayLike,
    attributions: Mapping[str, ArrayLike],
    titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    percentile: float = 100.0,
    strength: float = 0.85,
    panel_size: float = 1.8,
    dpi: int = 150,
) -> Figure:
    """Each image, then its overlay for each method, one row per image; write to ``path`` if given.

    Parameters
    ----------
    images:
        ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3.
    attributions:
        ``{method title: attributions (N, C', H, W) or (N, H, W)}``, the columns in this order.
    titles:
        One title per image (row).
    path:
        Where to write the figure.
    title:
        A title above the figure.
    percentile, strength:
        As :func:`panel_limit` and :func:`overlay`.

    Returns
    -------
    matplotlib.figure.Figure
        Each overlay's title gives its ``m``; one colour bar below shows the scale ``[-m, m]``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    batch = to_numpy(images)
    maps = {name: attribution_map(values) for name, values in attributions.items()}
    n_rows, n_maps = len(batch), len(maps)
    if n_rows == 0 or n_maps == 0:
        raise ValueError("there are no images or no attributions to plot")
    for name, values in maps.items():
        if len(values) != n_rows:
            raise ValueError(f"{name} has {len(values)} maps for {n_rows} images")
    if titles is not None and len(titles) != n_rows:
        raise ValueError(f"got {len(titles)} titles for {n_rows} images")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc
    # a fixed grid, not constrained layout: measuring dozens of panels' titles costs seconds
    header, footer = (0.5 if title else 0.15), 0.5
    width, height = panel_size * (n_maps + 1), (panel_size + 0.4) * n_rows + header + footer
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.1 / height)
    axes = figure.subplots(n_rows, n_maps + 1, squeeze=False)
    figure.subplots_adjust(
        left=0.02,
        right=0.98,
        top=1 - header / height,
        bottom=footer / height,
        wspace=0.08,
        hspace=0.45 * 1.8 / panel_size,
    )
    for row in range(n_rows):
        shown = display_image(batch[row])
        axes[row, 0].imshow(shown, interpolation="nearest")
        axes[row, 0].set_title(titles[row] if titles is not None else "", fontsize=7)
        for column, (name, values) in enumerate(maps.items(), start=1):
            limit = panel_limit(values[row], percentile)
            axes[row, column].imshow(overlay(shown, values[row], limit, strength), interpolation="nearest")
            axes[row, column].set_title(f"{name}\nm = {limit:.2g}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    scale = ScalarMappable(Normalize(-1.0, 1.0), "bwr")
    bar_axes = figure.add_axes((0.3, 0.12 / height, 0.4, 0.1 / height))
    bar = figure.colorbar(scale, cax=bar_axes, orientation="horizontal", ticks=[-1, 0, 1])
    bar.ax.set_xticklabels(["-m (lowers the output)", "0", "+m (raises it)"])
    bar.ax.tick_params(labelsize=7)
    if path is not None:
        save_figure(figure, path, dpi)
    return figure
